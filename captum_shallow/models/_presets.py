"""Which layers to explain, shallow to deep, found from a model's structure.

Each supported architecture names its stage-level modules (the candidates); one
forward pass of a blank image with hooks keeps those that run exactly once and
return a feature map, and, at each spatial resolution, the last of them: the
module whose output the next, coarser stage reads. No weights are needed.

Activation modules are never candidates: EfficientNet-Lite's stem and head
share one ``_swish`` and a torchvision ResNet block calls its ``relu`` several
times, while Captum keeps only a module's last call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._errors import unknown_name


@dataclass(frozen=True)
class LayerPreset:
    """The layers to hook in one architecture, shallow to deep.

    Args:
        architecture (str): The architecture family, e.g. ``"ResNet"``.
        layers (tuple[str, ...]): Qualified module names (as in
            ``model.named_modules()``), shallow to deep.
        strides (tuple[int, ...]): Input size over map size for each layer.
        channels (tuple[int, ...]): Channels of each layer's output.
        input_size (tuple[int, int]): The input (height, width) they were found at.

    Examples::

        >>> from captum_shallow.models import LayerPreset
        >>> preset = LayerPreset("Net", ("a", "b", "c"), (2, 4, 8), (8, 16, 32), (64, 64))
        >>> preset.shallow, preset.fusion, preset.last, preset.map_size("b")
        ('b', ('b', 'c'), 'c', (16, 16))
    """

    architecture: str
    layers: tuple[str, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    input_size: tuple[int, int]

    @property
    def last(self) -> str:
        """The deepest layer: where Grad-CAM is usually computed."""
        return self.layers[-1]

    @property
    def shallow(self) -> str:
        """The first layer at stride 4 or more: high resolution, not yet the stem."""
        pairs = zip(self.layers, self.strides, strict=True)
        return next((n for n, s in pairs if s >= 4), self.layers[0])

    @property
    def fusion(self) -> tuple[str, ...]:
        """The layers fused by default: from :attr:`shallow` to the last.

        Stride 2 is mostly edges and noise. The last stage is kept: with
        :class:`~captum_shallow.ShallowCAM`'s product fusion it gates the shallow
        maps' noise (grid pointing 0.800 without it, 0.950 with it on Lite0;
        docs/evidence.rst), while max or mean fusion would let its coarse map win.
        """
        return self.layers[self.layers.index(self.shallow) :]

    def map_size(self, layer: str) -> tuple[int, int]:
        """The map size of ``layer`` at the preset's input size.

        Args:
            layer (str): One of :attr:`layers`.

        Returns:
            tuple[int, int]: (height, width) of the layer's output.
        """
        stride = self.strides[self.layers.index(layer)]
        return self.input_size[0] // stride, self.input_size[1] // stride


def layer_preset(model: nn.Module, input_size: int | tuple[int, int] | None = None) -> LayerPreset:
    """The stage outputs of a supported architecture, shallow to deep.

    Supported: EfficientNet-Lite (``_blocks.i``), torchvision ResNet / ResNeXt /
    Wide ResNet (``layer1`` to ``layer4``), VGG (the max-pool ending each
    stage), DenseNet (dense blocks and ``norm5``), MobileNetV2/V3, EfficientNet
    and ConvNeXt (the children of ``features``). Runs one forward pass of zeros
    under :func:`torch.no_grad` in eval mode on the model's device (the mode is
    restored); it works on a ``meta``-device model too.

    Args:
        model (nn.Module): The model.
        input_size (int or tuple[int, int], optional): The input size to measure
            strides at.
            Default: ``model.input_image_size`` if set, else 224

    Returns:
        LayerPreset: The layers, their strides and channels.

    Raises:
        ValueError: For an architecture without a preset.

    Examples::

        >>> from captum_shallow.models import build_model, layer_preset
        >>> preset = layer_preset(build_model("resnet18"))
        >>> preset.layers, preset.strides
        (('layer1', 'layer2', 'layer3', 'layer4'), (4, 8, 16, 32))
    """
    family, candidates = _candidates(model)
    if input_size is None:
        input_size = int(getattr(model, "input_image_size", None) or 224)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    modules = dict(model.named_modules())
    calls: dict[str, list[tuple[int, ...]]] = {name: [] for name in candidates}
    handles = [modules[name].register_forward_hook(_recorder(calls[name])) for name in candidates]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    # Keep modules run once that return a feature map, then the last per resolution.
    once = [(n, calls[n][0]) for n in candidates if len(calls[n]) == 1 and len(calls[n][0]) == 4]
    kept = [
        (name, shape)
        for i, (name, shape) in enumerate(once)
        if i + 1 == len(once) or once[i + 1][1][2:] != shape[2:]
    ]
    return LayerPreset(
        architecture=family,
        layers=tuple(name for name, _ in kept),
        strides=tuple(size[0] // shape[2] for _, shape in kept),
        channels=tuple(shape[1] for _, shape in kept),
        input_size=(size[0], size[1]),
    )


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The modules of ``model`` with the given qualified names.

    Args:
        model (nn.Module): The model.
        names (Sequence[str]): Names as in ``model.named_modules()``, e.g.
            ``["layer1", "layer2"]`` or ``["_blocks.2"]``.

    Returns:
        list[nn.Module]: The modules, in the order of ``names``.

    Raises:
        ValueError: For an empty list or an unknown name (close names are
            suggested).

    Examples::

        >>> from captum_shallow.models import build_model, resolve_layers
        >>> model = build_model("resnet18")
        >>> resolve_layers(model, ["layer2"])[0] is model.layer2
        True
    """
    if not names:
        raise ValueError("no layer given")
    modules = {name: module for name, module in model.named_modules() if name}
    missing = [name for name in names if name not in modules]
    if missing:
        raise unknown_name(f"layer for {type(model).__name__}", missing[0], modules)
    return [modules[name] for name in names]


