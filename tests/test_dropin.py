"""Drop-in for Captum: the kinds of error Captum raises, and maps differentiable as Captum's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from captum.attr import LayerGradientXActivation
from torch import Tensor, nn

from captum_shallow import (
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
)
from captum_shallow.attribution._errors import AttributionValueError, TargetIndexError

CAMS = [LayerGradCam, LayerHiResCam, LayerCAM, LayerGradCamPlusPlus, LayerXGradCam]


class TwoConvNet(nn.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> mean -> linear over 5 classes (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        features = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(features.mean(dim=(2, 3)))


@pytest.fixture
def net() -> TwoConvNet:
    return TwoConvNet().double().eval()


@pytest.fixture
def images() -> Tensor:
    return torch.randn(3, 2, 8, 8, dtype=torch.float64)


def _no_hooks(model: nn.Module) -> bool:
    return not any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()
    )


# Errors of the kind Captum raises, with our messages.


@pytest.mark.parametrize("cam_class", CAMS)
@pytest.mark.parametrize(
    ("target", "kinds", "message"),
    [
        ((9999,) * 20, (AssertionError, ValueError), "has more indices than the output"),
        (9999, (IndexError, ValueError), "target 9999 is out of range"),
        ([0, 1], (AssertionError, ValueError), "target holds 2 entries but the batch has 3"),
        (None, (AssertionError, ValueError), "target is required"),
    ],
)
def test_a_bad_target_raises_what_captum_raises_with_our_message(
    cam_class: type,
    target: object,
    kinds: tuple[type[Exception], ...],
    message: str,
    net: TwoConvNet,
    images: Tensor,
) -> None:
    for kind in kinds:
        with pytest.raises(kind, match=message):
            cam_class(net, net.conv2).attribute(images, target=target)
    assert _no_hooks(net)


def test_captum_raises_the_same_kinds_for_the_same_targets(net: TwoConvNet, images: Tensor) -> None:
    theirs = CaptumLayerGradCam(net, net.conv2)
    with pytest.raises(AssertionError):
        theirs.attribute(images, target=(9999,) * 20)
    with pytest.raises(IndexError):
        theirs.attribute(images, target=9999)
    with pytest.raises(AssertionError):
        theirs.attribute(images, target=None)


def test_error_classes_are_both_kinds() -> None:
    assert issubclass(AttributionValueError, ValueError)
    assert issubclass(AttributionValueError, AssertionError)
    assert issubclass(TargetIndexError, IndexError)
    assert issubclass(TargetIndexError, ValueError)


def test_a_module_that_runs_twice_is_still_refused_and_hooks_are_removed(images: Tensor) -> None:
    shared = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(2, 3, 1), shared, nn.Conv2d(3, 3, 1), shared, nn.Flatten())
    model = model.double()
    with pytest.raises(AssertionError, match="runs more than once per forward pass"):
        LayerGradCam(model, shared).attribute(images, target=0)
    assert _no_hooks(model)


@pytest.mark.parametrize("cam_class", CAMS)
def test_relu_below_is_refused_on_a_single_layer(cam_class: type, net: TwoConvNet) -> None:
    with pytest.raises(ValueError, match=r"gates must be .* got 'relu-below'; 'relu-below' gates"):
        cam_class(net, net.conv2, propagation="positive", gates="relu-below")
    # Where it can change a gradient, ShallowCAM takes it.
    cam = ShallowCAM(net, [net.conv1, net.conv2], propagation="positive", gates="relu-below")
    assert cam.gates == "relu-below"


# Differentiable maps, as Captum's.


def _parameter_grads(model: nn.Module, attribution: Tensor) -> dict[str, Tensor | None]:
    model.zero_grad(set_to_none=True)
    attribution.sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same_grads(ours: dict[str, Tensor | None], theirs: dict[str, Tensor | None]) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        mine, other = ours[name], theirs[name]
        assert (mine is None) == (other is None), name
        if mine is not None and other is not None:
            torch.testing.assert_close(mine, other, msg=name)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_grad_cam_gradients_equal_captums(
    create_graph: bool, relu: bool, net: TwoConvNet, images: Tensor
) -> None:
    kwargs = {"target": [0, 3, 4], "relu_attributions": relu}
    grad_kwargs = {"create_graph": True} if create_graph else None
    ours = LayerGradCam(net, net.conv2).attribute(images, grad_kwargs=grad_kwargs, **kwargs)
    theirs = CaptumLayerGradCam(net, net.conv2).attribute(images, grad_kwargs=grad_kwargs, **kwargs)
    assert isinstance(ours, Tensor)
    assert ours.requires_grad
    assert theirs.requires_grad
    our_grads, their_grads = _parameter_grads(net, ours), _parameter_grads(net, theirs)
    _assert_same_grads(our_grads, their_grads)
    # Below the layer (and the layer itself) always; above it only through the gradient term.
    assert our_grads["conv1.weight"] is not None
    assert (our_grads["head.weight"] is not None) is create_graph


@pytest.mark.parametrize("create_graph", [False, True])
def test_hirescam_gradients_equal_captums_gradient_x_activation(
    create_graph: bool, net: TwoConvNet, images: Tensor
) -> None:
    grad_kwargs = {"create_graph": True} if create_graph else None
    ours = LayerHiResCam(net, net.conv1).attribute(
        images, target=2, relu_attributions=False, grad_kwargs=grad_kwargs
    )
    theirs = LayerGradientXActivation(net, net.conv1).attribute(
        images, target=2, grad_kwargs=grad_kwargs
    )
    assert isinstance(ours, Tensor)
    assert isinstance(theirs, Tensor)
    _assert_same_grads(
        _parameter_grads(net, ours), _parameter_grads(net, theirs.sum(dim=1, keepdim=True))
    )


def _by_hand(
    net: TwoConvNet,
    images: Tensor,
    layer_map: Callable[[Tensor, Tensor], Tensor],
    create_graph: bool,
) -> Tensor:
    """The map from a hand-written forward and autograd.grad down to conv2's output."""
    activation = net.conv2(net.relu1(net.conv1(images)))
    scores = net.head(net.relu2(activation).mean(dim=(2, 3)))
    picked = scores.gather(1, torch.tensor([[1], [0], [4]])).sum()
    (gradient,) = torch.autograd.grad(picked, activation, create_graph=create_graph)
    return layer_map(gradient, activation)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("cam_class", CAMS)
