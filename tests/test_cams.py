"""The CAM classes as Captum attributions: contract, maths, side effects and errors."""

from __future__ import annotations

import pytest
import torch
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerAttribution, LayerGradientXActivation, NoiseTunnel
from captum.attr import visualization as viz
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

ALL_CAMS = [LayerGradCam, LayerHiResCam, LayerCAM, LayerGradCamPlusPlus, LayerXGradCam]
SOFT = GradientTruncation("soft", quantile=0.9)


class SmallNet(nn.Module):
    """Two conv stages and a linear head; deterministic weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage2(self.stage1(x)).mean(dim=(2, 3)))


@pytest.fixture
def net() -> SmallNet:
    return SmallNet().eval()


@pytest.fixture
def images() -> Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))


# Captum's own LayerGradCam expectations (tests/attr/layer/test_grad_cam.py) hold for ours.


def test_captum_expectation_conv_layer() -> None:
    net = BasicModel_ConvNet_One_Conv()
    inp = torch.arange(16).view(1, 1, 4, 4).float()
    out = LayerGradCam(net, net.conv1).attribute(inp, target=0)
    torch.testing.assert_close(out, torch.tensor([[[[11.25, 13.5], [20.25, 22.5]]]]))


def test_captum_expectation_frozen_parameters() -> None:
    net = BasicModel_ConvNet_One_Conv()
    for param in net.parameters():
        param.requires_grad = False
    inp = torch.arange(16).view(1, 1, 4, 4).float()
    out = LayerGradCam(net, net.conv1).attribute(inp, target=0)
    torch.testing.assert_close(out, torch.tensor([[[[11.25, 13.5], [20.25, 22.5]]]]))
    assert not any(param.requires_grad for param in net.parameters())


def test_captum_expectation_relu_layer() -> None:
    net = BasicModel_ConvNet_One_Conv()
    inp = torch.arange(16).view(1, 1, 4, 4).float()
    out = LayerGradCam(net, net.relu1).attribute(inp, target=0)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 4.0], [28.0, 32.5]]]]))


def test_captum_expectation_layer_input_without_and_with_relu() -> None:
    net = BasicModel_ConvNet_One_Conv()
    inp = torch.arange(16).view(1, 1, 4, 4).float()
    inp[0, 0, 1, 1] = -4.0
    out = LayerGradCam(net, net.conv1).attribute(inp, target=0, attribute_to_layer_input=True)
    torch.testing.assert_close(out, 0.5625 * inp)
    expected = 0.5625 * inp
    expected[0, 0, 1, 1] = 0.0
    out = LayerGradCam(net, net.conv1).attribute(
        inp, target=0, attribute_to_layer_input=True, relu_attributions=True
    )
    torch.testing.assert_close(out, expected)


def test_captum_expectation_multi_input() -> None:
    net = BasicModel_ConvNet_One_Conv()
    inp = torch.arange(16).view(1, 1, 4, 4).float()
    out = LayerGradCam(net, net.conv1).attribute((inp, torch.ones(1, 1, 4, 4)), target=0)
    torch.testing.assert_close(out, torch.tensor([[[[14.5, 19.0], [32.5, 37.0]]]]))


def test_captum_expectation_non_conv_layers_and_tuple_outputs() -> None:
    net = BasicModel_MultiLayer()
    inp = torch.tensor([[0.0, 100.0, 0.0]])
    torch.testing.assert_close(
        LayerGradCam(net, net.linear0).attribute(inp, target=0), torch.tensor([[400.0]])
    )
    net = BasicModel_MultiLayer(multi_input_module=True)
    out = LayerGradCam(net, net.multi_relu).attribute(torch.tensor([[0.0, 6.0, 0.0]]), target=0)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out, (torch.tensor([[21.0]]), torch.tensor([[21.0]])))


# The maths: each class applies the truncation once, then its weighting rule.


def _grads_and_acts(net: nn.Module, layer: nn.Module, x: Tensor, target: list[int]) -> tuple:
    grads, acts = compute_layer_gradients_and_eval(net, layer, (x,), target)
    return grads[0].detach(), acts[0].detach()


@pytest.mark.parametrize("truncation", [None, SOFT, GradientTruncation("hard", fraction=0.3)])
def test_each_method_is_its_formula_on_the_truncated_gradient(
    net: SmallNet, images: Tensor, truncation: GradientTruncation | None
) -> None:
    target = [0, 2, 4]
    g, a = _grads_and_acts(net, net.stage1, images, target)
    w = truncation(g) if truncation is not None else g
    dims = (2, 3)
    s = a.sum(dim=dims, keepdim=True)
    expected = {
        LayerGradCam: (w.mean(dim=dims, keepdim=True) * a).sum(1, keepdim=True),
        LayerHiResCam: (w * a).sum(1, keepdim=True).clamp(min=0),
        LayerCAM: (w.clamp(min=0) * a).sum(1, keepdim=True).clamp(min=0),
        LayerGradCamPlusPlus: (
            (torch.where(w != 0, w**2 / (2 * w**2 + s * w**3 + 1e-6), 0.0) * w.clamp(min=0)).sum(
                dim=dims, keepdim=True
            )
            * a
        )
        .sum(1, keepdim=True)
        .clamp(min=0),
        LayerXGradCam: ((a / (s + 1e-7) * w).sum(dim=dims, keepdim=True) * a)
        .sum(1, keepdim=True)
        .clamp(min=0),
    }
    for cls, value in expected.items():
        out = cls(net, net.stage1, truncation=truncation).attribute(images, target=target)
        torch.testing.assert_close(out, value, msg=f"{cls.__name__}")


def test_truncation_changes_a_shallow_map(net: SmallNet, images: Tensor) -> None:
    plain = LayerCAM(net, net.stage1).attribute(images, target=1)
    truncated = LayerCAM(net, net.stage1, truncation=SOFT).attribute(images, target=1)
    assert not torch.allclose(plain, truncated)
    assert float((truncated > 0).float().mean()) < float((plain > 0).float().mean())


def test_local_attribution_matches_captum_layer_gradient_x_activation(
    net: SmallNet, images: Tensor
) -> None:
    for multiply in (True, False):
        ours = LayerHiResCam(net, net.stage2, multiply_by_inputs=multiply).attribute(
            images, target=[0, 1, 2], relu_attributions=False, attr_dim_summation=False
        )
        captum = LayerGradientXActivation(net, net.stage2, multiply_by_inputs=multiply).attribute(
            images, target=[0, 1, 2]
        )
        torch.testing.assert_close(ours, captum)
        assert LayerHiResCam(net, net.stage2, multiply_by_inputs=multiply).multiplies_by_inputs is (
            multiply
        )


def test_local_gradcam_is_the_broadcast_channel_weight(net: SmallNet, images: Tensor) -> None:
    g, _ = _grads_and_acts(net, net.stage2, images, [1, 1, 1])
    out = LayerGradCam(net, net.stage2, multiply_by_inputs=False).attribute(
        images, target=1, attr_dim_summation=False
    )
    torch.testing.assert_close(out, g.mean(dim=(2, 3), keepdim=True).expand_as(g))


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_batch_gives_what_each_sample_gives_alone(
    cls: type, net: SmallNet, images: Tensor, threads: int
) -> None:
    target = [4, 0, 2]
    cam = cls(net, net.stage1, truncation=SOFT)
    batched = cam.attribute(images, target=target)
    for index in range(3):
        alone = cam.attribute(images[index : index + 1], target=target[index])
        torch.testing.assert_close(batched[index : index + 1], alone, rtol=1e-5, atol=1e-6)


# Drop-in with Captum's tools.


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_noise_tunnel_without_noise_equals_the_method(
    cls: type, net: SmallNet, images: Tensor
) -> None:
    cam = cls(net, net.stage1, truncation=SOFT)
    expected = cam.attribute(images, target=[1, 2, 3])
    tunnel = NoiseTunnel(cam).attribute(
        images, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=[1, 2, 3]
    )
    torch.testing.assert_close(tunnel, expected, rtol=1e-5, atol=1e-6)


def test_noise_tunnel_averages_the_maps_of_the_noisy_inputs(net: SmallNet, images: Tensor) -> None:
    seen: list[Tensor] = []

    def recording_forward(x: Tensor) -> Tensor:
        seen.append(x.detach().clone())
        return net(x)

    cam = LayerCAM(recording_forward, net.stage1, truncation=SOFT)
    smooth = NoiseTunnel(cam).attribute(
        images, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=[0, 1, 2]
    )
    (noisy,) = seen
    assert noisy.shape == (12, 3, 12, 12)
    # Captum repeats each sample nt_samples times in a row.
    assert not torch.allclose(noisy[::4], images)
    torch.testing.assert_close(noisy[::4], images, atol=1.5, rtol=0)
    per_sample = LayerCAM(net, net.stage1, truncation=SOFT).attribute(
        noisy, target=[0] * 4 + [1] * 4 + [2] * 4
    )
    expected = per_sample.reshape(3, 4, 1, 12, 12).mean(dim=1)
    torch.testing.assert_close(smooth, expected, rtol=1e-5, atol=1e-6)


def test_interpolate_and_visualization_accept_our_maps(net: SmallNet, images: Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    cam = LayerCAM(net, net.stage2, truncation=GradientTruncation("soft", quantile=0.2))
    maps = cam.attribute(images, target=[0, 1, 2])
    assert float(maps.amax()) > 0
    upsampled = LayerAttribution.interpolate(maps, (12, 12), interpolate_mode="bilinear")
    expected = torch.nn.functional.interpolate(maps, size=(12, 12), mode="bilinear")
    torch.testing.assert_close(upsampled, expected)
    figure, axis = viz.visualize_image_attr(
        upsampled[0].permute(1, 2, 0).detach().numpy(),
        images[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert len(axis.images) == 2
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_repr_names_the_layer_and_the_truncation(net: SmallNet) -> None:
    assert repr(LayerCAM(net, net.stage1, truncation=SOFT)) == (
        "LayerCAM(layer='stage1', truncation=GradientTruncation(mode='soft', "
        "quantile=0.9, scope='sample'))"
    )


def test_maps_keep_their_graph_as_captums_and_none_under_no_grad(
    net: SmallNet, images: Tensor
) -> None:
    out = LayerCAM(net, net.stage1).attribute(images, target=0)
    assert out.requires_grad
    out = LayerCAM(net, net.stage1).attribute(images, target=0, grad_kwargs={"create_graph": True})
    assert out.requires_grad
    with torch.no_grad():
        out = LayerCAM(net, net.stage1).attribute(images, target=0)
    assert not out.requires_grad


# No side effects.


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _assert_untouched(model: nn.Module, images: Tensor, flags: list[bool], training: bool) -> None:
    assert all(param.grad is None for param in model.parameters())
    assert [param.requires_grad for param in model.parameters()] == flags
    assert model.training is training
    assert _hook_count(model) == 0
    assert not images.requires_grad
    assert images.grad is None


@pytest.mark.parametrize("cls", [*ALL_CAMS, ShallowCAM])
def test_no_side_effects_after_success(cls: type, net: SmallNet, images: Tensor) -> None:
    net.stage2[0].weight.requires_grad_(False)
    flags = [param.requires_grad for param in net.parameters()]
    layer = [net.stage1, net.stage2] if cls is ShallowCAM else net.stage1
    cls(net, layer).attribute(images, target=[0, 1, 2])
    _assert_untouched(net, images, flags, training=False)


@pytest.mark.parametrize("cls", [*ALL_CAMS, ShallowCAM])
def test_no_side_effects_after_an_error_mid_attribution(
    cls: type, net: SmallNet, images: Tensor
) -> None:
    net.train()
    flags = [param.requires_grad for param in net.parameters()]
    layer = [net.stage1, net.stage2] if cls is ShallowCAM else net.stage1
    with pytest.raises(ValueError, match="out of range"):
        cls(net, layer).attribute(images, target=9)
    _assert_untouched(net, images, flags, training=True)

    def failing_forward(x: Tensor) -> Tensor:
        net.stage1(x)
        raise RuntimeError("user model failed")

    with pytest.raises(RuntimeError, match="user model failed"):
        cls(failing_forward, layer).attribute(images, target=0)
    _assert_untouched(net, images, flags, training=True)


def test_input_requires_grad_flag_is_kept(net: SmallNet, images: Tensor) -> None:
    images.requires_grad_(True)
    LayerCAM(net, net.stage1).attribute(images, target=0, attribute_to_layer_input=True)
    assert images.requires_grad
    images.requires_grad_(False)
    LayerCAM(net, net.stage1).attribute(images, target=0, attribute_to_layer_input=True)
    assert not images.requires_grad


def test_inference_mode_gets_a_clear_error(net: SmallNet, images: Tensor) -> None:
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        LayerCAM(net, net.stage1).attribute(images, target=1)
    assert _hook_count(net) == 0


def test_works_under_no_grad(net: SmallNet, images: Tensor) -> None:
    expected = LayerCAM(net, net.stage1, truncation=SOFT).attribute(images, target=1)
    with torch.no_grad():
        out = LayerCAM(net, net.stage1, truncation=SOFT).attribute(images, target=1)
    torch.testing.assert_close(out, expected)


# Bad input gets a clear error.


def test_layer_outside_the_model_is_refused(net: SmallNet, images: Tensor) -> None:
    stranger = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="not a submodule of the model SmallNet"):
        LayerCAM(net, stranger).attribute(images, target=0)
    with pytest.raises(ValueError, match="did not run during the forward pass"):
        LayerCAM(lambda x: net(x), stranger).attribute(images, target=0)


def test_layer_must_be_a_module(net: SmallNet) -> None:
    with pytest.raises(TypeError, match=r"layer must be a torch\.nn\.Module"):
        LayerCAM(net, "stage1")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [LayerHiResCam, LayerCAM, LayerGradCamPlusPlus, LayerXGradCam])
def test_spatial_methods_refuse_a_flat_layer(cls: type, net: SmallNet, images: Tensor) -> None:
    with pytest.raises(ValueError, match=r"needs a layer with spatial output.*'head'.*\(3, 5\)"):
        cls(net, net.head).attribute(images, target=0)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (5, ValueError, r"target 5 is out of range .* 5 entries"),
        (-6, ValueError, "target -6 is out of range"),
        ([0, 1, 7], ValueError, "target 7 is out of range"),
        ([0, 1, -1], ValueError, "target -1 is out of range"),
        ([0, 1], ValueError, "target holds 2 entries but the batch has 3 samples"),
        (torch.tensor([0.5, 1.0, 2.0]), ValueError, "must hold integers"),
        (None, ValueError, "target is required"),
        ((1, 2), ValueError, "more indices than the output"),
        (1.5, TypeError, "target indices must be integers"),
    ],
)
def test_bad_targets_are_refused(
    net: SmallNet, images: Tensor, target: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LayerCAM(net, net.stage1).attribute(images, target=target)  # type: ignore[arg-type]


def test_tensor_and_negative_int_targets_work_as_in_captum(net: SmallNet, images: Tensor) -> None:
    expected = LayerCAM(net, net.stage1).attribute(images, target=[4, 4, 4])
    torch.testing.assert_close(
        LayerCAM(net, net.stage1).attribute(images, target=torch.tensor(4)), expected
    )
    torch.testing.assert_close(LayerCAM(net, net.stage1).attribute(images, target=-1), expected)


def test_bad_inputs_and_truncation_are_refused(net: SmallNet, images: Tensor) -> None:
    with pytest.raises(TypeError, match="inputs must be a Tensor"):
        LayerCAM(net, net.stage1).attribute([images], target=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="truncation must be a GradientTruncation"):
        LayerCAM(net, net.stage1, truncation="soft:quantile=0.9")  # type: ignore[arg-type]


def test_nan_gradients_are_refused(net: SmallNet, images: Tensor) -> None:
    def forward(x: Tensor) -> Tensor:
        return net(x) * torch.tensor(float("nan"))

    with pytest.raises(ValueError, match="NaN or inf"):
        LayerCAM(forward, net.stage1, truncation=SOFT).attribute(images, target=0)


def test_reused_activation_module_is_refused_with_advice() -> None:
    model = resnet18().eval()
    with pytest.raises(ValueError, match=r"'layer1.0.relu' \(ReLU\) runs more than once") as info:
        LayerCAM(model, model.layer1[0].relu).attribute(torch.rand(1, 3, 64, 64), target=0)
    assert "hook the block that contains it" in str(info.value)
    assert _hook_count(model) == 0


def test_efficientnet_lite_shared_swish_is_refused(lite0: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"'_swish' \(\w+\) runs more than once.*_blocks\[i\]"):
        LayerCAM(lite0, lite0._swish).attribute(torch.rand(1, 3, 64, 64), target=285)
    assert _hook_count(lite0) == 0
