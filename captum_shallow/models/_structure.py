"""A model's stage outputs, found from its structure by one probing forward pass.

The probe runs a blank image through the model with a hook on every module,
on the ``meta`` device (no weights are read, nothing is computed) or, when an
operation has no meta kernel, for real in the model's own dtype and device.
A module is a candidate when it runs exactly once (Captum keeps only a
module's last call, so a reused activation never qualifies) and returns a map:
``(N, C, H, W)``, channels-last ``(N, H, W, C)`` or a transformer's tokens
``(N, prefix + H*W, C)`` (:func:`~captum_shallow._layout.infer_layout`).
At each resolution (one octave of stride) the last candidate is kept, with
three corrections:

- it must be a *cut*: every path from the input to the output passes through
  it (checked on the autograd graph), so a side branch or one arm of a fork
  never stands for the stage;
- a module inside a transition (a module that takes this resolution and
  returns a coarser one, such as ConvNeXt's LayerNorm-then-conv downsampler)
  begins the next stage and is skipped;
- a token resolution that never changes (a ViT) is explained by depth: its
  repeated blocks at four depths; with a class token as the readout, each
  block's first LayerNorm (:func:`_depths` says why).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from .._layout import GridLayout, infer_layout

# An adaptive pool resizes to a fixed grid whatever the input: a resampler, not a stage.
_RESAMPLERS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class ModuleCall:
    """The first call of one module during the probe.

    Args:
        name (str): Qualified module name.
        module (nn.Module): The module.
        end (int): When the call returned, counting every module call (a
            container returns after its children).
        output (Tensor): Its output.
        node (Any): ``output.grad_fn`` at the call (before any in-place change).
        version (int): ``output._version`` at the call: an in-place activation
            returns its input's tensor object, changed.
        layout (GridLayout or None): The output's layout if it is a map of more
            than one cell.
        octave (int or None): The output's stride as a power of two, rounded (a
            valid convolution's few lost pixels keep the octave); None without
            a map.
        input_octave (int or None): The first input's, likewise.
    """

    name: str
    module: nn.Module
    end: int
    output: Tensor
    node: Any
    version: int
    layout: GridLayout | None
    octave: int | None
    input_octave: int | None


@dataclass(frozen=True)
class Probe:
    """What one probing forward pass saw.

    Args:
        calls (dict[str, ModuleCall]): First calls of the modules that returned a
            tensor, by name.
        counts (Counter[str]): Calls per module name.
        output_node (Any): The model output's ``grad_fn``.
        image (Tensor): The probing input.
        input_size (tuple[int, int]): Its ``(H, W)``.
    """

    calls: dict[str, ModuleCall]
    counts: Counter[str]
    output_node: Any
    image: Tensor
    input_size: tuple[int, int]

    def stride(self, call: ModuleCall) -> int:
        """Input height over map height: exact where it divides, else the octave's."""
        height = call.layout.grid[0] if call.layout else 1
        if self.input_size[0] % height == 0:
            return self.input_size[0] // height
        return 2 ** (call.octave or 0)


