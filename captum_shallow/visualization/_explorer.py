"""An interactive explorer of :class:`~captum_shallow.ShallowCAM` maps in one
self-contained HTML page: :func:`explore`, :class:`Explorer`, :func:`explain_images`.

The page embeds everything it shows (the photo as a JPEG data URI of at most
``PHOTO_PIXELS**2`` pixels, each layer's map for each of the top classes and, for
a ShallowCAM with ``class_gate=True``, its gate map, a colour map table, the script
and the style), so it works from ``file://``, offline, or inline in a Jupyter
output. Maps are
stored at their layer's own resolution, quantised to 16 bits: 8 bits would err by
up to 2e-3 per map, more than the 1e-3 within which the page's fusion is tested
against :func:`~captum_shallow.fuse_maps`. The page recomputes the fused map from
the layer maps with ``fuse_maps``' formula, so layers can be toggled and the
fusion changed in the page; with a gate map it multiplies the fusion by the gate
as ``fuse_maps(..., gate=...)`` does, and a tick box turns the gate off. The
template (``explorer.html``, ``explorer.css``, ``explorer.js``) is package data
beside this module.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor, nn

from .._modules import layer_name
from ..attribution import ShallowCAM, task_defaults
from ..datasets import output_class_names
from ..io import preprocess, read_image
from ..io._atomic import atomic_write
from ._display import COLORBAR_LABEL, DEFAULT_CMAP, DEFAULT_OPACITY, image_to_numpy

#: Classes per image whose maps the explorer precomputes (the top by probability).
TOP_CLASSES = 5
#: Side in pixels of the largest square photo embedded in a page: a photo of more
#: than ``PHOTO_PIXELS**2`` pixels is downscaled to that many.
PHOTO_PIXELS = 640
#: Longest side in pixels of an embedded photo: a very wide (or tall) photo keeps
#: up to this many pixels along it, so that its maps stay readable.
PHOTO_SIDE = 1280
#: JPEG quality of an embedded photo.
JPEG_QUALITY = 85
#: The fusions the page recomputes, each as :func:`~captum_shallow.fuse_maps` does.
EXPLORER_FUSIONS = ("max", "mean", "product", "geometric")

_TEMPLATES = ("explorer.html", "explorer.css", "explorer.js")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class ExplainedImage:
    """One photo and its layer maps for a few classes, as the explorer shows them.

    Args:
        name (str): The image's title, e.g. its file name.
        photo (Tensor): (3, H, W) ``uint8`` (or float in [0, 1]) photo.
        classes (tuple[int, ...]): Class indices, the most probable first.
        class_names (tuple[str, ...]): Their names.
        probabilities (tuple[float, ...]): Their probabilities.
        layer_maps (tuple[tuple[Tensor, ...], ...]): Per class, each layer's
            raw map ``(h_l, w_l)``, as ``ShallowCAM.attribute(...,
            return_layer_maps=True)`` gives it.
        initial (int): Position in ``classes`` of the class shown first.
            Default: 0
        gate_maps (tuple[Tensor, ...], optional): Per class, the raw ``(h, w)`` map
            that gates the fused map (:func:`~captum_shallow.fuse_maps`' ``gate``):
            for a ShallowCAM with ``class_gate=True``, Grad-CAM at its last layer,
            as :meth:`ShallowCAM.pass_maps <captum_shallow.ShallowCAM.pass_maps>`
            gives it; None without a gate.
            Default: None
    """

    name: str
    photo: Tensor
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    layer_maps: tuple[tuple[Tensor, ...], ...]
    initial: int = 0
    gate_maps: tuple[Tensor, ...] | None = None


def explain_images(
    cam: ShallowCAM,
    inputs: Tensor,
    photos: Sequence[Tensor],
    names: Sequence[str],
    classes: Sequence[str] | None = None,
    top: int = TOP_CLASSES,
    target: int | None = None,
) -> list[ExplainedImage]:
    """The layer maps of each input's top classes and, for a ShallowCAM with
    ``class_gate=True``, their gate maps, from one backward pass per class rank
    (:meth:`ShallowCAM.pass_maps <captum_shallow.ShallowCAM.pass_maps>`; with several
    scales or flips, the first scale's unmirrored pass, whose layer maps
    ``attribute(..., return_layer_maps=True)`` returns).

    Args:
        cam (ShallowCAM): The explainer; its ``forward_func`` gives the logits.
        inputs (Tensor): The model inputs, ``(N, 3, h, w)``, on the model's device.
        photos (Sequence[Tensor]): The N photos the inputs were made from.
        names (Sequence[str]): The N photos' titles.
        classes (Sequence[str], optional): Class names in output order.
            Default: ImageNet's for 1000 outputs, else the indices
        top (int, optional): Classes per image, the most probable first.
            Default: ``TOP_CLASSES`` (5)
        target (int, optional): A class to add where it is not among the top
            ones, and to show first.
            Default: None (the top class is shown first)

    Returns:
        list[ExplainedImage]: One per input; ``gate_maps`` is None unless
        ``cam.class_gate``.
    """
    if not isinstance(cam, ShallowCAM):
        raise TypeError(f"the explorer needs a ShallowCAM, got {type(cam).__name__}")
    if not len(photos) == len(names) == inputs.shape[0]:
        raise ValueError(
            f"got {inputs.shape[0]} inputs, {len(photos)} photos and {len(names)} names"
        )
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    with torch.no_grad():
        probabilities = cam.forward_func(inputs).softmax(dim=1)
    outputs = probabilities.shape[1]
    if classes is None:
        classes = output_class_names(outputs)
    if len(classes) != outputs:
        raise ValueError(f"got {len(classes)} class names for {outputs} outputs")
    if target is not None and not 0 <= target < outputs:
        raise ValueError(f"target {target} is out of range for {outputs} classes")
    ranked = probabilities.topk(min(top, outputs), dim=1).indices
    if target is not None:  # maps for the target everywhere; used where it is not ranked
        ranked = torch.cat([ranked, ranked.new_full((len(ranked), 1), target)], dim=1)
    # One pass per class rank gives both the layer maps and the gate.
    per_rank = [
        cam.pass_maps(inputs, target=ranked[:, rank].tolist()) for rank in range(ranked.shape[1])
    ]
    explained = []
    for i, (photo, name) in enumerate(zip(photos, names, strict=True)):
        order = ranked[i].tolist()
        if target is not None and target in order[:-1]:
            order = order[:-1]
        explained.append(
            ExplainedImage(
                name=name,
                photo=photo,
                classes=tuple(order),
                class_names=tuple(classes[c] for c in order),
                probabilities=tuple(float(probabilities[i, c]) for c in order),
                layer_maps=tuple(
                    tuple(m[i, 0].detach().float().cpu() for m in per_rank[rank][0])
                    for rank in range(len(order))
                ),
                initial=0 if target is None else order.index(target),
                gate_maps=tuple(
                    per_rank[rank][1][i, 0].detach().float().cpu() for rank in range(len(order))
                )
                if cam.class_gate
                else None,
            )
        )
    return explained


def toggle_meaning(cam: ShallowCAM) -> str:
    """What unticking a layer in the explorer means for this :class:`ShallowCAM`.

    The page re-fuses the embedded layer maps. Without propagation, or with gates
    that do not depend on which layers are hooked (``"relu"`` or modules), that
    equals running ShallowCAM without the layer. With ``gates="layers"`` or
    ``"relu-below"`` a layer's map depends on the layers above it (their gates
    truncate the gradient that reaches it), so the page says it is not the same.
    With ``class_gate=True`` the page keeps gating by Grad-CAM at the deepest layer
    when that layer is unticked, where ShallowCAM without it would gate by the
    deepest layer left; a sentence says so.

    Args:
        cam (ShallowCAM): The explainer whose maps the page shows.

    Returns:
        str: One or two sentences for the page.

    Examples::

        >>> from torchvision.models import resnet18
        >>> from captum_shallow import ShallowCAM
        >>> from captum_shallow.visualization._explorer import toggle_meaning
        >>> model = resnet18().eval()
        >>> layers = [model.layer1, model.layer4]
        >>> print(toggle_meaning(ShallowCAM(model, layers, propagation=None, class_gate=False)))
        Unticking a layer fuses the other layers' maps: the same as ShallowCAM without that layer.
        >>> print(toggle_meaning(ShallowCAM(model, layers, propagation=None)))  # gated by default
        Unticking a layer fuses the other layers' maps: the same as ShallowCAM without that layer.
        The gate stays Grad-CAM at layer4 when layer4 is unticked; ShallowCAM without it would
        gate by the deepest layer left.
    """
    gates = cam.gates
    if cam.propagation is None or gates not in ("layers", "relu-below"):
        meaning = (
            "Unticking a layer fuses the other layers' maps: the same as ShallowCAM "
            "without that layer."
        )
    else:
        where = (
            "at every fused layer deeper than the shallowest"
            if gates == "layers"
            else "at every ReLU before the deepest fused layer"
        )
        meaning = (
            "Unticking a layer fuses the other layers' maps as they were computed with "
            f"every layer hooked; ShallowCAM without that layer differs, because propagation "
            f"truncates the gradient {where} (gates={gates!r}), so each layer's map depends "
            "on the layers above it."
        )
    if cam.class_gate:
        deepest = layer_name(cam.forward_func, cam.layers[-1])
        meaning += (
            f" The gate stays Grad-CAM at {deepest} when {deepest} is unticked; ShallowCAM "
            "without it would gate by the deepest layer left."
        )
    return meaning


class Explorer:
    """An interactive page of layer maps, fused in the page, for a few images.

    Per image: the photo; the top classes with their probabilities and a switch
    between them; every layer's map and the fused map, with a toggle per layer;
    the fused map recomputed in the page with :func:`~captum_shallow.fuse_maps`'
    formula (and any of ``EXPLORER_FUSIONS``), and a sentence saying what unticking
    a layer means (``toggling``); with gate maps (``ExplainedImage.gate_maps``), the
    fused map multiplied by the gate as ``fuse_maps(..., gate=...)`` does, and a
    tick box "Gate by Grad-CAM at the deepest layer" that turns the gate off and on;
    sliders for the overlay's opacity and for the
    background threshold, with the pseudo-mask it gives; the settings as text.
    Display it in Jupyter (``_repr_html_``), or :meth:`save` one self-contained
    HTML file.

    The pseudo-mask is IRN's for the classes ticked as present (the class shown,
    until classes are ticked by hand): each class's map, upsampled to the photo and divided by its
    maximum, competes with the constant background score :math:`t`, and a pixel
    takes the argmax (ties to the background), as
    :func:`~captum_shallow.segmentation.pseudo_masks` does.

    Args:
        images (Sequence[ExplainedImage]): The images, e.g. from :func:`explain_images`.
        layers (Sequence[str]): The layers' names, in the maps' order.
        settings (Mapping[str, str]): Shown as text, e.g. a ShallowCAM's
            ``settings()`` with the model's name.
        fusion (str, optional): The fusion shown first, one of ``EXPLORER_FUSIONS``.
            Default: the localisation task's (:func:`~captum_shallow.task_defaults`)
        gamma (float, optional): The ``tanh(gamma * M)`` scaling of
            :func:`~captum_shallow.fuse_maps`; None skips it.
            Default: None
        title (str, optional): The page's title.
            Default: ``"captum-shallow explorer"``
        cmap (str, optional): Matplotlib colour map of the maps.
            Default: ``DEFAULT_CMAP`` (``"inferno"``)
        opacity (float, optional): The overlay opacity slider's start.
            Default: ``DEFAULT_OPACITY`` (0.6)
        threshold (float, optional): The background threshold slider's start.
            Default: the localisation task's (:func:`explore` starts at the
            explainer's task's)
        toggling (str, optional): What unticking a layer means, shown by the toggles.
            Default: ``"Unticking a layer fuses the other layers' maps as computed."``
            (:func:`explore` says more, see ``toggle_meaning``)
        class_gate (bool, optional): Whether the page starts with the fused map
            gated by the images' ``gate_maps`` (the gate of the last of ``layers``);
            True needs gate maps, which every image has or none has.
            Default: None (gated where the images have gate maps)

    Raises:
        ValueError: For no image, an unknown fusion, a gamma, opacity or threshold
            out of range, maps whose number or shapes differ between classes or
            from the layer names, gate maps on some images only, or not one per
            class, of shapes that differ or holding NaN or inf, and
            ``class_gate=True`` without gate maps.
        TypeError: For a gate map that is not a 2-D Tensor, or a ``class_gate``
            that is not a bool.
    """

    def __init__(
        self,
        images: Sequence[ExplainedImage],
        layers: Sequence[str],
        settings: Mapping[str, str],
        fusion: str | None = None,
        gamma: float | None = None,
        title: str = "captum-shallow explorer",
        cmap: str = DEFAULT_CMAP,
        opacity: float = DEFAULT_OPACITY,
        threshold: float | None = None,
        toggling: str = "Unticking a layer fuses the other layers' maps as computed.",
        class_gate: bool | None = None,
    ) -> None:
        if not images:
            raise ValueError("the explorer needs at least one image")
        defaults = task_defaults("localisation")
        fusion = defaults.fusion if fusion is None else fusion
        threshold = defaults.threshold if threshold is None else threshold
        if fusion not in EXPLORER_FUSIONS:
            raise ValueError(f"fusion must be one of {EXPLORER_FUSIONS}, got {fusion!r}")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be positive or None, got {gamma!r}")
        for name, value in (("opacity", opacity), ("threshold", threshold)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        shapes = [tuple(m.shape) for m in images[0].layer_maps[0]]
        if len(shapes) != len(layers):
            raise ValueError(f"got {len(shapes)} layer maps for {len(layers)} layer names")
        for image in images:
            for maps in image.layer_maps:
                if [tuple(m.shape) for m in maps] != shapes:
                    raise ValueError(
                        f"every class of every image needs maps of shapes {shapes} "
                        f"(image {image.name!r})"
                    )
        self.gate_shape = _gate_shape(images)
        if class_gate is None:
            class_gate = self.gate_shape is not None
        if not isinstance(class_gate, bool):
            raise TypeError(f"class_gate must be a bool or None, got {class_gate!r}")
        if class_gate and self.gate_shape is None:
            raise ValueError(
                "class_gate=True needs gate maps: give each image its gate_maps (e.g. "
                "explain_images with a ShallowCAM(..., class_gate=True))"
            )
        self.images = list(images)
        self.layers = list(layers)
        self.settings = dict(settings)
        self.fusion = fusion
        self.gamma = gamma
        self.title = title
        self.cmap = cmap
        self.opacity = float(opacity)
        self.threshold = float(threshold)
        self.toggling = toggling
        self.class_gate = class_gate

    def data(self) -> dict[str, Any]:
        """Everything the page shows, as the JSON object it embeds: with gate maps,
        ``gate`` says where the gate is (``layer``, the last of the layers, ``height``
        and ``width``; else None), ``classGate`` whether the page starts gated, and
        each class has its ``gate`` map, stored as the layer maps are."""
        first = self.images[0].layer_maps[0]
        gate = (
            None
            if self.gate_shape is None
            else {
                "layer": self.layers[-1],
                "height": self.gate_shape[0],
                "width": self.gate_shape[1],
            }
        )
        return {
            "version": 3,
            "title": self.title,
            "layers": [
                {"name": name, "height": int(m.shape[0]), "width": int(m.shape[1])}
                for name, m in zip(self.layers, first, strict=True)
            ],
            "fusion": self.fusion,
            "fusions": list(EXPLORER_FUSIONS),
            "gamma": self.gamma,
            "opacity": self.opacity,
            "threshold": self.threshold,
            "toggling": self.toggling,
            "gate": gate,
            "classGate": self.class_gate,
            "colormap": {"name": self.cmap, "lut": _colormap_table(self.cmap)},
            "colorbarLabel": COLORBAR_LABEL,
            "settings": [[key, value] for key, value in self.settings.items()],
            "images": [_image_data(image) for image in self.images],
        }

    def fragment(self, root_id: str) -> str:
        """The explorer as an HTML fragment whose element ids all start with ``root_id``."""
        if not re.fullmatch(r"[A-Za-z][\w-]*", root_id):
            raise ValueError(f"root_id must be a plain HTML id, got {root_id!r}")
        payload = json.dumps(self.data(), separators=(",", ":"), allow_nan=False)
        page, css, script = (_template(name) for name in _TEMPLATES)
        return _fill(
            page,
            ROOT_ID=root_id,
            CSS=css,
            # "<" escaped, so no text in the data can close the script element.
            DATA=payload.replace("<", "\\u003c"),
            SCRIPT=script,
        )

    def to_html(self) -> str:
        """One self-contained HTML page: no network, no external file."""
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<link rel="icon" href="data:,">\n'
            f"<title>{html.escape(self.title)}</title>\n</head>\n"
            f'<body class="csx-page">\n{self.fragment("csx-report")}\n</body>\n</html>\n'
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` to ``path``, atomically; return the path."""
        with atomic_write(path) as stream:
            stream.write(self.to_html().encode("utf-8"))
        return Path(path)

    def _repr_html_(self) -> str:
        # A fresh id per display: one notebook may show several explorers.
        return self.fragment(f"csx-{uuid.uuid4().hex[:12]}")

    def __repr__(self) -> str:
        gated = ", class_gate=True" if self.class_gate else ""
        return (
            f"Explorer({len(self.images)} images, layers={self.layers}, "
            f"fusion={self.fusion!r}{gated})"
        )


