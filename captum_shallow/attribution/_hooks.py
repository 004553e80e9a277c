"""One forward and one backward through Captum's hook machinery, with the checks
Captum leaves out.

Captum's ``compute_layer_gradients_and_eval`` hooks the layers, runs the model
and takes ``torch.autograd.grad`` down to the hooked outputs only, so
``param.grad`` is never touched. :func:`gradients_and_activations` wraps it
with what a user needs to hear in plain words instead of a deep torch
traceback (``_errors.py`` words it): a module that runs more than once per
forward (Captum would silently keep its last call), a target outside the
model's output. It restores every ``requires_grad`` flag it finds on the
inputs. Settings are validated once, where a CAM is built (:func:`check_layers`,
``_propagation.propagation_settings``); this module trusts them.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, cast

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum._utils.typing import TargetType
from torch import Tensor
from torch.nn import Module
from torch.utils.hooks import RemovableHandle

from .._modules import first_tensor_device, layer_name, uncompiled
from ._errors import (
    AttributionValueError,
    check_target,
    refuse_inference_mode,
    translated_errors,
)
from ._eval_mode import check_image_dtype, eval_mode
from ._propagation import (
    GATE_KEYWORDS,
    Gates,
    GateSpec,
    Propagation,
    check_gates,
    check_propagation,
    propagation_gates,
)
from ._reshape import Reshape, reshape_layer_tensors

LayerTensors = tuple[Tensor, ...]


def format_inputs(inputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Captum's tuple form of ``inputs``: a TypeError for anything but tensors, a
    ValueError for an empty batch (Captum would fail deep inside with an IndexError)."""
    formatted = (inputs,) if isinstance(inputs, Tensor) else inputs
    if (
        not isinstance(formatted, tuple)
        or not formatted
        or not all(isinstance(item, Tensor) for item in formatted)
    ):
        raise TypeError(
            f"inputs must be a Tensor or a non-empty tuple of Tensors, got {type(inputs).__name__}"
        )
    if any(item.dim() > 0 and item.shape[0] == 0 for item in formatted):
        raise ValueError("inputs hold 0 samples (dimension 0 is the batch); pass at least one")
    return formatted


def plain_target(target: Any) -> Any:
    """``target`` with NumPy integers made ints and NumPy arrays tensors, as Captum takes them."""
    if target is None or isinstance(target, (Tensor, bool)):
        return target
    if isinstance(target, (list, tuple)):
        return type(target)(plain_target(item) for item in target)
    if hasattr(target, "__index__"):  # int, numpy.int64, a 0-d integer array
        with contextlib.suppress(TypeError):
            return operator.index(target)
    if hasattr(target, "__array__"):  # a NumPy array, without importing NumPy
        return torch.as_tensor(target)
    return target


def check_layers(forward_func: Callable[..., Any], layers: Sequence[Module]) -> list[Module]:
    """``layers`` as a list, or an error for layers that are not modules, repeated, or
    not inside ``forward_func``."""
    if not layers:
        raise ValueError("no layer given: pass at least one torch.nn.Module of the model")
    for layer in layers:
        if not isinstance(layer, Module):
            raise TypeError(
                f"layer must be a torch.nn.Module of the model, got {type(layer).__name__}"
            )
    if len({id(layer) for layer in layers}) != len(layers):
        raise ValueError("the same layer is given more than once")
    model = forward_func.__self__ if hasattr(forward_func, "__self__") else forward_func
    if isinstance(model, Module):
        inside = {id(module) for module in model.modules()}
        for layer in layers:
            if id(layer) not in inside:
                raise ValueError(
                    f"layer {type(layer).__name__} is not a submodule of the model "
                    f"{type(model).__name__}; pass a module from model.named_modules()"
                )
    return list(layers)


def gradients_and_activations(
    forward_func: Callable[..., Any],
    layers: Sequence[Module],
    inputs: tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    *,
    device_ids: list[int] | None,
    attribute_to_layer_input: bool,
    grad_kwargs: dict[str, Any] | None,
    propagation: Propagation | None = None,
    gates: GateSpec | None = None,
    reshape: Reshape = None,
) -> list[tuple[LayerTensors, LayerTensors]]:
    """Gradients of the target and activations at each layer, in one forward/backward.

    The settings are trusted as validated (a CAM validates them when it is
    built). ``propagation`` and ``gates`` truncate the gradient while it
    propagates (``_propagation.py``); ``reshape`` turns token sequences and
    channels-last maps into ``(N, C, H, W)`` (``_reshape.py``).

    The activations keep their graph, as Captum's: a map computed from them is
    differentiable down to the parameters below the layer (and, with
    ``grad_kwargs={"create_graph": True}``, through the gradient too).

    Returns:
        *list* of ``(gradients, activations)``, one pair of tensor tuples per layer.
    """
    forward_func = uncompiled(forward_func)
    check_image_dtype(inputs)
    target = plain_target(target)
    refuse_inference_mode()
    grad_kwargs = _keep_graph_between_layers(grad_kwargs, len(layers))
    with (
        eval_mode(forward_func),
        _LayerWatch(forward_func, layers, inputs, target) as watch,
        translated_errors(forward_func, layers, inputs, watch.silent_layers, watch.model_raised),
        propagation_gates(forward_func, layers, propagation, gates, attribute_to_layer_input),
    ):
        gradients, activations = compute_layer_gradients_and_eval(
            watch.forward,
            list(layers),
            inputs,
            target,
            _format_additional_forward_args(additional_forward_args),
            device_ids=device_ids if device_ids is not None else _device_ids(forward_func),
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
        )
    pairs = list(zip(cast(list[LayerTensors], gradients), cast(list[LayerTensors], activations)))
    return reshape_layer_tensors(
        reshape, pairs, inputs, lambda: [layer_name(forward_func, layer) for layer in layers]
    )


