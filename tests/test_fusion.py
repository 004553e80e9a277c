"""fuse_maps and ShallowCAM: one pass, exact fusion rules, batch invariance, errors."""

from __future__ import annotations

import pytest
import torch
from captum.attr import NoiseTunnel
from torch import Tensor, nn

from captum_shallow import (
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    ShallowCAM,
    fuse_maps,
    task_defaults,
)

#: A soft truncation at the per-sample 0.9 quantile, the one the single-layer tests use.
SOFT_90 = GradientTruncation("soft", quantile=0.9)


class ThreeStageNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))).mean(dim=(2, 3)))


@pytest.fixture
def net() -> ThreeStageNet:
    return ThreeStageNet().eval()


@pytest.fixture
def images() -> Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def _layers(net: ThreeStageNet) -> list[nn.Module]:
    return [net.stage1, net.stage2, net.stage3]


def test_fusion_rules_on_hand_made_maps() -> None:
    fine = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]])
    coarse = torch.tensor([[[[3.0]]]])  # upsamples to a constant
    torch.testing.assert_close(fuse_maps([fine, coarse], fusion="max"), torch.ones(1, 1, 2, 2))
    torch.testing.assert_close(
        fuse_maps([fine, coarse], fusion="mean"),
        torch.tensor([[[[0.5, 0.75], [0.625, 1.0]]]]),
    )
    torch.testing.assert_close(
        fuse_maps([fine, coarse], fusion="product"),
        torch.tensor([[[[0.0, 0.5], [0.25, 1.0]]]]),
    )


def test_tanh_scaling_and_output_size() -> None:
    fine = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]])
    out = fuse_maps([fine], gamma=2.0)
    expected = torch.tanh(2 * fine / 4)
    torch.testing.assert_close(out, expected / expected.max())
    assert fuse_maps([fine], output_size=(5, 7)).shape == (1, 1, 5, 7)


def test_negative_and_empty_maps_give_zeros_not_nan() -> None:
    maps = torch.zeros(2, 1, 3, 3)
    maps[1] = -1.0
    out = fuse_maps([maps], fusion="mean")
    assert not bool(out.isnan().any())
    assert bool((out == 0).all())


def test_defaults_are_the_localisation_tasks(net: ThreeStageNet) -> None:
    cam = ShallowCAM(net, _layers(net))
    assert (cam.method, cam.fusion, cam.gamma, cam.task) == (LayerCAM, "mean", None, "localisation")
    assert cam.truncations == [task_defaults("localisation").truncation] * 3
    assert cam.class_gate is task_defaults("localisation").class_gate


def test_layer_maps_equal_separate_layercam_runs(net: ThreeStageNet, images: Tensor) -> None:
    target = [0, 3, 1]
    fused, layer_maps = ShallowCAM(
        net, _layers(net), truncation=SOFT_90, fusion="max", propagation=None, class_gate=False
    ).attribute(images, target=target, return_layer_maps=True)
    for layer, layer_map in zip(_layers(net), layer_maps):
        expected = LayerCAM(net, layer, truncation=SOFT_90).attribute(images, target=target)
        torch.testing.assert_close(layer_map, expected)
    torch.testing.assert_close(fused, fuse_maps(layer_maps, fusion="max"))
    assert fused.shape == (3, 1, 16, 16)
    peaks = fused.amax(dim=(1, 2, 3))
    torch.testing.assert_close(peaks, torch.ones(3))
    assert float(fused.min()) >= 0


def test_per_layer_truncations_and_other_methods(net: ThreeStageNet, images: Tensor) -> None:
    truncations = [GradientTruncation("hard", quantile=0.5), None, SOFT_90]
    _, layer_maps = ShallowCAM(
        net,
        _layers(net),
        method=LayerGradCam,
        truncation=truncations,
        fusion="mean",
        propagation=None,
    ).attribute(images, target=2, return_layer_maps=True)
    for layer, truncation, layer_map in zip(_layers(net), truncations, layer_maps):
        expected = LayerGradCam(net, layer, truncation=truncation).attribute(
            images, target=2, relu_attributions=True
        )
        torch.testing.assert_close(layer_map, expected)