def explore(
    cam: ShallowCAM,
    photos: Tensor | str | os.PathLike[str] | Sequence[Tensor | str | os.PathLike[str]],
    names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    top: int = TOP_CLASSES,
    target: int | None = None,
    input_size: int | None = None,
    model_name: str | None = None,
    **options: Any,
) -> Explorer:
    """Explain photos with a :class:`~captum_shallow.ShallowCAM` and explore the maps.

    Each photo is resized to the model's square input and normalised with
    ImageNet's statistics (:func:`captum_shallow.io.preprocess`); the maps of
    its ``top`` most probable classes are computed; the result shows inline in
    Jupyter and :meth:`Explorer.save` writes it as one HTML file.

    Args:
        cam (ShallowCAM): The explainer; its ``forward_func`` is the model.
        photos (Tensor, path or sequence of them): (3, H, W) photos or image files.
        names (Sequence[str], optional): The photos' titles.
            Default: None (file names, or "image 1", "image 2", ...)
        classes (Sequence[str], optional): Class names in output order.
            Default: ImageNet's for 1000 outputs, else the indices
        top (int, optional): Classes per photo.
            Default: ``TOP_CLASSES`` (5)
        target (int, optional): A class to show first (added if not in the top).
            Default: None (the top class)
        input_size (int, optional): Side of the square model input.
            Default: None (the model's ``input_image_size``, else 224)
        model_name (str, optional): Shown in the settings.
            Default: None (the model's class name)
        **options: Other arguments of :class:`Explorer` (``title``, ``cmap``,
            ``opacity``, ``threshold``, ``toggling``); ``threshold`` defaults to
            the task's (:func:`~captum_shallow.task_defaults`), ``toggling`` to
            what unticking a layer means for ``cam``.

    Returns:
        Explorer: Displays itself in Jupyter; ``.save(path)`` writes the page.

    Examples::

        >>> import torch
        >>> from torchvision.models import resnet18
        >>> from captum_shallow import ShallowCAM
        >>> from captum_shallow.visualization import explore
        >>> model = resnet18(num_classes=3).eval()
        >>> cam = ShallowCAM(model, [model.layer1, model.layer2])
        >>> photo = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
        >>> explorer = explore(cam, photo, input_size=64)
        >>> explorer
        Explorer(1 images, layers=['layer1', 'layer2'], fusion='mean', class_gate=True)
        >>> len(explorer.images[0].classes)  # the top 5 of 3 classes
        3
        >>> explorer.save("explorer.html")  # doctest: +SKIP
    """

    if not isinstance(cam, ShallowCAM):
        raise TypeError(f"the explorer needs a ShallowCAM, got {type(cam).__name__}")
    if isinstance(photos, (Tensor, str, os.PathLike)):
        photos = [photos]
    tensors: list[Tensor] = []
    titles: list[str] = []
    for number, photo in enumerate(photos, start=1):
        if isinstance(photo, Tensor):
            tensors.append(photo)
            titles.append(f"image {number}")
        else:
            tensors.append(read_image(photo))
            titles.append(Path(photo).name)
    if names is not None:
        if len(names) != len(tensors):
            raise ValueError(f"got {len(names)} names for {len(tensors)} photos")
        titles = list(names)
    model = cam.forward_func
    size = input_size or int(getattr(model, "input_image_size", None) or 224)
    device = _device(model)
    inputs = torch.stack([preprocess(photo, size) for photo in tensors]).to(device)
    explained = explain_images(cam, inputs, tensors, titles, classes, top, target)
    return explorer_for(cam, explained, model_name, size, **options)


