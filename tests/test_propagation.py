"""Propagation gates: truncation of the gradient while it flows back through gates.

The oracle is a hand-written chain of ``torch.autograd.grad`` calls whose
``grad_outputs`` are truncated at each gate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from captum.attr import NoiseTunnel
from torch import Tensor, nn

from captum_shallow import (
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    LayerHiResCam,
    ShallowCAM,
)
from captum_shallow.attribution._hooks import layer_gradients_and_activations


@pytest.fixture(autouse=True)
def _neutral_task_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check the mechanism, not the measured defaults: ShallowCAM's tasks
    default here to product fusion with no truncation and no propagation."""
    from captum_shallow.attribution import _defaults

    neutral = _defaults.TaskDefaults("product", None, None, "layers", 0.15)
    monkeypatch.setattr(
        _defaults, "TASK_DEFAULTS", {"localisation": neutral, "segmentation": neutral}
    )


TRUNCATIONS: list[GradientTruncation | str] = [
    "positive",
    GradientTruncation("soft", quantile=0.5),
    GradientTruncation("hard", fraction=0.3),
    GradientTruncation("clip", quantile=0.8, scope="channel"),
]


def _chain_net(*, non_negative: bool = False) -> nn.Sequential:
    """Three blocks and a head; with ``non_negative`` every weight is >= 0."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    if non_negative:
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.abs_()
    return net


class ReusedActivationNet(nn.Module):
    """One ReLU module called after each of three convolutions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv3(self.act(self.conv2(self.act(self.conv1(x))))))
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture
def images() -> Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))


TARGET = [1, 3, 4]


def _truncate(propagation: GradientTruncation | str, gradient: Tensor) -> Tensor:
    if isinstance(propagation, GradientTruncation):
        return propagation(gradient)
    return gradient.clamp(min=0)


def _score(output: Tensor) -> Tensor:
    return output[torch.arange(len(TARGET)), TARGET].sum()


def _hand_chain(
    net: nn.Sequential, images: Tensor, propagation: GradientTruncation | str
) -> list[Tensor]:
    """Each block's gradient, the gradient truncated at every block above it."""
    a0 = net[0](images)
    a1 = net[1](a0)
    a2 = net[2](a1)
    (g2,) = torch.autograd.grad(_score(net[3:](a2)), a2, retain_graph=True)
    (g1,) = torch.autograd.grad(a2, a1, grad_outputs=_truncate(propagation, g2), retain_graph=True)
    (g0,) = torch.autograd.grad(a1, a0, grad_outputs=_truncate(propagation, g1))
    return [g0, g1, g2]


def _gradients(
    net: nn.Module, layers: list[nn.Module], images: Tensor, **kwargs: object
) -> list[Tensor]:
    pairs = layer_gradients_and_activations(
        net,
        layers,
        (images,),
        TARGET,
        None,
        device_ids=None,
        attribute_to_layer_input=False,
        grad_kwargs=None,
        **kwargs,
    )
    return [gradients[0] for gradients, _ in pairs]