def probe_model(
    model: nn.Module, input_size: tuple[int, int], additional_forward_args: tuple[Any, ...] = ()
) -> Probe:
    """Run a blank image through ``model`` with every module hooked.

    Args:
        model (nn.Module): The model; it runs in eval mode, and each module's
            mode is restored afterwards.
        input_size (tuple[int, int]): The image's ``(H, W)``.
        additional_forward_args (tuple, optional): Passed to the model after the
            image (tensors as meta tensors of their shape in the meta pass).
            Default: ()

    Returns:
        Probe: The calls.

    Raises:
        ValueError: When the model has uninitialised lazy modules, the forward
            pass fails on the meta device and for real, or the output does not
            depend on the input.
    """
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    if any(isinstance(t, (UninitializedParameter, UninitializedBuffer)) for t in tensors):
        # The probe's blank image would fix their shapes, maybe to the wrong size.
        raise ValueError(
            f"{type(model).__name__} has lazy modules that are not initialised yet; run the "
            "model once on a real input before finding its layers"
        )
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    device = next((t.device for t in tensors), torch.device("cpu"))
    convs = (m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    channels = next((conv.in_channels for conv in convs), 3)
    shape = (1, channels, *input_size)
    try:
        image = torch.zeros(shape, device="meta", dtype=dtype)
        return _probe(model, image, tuple(map(_on_meta, additional_forward_args)), meta=True)
    except Exception:  # an operation without a meta kernel, or data-dependent Python
        pass
    try:
        image = torch.zeros(shape, device=device, dtype=dtype)
        return _probe(model, image, additional_forward_args, meta=False)
    except Exception as error:  # whatever the model raises: the user must hear what
        reason = " ".join(str(error).split()) or type(error).__name__
        given = " and additional_forward_args" if additional_forward_args else ""
        raise ValueError(
            f"cannot find the layers of {type(model).__name__}: its forward pass on a blank "
            f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')} image on "
            f"{device}{given} failed ({reason}); pass input_size= the model's input size, "
            "additional_forward_args= the arguments it takes after the image, or name the "
            "layers yourself (see model.named_modules())"
        ) from None


def stage_outputs(probe: Probe, allowed: Collection[str] | None = None) -> list[ModuleCall]:
    """The stage outputs the probe saw, shallow to deep.

    Args:
        probe (Probe): The probe.
        allowed (Collection[str], optional): Restrict the candidates to these
            names (a known architecture's stages); their names are kept as given.
            Default: None (every module)

    Returns:
        list[ModuleCall]: One call per resolution (several depths for a token
        resolution that never changes), in forward order.
    """
    once = [c for c in probe.calls.values() if probe.counts[c.name] == 1]
    maps = [
        c
        for c in once
        if c.layout is not None
        and c.node is not None
        and not isinstance(c.module, _RESAMPLERS)
        and (allowed is None or c.name in allowed)
    ]
    transitions = _transitions(probe, once)
    chosen: dict[int, ModuleCall] = {}
    for call in sorted(maps, key=lambda c: c.end, reverse=True):
        octave = call.octave
        if (
            octave is None
            or octave in chosen
            or any(call.name.startswith(name + ".") and at == octave for name, at in transitions)
        ):
            continue
        if _is_cut(probe, call.node):
            chosen[octave] = call
    stages: list[ModuleCall] = []
    for call in chosen.values():
        if allowed is not None:
            stages.append(call)
        elif call.layout is not None and call.layout.layout == "tokens":
            stages.extend(_depths(probe, maps, call))
        else:
            stages.append(_stage_name(probe, once, call))
    return sorted(stages, key=lambda c: c.end)


def _transitions(probe: Probe, once: list[ModuleCall]) -> list[tuple[str, int | None]]:
    """Modules that take a map at one resolution and return the next (or no map),
    with only those two inside (ConvNeXt's downsampler, DenseNet's transition),
    and the octave they leave. A container of several stages is no transition."""
    inside: dict[str, set[int]] = {}
    for call in probe.calls.values():
        if call.octave is not None:
            parts = call.name.split(".")
            for depth in range(1, len(parts)):
                inside.setdefault(".".join(parts[:depth]), set()).add(call.octave)
    return [
        (call.name, call.input_octave)
        for call in once
        if call.input_octave is not None
        and call.octave != call.input_octave
        and inside.get(call.name, set()) <= {call.input_octave, call.octave}
    ]


def _is_cut(probe: Probe, node: Any) -> bool:
    """Whether every path from the output back to the input passes ``node``."""
    seen = {node}
    stack = [probe.output_node]
    while stack:
        function = stack.pop()
        if function is None or function in seen:
            continue
        seen.add(function)
        if getattr(function, "variable", None) is probe.image:
            return False
        stack.extend(parent for parent, _ in function.next_functions)
    return True


def _stage_name(probe: Probe, once: list[ModuleCall], call: ModuleCall) -> ModuleCall:
    """Of the modules returning this very tensor, the outermost that holds one stage.

    A ResNet's ``layer1`` returns its last block's tensor and is named for the
    stage; EfficientNet's ``features`` returns its last layer's and spans every
    stage, so its child ``features.8`` names the last one. Pass-through modules
    after the producer (an ``Identity``) are not its containers and never win.
    """
    aliases = [c for c in once if c.output is call.output and c.version == call.version]
    producer = min(aliases, key=lambda c: c.end)
    containers = [c for c in aliases if producer.name.startswith(c.name + ".")]
    for container in sorted(containers, key=lambda c: len(c.name)):
        children = [
            c.octave
            for c in probe.calls.values()
            if c.name.rpartition(".")[0] == container.name and c.octave is not None
        ]
        if all(octave == call.octave for octave in children):
            return container
    return producer


def _depths(probe: Probe, maps: list[ModuleCall], last: ModuleCall) -> Iterator[ModuleCall]:
    """A constant-resolution transformer's blocks at four depths (shallow means early).

    The blocks are the longest run of sibling modules of one class that are cuts
    at this resolution. With prefix tokens (a class token read by the head) each
    block stands by its first token map inside (a pre-norm block's first
    LayerNorm, pytorch-grad-cam's choice for ViTs): the head reads the patch
    tokens only through attention, whose input that is. A block's output would
    not do: the last block's patch tokens reach no output (zero gradient), and
    the one before feeds the patch tokens only to a LayerNorm, whose gradient is
    orthogonal to its input, so that a sum over channels of gradient times
    activation (HiResCAM, Grad-CAM) cancels to rounding noise.
    """
    siblings: dict[tuple[str, type], list[ModuleCall]] = {}
    for call in maps:
        if call.octave == last.octave and call.layout and call.layout.layout == "tokens":
            key = (call.name.rpartition(".")[0], type(call.module))
            siblings.setdefault(key, []).append(call)
    runs = [
        [c for c in run if _is_cut(probe, c.node)]
        for run in sorted(siblings.values(), key=len, reverse=True)
    ]
    blocks = next((sorted(run, key=lambda c: c.end) for run in runs if len(run) >= 2), [])
    if not blocks:
        yield last
        return
    if last.layout is not None and last.layout.prefix:
        blocks = [_first_map_inside(maps, block) for block in blocks]
    picks = {math.ceil(len(blocks) * quarter / 4) - 1 for quarter in (1, 2, 3, 4)}
    yield from (blocks[i] for i in sorted(picks))


def _first_map_inside(maps: list[ModuleCall], block: ModuleCall) -> ModuleCall:
    inside = [
        c
        for c in maps
        if c.name.startswith(block.name + ".")
        and c.octave == block.octave
        and c.layout is not None
        and c.layout.layout == "tokens"
    ]
    return min(inside, key=lambda c: c.end, default=block)


def _probe(model: nn.Module, image: Tensor, args: tuple[Any, ...], *, meta: bool) -> Probe:
    names = {module: name for name, module in model.named_modules() if name}
    size = (int(image.shape[-2]), int(image.shape[-1]))
    counts: Counter[str] = Counter()
    calls: dict[str, ModuleCall] = {}
    clock = itertools.count()

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        name = names[module]
        counts[name] += 1
        end = next(clock)
        if counts[name] == 1 and isinstance(output, Tensor):
            first = args[0] if args and isinstance(args[0], Tensor) else None
            layout = _map_layout(output, size)
            calls[name] = ModuleCall(
                name,
                module,
                end,
                output,
                output.grad_fn,
                output._version,
                layout,
                _octave(layout, size),
                None if first is None else _octave(_map_layout(first, size), size),
            )

    image.requires_grad_(True)
    handles = [module.register_forward_hook(hook) for module in names]
    # Each module's own mode: a training model may hold frozen (eval) batch norms.
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        # The probe is ours: warnings about a blank image are not the user's.
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if meta:
                state = {
                    name: torch.empty_like(tensor, device="meta")
                    for name, tensor in itertools.chain(
                        model.named_parameters(), model.named_buffers()
                    )
                }
                output = functional_call(model, state, (image, *args))
            else:
                output = model(image, *args)
    finally:
        for module, training in modes.items():
            module.training = training
        for handle in handles:
            handle.remove()
    output = _first_tensor(output)
    if output is None or output.grad_fn is None:
        raise ValueError("the model's output does not depend on its input through autograd")
    return Probe(calls, counts, output.grad_fn, image, size)


def _on_meta(value: Any) -> Any:
    """``value`` with its tensors replaced by meta tensors of their shape and dtype."""
    if isinstance(value, Tensor):
        return torch.empty_like(value, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(_on_meta(item) for item in value)
    if isinstance(value, dict):
        return {key: _on_meta(item) for key, item in value.items()}
    return value


def _map_layout(tensor: Tensor, size: tuple[int, int]) -> GridLayout | None:
    layout = infer_layout(tuple(tensor.shape), size)
    return layout if layout is not None and layout.grid[0] * layout.grid[1] > 1 else None


def _octave(layout: GridLayout | None, size: tuple[int, int]) -> int | None:
    return None if layout is None else round(math.log2(size[0] / layout.grid[0]))


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, (list, tuple)) or isinstance(value, dict):
        return next((item for item in items if isinstance(item, Tensor)), None)
    return None