def explorer_for(
    cam: ShallowCAM,
    images: Sequence[ExplainedImage],
    model_name: str | None = None,
    input_size: int | None = None,
    **options: Any,
) -> Explorer:
    """An :class:`Explorer` of ``cam``'s maps: its layers, its settings
    (:meth:`~captum_shallow.ShallowCAM.settings`, after the model's name and the input
    size), its fusion and gamma, its class gate (on when ``cam.class_gate``, whose
    images need gate maps, as :func:`explain_images` gives them), the background
    threshold of its task
    (:func:`~captum_shallow.task_defaults`) and what unticking a layer means for it
    (:func:`toggle_meaning`), unless ``options`` say otherwise."""
    model = cam.forward_func
    settings = {"model": model_name or type(model).__name__}
    if input_size is not None:
        settings["input"] = f"{input_size}×{input_size} px"
    settings.update(cam.settings())
    layers = [layer_name(model, layer) for layer in cam.layers]
    options.setdefault("threshold", task_defaults(cam.task).threshold)
    options.setdefault("toggling", toggle_meaning(cam))
    options.setdefault("class_gate", cam.class_gate)
    return Explorer(images, layers, settings, fusion=str(cam.fusion), gamma=cam.gamma, **options)


def _device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


def _gate_shape(images: Sequence[ExplainedImage]) -> tuple[int, int] | None:
    """The shape of the images' gate maps, None without any; a clear error for gate
    maps on some images only, not one per class, of several shapes or not finite."""
    gated = [image.gate_maps is not None for image in images]
    if not any(gated):
        return None
    if not all(gated):
        missing = images[gated.index(False)].name
        raise ValueError(
            f"image {missing!r} has no gate maps and others have: give every image "
            "its gate maps, or none"
        )
    shape: tuple[int, int] | None = None
    for image in images:
        gates = image.gate_maps
        assert gates is not None
        if len(gates) != len(image.classes):
            raise ValueError(
                f"image {image.name!r} has {len(gates)} gate maps for {len(image.classes)} "
                "classes; give one per class"
            )
        for gate in gates:
            if not isinstance(gate, Tensor) or gate.dim() != 2:
                what = tuple(gate.shape) if isinstance(gate, Tensor) else type(gate).__name__
                raise TypeError(
                    f"a gate map must be a (h, w) Tensor, got {what} (image {image.name!r})"
                )
            if shape is None:
                shape = (int(gate.shape[0]), int(gate.shape[1]))
            if tuple(gate.shape) != shape:
                raise ValueError(
                    f"every class of every image needs a gate map of shape {shape}, got "
                    f"{tuple(gate.shape)} (image {image.name!r})"
                )
            if not bool(torch.isfinite(gate).all()):
                raise ValueError(f"a gate map of image {image.name!r} contains NaN or inf")
    return shape