@contextmanager
def _counting_truncations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the calls of every GradientTruncation (the gates that fire)."""
    calls = [0]
    original = GradientTruncation.__call__

    def counted(self: GradientTruncation, gradient: Tensor) -> Tensor:
        calls[0] += 1
        return original(self, gradient)

    monkeypatch.setattr(GradientTruncation, "__call__", counted)
    yield calls


def _assert_nothing_left(net: nn.Module, images: Tensor, requires_grad: bool = False) -> None:
    for name, module in net.named_modules():
        hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks)
        assert not any(hooks), f"hook left on {name!r}"
    assert all(parameter.grad is None for parameter in net.parameters())
    assert images.requires_grad is requires_grad
    assert images.grad is None
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("propagation", TRUNCATIONS, ids=str)
def test_gates_at_the_layers_equal_the_hand_written_autograd_chain(
    propagation: GradientTruncation | str, images: Tensor
) -> None:
    net = _chain_net()
    layers = [net[0], net[1], net[2]]
    expected = _hand_chain(net, images, propagation)
    got = _gradients(net, layers, images, propagation=propagation, gates="layers")
    for index in range(3):
        torch.testing.assert_close(got[index], expected[index], rtol=1e-5, atol=1e-7)
    plain = _gradients(net, layers, images)
    torch.testing.assert_close(got[2], plain[2], rtol=0, atol=0)  # nothing above the deepest
    assert not torch.allclose(got[0], plain[0])  # the gates changed the shallow gradient
    _assert_nothing_left(net, images)


@pytest.mark.parametrize("propagation", TRUNCATIONS, ids=str)
def test_shallowcam_layer_maps_follow_the_gated_gradients(
    propagation: GradientTruncation | str, images: Tensor
) -> None:
    net = _chain_net()
    gradients = _hand_chain(net, images, propagation)
    activations = [net[0](images)]
    activations += [net[1](activations[0])]
    activations += [net[2](activations[1])]
    cam = ShallowCAM(
        net, [net[0], net[1], net[2]], method=LayerHiResCam, propagation=propagation, fusion="mean"
    )
    assert cam.gates == "layers"  # ShallowCAM's default gates
    _, maps = cam.attribute(images, target=TARGET, return_layer_maps=True)
    for gradient, activation, layer_map in zip(gradients, activations, maps):
        expected = LayerHiResCam.layer_attribution(gradient, activation.detach(), None)
        torch.testing.assert_close(layer_map, expected, rtol=1e-5, atol=1e-6)


def test_explicit_module_gates_equal_the_chain_truncated_there_only(images: Tensor) -> None:
    net = _chain_net()
    soft = GradientTruncation("soft", quantile=0.5)
    a0 = net[0](images)
    a1 = net[1](a0)
    (g1,) = torch.autograd.grad(_score(net[2:](a1)), a1, retain_graph=True)
    (g0,) = torch.autograd.grad(a1, a0, grad_outputs=soft(g1))
    got = _gradients(net, [net[0]], images, propagation=soft, gates=[net[1]])
    torch.testing.assert_close(got[0], g0, rtol=1e-5, atol=1e-7)


def test_gates_that_only_see_positive_gradients_change_nothing(images: Tensor) -> None:
    net = _chain_net(non_negative=True)
    layers = [net[0], net[1], net[2]]
    plain, plain_maps = ShallowCAM(net, layers).attribute(
        images, target=TARGET, return_layer_maps=True
    )
    assert bool((plain_maps[0] > 0).any())
    for gates in ("layers", "relu", "relu-below"):
        gated, gated_maps = ShallowCAM(net, layers, propagation="positive", gates=gates).attribute(
            images, target=TARGET, return_layer_maps=True
        )
        torch.testing.assert_close(gated, plain, rtol=0, atol=0)
        for gated_map, plain_map in zip(gated_maps, plain_maps):
            torch.testing.assert_close(gated_map, plain_map, rtol=0, atol=0)


def test_gates_below_the_only_layer_change_nothing(images: Tensor) -> None:
    net = _chain_net()
    plain = LayerHiResCam(net, net[1]).attribute(images, target=TARGET)
    gated = LayerHiResCam(net, net[1], propagation="positive", gates=[net[0]])
    torch.testing.assert_close(gated.attribute(images, target=TARGET), plain, rtol=0, atol=0)
    # The keyword says that it gated nothing, rather than leave the user to find out.
    below = LayerHiResCam(net, net[1], propagation="positive", gates="relu-below")
    with pytest.warns(UserWarning, match="with one layer, 'relu-below' has nothing to gate"):
        torch.testing.assert_close(below.attribute(images, target=TARGET), plain, rtol=0, atol=0)
    above = LayerHiResCam(net, net[1], propagation="positive", gates="relu")
    assert not torch.allclose(above.attribute(images, target=TARGET), plain)


def test_relu_gates_every_call_of_a_reused_activation(
    images: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = ReusedActivationNet().eval()
    hard = GradientTruncation("hard", quantile=0.5)
    s1 = net.conv1(images)
    a1 = net.act(s1)
    a2 = net.act(net.conv2(a1))
    a3 = net.act(net.conv3(a2))
    (g3,) = torch.autograd.grad(_score(net.head(a3.mean(dim=(2, 3)))), a3, retain_graph=True)
    (g2,) = torch.autograd.grad(a3, a2, grad_outputs=hard(g3), retain_graph=True)
    (g1,) = torch.autograd.grad(a2, a1, grad_outputs=hard(g2), retain_graph=True)
    (expected,) = torch.autograd.grad(a1, s1, grad_outputs=hard(g1))
    with _counting_truncations(monkeypatch) as calls:
        (got,) = _gradients(net, [net.conv1], images, propagation=hard, gates="relu")
        assert calls[0] == 3  # one gate per call of net.act
        calls[0] = 0
        _gradients(net, [net.conv1], images, propagation=hard, gates=[net.act])
        assert calls[0] == 3  # a module gate is gated at each of its calls too
        calls[0] = 0
        _gradients(net, [net.conv1, net.conv2], images, propagation=hard, gates="relu-below")
        assert calls[0] == 1  # only the call between conv1 and conv2 returning
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    _assert_nothing_left(net, images)


def test_relu_gates_count_every_relu6_call_of_efficientnet_lite0(
    lite0: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = lite0._blocks  # type: ignore[attr-defined]
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    hard = GradientTruncation("hard", quantile=0.5)
    with _counting_truncations(monkeypatch) as calls:
        LayerCAM(lite0, blocks[2], propagation=hard, gates="relu").attribute(images, target=285)
        # model._swish and each block's _swish are one ReLU6 each, called twice per
        # block from block 1 on: blocks 3..15 and the head give 13 * 2 + 1 gates.
        assert calls[0] == 27
        calls[0] = 0
        fused = [blocks[i] for i in (2, 4, 10, 15)]
        ShallowCAM(lite0, fused, propagation=hard, gates="relu-below").attribute(images, target=285)
        assert calls[0] == 26  # not the head's call after block 15
    _assert_nothing_left(lite0, images)


@pytest.mark.parametrize("cls", [LayerCAM, LayerHiResCam, LayerGradCam])
def test_a_gated_layer_reads_its_gradient_before_its_own_truncation(
    cls: type[LayerCAM], images: Tensor
) -> None:
    net = _chain_net()
    hard = GradientTruncation("hard", quantile=0.9)
    plain = cls(net, net[1]).attribute(images, target=TARGET)
    # Nothing below the layer is needed: torch.autograd.grad alone would return the
    # hooked gradient here, and the hooked layer would read its own truncation.
    gated = cls(net, net[1], propagation=hard, gates=[net[1]]).attribute(images, target=TARGET)
    torch.testing.assert_close(gated, plain, rtol=0, atol=0)
    on_input = cls(net, net[2], propagation=hard, gates=[net[1]]).attribute(
        images, target=TARGET, attribute_to_layer_input=True
    )
    torch.testing.assert_close(
        on_input,
        cls(net, net[2]).attribute(images, target=TARGET, attribute_to_layer_input=True),
        rtol=0,
        atol=0,
    )
    gradient = _gradients(net, [net[1]], images)[0]
    assert not torch.equal(hard(gradient), gradient)  # so reading after it would differ


def test_shallowcam_deepest_map_is_untouched_by_its_gate(images: Tensor) -> None:
    net = _chain_net()
    layers = [net[0], net[1], net[2]]
    _, plain = ShallowCAM(net, layers, method=LayerHiResCam).attribute(
        images, target=TARGET, return_layer_maps=True
    )
    _, gated = ShallowCAM(
        net, layers, method=LayerHiResCam, propagation=GradientTruncation("hard", quantile=0.9)
    ).attribute(images, target=TARGET, return_layer_maps=True)
    torch.testing.assert_close(gated[2], plain[2], rtol=0, atol=0)
    assert not torch.allclose(gated[0], plain[0])


@pytest.mark.parametrize("gates", ["layers", "relu"])
def test_batch_gives_what_each_sample_gives_alone(gates: str, images: Tensor) -> None:
    net = _chain_net()
    cam = ShallowCAM(
        net,
        [net[0], net[1], net[2]],
        propagation=GradientTruncation("hard", quantile=0.5),
        gates=gates,
        fusion="mean",
    )
    batched = cam.attribute(images, target=TARGET)
    for index, target in enumerate(TARGET):
        alone = cam.attribute(images[index : index + 1], target=target)
        torch.testing.assert_close(batched[index : index + 1], alone, rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_after_an_error_raised_mid_backward(images: Tensor) -> None:
    net = _chain_net()
    with torch.no_grad():
        net[5].weight[1, 0] = float("inf")  # an infinite gradient reaches the gate
    cam = LayerCAM(net, net[0], propagation=GradientTruncation("soft", quantile=0.5), gates="relu")
    with pytest.raises(ValueError, match=r"propagation gate '2\.1': the layer gradient contains"):
        cam.attribute(images, target=1)
    _assert_nothing_left(net, images)
    leaf = images.clone().requires_grad_()
    with pytest.raises(ValueError, match="propagation gate"):
        cam.attribute(leaf, target=1)
    _assert_nothing_left(net, leaf, requires_grad=True)


def test_hooks_are_removed_after_an_error_raised_mid_forward(images: Tensor) -> None:
    net = _chain_net()
    cam = LayerCAM(net, net[0], propagation="positive", gates=[net[4]])
    with pytest.raises(ValueError, match="target 7 is out of range"):
        cam.attribute(images, target=7)
    _assert_nothing_left(net, images)


def test_create_graph_keeps_the_graph_and_leaves_no_tensor_hook(
    images: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _chain_net()
    soft = GradientTruncation("soft", quantile=0.5)
    cam = ShallowCAM(net, [net[0], net[1], net[2]], propagation=soft, gates="relu")
    expected = cam.attribute(images, target=TARGET)
    leaf = images.clone().requires_grad_()
    with _counting_truncations(monkeypatch) as calls:
        fused = cam.attribute(leaf, target=TARGET, grad_kwargs={"create_graph": True})
        fired = calls[0]
        assert fired == 2  # the ReLUs of blocks 1 and 2, above block 0
        assert fused.requires_grad
        (gradient,) = torch.autograd.grad(fused.sum(), leaf)
        assert calls[0] == fired  # the gates' tensor hooks did not fire again
    torch.testing.assert_close(fused.detach(), expected, rtol=1e-6, atol=1e-7)
    assert bool(torch.isfinite(gradient).all())
    assert bool((gradient != 0).any())
    _assert_nothing_left(net, leaf, requires_grad=True)


def test_noise_tunnel_runs_the_gated_cam(images: Tensor) -> None:
    net = _chain_net()
    cam = LayerCAM(net, net[0], propagation="positive", gates="relu")
    expected = cam.attribute(images, target=TARGET)
    assert not torch.allclose(expected, LayerCAM(net, net[0]).attribute(images, target=TARGET))
    smoothed = NoiseTunnel(cam).attribute(
        images, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=TARGET
    )
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-6)
    _assert_nothing_left(net, images)


def test_settings_are_attributes_and_in_the_repr() -> None:
    net = _chain_net()
    cam = LayerCAM(net, net[0], propagation="positive", gates=[net[1], net[2]])
    assert (cam.propagation, cam.gates) == ("positive", [net[1], net[2]])
    assert repr(cam) == (
        "LayerCAM(layer='0', truncation=None, propagation='positive', gates=['1', '2'])"
    )
    assert repr(LayerCAM(net, net[0])) == "LayerCAM(layer='0', truncation=None)"
    fused = ShallowCAM(net, [net[0], net[2]], propagation=GradientTruncation("hard", value=0.1))
    assert repr(fused).endswith(
        "propagation='hard:value=0.1', gates='layers', task='localisation')"
    )


def _forward(x: Tensor) -> Tensor:
    return _chain_net()(x)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates="sigmoid"),
            ValueError,
            r"gates must be a sequence of modules of the model or one of \('relu', 'relu-below'\)",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates="layers"),
            ValueError,
            "'layers' \\(ShallowCAM's layers deeper than the shallowest\\) needs several layers",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates=[nn.ReLU()]),
            ValueError,
            "gate ReLU is not a submodule of the model Sequential",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates=[net[1], net[1]]),
            ValueError,
            "the same gate is given more than once",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates=["0"]),
            TypeError,
            "each gate must be a torch.nn.Module, got str",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive", gates=[]),
            ValueError,
            "gates is empty",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="negative", gates="relu"),
            ValueError,
            "propagation must be a GradientTruncation, 'positive' or None, got 'negative'",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation=0.5, gates="relu"),
            TypeError,
            "propagation must be a GradientTruncation, 'positive' or None, got float",
        ),
        (
            lambda net: LayerCAM(net, net[0], propagation="positive"),
            ValueError,
            "propagation= needs gates=: a sequence of modules of the model or one of",
        ),
        (
            lambda net: LayerCAM(net, net[0], gates="relu"),
            ValueError,
            "gates= has no effect without propagation=",
        ),
        (
            lambda net: ShallowCAM(net, [net[0], net[1]], gates="relu"),
            ValueError,
            "gates= has no effect without propagation=",
        ),
        (
            lambda net: ShallowCAM(net, [net[0], net[1]], propagation="positive", gates=None),
            ValueError,
            r"propagation= needs gates=: .* \('relu', 'relu-below', 'layers'\)",
        ),
        (
            lambda net: LayerCAM(_forward, net[0], propagation="positive", gates="relu"),
            ValueError,
            "gates='relu' needs forward_func to be a torch.nn.Module",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    build: Callable[[nn.Sequential], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build(_chain_net())


def test_relu_gates_need_a_relu_family_module() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten())
    with pytest.raises(ValueError, match="gates='relu-below': the model Sequential has no ReLU"):
        LayerCAM(net, net[0], propagation="positive", gates="relu-below")


class _WithSpareModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _chain_net()
        self.spare = nn.ReLU()  # never called

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def test_a_gate_that_does_not_run_is_named(images: Tensor) -> None:
    model = _WithSpareModule().eval()
    cam = LayerCAM(model, model.net[0], propagation="positive", gates=[model.spare])
    with pytest.raises(ValueError, match="gate 'spare' did not run during the forward pass"):
        cam.attribute(images, target=0)
    _assert_nothing_left(model, images)


@pytest.mark.parametrize("gates", ["relu-below", "relu"])
def test_relu_gates_on_in_place_relus_equal_the_same_model_without_in_place(gates: str) -> None:
    # torchvision's ResNet applies one in-place ReLU module up to three times per block
    # (the segmentation task's gates): each call's output is gated like an out-of-place one.
    import copy

    from captum_shallow.models import build_model, layer_preset, resolve_layers

    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x, target = torch.rand(2, 3, 64, 64), [3, 7]
    maps = []
    for net in (model, plain):
        layers = resolve_layers(net, list(layer_preset(net).fusion))
        cam = ShallowCAM(net, layers, fusion="mean", propagation="positive", gates=gates)
        maps.append(cam.attribute(x, target=target))
    off = ShallowCAM(plain, resolve_layers(plain, list(layer_preset(plain).fusion)), fusion="mean")
    assert torch.allclose(maps[0], maps[1], atol=1e-6)
    assert not torch.allclose(maps[1], off.attribute(x, target=target), atol=1e-3)


class _FunctionalTrunk(nn.Module):
    """ReLU modules only in the head: the trunk's rectifications are F.relu calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean((2, 3)))


def test_relu_gates_that_change_no_gradient_warn(images: Tensor) -> None:
    torch.manual_seed(0)
    net = _FunctionalTrunk().eval()
    layers = [net.conv1, net.conv2, net.conv3]
    plain = ShallowCAM(net, layers).attribute(images, target=TARGET)
    below = ShallowCAM(net, layers, propagation="positive", gates="relu-below")
    with pytest.warns(
        UserWarning,
        match="'relu-below' changed no gradient: no ReLU-family module "
        "ran between the shallowest and the deepest layer",
    ):
        torch.testing.assert_close(below.attribute(images, target=TARGET), plain, rtol=0, atol=0)
    # Every ReLU call, the head's included, gates: it changes the maps and says nothing.
    every = ShallowCAM(net, layers, propagation="positive", gates="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not torch.allclose(every.attribute(images, target=TARGET), plain)
        # A model whose ReLU modules run between the layers: no warning either.
        chain = _chain_net()
        ShallowCAM(
            chain, [chain[0], chain[1], chain[2]], propagation="positive", gates="relu-below"
        ).attribute(images, target=TARGET)
