"""Small facts about modules that every layer of the package needs: a layer's
dotted name inside its model, the device of a model's output, and the module a
``torch.compile`` wrapper holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import Tensor
from torch.nn import Module

_F = TypeVar("_F", bound=Callable[..., Any])


def uncompiled(forward_func: _F) -> _F:
    """The module a ``torch.compile`` wrapper holds, else ``forward_func`` itself.

    A compiled graph skips forward hooks, and tracing one with hooks compiles it
    again at every graph break: CAMs and layer searches run the module it wraps
    (same weights, eager mode) instead.
    """
    original = getattr(forward_func, "_orig_mod", None)
    if isinstance(forward_func, Module) and isinstance(original, Module):
        return cast(_F, original)
    return forward_func


def layer_name(forward_func: Callable[..., Any], layer: Module) -> str:
    """The dotted name of ``layer`` inside ``forward_func`` when it is a module."""
    if isinstance(forward_func, Module):
        for name, module in forward_func.named_modules():
            if module is layer:
                return name or "<the model itself>"
    return type(layer).__name__


def first_tensor_device(value: Any) -> torch.device:
    """The device of ``value`` or of its first tensor item; the CPU if it holds none."""
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, Tensor):
                return item.device
    return torch.device("cpu")