def _image_data(image: ExplainedImage) -> dict[str, Any]:
    uri, width, height = _photo_uri(image.photo)
    gates = image.gate_maps
    return {
        "name": image.name,
        "photo": uri,
        "width": width,
        "height": height,
        "initial": image.initial,
        "classes": [
            {
                "index": index,
                "name": name,
                "probability": round(probability, 6),
                "maps": [_encode_map(m) for m in maps],
                **({} if gates is None else {"gate": _encode_map(gates[pos])}),
            }
            for pos, (index, name, probability, maps) in enumerate(
                zip(
                    image.classes,
                    image.class_names,
                    image.probabilities,
                    image.layer_maps,
                    strict=True,
                )
            )
        ],
    }


def _photo_uri(photo: Tensor) -> tuple[str, int, int]:
    """The photo as a JPEG data URI, of at most ``PHOTO_PIXELS**2`` pixels and
    ``PHOTO_SIDE`` on its longest side."""
    picture = Image.fromarray(image_to_numpy(photo))
    width, height = picture.size
    scale = min(1.0, PHOTO_PIXELS / (width * height) ** 0.5, PHOTO_SIDE / max(width, height))
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/jpeg;base64,{encoded}", picture.width, picture.height


def _encode_map(layer_map: Tensor) -> str:
    """A map's positive part over its maximum, 16-bit little-endian, base64.

    The page divides every layer map (and every gate map) by its maximum before
    fusing, so this scale loses nothing but the quantisation (at most 1/131070 of
    the map's maximum).
    """
    values = layer_map.detach().double().clamp(min=0)
    peak = float(values.max()) if values.numel() else 0.0
    scaled = values / peak if peak > 0 else torch.zeros_like(values)
    quantised = (scaled * 65535).round().numpy().astype("<u2")
    return base64.b64encode(quantised.tobytes()).decode("ascii")


def _colormap_table(name: str) -> str:
    """A matplotlib colour map as 256 RGB triples, base64."""
    try:
        colormap = colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colour map {name!r}") from None
    rgb = np.round(colormap(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _fill(template: str, **values: str) -> str:
    """Replace each ``{{NAME}}`` once; inserted text is not scanned again."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
