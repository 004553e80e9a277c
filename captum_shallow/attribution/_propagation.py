r"""Truncation while the gradient propagates: gates in the one backward pass.

The second reading of the paper's "truncating the positive gradient" (the first,
at the layer, is the CAM classes' ``truncation=``). At each *gate* module, a
forward hook registers a tensor hook on the gate's output at every call; in the
backward pass that hook replaces the gradient flowing back through the output
by :math:`T(\text{gradient})`. A layer below a gate then reads a gradient that
carries only the evidence that survived the gate. No extra pass: the hooks ride
on the forward and backward that Captum runs anyway.

A hooked layer reads its gradient *before* its own gate's truncation. The
engine alone would not say so: ``torch.autograd.grad`` returns, for an input
tensor with a hook, the hooked gradient when nothing below it is needed and the
raw one otherwise. So while gates are on, each hooked layer hands Captum an
alias of its output (or input) and every gate hook sits on the tensor upstream
of that alias.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import captum
import torch
from torch import Tensor, nn
from torch.nn import Module
from torch.utils.hooks import RemovableHandle

from .._modules import first_tensor_device, layer_name
from ._errors import AttributionValueError, in_layer
from ._truncation import GradientTruncation

#: What ``propagation=`` takes: a truncation, or ``"positive"`` (keep the
#: positive part of the gradient, :math:`\max(G, 0)`).
Propagation = GradientTruncation | Literal["positive"]
GateKeyword = Literal["relu", "relu-below", "layers"]
#: What ``gates=`` takes: modules of the model, or a keyword.
Gates = GateKeyword | Sequence[Module]
#: ``gates=`` once validated: a keyword or a list of modules of the model.
GateSpec = GateKeyword | list[Module]

GATE_KEYWORDS: tuple[str, ...] = ("relu", "relu-below", "layers")
#: A single-layer CAM takes only "relu": "relu-below" gates calls that all run
#: below its one layer (changing nothing), "layers" needs several layers.
SINGLE_LAYER_GATE_KEYWORDS: tuple[str, ...] = ("relu",)
_ONE_LAYER_HINTS = {
    "layers": "'layers' (ShallowCAM's layers deeper than the shallowest) needs several layers",
    "relu-below": (
        "'relu-below' gates the ReLU calls made before the deepest layer returns, and with "
        "one layer all of them run below it, so it would change nothing; pass 'relu' (the "
        "calls above the layer) or use ShallowCAM with several layers"
    ),
}

#: The modules that ``gates="relu"`` gates: ReLU and its rectifying relatives
#: (guided backpropagation's rectification points). Functional calls such as
#: ``F.relu`` run no module and cannot be gated.
RELU_FAMILY: tuple[type[Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)


def check_propagation(propagation: object) -> Propagation | None:
    """``propagation`` itself, or a TypeError/ValueError naming what is accepted."""
    if propagation is None or isinstance(propagation, GradientTruncation):
        return propagation
    accepted = "a GradientTruncation, 'positive' or None"
    if isinstance(propagation, str):
        if propagation == "positive":
            return "positive"
        raise ValueError(f"propagation must be {accepted}, got {propagation!r}")
    raise TypeError(f"propagation must be {accepted}, got {type(propagation).__name__}")


def check_gates(
    forward_func: Callable[..., Any],
    gates: object,
    keywords: Sequence[str] = GATE_KEYWORDS,
) -> GateSpec | None:
    """The gates as a keyword or a list of modules of the model, validated."""
    if gates is None:
        return None
    accepted = f"one of {tuple(keywords)}"
    if isinstance(gates, str):
        if gates not in keywords:
            hint = f"; {_ONE_LAYER_HINTS[gates]}" if gates in _ONE_LAYER_HINTS else ""
            raise ValueError(
                f"gates must be a sequence of modules of the model or {accepted}, "
                f"got {gates!r}{hint}"
            )
        if gates in ("relu", "relu-below"):
            relu_modules(forward_func, gates)
        return cast(GateKeyword, gates)
    modules = [gates] if isinstance(gates, Module) else gates
    if not isinstance(modules, (list, tuple)):
        raise TypeError(
            f"gates must be a sequence of modules of the model or {accepted}, "
            f"got {type(gates).__name__}"
        )
    if not modules:
        raise ValueError("gates is empty: pass at least one module of the model, or None")
    for module in modules:
        if not isinstance(module, Module):
            raise TypeError(f"each gate must be a torch.nn.Module, got {type(module).__name__}")
    if len({id(module) for module in modules}) != len(modules):
        raise ValueError("the same gate is given more than once")
    model = _model_of(forward_func)
    if model is not None:
        inside = {id(module) for module in model.modules()}
        for module in modules:
            if id(module) not in inside:
                raise ValueError(
                    f"gate {type(module).__name__} is not a submodule of the model "
                    f"{type(model).__name__}; pass a module from model.named_modules()"
                )
    return list(modules)


def propagation_settings(
    forward_func: Callable[..., Any],
    propagation: object,
    gates: object,
    keywords: Sequence[str] = SINGLE_LAYER_GATE_KEYWORDS,
) -> tuple[Propagation | None, GateSpec | None]:
    """Validate ``propagation`` and ``gates`` as a CAM class takes them: both or neither."""
    checked = check_propagation(propagation)
    gate_spec = check_gates(forward_func, gates, keywords)
    if checked is not None and gate_spec is None:
        meanings = {
            "relu": "every call of every ReLU-family module",
            "relu-below": "those made before the deepest hooked layer returns",
            "layers": "the layers deeper than the shallowest",
        }
        said = "; ".join(f"{key!r}: {meanings[key]}" for key in keywords)
        raise ValueError(
            "propagation= needs gates=: a sequence of modules of the model or one of "
            f"{tuple(keywords)} ({said})"
        )
    if checked is None and gate_spec is not None:
        raise ValueError(
            "gates= has no effect without propagation=; pass propagation='positive' or a "
            "GradientTruncation"
        )
    return checked, gate_spec


def describe_gates(
    forward_func: Callable[..., Any], gates: str | Sequence[Module] | None
) -> str | list[str] | None:
    """The gates for a ``repr``: the keyword, or the modules' dotted names."""
    if gates is None or isinstance(gates, str):
        return gates
    return [layer_name(forward_func, module) for module in gates]


