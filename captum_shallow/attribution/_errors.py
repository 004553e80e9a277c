"""The errors an attribution raises, and the one place that reads Captum's and torch's.

Captum checks a call with ``assert`` and lets torch fail on the rest, so code
written against it catches :class:`AssertionError` (a target list of the wrong
length, ``target=None`` on a model with several outputs) and
:class:`IndexError` (a class index past the output). Ours raise one-line
messages that say what to pass instead, in classes that are *also* what Captum
raises, as NumPy's ``AxisError`` is both a ``ValueError`` and an
``IndexError``: a handler for either kind keeps working.

:func:`translated_errors` is the one place that turns the errors Captum and
torch raise from deep inside a forward/backward into those messages; nothing
else in the package matches an error's text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from captum._utils.typing import TargetType
from torch import Tensor
from torch.nn import Module

from .._modules import layer_name


class AttributionValueError(ValueError, AssertionError):
    """A call Captum refuses with an ``assert``: a ``ValueError`` and an ``AssertionError``.

    Examples::

        >>> issubclass(AttributionValueError, ValueError)
        True
        >>> issubclass(AttributionValueError, AssertionError)
        True
    """


class TargetIndexError(IndexError, ValueError):
    """A target index outside the model's output, where Captum raises ``IndexError``.

    Examples::

        >>> issubclass(TargetIndexError, IndexError), issubclass(TargetIndexError, ValueError)
        (True, True)
    """


def check_target(output: Any, target: TargetType) -> None:
    """Refuse a ``target`` that cannot index the model's ``output``, as Captum's kinds.

    Args:
        output (Any): What the model returned.
        target (TargetType): Captum's target, with NumPy values already made
            ints or tensors.

    Raises:
        TypeError: For an output that is not a Tensor or an index that is not
            an integer.
        AttributionValueError: For a missing target, too many indices or a list
            of the wrong length.
        TargetIndexError: For an index outside the output.
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"the model must return a Tensor to attribute, got {type(output).__name__}")
    if target is None:
        if output.dim() > 1 and output[0].numel() > 1:
            raise AttributionValueError(
                f"target is required: the model returns outputs of shape {tuple(output.shape)}; "
                "pass the class index (int), one index per sample, or a tuple"
            )
        return
    if isinstance(target, Tensor):
        if target.dim() > 1 or target.dtype.is_floating_point:
            raise AttributionValueError(
                f"target tensor must hold integers in one dimension, got shape "
                f"{tuple(target.shape)} and dtype {target.dtype}"
            )
        target = target.item() if target.numel() == 1 else target.tolist()
    if output.dim() < 2:
        raise AttributionValueError(
            f"the model returns one value per sample (shape {tuple(output.shape)}); "
            "leave target=None"
        )
    if isinstance(target, list):
        batch = output.shape[0]
        if len(target) != batch:
            raise AttributionValueError(
                f"target holds {len(target)} entries but the batch has {batch} samples"
            )
        for entry in target:
            _check_index(output, entry, allow_negative=False)
    else:
        _check_index(output, target, allow_negative=True)


def _check_index(output: Tensor, index: Any, *, allow_negative: bool) -> None:
    dims = index if isinstance(index, tuple) else (index,)
    if len(dims) > output.dim() - 1:
        raise AttributionValueError(
            f"target {index!r} has more indices than the output of shape "
            f"{tuple(output.shape)} has per-sample dimensions"
        )
    for position, value in enumerate(dims):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"target indices must be integers, got {value!r}")
        size = output.shape[position + 1]
        low = -size if allow_negative else 0
        if not low <= value < size:
            raise TargetIndexError(
                f"target {value} is out of range for a model output with {size} "
                f"entries in dimension {position + 1} (valid: {low}..{size - 1})"
            )


def in_layer(name: str, error: Exception) -> Exception:
    """``error`` again, of the same class, its message prefixed by ``name``'s place.

    Args:
        name (str): Where it happened, e.g. ``"layer '_blocks.2'"``.
        error (Exception): The error.

    Returns:
        Exception: A new error of ``error``'s class, to raise ``from None``.

    Examples::

        >>> in_layer("layer 'conv1'", AttributionValueError("no map"))
        AttributionValueError("layer 'conv1': no map")
    """
    return type(error)(f"{name}: {error}")


@contextmanager
def translated_errors(
    forward_func: Callable[..., Any],
    layers: Sequence[Module],
    inputs: tuple[Tensor, ...],
    silent_layers: Callable[[], list[Module]],
    model_raised: Callable[[], bool],
) -> Iterator[None]:
    """Turn what Captum and torch raise inside the ``with`` block into one-line messages.

    - A layer that never ran: Captum fails looking up its saved output
      (``AssertionError``, ``StopIteration`` or ``KeyError``); ours says which
      layer, unless the model raised the error itself (its own message wins).
    - The target does not depend on a layer: torch's "does not require grad" or
      "One of the differentiated Tensors" ``RuntimeError``.
    - Inputs in another floating dtype than the model's parameters: a
      ``TypeError`` saying which conversion to make.

    Everything else passes through unchanged.

    Args:
        forward_func (Callable): The model (or its forward function).
        layers (sequence of Module): The hooked layers.
        inputs (tuple[Tensor, ...]): The model inputs.
        silent_layers (Callable): The layers that have not run, when asked.
        model_raised (Callable): Whether the model's forward raised.
    """
    try:
        yield
    except (AssertionError, StopIteration, KeyError) as error:
        silent = silent_layers()
        if isinstance(error, AttributionValueError) or not silent or model_raised():
            raise
        names = ", ".join(repr(layer_name(forward_func, layer)) for layer in silent)
        raise AttributionValueError(
            f"layer {names} did not run during the forward pass; pick a module that the "
            "model calls on these inputs (a model compiled with torch.compile runs without "
            "the hooks: pass the compiled module itself, or build the attribution on the "
            "uncompiled model)"
        ) from error
    except RuntimeError as error:
        text = str(error)
        if "does not require grad" in text or "One of the differentiated" in text:
            raise AttributionValueError(
                "the target does not depend on the chosen layer's output (no gradient path); "
                "pick a layer that the model's output is computed from"
            ) from error
        mismatch = _dtype_mismatch(forward_func, inputs)
        if mismatch is not None:
            raise TypeError(f"{mismatch} ({' '.join(text.split())})") from error
        raise


def refuse_inference_mode() -> None:
    """A RuntimeError inside ``torch.inference_mode()``, which forbids the gradients."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "CAMs need gradients, and torch.inference_mode() forbids them; call attribute() "
            "outside inference mode (in Lightning: Trainer(inference_mode=False))"
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
