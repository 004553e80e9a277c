"""Quantus' ``explain_func`` for the package's attributions (the ``quantus`` extra).

`Quantus <https://github.com/understandable-machine-intelligence-lab/Quantus>`_
scores attribution maps: a metric calls ``explain_func(model=..., inputs=...,
targets=..., **explain_func_kwargs)`` on NumPy batches and expects NumPy maps
back. :func:`explain` is that function for every CAM of the package and for
:class:`~captum_shallow.ShallowCAM` (by name, by class or as a built object),
and for any Captum layer attribution with one layer (e.g. Captum's own
``LayerGradCam``), so that two methods are scored through the same code::

    pip install "captum-shallow[quantus]"

    import quantus
    from captum_shallow.quantus import explain

    metric = quantus.PointingGame()
    scores = metric(model=model, x_batch=x, y_batch=y, s_batch=masks,
                    explain_func=explain,
                    explain_func_kwargs={"method": "shallowcam", "task": "localisation"})

:func:`explain` itself needs only torch; :func:`quantus_module` imports Quantus
when it is asked for and says which extra installs it when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, cast

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import Tensor, nn

from ._errors import MissingDependencyError, unknown_name
from .attribution import (
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
)
from .attribution._cams import CAMBase
from .models import layer_preset, resolve_layers

#: The method names :func:`explain` takes, and the classes they build.
METHODS: dict[str, type[LayerAttribution]] = {
    "shallowcam": ShallowCAM,
    "gradcam": LayerGradCam,
    "hirescam": LayerHiResCam,
    "layercam": LayerCAM,
    "gradcam++": LayerGradCamPlusPlus,
    "xgradcam": LayerXGradCam,
}

_BUILT: dict[tuple[int, str], tuple[nn.Module, LayerAttribution]] = {}


def quantus_module() -> ModuleType:
    """The ``quantus`` package, imported on first use.

    Returns:
        ModuleType: ``quantus``.

    Raises:
        MissingDependencyError: When Quantus is not installed; the message names
            the ``quantus`` extra.
    """
    try:
        return importlib.import_module("quantus")
    except ImportError as error:
        raise MissingDependencyError(
            "scoring maps with Quantus needs the `quantus` extra: "
            "pip install 'captum-shallow[quantus]'"
        ) from error


def explain(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int | list[int],
    method: str | type[LayerAttribution] | LayerAttribution = "shallowcam",
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Maps of ``model`` for ``inputs`` and ``targets``, as Quantus' ``explain_func``.

    Each map is computed on the model's device, upsampled (bilinear) to the
    input's height and width and returned as a NumPy ``float32`` array of shape
    ``(N, 1, H, W)``, the shape Quantus' own ``quantus.explain`` returns for a
    CAM. ShallowCAM's maps are in [0, 1]; a single layer's CAM keeps its scale.

    Args:
        model (torch.nn.Module): The classifier (Quantus passes it).
        inputs (numpy.ndarray or Tensor): ``(N, C, H, W)`` images.
        targets (numpy.ndarray, Tensor, int or list[int]): One class per
            sample, or one for all.
        method (str, type or LayerAttribution, optional): A name of
            :data:`METHODS`; one of the package's CAM classes or
            :class:`~captum_shallow.ShallowCAM`; or an attribution object
            already built on ``model`` (ours, or any Captum layer attribution
            with one layer, such as Captum's ``LayerGradCam``), used as it is.
            Default: ``"shallowcam"``
        device (str or torch.device, optional): Where to put the inputs
            (Quantus passes its own ``device``).
            Default: the model's device
        **kwargs: For a name or a class, the arguments it is built with:
            ShallowCAM takes ``task`` and ``layers`` (names or modules; by
            default :meth:`ShallowCAM.from_model` picks them) and the rest of
            its arguments (``truncation``, ``fusion``, ...); a CAM class takes
            ``layer`` (a name or a module; by default the deepest layer that
            :func:`~captum_shallow.models.layer_preset` finds) and the rest of
            its arguments (``truncation``, ``propagation``, ``gates``, ...).
            With an object, none.

    Returns:
        numpy.ndarray: ``(N, 1, H, W)`` maps.

    Raises:
        ValueError: For an unknown method name, or arguments with an object.

    Examples::

        >>> import numpy as np
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
        >>> explain(model, x, np.array([1, 2])).shape
        (2, 1, 64, 64)
        >>> explain(model, x, [1, 2], method="layercam", layer="layer1").shape
        (2, 1, 64, 64)
    """
    attribution = _attribution(model, method, kwargs)
    parameter = next(model.parameters(), None)
    where = device if device is not None else (parameter.device if parameter is not None else None)
    images = torch.as_tensor(inputs)
    dtype = parameter.dtype if parameter is not None else torch.float32
    images = images.to(device=where, dtype=dtype)
    target = _targets(targets, images.shape[0])
    size = (int(images.shape[-2]), int(images.shape[-1]))
    # The maps are scored, not trained on: no graph is kept.
    with torch.no_grad():
        if isinstance(attribution, ShallowCAM):
            maps = attribution.attribute(images, target=target, output_size=size)
        else:
            maps = attribution.attribute(images, target=target)
            maps = LayerAttribution.interpolate(maps, size, "bilinear")
    assert isinstance(maps, Tensor)
    return maps.float().cpu().numpy()


def _targets(targets: Any, batch: int) -> int | list[int]:
    if isinstance(targets, (int, np.integer)):
        return int(targets)
    values = torch.as_tensor(np.asarray(targets)).reshape(-1).tolist()
    return values * batch if len(values) == 1 and batch > 1 else values


def _attribution(model: nn.Module, method: Any, kwargs: dict[str, Any]) -> LayerAttribution:
    """The attribution that ``method`` names, built once per model and arguments."""
    if isinstance(method, LayerAttribution):
        if kwargs:
            raise ValueError(
                f"explain() got arguments {sorted(kwargs)} with an attribution object; build "
                "the object with them, or pass its class or name instead"
            )
        return method
    if isinstance(method, str):
        if method.lower() not in METHODS:
            raise unknown_name("method", method, METHODS)
        method = METHODS[method.lower()]
    if not (isinstance(method, type) and issubclass(method, (ShallowCAM, CAMBase))):
        raise TypeError(
            "method must be a name of captum_shallow.quantus.METHODS, one of the package's CAM "
            f"classes or an attribution object, got {method!r}"
        )
    key = (id(model), f"{method.__name__}{sorted((k, repr(v)) for k, v in kwargs.items())}")
    cached = _BUILT.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    built = _build(model, method, dict(kwargs))
    _BUILT.clear()  # one model and one setting at a time, as a metric calls it
    _BUILT[key] = (model, built)
    return built


def _build(model: nn.Module, method: type, kwargs: dict[str, Any]) -> LayerAttribution:
    if method is ShallowCAM:
        layers = kwargs.pop("layers", None)
        if layers is None:
            return ShallowCAM.from_model(model, **kwargs)
        return ShallowCAM(model, _modules(model, layers), **kwargs)
    layer = kwargs.pop("layer", None)
    if layer is None:
        layer = layer_preset(model).last
    (module,) = _modules(model, [layer])
    return cast(type[CAMBase], method)(model, module, **kwargs)


def _modules(model: nn.Module, layers: Any) -> list[nn.Module]:
    layers = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    names = [layer for layer in layers if isinstance(layer, str)]
    found = iter(resolve_layers(model, names)) if names else iter(())
    return [next(found) if isinstance(layer, str) else layer for layer in layers]