#: One architecture per supported family, for the docs' layer-choice table.
DOCUMENTED_ARCHITECTURES: tuple[str, ...] = (
    "efficientnet-lite0",
    "resnet50",
    "vgg16",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)


def layer_choice_table(architectures: Sequence[str] = DOCUMENTED_ARCHITECTURES) -> str:
    """The docs' layer-choice table (Markdown), computed from the presets.

    Each architecture is built on the ``meta`` device, so no weights are read or
    allocated.

    Args:
        architectures (Sequence[str], optional): Names for :func:`build_model`.
            Default: ``DOCUMENTED_ARCHITECTURES``

    Returns:
        str: One row per architecture: the preset's layers with their map sizes
        at 224 px, the shallow layer, the fused layers and the last layer.

    Examples::

        >>> from captum_shallow.models import layer_choice_table
        >>> row = layer_choice_table(["resnet18"]).splitlines()[-1]
        >>> row.split(" | ")[:2]
        ['| resnet18', '`layer1` (56), `layer2` (28), `layer3` (14), `layer4` (7)']
    """
    from ._loading import _construct

    rows = [
        "| architecture | layers, shallow to deep (map size at 224 px) "
        "| shallow | fused by default | Grad-CAM (last) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arch in architectures:
        with torch.device("meta"):
            model = _construct(arch, 1000)
        preset = layer_preset(model, 224)
        layers = ", ".join(
            f"`{n}` ({224 // s})" for n, s in zip(preset.layers, preset.strides, strict=True)
        )
        fused = ", ".join(f"`{n}`" for n in preset.fusion)
        rows.append(f"| {arch} | {layers} | `{preset.shallow}` | {fused} | `{preset.last}` |")
    return "\n".join(rows)


def _candidates(model: nn.Module) -> tuple[str, list[str]]:
    """The architecture family and its stage-level module names, in forward order."""
    if type(model).__module__.startswith("efficientnet_lite_pytorch"):
        return "EfficientNet-Lite", [f"_blocks.{i}" for i in range(len(model._blocks))]  # type: ignore[arg-type]
    # torchvision's classes, imported only now: importing torchvision.models takes seconds.
    import torchvision.models as tvm
    from torchvision.models.densenet import DenseNet

    if isinstance(model, tvm.ResNet):
        return "ResNet", ["layer1", "layer2", "layer3", "layer4"]
    if isinstance(model, tvm.VGG):
        # The max-pools end the stages; the ReLUs before them are in-place.
        return "VGG", [
            f"features.{i}"
            for i, module in enumerate(model.features)
            if isinstance(module, nn.MaxPool2d)
        ]
    if isinstance(model, DenseNet):
        blocks = [n for n, _ in model.features.named_children() if n.startswith("denseblock")]
        return "DenseNet", [f"features.{n}" for n in blocks] + ["features.norm5"]
    families: dict[str, Any] = {
        "MobileNetV2": tvm.MobileNetV2,
        "MobileNetV3": tvm.MobileNetV3,
        "EfficientNet": tvm.EfficientNet,
        "ConvNeXt": tvm.ConvNeXt,
    }
    for family, cls in families.items():
        if isinstance(model, cls):
            return family, [f"features.{n}" for n, _ in model.features.named_children()]
    raise ValueError(
        f"no layer preset for {type(model).__name__}; name the layers yourself "
        "(see model.named_modules())"
    )


def _recorder(calls: list[tuple[int, ...]]) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        calls.append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())

    return hook