def has_relu_modules(forward_func: Callable[..., Any]) -> bool:
    """Whether ``gates="relu"`` / ``"relu-below"`` can find gates in this model."""
    model = _model_of(forward_func)
    return model is not None and bool(_relu_family(model))


def _relu_family(model: Module) -> list[Module]:
    return [module for module in model.modules() if isinstance(module, RELU_FAMILY)]


def relu_modules(forward_func: Callable[..., Any], keyword: str = "relu") -> list[Module]:
    """Every ReLU-family module of the model (:data:`RELU_FAMILY`), in registration order."""
    model = _model_of(forward_func)
    if model is None:
        raise ValueError(
            f"gates={keyword!r} needs forward_func to be a torch.nn.Module (or its bound "
            "method) to find its ReLU-family modules; pass the gate modules instead"
        )
    found = _relu_family(model)
    if not found:
        raise ValueError(
            f"gates={keyword!r}: the model {type(model).__name__} has no ReLU-family module "
            f"({', '.join(kind.__name__ for kind in RELU_FAMILY)}); functional calls such as "
            "F.relu cannot be gated, pass the gate modules instead"
        )
    return found


@contextmanager
def propagation_gates(
    forward_func: Callable[..., Any],
    layers: Sequence[Module],
    propagation: Propagation | None,
    gates: GateSpec | None,
    attribute_to_layer_input: bool,
) -> Iterator[None]:
    """Gate the backward pass of the forward/backward run inside the ``with`` block.

    Takes settings validated by :func:`propagation_settings`. Installs the gates'
    forward hooks and the layers' aliases, and removes them and every tensor hook
    on exit, after success or error. Does nothing when ``propagation`` or
    ``gates`` is None.
    """
    if propagation is None or gates is None:
        yield
        return
    run = _GatedRun(forward_func, layers, propagation)
    try:
        run.install(gates, attribute_to_layer_input)
        yield
        run.check_every_gate_ran()
        run.warn_if_nothing_was_gated()
    finally:
        run.remove()


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this
    package, Captum and contextlib: the user's call to ``attribute``."""
    inside = (
        str(Path(__file__).parents[1]),
        str(Path(captum.__file__).parent),
        contextlib.__file__,
    )
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _positive_part(gradient: Tensor) -> Tensor:
    return gradient.clamp(min=0)


def _model_of(forward_func: Callable[..., Any]) -> Module | None:
    model = getattr(forward_func, "__self__", forward_func)
    return model if isinstance(model, Module) else None


def _alias(value: Any) -> Any:
    """A view of each tensor that requires grad: the tensor Captum will capture."""
    if isinstance(value, Tensor):
        return value.view_as(value) if value.requires_grad else value
    if isinstance(value, (tuple, list)):
        return type(value)(_alias(item) for item in value)
    return value


