"""One forward and one backward through Captum's hook machinery, with the checks
Captum leaves out.

Captum's ``compute_layer_gradients_and_eval`` hooks the layers, runs the model
and takes ``torch.autograd.grad`` down to the hooked outputs only, so
``param.grad`` is never touched. Around it this module adds what a user needs
to hear in plain words instead of a deep torch traceback: a layer that is not
part of the model, a module that runs more than once per forward (Captum would
silently keep its last call), a target outside the model's output, and inputs
of the wrong type. It also restores every ``requires_grad`` flag it finds on
the inputs.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum._utils.typing import TargetType
from torch import Tensor
from torch.nn import Module

from .._modules import first_tensor_device, layer_name, uncompiled
from ._eval_mode import check_image_dtype, eval_mode
from ._propagation import Gates, Propagation, propagation_gates
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


def check_layers(forward_func: Callable[..., Any], layers: Sequence[Module]) -> None:
    """Refuse layers that are not modules, repeated, or not inside ``forward_func``."""
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


def check_target(output: Any, target: TargetType) -> None:
    """Raise a ValueError when ``target`` cannot index the model's ``output``."""
    if not isinstance(output, Tensor):
        raise TypeError(f"the model must return a Tensor to attribute, got {type(output).__name__}")
    batch = output.shape[0] if output.dim() else 1
    if target is None:
        if output.dim() > 1 and output[0].numel() > 1:
            raise ValueError(
                f"target is required: the model returns outputs of shape {tuple(output.shape)}; "
                "pass the class index (int), one index per sample, or a tuple"
            )
        return
    if isinstance(target, Tensor):
        if target.dim() > 1 or target.dtype.is_floating_point:
            raise ValueError(
                f"target tensor must hold integers in one dimension, got shape "
                f"{tuple(target.shape)} and dtype {target.dtype}"
            )
        target = target.item() if target.numel() == 1 else target.tolist()
    if output.dim() < 2:
        raise ValueError(
            f"the model returns one value per sample (shape {tuple(output.shape)}); "
            "leave target=None"
        )
    if isinstance(target, list):
        if len(target) != batch:
            raise ValueError(
                f"target holds {len(target)} entries but the batch has {batch} samples"
            )
        for entry in target:
            _check_index(output, entry, allow_negative=False)
    else:
        _check_index(output, target, allow_negative=True)


