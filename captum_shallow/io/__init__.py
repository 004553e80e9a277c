"""Reading and writing files: images into tensors (and the ImageNet
normalisation that :func:`preprocess` applies), VOC-format label PNGs, and
atomic writes (a file appears complete under its name, or not at all), shared
by the command line and the pseudo-mask pipeline."""

from ._atomic import atomic_write
from ._images import IMAGENET_MEAN, IMAGENET_STD, load_image, preprocess, read_image
from ._label_png import read_label_png, voc_palette, write_label_png

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "atomic_write",
    "load_image",
    "preprocess",
    "read_image",
    "read_label_png",
    "voc_palette",
    "write_label_png",
]
