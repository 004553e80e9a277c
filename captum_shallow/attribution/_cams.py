r"""The CAM family as Captum layer attributions, each taking a gradient truncation.

With activations :math:`A` of shape ``(N, K, H, W)``, the gradient of the target
score :math:`G = \partial y^c / \partial A` and :math:`W = T(G)` (or :math:`G`
without truncation), a method is a weighting rule :math:`w(W, A)`; the map is
:math:`\sum_k w_k \odot A_k`. :class:`CAMBase` does Captum's plumbing
once and applies the truncation in one place; each method only overrides
:meth:`CAMBase.weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from captum._utils.common import _format_output
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from .._modules import layer_name
from ._hooks import format_inputs, layer_gradients_and_activations
from ._propagation import Gates, Propagation, describe_gates, propagation_settings
from ._reshape import Reshape, check_reshape
from ._truncation import GradientTruncation

# The same denominators' epsilons as pytorch-grad-cam, so that without
# truncation the maps agree with it.
_EPS_GRADCAM_PP = 1e-6
_EPS_XGRADCAM = 1e-7


def _spatial_dims(tensor: Tensor) -> tuple[int, ...]:
    return tuple(range(2, tensor.dim()))


class CAMBase(LayerAttribution, GradientAttribution):
    r"""The base class of the CAM family: Captum's plumbing, the truncation and the sum.

    With the layer's activations :math:`A`, the gradient :math:`G` of the target
    score at the layer and the truncation :math:`T` (the identity without one), a
    method is its weighting rule :math:`w`:

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k w(T(G), A)_k \odot A_k\Big)

    A subclass overrides :meth:`weights` and sets ``relu_by_default`` (the
    published method's final ReLU), ``needs_spatial`` and ``elementwise_weights``
    where they differ; the truncation is applied in :meth:`layer_attribution`, the
    one place it is. :class:`~captum_shallow.ShallowCAM` takes any subclass as its
    ``method``.

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import CAMBase
        >>> class GradientSignCAM(CAMBase):  # one weight per element: the gradient's sign
        ...     elementwise_weights = True
        ...
        ...     @staticmethod
        ...     def weights(gradient, activation):
        ...         return gradient.sign()
        >>> gradient = torch.tensor([[[[2.0, -3.0]]]])  # (1, 1, 1, 2)
        >>> GradientSignCAM.layer_attribution(gradient, torch.ones(1, 1, 1, 2), None)
        tensor([[[[1., 0.]]]])
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> GradientSignCAM(net, net.conv1).attribute(torch.rand(1, 1, 4, 4), target=0).shape
        torch.Size([1, 1, 2, 2])
    """

    #: Whether ``relu_attributions=None`` means ReLU (the published method's choice).
    relu_by_default: ClassVar[bool] = True
    #: Whether the method needs a layer output with spatial dimensions.
    needs_spatial: ClassVar[bool] = True
    #: Whether the weights are elementwise (one per activation, as HiResCAM's and
    #: LayerCAM's) rather than one per channel; only elementwise weights times the
    #: activations make a "global" attribution in Captum's sense.
    elementwise_weights: ClassVar[bool] = False

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: list[int] | None = None,
        multiply_by_inputs: bool = True,
        truncation: GradientTruncation | None = None,
        propagation: Propagation | None = None,
        gates: Gates | None = None,
        reshape: Reshape = None,
    ) -> None:
        r"""
        Args:

            forward_func (Callable): The forward function of the model or any
                        modification of it.
            layer (torch.nn.Module): Layer for which attributions are computed.
                        It must run exactly once per forward pass: hook a block,
                        not an activation module that the model reuses.
            device_ids (list[int], optional): Device ID list, necessary only if
                        forward_func applies a DataParallel model.
                        Default: None
            multiply_by_inputs (bool, optional): Whether to multiply the weights
                        by the layer activations (the CAM). With False the weight
                        map alone is returned, as Captum's
                        ``LayerGradientXActivation`` does with False. What
                        Captum's tools are told is
                        :attr:`multiplies_by_inputs`, which is True only for the
                        elementwise rules (HiResCAM, LayerCAM) with this True.
                        Default: True
            truncation (GradientTruncation, optional): Denoiser applied to the
                        layer gradient before weighting. None gives the published
                        method unchanged.
                        Default: None
            propagation (GradientTruncation or str, optional): Truncation of
                        the gradient while it propagates back through the
                        ``gates`` (``"positive"``: keep its positive part);
                        needs ``gates``. None leaves the backward pass as is.
                        Default: None
            gates (sequence of torch.nn.Module or str, optional): Where
                        ``propagation`` acts: modules of the model, gated at
                        each of their calls; ``"relu"``, the output of every
                        call of every ReLU-family module; or ``"relu-below"``,
                        those calls made before the layer returns (all of them
                        below it, so on one layer it changes nothing; it
                        matters in :class:`~captum_shallow.ShallowCAM`). A gate changes only
                        what lies below it, and the layer reads its gradient
                        before its own gate's truncation.
                        Default: None
            reshape (str or Callable, optional): How to read the layer's
                        output as ``(N, C, H, W)``: ``"auto"`` turns a
                        transformer's tokens ``(N, prefix + H*W, C)`` (class and
                        register tokens dropped) and a channels-last map
                        ``(N, H, W, C)`` into a grid, by shape and input size; a
                        callable (such as pytorch-grad-cam's ``reshape_transform``)
                        does it for one tensor. Gradient and activation get the
                        same transform. None takes the output as it is.
                        Default: None
        """
        if truncation is not None and not isinstance(truncation, GradientTruncation):
            raise TypeError(
                f"truncation must be a GradientTruncation or None, got {type(truncation).__name__}"
            )
        if not isinstance(layer, Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self._multiply_by_inputs = bool(multiply_by_inputs)
        self.truncation = truncation
        self.propagation, self.gates = propagation_settings(forward_func, propagation, gates)
        self.reshape = check_reshape(reshape)

    @property
    def multiplies_by_inputs(self) -> bool:
        r"""Whether the attribution is a "global" one in Captum's sense (arXiv 1711.06104).

        True when the map is an elementwise sensitivity times the layer
        activations, :math:`W \odot A` (:class:`LayerHiResCam` and
        :class:`LayerCAM` with ``multiply_by_inputs=True``, like Captum's
        ``LayerGradientXActivation``); False for the weight map alone and for the
        rules with one weight per channel (:class:`LayerGradCam`,
        :class:`LayerGradCamPlusPlus`, :class:`LayerXGradCam`), whose product with
        :math:`A` is part of the CAM, not a sensitivity scaled by its input, as
        Captum's ``LayerGradCam`` reports. The truncation does not change it.
        Captum's ``NoiseTunnel`` passes it on, and it is the flag to give
        ``captum.metrics.infidelity_perturb_func_decorator``.

        Examples::

            >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
            >>> net = BasicModel_ConvNet_One_Conv()
            >>> LayerGradCam(net, net.conv1).multiplies_by_inputs
            False
            >>> LayerCAM(net, net.conv1).multiplies_by_inputs
            True
            >>> LayerCAM(net, net.conv1, multiply_by_inputs=False).multiplies_by_inputs
            False
        """
        return self._multiply_by_inputs and self.elementwise_weights

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        """Weights ``w`` broadcastable to ``activation``, from the (truncated) gradient."""
        raise NotImplementedError

    @classmethod
    def layer_attribution(
        cls,
        gradient: Tensor,
        activation: Tensor,
        truncation: GradientTruncation | None,
        *,
        multiply_by_inputs: bool = True,
        attr_dim_summation: bool = True,
        relu_attributions: bool | None = None,
    ) -> Tensor:
        """The method's attribution for one layer tensor; the one place truncation applies.

        Args:
            gradient (Tensor): Gradient of the target at the layer, ``(N, K, ...)``.
            activation (Tensor): The layer's output (or input), same shape.
            truncation (GradientTruncation or None): Denoiser for ``gradient``.
            multiply_by_inputs (bool, optional): Multiply the weights by
                ``activation``. Default: True
            attr_dim_summation (bool, optional): Sum over dimension 1.
                Default: True
            relu_attributions (bool, optional): ReLU on the result; None takes
                the method's published default. Default: None

        Returns:
            *Tensor*: ``(N, 1, ...)`` with summation, else ``activation``'s shape.

        Raises:
            ValueError: With a truncation, when the gradient or the activation
                holds NaN or inf (without one, NaN passes through, as in Captum).

        Examples::

            >>> gradient = torch.tensor([[[[1.0, -1.0]], [[2.0, 0.5]]]])  # (1, 2, 1, 2)
            >>> LayerCAM.layer_attribution(gradient, torch.ones(1, 2, 1, 2), None)
            tensor([[[[3.0000, 0.5000]]]])
        """
        if truncation is not None:
            if not bool(torch.isfinite(activation).all()):
                # Truncation promises a finite map, so it refuses what would be NaN.
                raise ValueError(
                    "the layer activation contains NaN or inf; the input or the model is not "
                    "finite, so the truncated CAM would be NaN"
                )
            gradient = truncation(gradient)
        weights = cls.weights(gradient, activation)
        attribution = weights * activation if multiply_by_inputs else weights.expand_as(activation)
        if attr_dim_summation:
            attribution = attribution.sum(dim=1, keepdim=True)
        relu = cls.relu_by_default if relu_attributions is None else relu_attributions
        return attribution.clamp(min=0) if relu else attribution

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool | None = None,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""
        Args:

            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions
                        are computed; dimension 0 is the batch. A tuple when
                        forward_func takes several tensors.
            target (int, tuple, Tensor, or list, optional): Output indices for
                        which gradients are computed, as in Captum: one int (or
                        tuple for outputs of more than two dimensions) for the
                        whole batch, or one per sample (list or 1D tensor).
                        None only when the model returns one value per sample.
                        Default: None
            additional_forward_args (Any, optional): Extra arguments passed to
                        forward_func after the inputs; not attributed.
                        Default: None
            attribute_to_layer_input (bool, optional): Attribute to the layer's
                        input instead of its output.
                        Default: False
            relu_attributions (bool, optional): Apply a ReLU to the final
                        attribution. None takes the published method's choice:
                        False for :class:`LayerGradCam` (Captum's default), True
                        for the others.
                        Default: None
            attr_dim_summation (bool, optional): Sum attributions over
                        dimension 1 (channels).
                        Default: True
            grad_kwargs (dict[str, Any], optional): Extra keyword arguments for
                        ``torch.autograd.grad``.
                        Default: None

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**:
            - **attributions** (*Tensor* or *tuple[Tensor, ...]*):
                        The layer's shape with dimension 1 reduced to 1 when
                        ``attr_dim_summation`` is True; a tuple when the layer
                        output is a tuple of tensors. Upsample with
                        ``LayerAttribution.interpolate``.
        """
        formatted = format_inputs(inputs)
        ((gradients, activations),) = layer_gradients_and_activations(
            self.forward_func,
            [cast(Module, self.layer)],
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
        if self.needs_spatial:
            for activation in activations:
                if activation.dim() < 3:
                    raise ValueError(
                        f"{type(self).__name__} needs a layer with spatial output (N, C, H, W); "
                        f"layer {layer_name(self.forward_func, cast(Module, self.layer))!r} "
                        f"gives shape {tuple(activation.shape)}"
                    )
        attributions = tuple(
            self.layer_attribution(
                gradient,
                activation,
                self.truncation,
                multiply_by_inputs=self._multiply_by_inputs,
                attr_dim_summation=attr_dim_summation,
                relu_attributions=relu_attributions,
            )
            for gradient, activation in zip(gradients, activations)
        )
        return cast(
            Tensor | tuple[Tensor, ...], _format_output(len(attributions) > 1, attributions)
        )

    def __repr__(self) -> str:
        layer = layer_name(self.forward_func, cast(Module, self.layer))
        text = f"{type(self).__name__}(layer={layer!r}, truncation={self.truncation!r}"
        if self.propagation is not None:
            gates = describe_gates(self.forward_func, self.gates)
            text += f", propagation={self.propagation!r}, gates={gates!r}"
        return text + ")"


class LayerGradCam(CAMBase):
    r"""Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391), truncation added.

    A drop-in superset of :class:`captum.attr.LayerGradCam`: same arguments,
    defaults (no ReLU unless ``relu_attributions=True``) and outputs when
    ``truncation`` is None; also accepts layers without spatial dimensions.

    .. math::

        L^c = \sum_k w_k A_k, \qquad w_k = \frac{1}{HW} \sum_{i,j} T(G)_{k,ij}

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import GradientTruncation, LayerGradCam
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> LayerGradCam(net, net.conv1).attribute(x, target=0).shape
        torch.Size([1, 1, 2, 2])
        >>> cam = LayerGradCam(net, net.conv1, truncation=GradientTruncation("soft", quantile=0.5))
        >>> cam.attribute(x, target=0, relu_attributions=True).shape
        torch.Size([1, 1, 2, 2])
    """

    relu_by_default = False
    needs_spatial = False

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        if gradient.dim() <= 2:
            return gradient
        return gradient.mean(dim=_spatial_dims(gradient), keepdim=True)


class LayerHiResCam(CAMBase):
    r"""HiResCAM (Draelos and Carin 2020, https://arxiv.org/abs/2011.08891), truncation added.

    The gradient weighs each activation elementwise, so the map is faithful to
    the model's computation at the layer:

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k T(G)_k \odot A_k\Big)

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import LayerHiResCam
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> LayerHiResCam(net, net.conv1).attribute(torch.rand(2, 1, 4, 4), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    elementwise_weights = True

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        return gradient


class LayerCAM(CAMBase):
    r"""LayerCAM (Jiang et al. 2021, https://ieeexplore.ieee.org/document/9462463).

    Positive gradients weigh each activation elementwise, which keeps shallow
    layers' resolution; the truncation removes their noise:

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}(T(G)_k) \odot A_k\Big)

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import GradientTruncation, LayerCAM
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> cam = LayerCAM(net, net.conv1, truncation=GradientTruncation("soft", quantile=0.9))
        >>> cam.attribute(torch.rand(2, 1, 4, 4), target=[0, 1]).shape
        torch.Size([2, 1, 2, 2])
    """

    elementwise_weights = True

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        return gradient.clamp(min=0)


class LayerGradCamPlusPlus(CAMBase):
    r"""Grad-CAM++ (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063).

    With :math:`W = T(G)` and the usual exponential-output approximation of the
    higher derivatives:

    .. math::

        \alpha_{k,ij} = \frac{W_{k,ij}^2}{2 W_{k,ij}^2 + \sum_{ab} A_{k,ab} W_{k,ij}^3},
        \qquad w_k = \sum_{ij} \alpha_{k,ij} \mathrm{ReLU}(W_{k,ij}),
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    with :math:`\alpha = 0` where :math:`W = 0` and :math:`10^{-6}` added to the
    denominator, as pytorch-grad-cam does.

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import LayerGradCamPlusPlus
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> LayerGradCamPlusPlus(net, net.conv1).attribute(torch.rand(2, 1, 4, 4), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        dims = _spatial_dims(gradient)
        squared = gradient.pow(2)
        denominator = 2 * squared + activation.sum(dim=dims, keepdim=True) * squared * gradient
        alpha = torch.where(gradient != 0, squared / (denominator + _EPS_GRADCAM_PP), 0.0)
        return (alpha * gradient.clamp(min=0)).sum(dim=dims, keepdim=True)


class LayerXGradCam(CAMBase):
    r"""XGrad-CAM (Fu et al. 2020, https://arxiv.org/abs/2008.02312), truncation added.

    .. math::

        w_k = \sum_{ij} \frac{A_{k,ij}}{\sum_{ab} A_{k,ab} + \epsilon} T(G)_{k,ij},
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big), \quad \epsilon = 10^{-7}

    Examples::

        >>> import torch
        >>> from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
        >>> from captum_shallow import LayerXGradCam
        >>> net = BasicModel_ConvNet_One_Conv()
        >>> LayerXGradCam(net, net.conv1).attribute(torch.rand(2, 1, 4, 4), target=0).shape
        torch.Size([2, 1, 2, 2])
    """

    @staticmethod
    def weights(gradient: Tensor, activation: Tensor) -> Tensor:
        dims = _spatial_dims(gradient)
        share = activation / (activation.sum(dim=dims, keepdim=True) + _EPS_XGRADCAM)
        return (share * gradient).sum(dim=dims, keepdim=True)
