"""captum_shallow.quantus.explain: Quantus' explain_func for our attributions."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch import nn

from captum_shallow import GradientTruncation, LayerCAM, ShallowCAM
from captum_shallow._errors import MissingDependencyError
from captum_shallow.quantus import explain, quantus_module


class StageNet(nn.Module):
    """Three ReLU stages of stride 2 and a linear head over 6 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))).mean(dim=(2, 3)))


@pytest.fixture
def net() -> StageNet:
    return StageNet().eval()


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 40)).astype(np.float32)
    return x, np.array([1, 4, 0])


def test_shallowcam_by_name_equals_the_object_at_the_input_size(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = batch
    # The task's class gate (Grad-CAM at stage3) zeroes a map whose class has no positive
    # evidence there, as class 4 has on the second sample of this untrained net: these
    # targets have some, so every map must peak at 1 (and the gate is compared too).
    y = np.array([1, 5, 0])
    got = explain(net, x, y, method="shallowcam", task="segmentation")
    cam = ShallowCAM.from_model(net, task="segmentation")
    expected = cam.attribute(torch.from_numpy(x), target=y.tolist(), output_size=(32, 40))
    assert isinstance(got, np.ndarray)
    assert got.shape == (3, 1, 32, 40)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.max(axis=(1, 2, 3)), 1.0, rtol=1e-6)


def test_tensors_and_numpy_give_the_same_maps(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    from_numpy = explain(net, x, y, method="layercam", layer="stage1")
    from_tensors = explain(
        net, torch.from_numpy(x), torch.from_numpy(y), method=LayerCAM, layer="stage1"
    )
    np.testing.assert_array_equal(from_numpy, from_tensors)


def test_a_cam_class_takes_its_arguments_and_is_upsampled_bilinearly(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    soft = GradientTruncation("soft", quantile=0.5)
    got = explain(net, x, y, method=LayerCAM, layer=net.stage2, truncation=soft)
    small = LayerCAM(net, net.stage2, truncation=soft).attribute(
        torch.from_numpy(x), target=y.tolist()
    )
    expected = LayerAttribution.interpolate(small, (32, 40), "bilinear")
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_captums_layer_grad_cam_goes_through_the_same_adapter(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    theirs = explain(net, x, y, method=CaptumLayerGradCam(net, net.stage3))
    ours = explain(net, x, y, method="gradcam", layer="stage3")
    assert theirs.shape == (3, 1, 32, 40)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_the_default_single_layer_is_the_last_stage(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    np.testing.assert_array_equal(
        explain(net, x, y, method="gradcam"), explain(net, x, y, method="gradcam", layer="stage3")
    )


def test_one_target_for_the_batch(net: StageNet, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = batch
    np.testing.assert_array_equal(
        explain(net, x, 2, method="gradcam"), explain(net, x, np.array([2, 2, 2]), method="gradcam")
    )


def test_bad_methods_are_refused(net: StageNet, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    with pytest.raises(ValueError, match="unknown method 'layer_cam'; did you mean 'layercam'"):
        explain(net, x, y, method="layer_cam")
    with pytest.raises(ValueError, match=r"got arguments \['layer'\] with an attribution object"):
        explain(net, x, y, method=LayerCAM(net, net.stage1), layer="stage1")
    with pytest.raises(TypeError, match="method must be a name"):
        explain(net, x, y, method=nn.Conv2d)


def test_without_quantus_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "quantus", None)  # what an absent package imports as
    with pytest.raises(MissingDependencyError, match=r"pip install 'captum-shallow\[quantus\]'"):
        quantus_module()


@pytest.mark.needs_extra("quantus")
def test_quantus_scores_the_adapters_maps_as_the_package_does(
    net: StageNet, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    from captum_shallow.evaluation import energy_pointing_game

    quantus = quantus_module()
    x, y = batch
    masks = np.zeros((3, 1, 32, 40), dtype=bool)
    masks[:, :, 8:24, 10:30] = True
    metric = quantus.AttributionLocalisation(
        disable_warnings=True, abs=False, normalise=False, positive_attributions=True
    )
    scores = metric(
        model=net,
        x_batch=x,
        y_batch=y,
        a_batch=None,
        s_batch=masks,
        explain_func=explain,
        explain_func_kwargs={"method": "shallowcam"},
        device="cpu",
    )
    maps = torch.from_numpy(explain(net, x, y))
    own = energy_pointing_game(maps, torch.from_numpy(masks[:, 0]))
    np.testing.assert_allclose(np.asarray(scores), own.numpy(), rtol=1e-5)