def _check_index(output: Tensor, index: Any, *, allow_negative: bool) -> None:
    dims = index if isinstance(index, tuple) else (index,)
    if len(dims) > output.dim() - 1:
        raise ValueError(
            f"target {index!r} has more indices than the output of shape "
            f"{tuple(output.shape)} has per-sample dimensions"
        )
    for position, value in enumerate(dims):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"target indices must be integers, got {value!r}")
        size = output.shape[position + 1]
        low = -size if allow_negative else 0
        if not low <= value < size:
            raise ValueError(
                f"target {value} is out of range for a model output with {size} "
                f"entries in dimension {position + 1} (valid: {low}..{size - 1})"
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
    """Gradients of the target and activations at each layer, in one forward/backward.

    ``propagation`` (a GradientTruncation, ``"positive"`` or None) and ``gates``
    (modules of the model, ``"relu"``, ``"relu-below"`` or ``"layers"``) truncate
    the gradient while it propagates (``captum_shallow.attribution._propagation``);
    either None leaves the backward pass untouched.

    ``reshape`` (None, ``"auto"`` or a callable; see ``_reshape.py``) turns token
    sequences and channels-last maps into ``(N, C, H, W)``, applied here and only
    here, identically to gradients and activations.

    Returns:
        *list* of ``(gradients, activations)``, one pair of tensor tuples per layer.
    """

    forward_func = uncompiled(forward_func)
    check_image_dtype(inputs)
    target = plain_target(target)
    check_layers(forward_func, layers)
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "CAMs need gradients, and torch.inference_mode() forbids them; call attribute() "
            "outside inference mode (in Lightning: Trainer(inference_mode=False))"
        )
    additional_forward_args = _format_additional_forward_args(additional_forward_args)
    calls: dict[Module, Counter[torch.device]] = {layer: Counter() for layer in layers}

    def count_call(module: Module, args: Any, output: Any) -> None:
        device = first_tensor_device(output)
        calls[module][device] += 1
        if calls[module][device] > 1:
            raise ValueError(
                f"layer {layer_name(forward_func, module)!r} ({type(module).__name__}) runs more "
                "than once per forward pass, so its gradient would mix calls; hook the block that "
                "contains it instead (e.g. model._blocks[i] for EfficientNet-Lite, "
                "model.layer1[0] for a torchvision ResNet)"
            )

    model_raised: list[BaseException] = []

    def checked_forward(*args: Any, **kwargs: Any) -> Any:
        try:
            output = forward_func(*args, **kwargs)
        except BaseException as error:
            model_raised.append(error)
            raise
        check_target(output, target)
        return output

    if device_ids is None:
        device_ids = getattr(forward_func, "device_ids", None)
    flags = [tensor.requires_grad for tensor in inputs]
    handles = [layer.register_forward_hook(count_call) for layer in layers]
    try:
        with (
            eval_mode(forward_func),
            propagation_gates(
                forward_func,
                layers,
                propagation,
                gates,
                attribute_to_layer_input=attribute_to_layer_input,
            ),
        ):
            gradients, activations = compute_layer_gradients_and_eval(
                checked_forward,
                list(layers),
                inputs,
                target,
                additional_forward_args,
                device_ids=device_ids,
                attribute_to_layer_input=attribute_to_layer_input,
                grad_kwargs=grad_kwargs,
            )
    except (AssertionError, StopIteration, KeyError) as error:
        silent = [layer for layer in layers if not calls[layer]]
        # The model's own assertion (torch._assert: "Wrong image height!") is its
        # message, not a sign that a layer is not called.
        if silent and not model_raised:
            names = ", ".join(repr(layer_name(forward_func, layer)) for layer in silent)
            raise ValueError(
                f"layer {names} did not run during the forward pass; pick a module that the "
                "model calls on these inputs (a model compiled with torch.compile runs without "
                "the hooks: pass the compiled module itself, or build the attribution on the "
                "uncompiled model)"
            ) from error
        raise
    except RuntimeError as error:
        if "does not require grad" in str(error) or "One of the differentiated" in str(error):
            raise ValueError(
                "the target does not depend on the chosen layer's output (no gradient path); "
                "pick a layer that the model's output is computed from"
            ) from error
        mismatch = _dtype_mismatch(forward_func, inputs)
        if mismatch is not None:
            raise TypeError(f"{mismatch} ({' '.join(str(error).split())})") from error
        raise
    finally:
        for handle in handles:
            handle.remove()
        for tensor, flag in zip(inputs, flags):
            if tensor.is_leaf and tensor.requires_grad != flag:
                tensor.requires_grad_(flag)
    if not (grad_kwargs or {}).get("create_graph", False):
        # Without create_graph nobody differentiates the maps: detaching frees the
        # forward graph as soon as the attribution returns.
        activations = [tuple(a.detach() for a in layer) for layer in activations]
    pairs = list(zip(cast(list[LayerTensors], gradients), cast(list[LayerTensors], activations)))
    return reshape_layer_tensors(
        reshape, pairs, inputs, lambda: [layer_name(forward_func, layer) for layer in layers]
    )


def _dtype_mismatch(forward_func: Callable[..., Any], inputs: tuple[Tensor, ...]) -> str | None:
    """What to do when the floating inputs' dtype is not the model's (a ``model.half()``
    given float32 images), else None."""
    if not isinstance(forward_func, Module):
        return None
    weights = {p.dtype for p in forward_func.parameters() if p.is_floating_point()}
    given = {t.dtype for t in inputs if t.is_floating_point()}
    if len(weights) != 1 or not given or given == weights:
        return None
    (dtype,) = weights
    names = ", ".join(sorted(str(d).removeprefix("torch.") for d in given))
    return (
        f"the inputs are {names} but the model's parameters are "
        f"{str(dtype).removeprefix('torch.')}: pass inputs.to({dtype}) (or convert the model "
        "back with model.float())"
    )