def layer_gradients_and_activations(
    forward_func: Callable[..., Any],
    layers: Sequence[Module],
    inputs: tuple[Tensor, ...],
    target: TargetType,
    additional_forward_args: Any,
    *,
    device_ids: list[int] | None,
    attribute_to_layer_input: bool,
    grad_kwargs: dict[str, Any] | None,
    propagation: Propagation | None = None,
    gates: Gates | None = None,
    reshape: Reshape = None,
) -> list[tuple[LayerTensors, LayerTensors]]:
    """:func:`gradients_and_activations` for a caller without a CAM: validates first.

    ``gates`` takes every keyword (``"relu"``, ``"relu-below"``, ``"layers"``)
    or modules of the model; either of ``propagation`` and ``gates`` None
    leaves the backward pass untouched.
    """
    forward_func = uncompiled(forward_func)
    return gradients_and_activations(
        forward_func,
        check_layers(forward_func, layers),
        inputs,
        target,
        additional_forward_args,
        device_ids=device_ids,
        attribute_to_layer_input=attribute_to_layer_input,
        grad_kwargs=grad_kwargs,
        propagation=check_propagation(propagation),
        gates=check_gates(forward_func, gates, GATE_KEYWORDS),
        reshape=reshape,
    )


def _keep_graph_between_layers(
    grad_kwargs: dict[str, Any] | None, count: int
) -> dict[str, Any] | None:
    """``grad_kwargs`` with ``retain_graph=True`` when several layers are hooked and the
    caller records a graph: the backward to the shallowest layer runs through the deeper
    layers' nodes, and a map differentiated later needs them again. Under
    ``torch.no_grad()`` nothing is kept."""
    if count < 2 or not torch.is_grad_enabled() or "retain_graph" in (grad_kwargs or {}):
        return grad_kwargs
    return {**(grad_kwargs or {}), "retain_graph": True}


def _device_ids(forward_func: Callable[..., Any]) -> list[int] | None:
    """A DataParallel model's ``device_ids``, which Captum needs to order the devices."""
    return getattr(forward_func, "device_ids", None)


class _LayerWatch:
    """What one run needs watched: how often each layer runs, whether the model
    raised, the target against the output, and the inputs' ``requires_grad``."""

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layers: Sequence[Module],
        inputs: tuple[Tensor, ...],
        target: TargetType,
    ) -> None:
        self.forward_func = forward_func
        self.layers = layers
        self.inputs = inputs
        self.target = target
        self.calls: dict[Module, Counter[torch.device]] = {layer: Counter() for layer in layers}
        self.raised = False
        self.flags = [tensor.requires_grad for tensor in inputs]
        self.handles: list[RemovableHandle] = []

    def __enter__(self) -> _LayerWatch:
        self.handles = [layer.register_forward_hook(self._count) for layer in self.layers]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for handle in self.handles:
            handle.remove()
        for tensor, flag in zip(self.inputs, self.flags):
            if tensor.is_leaf and tensor.requires_grad != flag:
                tensor.requires_grad_(flag)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            output = self.forward_func(*args, **kwargs)
        except BaseException:
            self.raised = True
            raise
        check_target(output, self.target)
        return output

    def model_raised(self) -> bool:
        return self.raised

    def silent_layers(self) -> list[Module]:
        return [layer for layer in self.layers if not self.calls[layer]]

    def _count(self, module: Module, args: Any, output: Any) -> None:
        device = first_tensor_device(output)
        self.calls[module][device] += 1
        if self.calls[module][device] > 1:
            raise AttributionValueError(
                f"layer {layer_name(self.forward_func, module)!r} ({type(module).__name__}) runs "
                "more than once per forward pass, so its gradient would mix calls; hook the "
                "block that contains it instead (e.g. model._blocks[i] for EfficientNet-Lite, "
                "model.layer1[0] for a torchvision ResNet)"
            )
