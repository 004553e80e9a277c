r""":class:`ShallowCAM`: one high-resolution map fused from several layers.

:class:`ShallowCAM` computes a truncated CAM at several
layers in one forward and one backward pass and fuses them at the resolution of
the shallowest one.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final

import torch
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from .._modules import layer_name
from ..models import layer_preset, resolve_layers
from ._cams import CAMBase, LayerCAM, LayerGradCam
from ._defaults import Task, task_defaults
from ._errors import AttributionValueError, in_layer
from ._fusion import _FUSIONS, Fusion, fuse_maps
from ._hooks import check_layers, format_inputs, gradients_and_activations
from ._multiscale import _resize, check_scales, multiscale_attribute
from ._propagation import (
    GATE_KEYWORDS,
    Gates,
    Propagation,
    describe_gates,
    has_relu_modules,
    propagation_settings,
)
from ._reshape import Reshape, check_reshape
from ._truncation import GradientTruncation


class _TaskDefault(enum.Enum):
    """Marks an argument left to the task's default, so that an explicit None means off."""

    TASK_DEFAULT = "task default"

    def __repr__(self) -> str:
        return "<task default>"


_TASK_DEFAULT: Final = _TaskDefault.TASK_DEFAULT


class ShallowCAM(LayerAttribution, GradientAttribution):
    r"""A high-resolution CAM fused from several layers, shallow ones included.

    For each layer :math:`l` the chosen method (default :class:`LayerCAM`) gives
    :math:`L_l = \mathrm{ReLU}(\sum_k w(T_l(G_l), A_l)_k A_{l,k})` with the
    gradient truncation :math:`T_l`; the maps are fused by :func:`fuse_maps` at
    the shallowest layer's resolution. All layers come from one forward and one
    backward pass.

    With ``propagation`` on, the gradient is also truncated while it flows back
    through the ``gates`` (by default the layers deeper than the shallowest):
    each layer reads :math:`G_l` after the truncation at every gate above it,
    and before its own gate's.

    Each default comes from the ``task`` (:func:`~captum_shallow.task_defaults`):
    ``"localisation"``, the map to look at, or ``"segmentation"``, the map to
    threshold into pseudo-masks. An argument passed explicitly always wins;
    ``truncation=None`` or ``propagation=None`` turns that step off.

    The truncation rules and their defaults are reconstructions: the paper
    (arXiv 2308.02118) names only "truncating the positive gradient".

    Args:
        forward_func (Callable): The forward function of the model.
        layers (sequence of torch.nn.Module): Layers to fuse, each run once per
            forward pass (hook blocks, not reused activation modules).
        method (type, optional): The CAM class whose weighting rule is used:
            :class:`LayerCAM`, :class:`LayerGradCam`, :class:`LayerHiResCam`,
            :class:`LayerGradCamPlusPlus`, :class:`LayerXGradCam` or any other
            subclass of :class:`~captum_shallow.CAMBase`.
            Default: :class:`LayerCAM`
        truncation (GradientTruncation, sequence or None, optional): One
            truncation for all layers, one per layer, or None to turn the
            denoiser off.
            Default: the task's (:func:`~captum_shallow.task_defaults`)
        fusion (str, optional): ``"max"``, ``"mean"``, ``"product"`` or
            ``"geometric"``.
            Default: the task's
        gamma (float, optional): ``tanh(gamma * M)`` scaling of each
            normalised layer map (LayerCAM's Eq. 9 uses 2); None skips it.
            Default: None
        propagation (GradientTruncation, str or None, optional): Truncation of
            the gradient while it propagates back through the ``gates``
            (``"positive"``: keep its positive part); None turns it off.
            Default: the task's
        gates (sequence of torch.nn.Module or str, optional): Where
            ``propagation`` acts, at each call: ``"layers"`` (the layers deeper
            than the shallowest, i.e. than the one whose forward returns first),
            ``"relu"`` (every call of every ReLU-family module), ``"relu-below"``
            (those made before the deepest layer returns) or modules of the model.
            Default: the task's
        task (str, optional): ``"localisation"`` or ``"segmentation"``: whose
            defaults fill the arguments not given.
            Default: ``"localisation"``
        device_ids (list[int], optional): For DataParallel models, as in Captum.
            Default: None
        reshape (str or Callable, optional): How to read each layer's output
            as ``(N, C, H, W)``: ``"auto"`` for transformer tokens and
            channels-last maps, a callable, or None for outputs that already are
            (as in the CAM classes).
            Default: None
        scales (sequence of float, optional): Input sizes, relative to the
            input, whose maps :meth:`attribute` averages (IRN's multi-scale
            inference); ``(1.0,)`` is one pass.
            Default: the task's
        flips (bool, optional): Also average the maps of the mirrored inputs.
            Default: the task's
        class_gate (bool, optional): Multiply the fused map by Grad-CAM at the
            last of ``layers`` (list them shallow to deep, as the presets do), from
            the same backward pass, as Guided Grad-CAM multiplies guided
            backpropagation by Grad-CAM (:func:`fuse_maps`' ``gate``). The layers
            give detail and extent, the deep map says which of it is the class.
            With ``gates="relu-below"`` the last layer's gradient is untouched, so
            the gate is exactly Captum's ``LayerGradCam`` there. Not in the paper:
            the package's addition, chosen on real photos (docs/evidence.rst).
            Default: the task's

    Examples::

        >>> import torch
        >>> from torchvision.models import resnet18
        >>> from captum_shallow import ShallowCAM
        >>> model = resnet18().eval()
        >>> cam = ShallowCAM(model, [model.layer1, model.layer2, model.layer3])
        >>> cam.attribute(torch.rand(2, 3, 64, 64), target=[1, 2]).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layers: Sequence[Module],
        method: type[CAMBase] = LayerCAM,
        truncation: (
            GradientTruncation | Sequence[GradientTruncation | None] | _TaskDefault | None
        ) = _TASK_DEFAULT,
        fusion: Fusion | _TaskDefault = _TASK_DEFAULT,
        gamma: float | None = None,
        propagation: Propagation | _TaskDefault | None = _TASK_DEFAULT,
        gates: Gates | _TaskDefault | None = _TASK_DEFAULT,
        task: Task = "localisation",
        device_ids: list[int] | None = None,
        reshape: Reshape = None,
        scales: Sequence[float] | _TaskDefault = _TASK_DEFAULT,
        flips: bool | _TaskDefault = _TASK_DEFAULT,
        class_gate: bool | _TaskDefault = _TASK_DEFAULT,
    ) -> None:
        defaults = task_defaults(task)
        if isinstance(class_gate, _TaskDefault):
            class_gate = defaults.class_gate
        if not isinstance(class_gate, bool):
            raise TypeError(f"class_gate must be a bool, got {class_gate!r}")
        self.scales = check_scales(defaults.scales if isinstance(scales, _TaskDefault) else scales)
        self.flips = bool(defaults.flips if isinstance(flips, _TaskDefault) else flips)
        if isinstance(truncation, _TaskDefault):
            truncation = defaults.truncation
        if isinstance(fusion, _TaskDefault):
            fusion = defaults.fusion
        if isinstance(propagation, _TaskDefault):
            propagation = defaults.propagation
        gates_from_task = isinstance(gates, _TaskDefault)
        if isinstance(gates, _TaskDefault):
            # The task's gates only matter once propagation is on.
            gates = defaults.gates if propagation is not None else None
            if gates in ("relu", "relu-below") and not has_relu_modules(forward_func):
                warnings.warn(
                    f"task {task!r} truncates the gradient at ReLU-family modules "
                    f"(gates={gates!r}), but {type(forward_func).__name__} has none "
                    "(functional calls such as F.relu cannot be hooked): propagation is "
                    "off for this ShallowCAM; pass propagation= and gates= (modules) to "
                    "choose",
                    UserWarning,
                    stacklevel=2,
                )
                propagation = gates = None
        if isinstance(layers, Module):
            layers = [layers]
        layers = check_layers(forward_func, list(layers))
        if gates_from_task and len(layers) == 1 and gates in ("layers", "relu-below"):
            # No layer above the only one, and no call below it that could change its
            # gradient: the task's propagation changes nothing, so it is off (its
            # "changed no gradient" warning would be about a setting nobody asked for).
            propagation = gates = None
        if not isinstance(method, type) or not issubclass(method, CAMBase):
            raise TypeError(
                "method must be a CAM class, a subclass of captum_shallow.CAMBase (e.g. "
                f"LayerCAM), got {method!r}"
            )
        per_layer: list[Any] = (
            list(truncation)
            if isinstance(truncation, (list, tuple))
            else [truncation] * len(layers)
        )
        if len(per_layer) != len(layers):
            raise ValueError(
                f"got {len(per_layer)} truncations for {len(layers)} layers; give one, "
                "or one per layer"
            )
        for item in per_layer:
            if item is not None and not isinstance(item, GradientTruncation):
                raise TypeError(
                    f"truncation must be a GradientTruncation or None, got {type(item).__name__}"
                )
        if fusion not in _FUSIONS:
            raise ValueError(f"fusion must be one of {_FUSIONS}, got {fusion!r}")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be positive or None, got {gamma!r}")
        LayerAttribution.__init__(self, forward_func, layers, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.layers = layers
        self.method = method
        self.truncations: list[GradientTruncation | None] = per_layer
        self.fusion = fusion
        self.gamma = gamma
        self.propagation, self.gates = propagation_settings(
            forward_func, propagation, gates, GATE_KEYWORDS
        )
        self.task = task
        self.reshape = check_reshape(reshape)
        self.class_gate = class_gate

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: the fused map is not a "global" attribution in Captum's sense.

        Each layer's map is normalised to [0, 1] and the maps are fused across
        layers (``fusion``: max, mean, product or geometric mean), so the result
        is not a sensitivity times the activations of any one layer, whatever
        ``method`` is; Captum's ``NoiseTunnel`` passes this on, and it is the
        flag to give ``captum.metrics.infidelity_perturb_func_decorator``.

        Examples::

            >>> from torchvision.models import resnet18
            >>> model = resnet18()
            >>> ShallowCAM(model, [model.layer1, model.layer4]).multiplies_by_inputs
            False
        """
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        output_size: tuple[int, int] | None = None,
        return_layer_maps: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
        scales: Sequence[float] | None = None,
        flips: bool | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        r"""
        Args:

            inputs (Tensor or tuple[Tensor, ...]): Input for which the map is
                        computed; dimension 0 is the batch.
            target (int, tuple, Tensor, or list, optional): Output indices, as in
                        Captum (one for the batch or one per sample).
                        Default: None
            additional_forward_args (Any, optional): Extra arguments passed to
                        forward_func after the inputs.
                        Default: None
            output_size (tuple[int, int], optional): Size of the fused map, e.g.
                        the input's ``(H, W)``.
                        Default: None (the shallowest layer's resolution)
            return_layer_maps (bool, optional): Also return each layer's raw map
                        (before normalisation and upsampling); with several
                        scales or flips, those of the first scale's unmirrored
                        pass.
                        Default: False
            attribute_to_layer_input (bool, optional): Use the layers' inputs
                        instead of their outputs.
                        Default: False
            grad_kwargs (dict[str, Any], optional): Extra keyword arguments for
                        ``torch.autograd.grad``.
                        Default: None
            scales (sequence of float, optional): Input sizes relative to
                        ``inputs`` whose maps are averaged
                        (:func:`~captum_shallow.attribution.multiscale_attribute`,
                        IRN's multi-scale inference: e.g. ``(1.0, 0.5, 1.5, 2.0)``);
                        the map has the size of the first scale's (or
                        ``output_size``). ``(1.0,)`` is one pass. Unlike a
                        one-pass map, an averaged map is detached (no autograd
                        graph): keeping one would hold every pass's forward graph
                        in memory at once. For a differentiable average, call
                        ``multiscale_attribute`` with ``cam.attribute``.
                        Default: None (the ShallowCAM's ``scales``)
            flips (bool, optional): Also average the maps of the inputs mirrored
                        left-right (each mirrored back).
                        Default: None (the ShallowCAM's ``flips``)

        Returns:
            *Tensor* **fused** ``(N, 1, h, w)`` in [0, 1] or, with
            ``return_layer_maps``, *tuple* ``(fused, [layer maps])`` with each
            layer map ``(N, 1, h_l, w_l)``.

        Raises:
            ValueError: For an empty batch, a target the model's output cannot
                take, a layer that does not run once per forward pass, a layer
                map holding NaN or inf (the message names the layer).
        """
        scales = self.scales if scales is None else check_scales(scales)
        flips = self.flips if flips is None else bool(flips)
        formatted = format_inputs(inputs)
        args = (target, additional_forward_args, attribute_to_layer_input, grad_kwargs)
        if scales == (1.0,) and not flips:
            fused, layer_maps = self._fused(formatted, output_size, *args)
            return (fused, layer_maps) if return_layer_maps else fused
        first: list[list[Tensor]] = []

        def one_pass(batch: tuple[Tensor, ...]) -> Tensor:
            # Detached at once: each pass's graph (its whole forward pass when the
            # parameters require grad) is freed before the next pass runs.
            fused, layer_maps = self._fused(batch, None, *args)
            if not first:
                first.append([m.detach() for m in layer_maps])
            return fused.detach()

        fused = multiscale_attribute(one_pass, formatted, scales, flips, output_size)
        return (fused, first[0]) if return_layer_maps else fused

    def _fused(
        self,
        formatted: tuple[Tensor, ...],
        output_size: tuple[int, int] | None,
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: dict[str, Any] | None,
    ) -> tuple[Tensor, list[Tensor]]:
        """The fused map and the layer maps of one forward and backward pass."""
        pairs = self._pairs(
            formatted, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        layer_maps = self._layer_maps(pairs)
        gate = _gate_of(pairs) if self.class_gate else None
        fused = fuse_maps(layer_maps, output_size, self.fusion, self.gamma, gate)
        return fused, layer_maps

    def _pairs(
        self,
        formatted: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: dict[str, Any] | None,
    ) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
        """``(gradients, activations)`` of every layer from one forward and backward pass,
        with this ShallowCAM's propagation, gates and reshaping."""
        return gradients_and_activations(
            self.forward_func,
            self.layers,
            formatted,
            target,
            additional_forward_args,
            device_ids=self.device_ids,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_kwargs=grad_kwargs,
            propagation=self.propagation,
            gates=self.gates,
            reshape=self.reshape,
        )

    def pass_maps(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> tuple[list[Tensor], Tensor]:
        r"""Each layer's raw map and the class gate of one forward and backward pass:
        the pass whose layer maps ``attribute(..., return_layer_maps=True)`` returns
        (with several scales or flips, the first scale's, unmirrored), computed alone.

        The gate is Grad-CAM (ReLU applied) at the last of ``layers``, the map that
        :meth:`attribute` multiplies its fused map by when ``class_gate`` is on; it is
        returned whether or not it is on here. That pass's fused map is
        ``fuse_maps(layer_maps, fusion=cam.fusion, gamma=cam.gamma, gate=gate)``
        (``gate=None`` without the class gate).

        Args:
            inputs (Tensor or tuple[Tensor, ...]): As for :meth:`attribute`.
            target (int, tuple, Tensor, or list, optional): As for :meth:`attribute`.
                Default: None
            additional_forward_args (Any, optional): As for :meth:`attribute`.
                Default: None

        Returns:
            *tuple* ``([layer maps], gate)``: each layer map ``(N, 1, h_l, w_l)``, the
            gate ``(N, 1, h, w)`` at the last layer's resolution, not normalised.

        Examples::

            >>> import torch
            >>> from torchvision.models import resnet18
            >>> from captum_shallow import ShallowCAM, fuse_maps
            >>> model = resnet18(num_classes=3).eval()
            >>> cam = ShallowCAM(model, [model.layer1, model.layer2])
            >>> x = torch.randn(1, 3, 64, 64)
            >>> layer_maps, gate = cam.pass_maps(x, target=1)
            >>> gate.shape
            torch.Size([1, 1, 8, 8])
            >>> torch.allclose(
            ...     cam.attribute(x, target=1), fuse_maps(layer_maps, fusion=cam.fusion, gate=gate)
            ... )
            True
        """
        formatted = _resize(format_inputs(inputs), self.scales[0], False)
        pairs = self._pairs(formatted, target, additional_forward_args, False, None)
        return self._layer_maps(pairs), _gate_of(pairs)

    def _layer_maps(
        self, pairs: Sequence[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]
    ) -> list[Tensor]:
        """Each layer's map by ``method`` from one pass's tensors, checked finite."""
        layer_maps = [
            self._layer_map(layer, truncation, gradients, activations)
            for layer, truncation, (gradients, activations) in zip(
                self.layers, self.truncations, pairs
            )
        ]
        self._check_finite(layer_maps)
        return layer_maps

    def _layer_map(
        self,
        layer: Module,
        truncation: GradientTruncation | None,
        gradients: tuple[Tensor, ...],
        activations: tuple[Tensor, ...],
    ) -> Tensor:
        """One layer's map by ``method``, with errors naming the layer."""
        name = layer_name(self.forward_func, layer)
        if len(activations) != 1 or activations[0].dim() != 4:
            shapes = [tuple(a.shape) for a in activations]
            raise AttributionValueError(
                f"ShallowCAM needs layers with one (N, C, H, W) output; layer {name!r} gives "
                f"{shapes} (for transformer tokens or a channels-last map pass reshape='auto')"
            )
        try:
            return self.method.layer_attribution(
                gradients[0], activations[0], truncation, relu_attributions=True
            )
        except ValueError as error:
            raise in_layer(f"layer {name!r}", error) from None

    def _check_finite(self, layer_maps: list[Tensor]) -> None:
        # Fusing would normalise NaN away into zeros, which read as "no evidence".
        finite = torch.stack([torch.isfinite(m).all() for m in layer_maps]).tolist()
        if not all(finite):
            layer = self.layers[finite.index(False)]
            raise AttributionValueError(
                f"layer {layer_name(self.forward_func, layer)!r}: the map contains NaN or inf; "
                "the input, the model's weights or its output are not finite"
            )

    @classmethod
    def from_model(
        cls,
        model: Module,
        input_size: int | tuple[int, int] | None = None,
        *,
        task: Task = "localisation",
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> ShallowCAM:
        r"""A :class:`ShallowCAM` with the measured defaults of ``task`` for any model with maps.

        Layers: the stage outputs that :func:`captum_shallow.models.layer_preset`
        finds from the model's structure, from its shallow layer (the first at
        stride 4 or more) to its last one (EfficientNet-Lite0: ``_blocks.2``,
        ``_blocks.4``, ``_blocks.10``, ``_blocks.15``; ResNet: ``layer1`` to
        ``layer4``; ViT: blocks at four depths), i.e. the preset's ``fusion``
        layers, with the task's defaults (:func:`~captum_shallow.task_defaults`) and
        ``reshape="auto"``
        where a layer returns tokens or a channels-last map. The choice and its
        evidence are in ``docs/evidence.rst``; keyword arguments override any of
        them.

        Args:
            model (torch.nn.Module): A model whose layers return spatial maps
                (any CNN, ViT, Swin, MaxViT, ...), in any dtype and on any
                device; it is also the forward function. A ``torch.compile``
                wrapper is searched and attributed through the module it wraps.
            task (str, optional): ``"localisation"`` or ``"segmentation"``.
                Default: ``"localisation"``
            input_size (int or tuple[int, int], optional): The input size at
                which the preset measures strides.
                Default: None (the model's ``input_image_size`` or
                ``image_size``, else 224)
            additional_forward_args (Any, optional): What the model takes after
                the image, for the one forward pass that finds the layers (pass
                it to :meth:`attribute` too).
                Default: None
            **kwargs: Other arguments of :class:`ShallowCAM` (``method``,
                ``truncation``, ``fusion``, ``gamma``, ``propagation``,
                ``gates``, ``device_ids``, ``reshape``).

        Returns:
            ShallowCAM: the explainer.

        Raises:
            ValueError: For a model without a layer that returns a map, or whose
                forward pass fails on a blank image of ``input_size``.

        Examples::

            >>> from torchvision.models import resnet18
            >>> from captum_shallow import ShallowCAM
            >>> cam = ShallowCAM.from_model(resnet18().eval())
            >>> cam.fusion, str(cam.truncations[0]), str(cam.propagation), cam.gates
            ('mean', 'None', 'positive', 'relu-below')
            >>> cam.class_gate
            True
        """
        preset = layer_preset(model, input_size, additional_forward_args)
        kwargs.setdefault("reshape", preset.reshape)
        if isinstance(getattr(model, "image_size", None), int):
            # A ViT's position embeddings fix its input size: no other scale runs.
            kwargs.setdefault("scales", (1.0,))
        return cls(model, resolve_layers(model, list(preset.fusion)), task=task, **kwargs)

    def settings(self) -> dict[str, str]:
        """What this ShallowCAM computes, each setting as text: the one description
        of its settings, which its ``repr``, the explorer's page, the command line's
        figure captions and the pseudo-mask manifest show.

        Returns:
            dict[str, str]: ``layers``, ``method``, ``truncation`` (one for every
            layer, else ``"layer: truncation"`` per layer), ``fusion``, ``gamma``,
            ``class_gate`` (``"Grad-CAM at <layer>"``), ``propagation``, ``gates``
            and ``task``; a setting that is off reads ``"none"``, a module its
            dotted name in the model.

        Examples::

            >>> from torchvision.models import resnet18
            >>> from captum_shallow import GradientTruncation, ShallowCAM
            >>> model = resnet18()
            >>> soft = GradientTruncation("soft", quantile=0.9)
            >>> cam = ShallowCAM(model, [model.layer1, model.layer4], truncation=[soft, None],
            ...                  fusion="max", gamma=2.0, propagation=None)
            >>> cam.settings()  # doctest: +NORMALIZE_WHITESPACE
            {'layers': 'layer1, layer4', 'method': 'LayerCAM',
             'truncation': 'layer1: soft:quantile=0.9; layer4: none', 'fusion': 'max',
             'gamma': '2', 'class_gate': 'Grad-CAM at layer4', 'propagation': 'none',
             'gates': 'none', 'task': 'localisation'}
        """
        model = self.forward_func
        names = [layer_name(model, layer) for layer in self.layers]
        truncations = [_text(truncation) for truncation in self.truncations]
        gates = describe_gates(model, self.gates)
        return {
            "layers": ", ".join(names),
            "method": self.method.__name__,
            "truncation": truncations[0]
            if len(set(truncations)) == 1
            else "; ".join(f"{n}: {t}" for n, t in zip(names, truncations, strict=True)),
            "fusion": str(self.fusion),
            "gamma": "none" if self.gamma is None else f"{self.gamma:g}",
            "class_gate": f"Grad-CAM at {names[-1]}" if self.class_gate else "none",
            "propagation": _text(self.propagation),
            "gates": ", ".join(gates) if isinstance(gates, list) else _text(gates),
            "task": str(self.task),
        }

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self.settings().items())
        if self.scales != (1.0,) or self.flips:
            settings += f", scales={self.scales}, flips={self.flips}"
        return f"ShallowCAM({settings})"


def _text(value: object) -> str:
    """A setting as text: None is ``"none"``."""
    return "none" if value is None else str(value)


def _gate_of(pairs: Sequence[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]) -> Tensor:
    """The class gate of one pass: Grad-CAM (ReLU applied) at the last layer, from the
    ``(gradients, activations)`` of each layer the pass hooked."""
    gradients, activations = pairs[-1]
    return LayerGradCam.layer_attribution(
        gradients[0], activations[0], None, relu_attributions=True
    )