def test_one_forward_and_one_backward_for_all_layers(
    net: ThreeStageNet, images: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards = []
    handle = net.register_forward_hook(lambda *args: forwards.append(1))
    backwards = []
    original_grad = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        backwards.append(1)
        return original_grad(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    try:
        ShallowCAM(net, _layers(net)).attribute(images, target=1)
    finally:
        handle.remove()
    assert len(forwards) == 1
    assert len(backwards) == 1


def test_batch_gives_what_each_sample_gives_alone(
    net: ThreeStageNet, images: Tensor, threads: int
) -> None:
    cam = ShallowCAM(net, _layers(net), truncation=GradientTruncation("soft", quantile=0.9))
    target = [2, 0, 3]
    batched = cam.attribute(images, target=target, output_size=(16, 16))
    for index in range(3):
        alone = cam.attribute(images[index : index + 1], target=target[index], output_size=(16, 16))
        torch.testing.assert_close(batched[index : index + 1], alone, rtol=1e-5, atol=1e-6)


def test_noise_tunnel_without_noise_equals_shallowcam(net: ThreeStageNet, images: Tensor) -> None:
    cam = ShallowCAM(net, _layers(net), truncation=SOFT_90)
    expected = cam.attribute(images, target=[0, 1, 2])
    tunnel = NoiseTunnel(cam).attribute(images, nt_samples=2, stdevs=0.0, target=[0, 1, 2])
    torch.testing.assert_close(tunnel, expected)


def test_truncation_none_turns_the_denoiser_off(net: ThreeStageNet, images: Tensor) -> None:
    _, layer_maps = ShallowCAM(net, _layers(net), truncation=None, propagation=None).attribute(
        images, target=1, return_layer_maps=True
    )
    torch.testing.assert_close(layer_maps[0], LayerCAM(net, net.stage1).attribute(images, target=1))


def test_repr(net: ThreeStageNet) -> None:
    text = repr(ShallowCAM(net, [net.stage1, net.stage3], fusion="mean", gamma=2.0))
    assert text.startswith("ShallowCAM(layers='stage1, stage3', method='LayerCAM'")
    assert "fusion='mean', gamma='2'" in text


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fusion": "median"}, ValueError, "fusion must be one of"),
        ({"gamma": 0.0}, ValueError, "gamma must be positive"),
        (
            {"method": nn.Conv2d},
            TypeError,
            "method must be a CAM class, a subclass of captum_shallow.CAMBase",
        ),
        ({"truncation": [None]}, ValueError, "got 1 truncations for 3 layers"),
        ({"truncation": "soft"}, TypeError, "truncation must be a GradientTruncation"),
    ],
)
def test_bad_parameters_are_refused(
    net: ThreeStageNet, kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ShallowCAM(net, _layers(net), **kwargs)


def test_bad_layers_are_refused(net: ThreeStageNet, images: Tensor) -> None:
    with pytest.raises(ValueError, match="given more than once"):
        ShallowCAM(net, [net.stage1, net.stage1]).attribute(images, target=0)
    with pytest.raises(ValueError, match="one \\(N, C, H, W\\) output; layer 'head'"):
        ShallowCAM(net, [net.stage1, net.head]).attribute(images, target=0)
    with pytest.raises(ValueError, match="no layer given"):
        ShallowCAM(net, []).attribute(images, target=0)


def test_fuse_maps_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"map 0 must have shape \(N, 1, h, w\)"):
        fuse_maps([torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="same batch size"):
        fuse_maps([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 2, 2)])
    with pytest.raises(ValueError, match="at least one map"):
        fuse_maps([])


def test_geometric_fusion_on_hand_made_maps() -> None:
    fine = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]])
    coarse = torch.tensor([[[[1.0, 4.0], [4.0, 1.0]]]])
    # Normalised: fine / 4 and coarse / 4; sqrt of their product, then / its max.
    root = torch.tensor([[[[0.0, 0.5 * 2**0.5], [0.5, 0.5]]]])
    torch.testing.assert_close(
        fuse_maps([fine, coarse], fusion="geometric"), root / root.max(), rtol=1e-6, atol=0
    )


def test_geometric_fusion_keeps_small_values_that_the_product_underflows() -> None:
    maps = [torch.full((1, 1, 2, 2), 1e-20) for _ in range(4)]
    for item in maps:
        item[0, 0, 0, 0] = 1.0
    maps[0][0, 0, 1, 1] = 0.0  # one zero keeps the pixel at zero
    assert bool((fuse_maps(maps, fusion="product").flatten()[1:] == 0).all())
    torch.testing.assert_close(
        fuse_maps(maps, fusion="geometric"), torch.tensor([[[[1.0, 1e-20], [1e-20, 0.0]]]])
    )


def test_geometric_fusion_ranks_pixels_as_the_product_does() -> None:
    generator = torch.Generator().manual_seed(3)
    maps = [torch.rand(2, 1, 6, 6, generator=generator, dtype=torch.float64) for _ in range(3)]
    maps[1][0, 0, :2] = 0.0
    geometric = fuse_maps(maps, fusion="geometric").flatten(1)
    product = fuse_maps(maps, fusion="product").flatten(1)
    for g, p in zip(geometric, product):
        assert torch.equal(torch.sign(g[:, None] - g[None, :]), torch.sign(p[:, None] - p[None, :]))
    torch.testing.assert_close(geometric, product ** (1 / 3), rtol=1e-12, atol=0)