def test_every_cam_is_differentiable_as_the_hand_written_graph(
    cam_class: type, create_graph: bool, net: TwoConvNet, images: Tensor
) -> None:
    grad_kwargs = {"create_graph": True} if create_graph else None
    ours = cam_class(net, net.conv2).attribute(images, target=[1, 0, 4], grad_kwargs=grad_kwargs)
    expected = _by_hand(
        net, images, lambda g, a: cam_class.layer_attribution(g, a, None), create_graph
    )
    torch.testing.assert_close(ours, expected)
    _assert_same_grads(_parameter_grads(net, ours), _parameter_grads(net, expected))


@pytest.mark.parametrize("create_graph", [False, True])
def test_shallowcam_is_differentiable_down_to_its_shallowest_layer(
    create_graph: bool, net: TwoConvNet, images: Tensor
) -> None:
    grad_kwargs = {"create_graph": True} if create_graph else None
    cam = ShallowCAM(net, [net.conv1, net.conv2], truncation=None, propagation=None)
    fused = cam.attribute(images, target=[1, 0, 4], grad_kwargs=grad_kwargs)
    assert isinstance(fused, Tensor)
    assert fused.grad_fn is not None
    grads = _parameter_grads(net, fused)
    assert grads["conv1.weight"] is not None
    assert bool(grads["conv1.weight"].abs().sum() > 0)
    assert (grads["head.weight"] is not None) is create_graph


def test_no_grad_around_the_call_gives_the_same_map_without_a_graph(
    net: TwoConvNet, images: Tensor
) -> None:
    cam = LayerCAM(net, net.conv2)
    with_graph = cam.attribute(images, target=1)
    with torch.no_grad():
        without = cam.attribute(images, target=1)
    assert with_graph.grad_fn is not None
    assert without.grad_fn is None
    assert not without.requires_grad
    torch.testing.assert_close(without, with_graph.detach(), rtol=0, atol=0)
    with torch.no_grad():
        theirs = CaptumLayerGradCam(net, net.conv2).attribute(images, target=1)
    assert theirs.grad_fn is None


def test_a_flip_consistency_loss_trains_the_layers_below(images: Tensor) -> None:
    net = TwoConvNet().double().train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    cam = LayerCAM(net, net.conv2)
    losses = []
    for _ in range(5):
        maps = cam.attribute(images, target=1)
        flipped = cam.attribute(images.flip(-1), target=1).flip(-1)
        loss = (maps - flipped).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
