"""Captum's contract, checked against Captum's classes themselves.

``multiplies_by_inputs`` says whether an attribution is "global" (an elementwise
sensitivity times its input); Captum's ``NoiseTunnel`` passes it on and
``infidelity`` perturbs by it. Each of our classes must report what Captum reports
for the same computation, and Captum's tools must treat ours as they treat Captum's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from captum import attr as captum_attr
from captum.attr import LayerGradientXActivation, NoiseTunnel
from captum.metrics import infidelity, infidelity_perturb_func_decorator
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer,
)
from torch import Tensor, nn
from torchvision.models import resnet18

from captum_shallow import (
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
)

SOFT = GradientTruncation("soft", quantile=0.5)
# Per class: what multiplies_by_inputs is with multiply_by_inputs=True.
GLOBAL_WHEN_MULTIPLIED = {
    LayerGradCam: False,
    LayerGradCamPlusPlus: False,
    LayerXGradCam: False,
    LayerHiResCam: True,
    LayerCAM: True,
}


def _arange_image() -> Tensor:
    return torch.arange(16.0).view(1, 1, 4, 4)


@pytest.mark.parametrize("truncation", [None, SOFT])
@pytest.mark.parametrize("multiply", [True, False])
@pytest.mark.parametrize("cls", list(GLOBAL_WHEN_MULTIPLIED))
def test_multiplies_by_inputs_is_true_only_for_elementwise_weights_times_activations(
    cls: type, multiply: bool, truncation: GradientTruncation | None
) -> None:
    net = BasicModel_ConvNet_One_Conv()
    cam = cls(net, net.conv1, multiply_by_inputs=multiply, truncation=truncation)
    assert cam.multiplies_by_inputs is (multiply and GLOBAL_WHEN_MULTIPLIED[cls])


def test_layer_gradcam_reports_what_captums_layer_gradcam_reports() -> None:
    net = BasicModel_ConvNet_One_Conv()
    theirs = captum_attr.LayerGradCam(net, net.conv1)
    assert theirs.multiplies_by_inputs is False
    for ours in (LayerGradCam(net, net.conv1), LayerGradCam(net, net.conv1, truncation=SOFT)):
        assert ours.multiplies_by_inputs is theirs.multiplies_by_inputs
        assert NoiseTunnel(ours).multiplies_by_inputs is NoiseTunnel(theirs).multiplies_by_inputs


@pytest.mark.parametrize("multiply", [True, False])
def test_hirescam_reports_what_captums_gradient_x_activation_reports(multiply: bool) -> None:
    # Without ReLU and channel sum HiResCAM is LayerGradientXActivation (test_cams checks values).
    net = BasicModel_ConvNet_One_Conv()
    theirs = LayerGradientXActivation(net, net.conv1, multiply_by_inputs=multiply)
    ours = LayerHiResCam(net, net.conv1, multiply_by_inputs=multiply)
    assert ours.multiplies_by_inputs is theirs.multiplies_by_inputs is multiply
    assert NoiseTunnel(ours).multiplies_by_inputs is NoiseTunnel(theirs).multiplies_by_inputs


def test_shallowcam_is_not_a_global_attribution() -> None:
    model = resnet18().eval()
    for method in GLOBAL_WHEN_MULTIPLIED:
        cam = ShallowCAM(model, [model.layer1, model.layer2], method=method)
        assert cam.multiplies_by_inputs is False
        assert NoiseTunnel(cam).multiplies_by_inputs is False


# Captum's LayerGradCam's whole calling surface gives Captum's values.

CALLS: list[tuple[str, Callable[[], tuple[nn.Module, nn.Module, Any]], dict[str, Any]]] = [
    ("conv", lambda: _conv(lambda n: n.conv1), {}),
    ("frozen parameters", lambda: _conv(lambda n: n.conv1, frozen=True), {}),
    ("conv split channels", lambda: _conv(lambda n: n.conv1), {"attr_dim_summation": False}),
    ("conv relu layer", lambda: _conv(lambda n: n.relu1), {}),
    ("layer input", lambda: _conv(lambda n: n.conv1), {"attribute_to_layer_input": True}),
    (
        "layer input, relu",
        lambda: _conv(lambda n: n.conv1),
        {"attribute_to_layer_input": True, "relu_attributions": True},
    ),
    ("two inputs", lambda: _conv(lambda n: n.conv1, two_inputs=True), {}),
    ("linear layer", lambda: _multilayer(lambda n: n.linear0, False), {}),
    ("tuple output", lambda: _multilayer(lambda n: n.multi_relu, True), {}),
    (
        "unused layer",
        lambda: _multilayer(lambda n: n.relu, True),
        {"grad_kwargs": {"materialize_grads": True}},
    ),
]


def _conv(
    layer: Callable[[Any], nn.Module], two_inputs: bool = False, frozen: bool = False
) -> tuple[nn.Module, nn.Module, Any]:
    net = BasicModel_ConvNet_One_Conv()
    for param in net.parameters():  # as some users do before interpreting
        param.requires_grad_(not frozen)
    image = _arange_image()
    image[0, 0, 1, 1] = -4.0  # a negative input, so the final ReLU matters
    return net, layer(net), (image, torch.ones(1, 1, 4, 4)) if two_inputs else image


def _multilayer(
    layer: Callable[[Any], nn.Module], multi_input_module: bool
) -> tuple[nn.Module, nn.Module, Any]:
    net = BasicModel_MultiLayer(multi_input_module=multi_input_module)
    return net, layer(net), torch.tensor([[0.0, 6.0, 0.0]])


@pytest.mark.parametrize(("name", "build", "kwargs"), CALLS, ids=[call[0] for call in CALLS])
def test_layer_gradcam_gives_captums_values_on_captums_models(
    name: str, build: Callable[[], tuple[nn.Module, nn.Module, Any]], kwargs: dict[str, Any]
) -> None:
    net, layer, inputs = build()
    theirs = captum_attr.LayerGradCam(net, layer).attribute(inputs, target=0, **kwargs)
    ours = LayerGradCam(net, layer).attribute(inputs, target=0, **kwargs)
    torch.testing.assert_close(ours, theirs)
    flat = torch.cat([t.flatten() for t in (ours if isinstance(ours, tuple) else (ours,))])
    if name == "unused layer":
        assert flat.abs().sum() == 0
    else:
        assert flat.abs().sum() > 0


# Captum's tools treat ours as they treat Captum's.


def test_noise_tunnel_gives_the_same_map_with_ours_as_with_captums() -> None:
    net = BasicModel_ConvNet_One_Conv()
    images = _arange_image() + torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    maps = []
    for cam in (captum_attr.LayerGradCam(net, net.conv1), LayerGradCam(net, net.conv1)):
        torch.manual_seed(5)  # the same noise for both
        maps.append(
            NoiseTunnel(cam).attribute(images, nt_type="smoothgrad_sq", nt_samples=4, target=0)
        )
    torch.testing.assert_close(maps[1], maps[0])
    assert float(maps[0].sum()) > 0
    torch.manual_seed(6)
    other = NoiseTunnel(LayerGradCam(net, net.conv1)).attribute(
        images, nt_type="smoothgrad_sq", nt_samples=4, target=0
    )
    assert not torch.allclose(other, maps[0])  # the noise is really there


def _infidelity(net: nn.Module, images: Tensor, maps: Tensor, multiplies_by_inputs: bool) -> Tensor:
    @infidelity_perturb_func_decorator(multiplies_by_inputs)
    def perturb(inputs: Tensor) -> Tensor:
        noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(7))
        return inputs - 0.3 * noise

    return infidelity(net, perturb, images, maps, target=0, n_perturb_samples=3)


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        (LayerGradCam, captum_attr.LayerGradCam, {}),
        (LayerHiResCam, LayerGradientXActivation, {"relu_attributions": False}),
    ],
    ids=["gradcam", "hirescam-vs-gradient-x-activation"],
)
def test_infidelity_is_the_same_with_ours_as_with_captums(
    ours: type, theirs: type, kwargs: dict[str, Any]
) -> None:
    # At the first layer's input the maps have the model input's shape, as infidelity needs.
    net = BasicModel_ConvNet_One_Conv()
    images = _arange_image() + torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    our_cam, their_cam = ours(net, net.conv1), theirs(net, net.conv1)
    assert our_cam.multiplies_by_inputs is their_cam.multiplies_by_inputs
    our_maps = our_cam.attribute(images, target=0, attribute_to_layer_input=True, **kwargs)
    their_maps = their_cam.attribute(images, target=0, attribute_to_layer_input=True)
    torch.testing.assert_close(our_maps, their_maps)
    score = _infidelity(net, images, our_maps, our_cam.multiplies_by_inputs)
    torch.testing.assert_close(
        score, _infidelity(net, images, their_maps, their_cam.multiplies_by_inputs)
    )
    assert bool(torch.isfinite(score).all())
    assert float(score.sum()) > 0
    # The flag is a real choice: the other convention scores the same maps differently.
    flipped = _infidelity(net, images, our_maps, not our_cam.multiplies_by_inputs)
    assert not torch.allclose(flipped, score)
    if our_cam.multiplies_by_inputs:  # a global attribution fits the global convention better
        assert bool((score < flipped).all())