def test_geometric_fusion_has_finite_gradients_through_zeros() -> None:
    maps = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]], requires_grad=True)
    fused = fuse_maps([maps, maps.detach() + 1], fusion="geometric")
    (gradient,) = torch.autograd.grad(fused.sum(), maps)
    assert bool(torch.isfinite(gradient).all())


def test_shallowcam_takes_geometric_fusion(net: ThreeStageNet, images: Tensor) -> None:
    cam = ShallowCAM(net, _layers(net), fusion="geometric", class_gate=False)
    fused, layer_maps = cam.attribute(images, target=1, return_layer_maps=True)
    torch.testing.assert_close(fused, fuse_maps(layer_maps, fusion="geometric"), rtol=0, atol=0)


def test_gate_multiplies_the_normalised_fused_map_by_the_normalised_gate() -> None:
    fine = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]], [[[3.0, 0.0], [0.0, 0.0]]]])
    gate = torch.tensor([[[[2.0, 4.0], [-1.0, 1.0]]], [[[1.0, 2.0], [2.0, 2.0]]]])
    fused = fuse_maps([fine], gate=gate)
    expected = torch.tensor([[[[0.0, 1.0], [0.0, 0.5]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-7)


def test_gate_is_upsampled_to_the_fused_size_as_the_layers_are() -> None:
    torch.manual_seed(3)
    maps = [torch.rand(2, 1, 8, 8), torch.rand(2, 1, 4, 4)]
    gate = torch.rand(2, 1, 2, 2) - 0.2
    fused = fuse_maps(maps, fusion="mean", gate=gate)
    up = torch.nn.functional.interpolate(gate, size=(8, 8), mode="bilinear", align_corners=False)
    up = up.clamp(min=0)
    up = up / up.amax(dim=(1, 2, 3), keepdim=True)
    expected = fuse_maps(maps, fusion="mean") * up
    expected = expected / expected.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(fused, expected, rtol=1e-6, atol=1e-7)


def test_a_gate_without_positive_values_gives_zeros_not_nan() -> None:
    fused = fuse_maps([torch.rand(1, 1, 4, 4) + 0.1], gate=-torch.ones(1, 1, 2, 2))
    assert torch.equal(fused, torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (torch.ones(1, 4, 4), r"gate must have shape \(N, 1, h, w\), got \(1, 4, 4\)"),
        ("map", "gate must have shape .* got str"),
        (torch.ones(2, 1, 4, 4), "gate has 2 samples, the maps 1"),
        (torch.full((1, 1, 4, 4), float("nan")), "gate contains NaN or inf"),
    ],
)
def test_bad_gates_are_refused_by_name(gate: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fuse_maps([torch.ones(1, 1, 4, 4)], gate=gate)  # type: ignore[arg-type]


def test_class_gate_is_captum_gradcam_at_the_last_layer(net: ThreeStageNet, images: Tensor) -> None:
    """With gates below the deepest layer the last layer's gradient is untouched, so the
    gate is Captum's LayerGradCam there."""
    from captum.attr import LayerGradCam as CaptumLayerGradCam

    layers = _layers(net)
    settings = dict(fusion="mean", truncation=None, propagation="positive", gates="relu-below")
    cam = ShallowCAM(net, layers, class_gate=True, **settings)  # type: ignore[arg-type]
    # Class 2, the net's top class for every image: each has positive evidence.
    fused, layer_maps = cam.attribute(images, target=2, return_layer_maps=True)
    gate = CaptumLayerGradCam(net, layers[-1]).attribute(images, target=2, relu_attributions=True)
    assert bool((gate.flatten(1).amax(dim=1) > 0).all())
    torch.testing.assert_close(
        fused, fuse_maps(layer_maps, fusion="mean", gate=gate), rtol=1e-6, atol=1e-7
    )
    ungated = ShallowCAM(net, layers, class_gate=False, **settings).attribute(  # type: ignore[arg-type]
        images, target=2
    )
    assert float((fused - ungated).abs().max()) > 0.1
    assert cam.class_gate
    assert not ShallowCAM(net, layers, class_gate=False).class_gate


def test_class_gate_must_be_a_bool(net: ThreeStageNet) -> None:
    with pytest.raises(TypeError, match="class_gate must be a bool, got 'yes'"):
        ShallowCAM(net, _layers(net), class_gate="yes")  # type: ignore[arg-type]