class _GatedRun:
    """The hooks of one gated forward/backward and what they have seen."""

    def __init__(
        self, forward_func: Callable[..., Any], layers: Sequence[Module], propagation: Propagation
    ) -> None:
        self.forward_func = forward_func
        self.layers = list(layers)
        self.truncate: Callable[[Tensor], Tensor] = (
            propagation if isinstance(propagation, GradientTruncation) else _positive_part
        )
        self.handles: list[RemovableHandle] = []
        self.explicit: list[Module] = []
        self.calls: Counter[int] = Counter()
        # Hooked layers that have returned, per device (DataParallel runs one
        # forward per device): they tell "below the deepest layer" and "the shallowest".
        self.returned: defaultdict[torch.device, set[int]] = defaultdict(set)
        self.gate_layers = False
        self.relu_keyword: str | None = None
        # ReLU-family calls gated after the shallowest layer returned: only those can
        # change a layer's gradient.
        self.effective_relu_calls = 0

    def install(self, gates: GateSpec, attribute_to_layer_input: bool) -> None:
        if gates == "layers":
            self.gate_layers = True
        elif isinstance(gates, str):
            below = gates == "relu-below"
            self.relu_keyword = gates
            for module in relu_modules(self.forward_func, gates):
                hook = partial(self._gate_relu, module, below=below)
                self.handles.append(module.register_forward_hook(hook))
        else:
            self.explicit = gates
            for module in gates:
                self.handles.append(
                    module.register_forward_hook(partial(self._gate_module, module))
                )
        # After the gates: a gate on a layer's output must sit upstream of its alias.
        # Each hook is bound to the model's own module: DataParallel calls it with a replica.
        for layer in self.layers:
            if attribute_to_layer_input:
                self.handles.append(layer.register_forward_pre_hook(_alias_inputs))
                self.handles.append(
                    layer.register_forward_hook(partial(self._layer_returned, layer))
                )
            else:
                self.handles.append(
                    layer.register_forward_hook(partial(self._layer_returned_alias, layer))
                )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def check_every_gate_ran(self) -> None:
        silent = [module for module in self.explicit if not self.calls[id(module)]]
        if silent:
            names = ", ".join(repr(layer_name(self.forward_func, module)) for module in silent)
            raise AttributionValueError(
                f"gate {names} did not run during the forward pass; pick a module that the "
                "model calls on these inputs"
            )

    def warn_if_nothing_was_gated(self) -> None:
        """Warn when ReLU-family gates ran but none could change a layer's gradient."""
        if self.relu_keyword is None or self.effective_relu_calls:
            return
        where = "after the shallowest" if self.relu_keyword == "relu" else "between the shallowest"
        if self.relu_keyword == "relu-below":
            where += " and the deepest"
        warnings.warn(
            f"gates={self.relu_keyword!r} changed no gradient: no ReLU-family module ran "
            f"{where} layer; functional calls such as F.relu cannot be hooked. "
            "The maps equal propagation=None; pass the gate modules (gates=[...]) to choose",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )

    def _gate(self, module: Module, output: Any) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        if not any(isinstance(tensor, Tensor) for tensor in tensors):
            raise AttributionValueError(
                f"gate {layer_name(self.forward_func, module)!r} returns "
                f"{type(output).__name__}, not a Tensor or a tuple of Tensors; gate a module "
                "that returns tensors"
            )
        for tensor in tensors:
            if isinstance(tensor, Tensor) and tensor.requires_grad:
                self.handles.append(tensor.register_hook(partial(self._truncate, module)))

    def _truncate(self, module: Module, gradient: Tensor) -> Tensor:
        try:
            return self.truncate(gradient)
        except (TypeError, ValueError) as error:
            name = layer_name(self.forward_func, module)
            raise in_layer(f"propagation gate {name!r}", error) from None

    def _gate_module(self, gate: Module, module: Module, args: Any, output: Any) -> None:
        self.calls[id(gate)] += 1
        self._gate(gate, output)

    def _gate_relu(
        self, gate: Module, module: Module, args: Any, output: Any, *, below: bool
    ) -> None:
        returned = len(self.returned[first_tensor_device(output)])
        if below and returned == len(self.layers):
            return  # the head, after the deepest hooked layer returned
        self.effective_relu_calls += bool(returned)
        self._gate(gate, output)

    def _layer_returned(self, layer: Module, module: Module, args: Any, output: Any) -> None:
        returned = self.returned[first_tensor_device(output)]
        if self.gate_layers and returned:
            self._gate(layer, output)  # deeper than the shallowest, which returned first
        returned.add(id(layer))

    def _layer_returned_alias(self, layer: Module, module: Module, args: Any, output: Any) -> Any:
        self._layer_returned(layer, module, args, output)
        return _alias(output)


def _alias_inputs(module: Module, args: Any) -> Any:
    return _alias(args)
