"""Which layers to explain, shallow to deep, found from a model's structure.

One probing forward pass of a blank image (on the ``meta`` device where the
model allows it: no weights are read) keeps, at each resolution, the last
module that runs exactly once and returns a map, the output the next, coarser
stage reads (:mod:`._structure` says how branches, transitions and
transformers are handled). Any model whose layers produce spatial maps gets a
preset; a few known architectures restrict the candidates where structure
alone would pick worse layers (:func:`_known_stages`).

Activation modules are never picked when reused: EfficientNet-Lite's stem and
head share one ``_swish`` and a torchvision ResNet block calls its ``relu``
several times, while Captum keeps only a module's last call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from captum._utils.common import _format_additional_forward_args
from torch import nn

from .._errors import unknown_name
from .._modules import uncompiled
from ._structure import probe_model, stage_outputs

#: Layout names of :attr:`LayerPreset.layouts` as the docs' table words them.
_LAYOUT_WORDS = {"NCHW": "", "NHWC": ", channels-last", "tokens": ", tokens"}


@dataclass(frozen=True)
class LayerPreset:
    """The layers to hook in one architecture, shallow to deep.

    Args:
        architecture (str): The architecture family, e.g. ``"ResNet"``.
        layers (tuple[str, ...]): Qualified module names (as in
            ``model.named_modules()``), shallow to deep.
        strides (tuple[int, ...]): Input size over map size for each layer (where
            it does not divide, as a valid convolution's lost border pixels make
            it, the nearest power of two).
        channels (tuple[int, ...]): Channels of each layer's output.
        input_size (tuple[int, int]): The input (height, width) they were found at.
        layouts (tuple[str, ...], optional): Each layer's output layout:
            ``"NCHW"``, ``"NHWC"`` (channels last) or ``"tokens"`` (a
            transformer's ``(N, prefix + H*W, C)``).
            Default: all ``"NCHW"``
        map_sizes (tuple[tuple[int, int], ...], optional): Each layer's
            ``(height, width)`` at ``input_size``.
            Default: ``input_size`` divided by the strides

    Examples::

        >>> from captum_shallow.models import LayerPreset
        >>> preset = LayerPreset("Net", ("a", "b", "c"), (2, 4, 8), (8, 16, 32), (64, 64))
        >>> preset.shallow, preset.fusion, preset.last, preset.map_size("b")
        ('b', ('b', 'c'), 'c', (16, 16))
        >>> preset.reshape is None
        True
    """

    architecture: str
    layers: tuple[str, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    input_size: tuple[int, int]
    layouts: tuple[str, ...] = field(default=())
    map_sizes: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.layouts:
            object.__setattr__(self, "layouts", ("NCHW",) * len(self.layers))
        if not self.map_sizes:
            height, width = self.input_size
            sizes = tuple((height // s, width // s) for s in self.strides)
            object.__setattr__(self, "map_sizes", sizes)

    @property
    def reshape(self) -> str | None:
        """``"auto"`` when a layer's output is not ``(N, C, H, W)``, else None.

        The value for the CAM classes' and :class:`~captum_shallow.ShallowCAM`'s
        ``reshape=``.
        """
        return None if set(self.layouts) <= {"NCHW"} else "auto"

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
        return self.map_sizes[self.layers.index(layer)]


def layer_preset(
    model: nn.Module,
    input_size: int | tuple[int, int] | None = None,
    additional_forward_args: Any = None,
) -> LayerPreset:
    """The stage outputs of any model whose layers produce maps, shallow to deep.

    One forward pass of a blank image, hooked at every module, keeps per
    resolution the last module that runs exactly once and returns a map:
    ``(N, C, H, W)``, channels-last ``(N, H, W, C)`` (Swin) or a transformer's
    tokens ``(N, prefix + H*W, C)`` (ViT, whose class and register tokens are
    dropped). Side branches are never picked: every path from input to output
    must pass the module. A ViT's resolution never changes, so its layers are
    blocks at four depths instead. The pass runs on the ``meta`` device where
    the model allows it (no weights read, any dtype), else for real in the
    model's dtype on its device, under eval mode (every module's mode is
    restored; batch-norm statistics are never updated). A model compiled with
    ``torch.compile`` is probed through the module it wraps, uncompiled; its
    layers are named ``_orig_mod.<name>``, as in its ``named_modules()``.

    Args:
        model (nn.Module): The model; its first convolution's ``in_channels``
            (else 3) sets the image's channels.
        input_size (int or tuple[int, int], optional): The input size to measure
            strides at.
            Default: ``model.input_image_size`` or ``model.image_size`` if set, else 224
        additional_forward_args (Any, optional): What the model takes after the
            image, as for ``attribute()`` (a tuple for several arguments); the
            probe passes it with its one-image batch.
            Default: None

    Returns:
        LayerPreset: The layers, their strides, channels, layouts and map sizes.

    Raises:
        ValueError: When no module returns a map (name the layers yourself) or
            the probing forward pass fails.

    Examples::

        >>> from captum_shallow.models import build_model, layer_preset
        >>> preset = layer_preset(build_model("resnet18"))
        >>> preset.layers, preset.strides
        (('relu', 'layer1', 'layer2', 'layer3', 'layer4'), (2, 4, 8, 16, 32))
    """
    original = uncompiled(model)
    if original is not model:
        # torch.compile's wrapper: probing it would compile (and recompile) the probe.
        # Probe the module it wraps; the names keep the prefix that model.named_modules()
        # gives, so that resolve_layers(model, ...) finds them.
        preset = layer_preset(original, input_size, additional_forward_args)
        return replace(preset, layers=tuple(f"_orig_mod.{name}" for name in preset.layers))
    if input_size is None:
        default = getattr(model, "input_image_size", None) or getattr(model, "image_size", None)
        input_size = int(default) if isinstance(default, int) else 224
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    size = (int(size[0]), int(size[1]))
    family, allowed = _known_stages(model)
    probe = probe_model(model, size, _format_additional_forward_args(additional_forward_args) or ())
    stages = stage_outputs(probe, allowed)
    if not stages:
        raise ValueError(
            f"no layer of {type(model).__name__} runs once per forward pass and returns a "
            f"spatial map ((N, C, H, W), channels-last or tokens) at a {size[0]}x{size[1]} "
            "input; name the layers yourself (see model.named_modules())"
        )
    layouts = [stage.layout for stage in stages]
    return LayerPreset(
        architecture=family or type(model).__name__,
        layers=tuple(stage.name for stage in stages),
        strides=tuple(probe.stride(stage) for stage in stages),
        channels=tuple(layout.channels for layout in layouts if layout),
        input_size=size,
        layouts=tuple(layout.layout for layout in layouts if layout),
        map_sizes=tuple(layout.grid for layout in layouts if layout),
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


def layer_choice_table(architectures: Sequence[str] | None = None) -> str:
    """The docs' layer-choice table (Markdown), computed from the presets.

    Each architecture is built on the ``meta`` device, so no weights are read or
    allocated.

    Args:
        architectures (Sequence[str], optional): Names for :func:`build_model`.
            Default: every one of :func:`architectures`

    Returns:
        str: One row per architecture: the preset's layers with their map sizes
        at 224 px (and layout when not ``(N, C, H, W)``), the shallow layer, the
        fused layers and the last layer.

    Examples::

        >>> from captum_shallow.models import layer_choice_table
        >>> row = layer_choice_table(["resnet18"]).splitlines()[-1]
        >>> row.split(" | ")[:2]
        ['| resnet18', '`relu` (112), `layer1` (56), `layer2` (28), `layer3` (14), `layer4` (7)']
    """
    from ._loading import architectures as all_architectures
    from ._loading import construct_on_meta

    rows = [
        "| architecture | layers, shallow to deep (map size at 224 px) "
        "| shallow | fused by default | Grad-CAM (last) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arch in all_architectures() if architectures is None else architectures:
        preset = layer_preset(construct_on_meta(arch), 224)
        layers = ", ".join(
            f"`{name}` ({size[0]}{_LAYOUT_WORDS[layout]})"
            for name, size, layout in zip(
                preset.layers, preset.map_sizes, preset.layouts, strict=True
            )
        )
        fused = ", ".join(f"`{n}`" for n in preset.fusion)
        rows.append(f"| {arch} | {layers} | `{preset.shallow}` | {fused} | `{preset.last}` |")
    return "\n".join(rows)


def _known_stages(model: nn.Module) -> tuple[str | None, list[str] | None]:
    """A known architecture's family and stage modules, where structure alone picks worse.

    EfficientNet-Lite: its stem and head share one ReLU6 module (``_swish``),
    which therefore runs twice and cannot be hooked, so the last module at
    stride 32 that runs once is the head's batch norm, *before* its
    activation; its blocks (``_blocks.i``) are the stage outputs.
    """
    if type(model).__module__.startswith("efficientnet_lite_pytorch"):
        blocks = [f"_blocks.{i}" for i in range(len(model._blocks))]  # type: ignore[arg-type]
        return "EfficientNet-Lite", blocks
    return None, None
