"""The measured defaults (docs/evidence.rst) and ShallowCAM.from_model."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import captum_shallow
from captum_shallow import (
    GradientTruncation,
    ShallowCAM,
    TaskDefaults,
    task_defaults,
)
from captum_shallow import attribution as attribution_package
from captum_shallow.attribution import TASK_DEFAULTS, _defaults
from captum_shallow.models import build_model, load_model

SOFT_90 = GradientTruncation("soft", quantile=0.9)
LOCALISATION = task_defaults("localisation")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18").eval()


@pytest.mark.parametrize(
    ("module", "name", "instead", "value"),
    [
        (captum_shallow, "DEFAULT_TRUNCATION", 'GradientTruncation("soft", quantile=0.9)', SOFT_90),
        (attribution_package, "DEFAULT_TRUNCATION", "GradientTruncation", SOFT_90),
        (attribution_package, "DEFAULT_FUSION", 'task_defaults("localisation").fusion', "mean"),
        (
            attribution_package,
            "DEFAULT_FUSED_TRUNCATION",
            'task_defaults("localisation").truncation',
            LOCALISATION.truncation,
        ),
    ],
)
def test_the_old_default_aliases_warn_and_give_their_value(
    module: object, name: str, instead: str, value: object
) -> None:
    # One source of the defaults: the task defaults; the aliases stay until 0.3.
    with pytest.warns(
        DeprecationWarning, match=r"is deprecated and will be removed in 0\.3"
    ) as got:
        assert getattr(module, name) == value
    assert instead in str(got[0].message)
    assert name not in module.__all__  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="has no attribute 'DEFAULT_GAMMA'"):
        _ = module.DEFAULT_GAMMA  # type: ignore[attr-defined]


def test_from_model_takes_the_preset_layers_from_stride_4_to_the_last(resnet: nn.Module) -> None:
    cam = ShallowCAM.from_model(resnet)
    assert [m for m in cam.layers] == [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    assert cam.fusion == LOCALISATION.fusion == "mean"
    assert cam.truncations == [LOCALISATION.truncation] * 4
    assert (cam.propagation, cam.gates, cam.class_gate) == ("positive", "relu-below", True)
    assert cam.gamma is None


def test_from_model_on_efficientnet_lite0_skips_the_stride_2_block() -> None:
    model = load_model("efficientnet-lite0")
    cam = ShallowCAM.from_model(model)
    blocks = model._blocks  # type: ignore[attr-defined]
    assert cam.layers == [blocks[2], blocks[4], blocks[10], blocks[15]]


def test_from_model_keyword_arguments_override_the_defaults(resnet: nn.Module) -> None:
    cam = ShallowCAM.from_model(resnet, fusion="max", truncation=SOFT_90, gamma=2.0)
    assert cam.fusion == "max"
    assert cam.truncations == [SOFT_90] * 4
    assert cam.gamma == 2.0


def test_from_model_equals_the_explicit_construction(resnet: nn.Module) -> None:
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layers = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    expected = ShallowCAM(resnet, layers).attribute(images, target=[3, 7])
    fused = ShallowCAM.from_model(resnet).attribute(images, target=[3, 7])
    torch.testing.assert_close(fused, expected, rtol=0, atol=0)
    assert fused.shape == (2, 1, 16, 16)
    torch.testing.assert_close(fused.amax(dim=(1, 2, 3)), torch.ones(2))


def test_from_model_input_size_changes_nothing_but_the_measurement(resnet: nn.Module) -> None:
    assert (
        ShallowCAM.from_model(resnet, input_size=128).layers == ShallowCAM.from_model(resnet).layers
    )


def test_from_model_finds_a_custom_models_layers_or_says_why_not() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="has lazy modules that are not initialised yet; run "):
        ShallowCAM.from_model(model)


def test_both_tasks_hold_the_documented_defaults() -> None:
    # The values chosen by benchmarks/real_photos.py's rule (docs/evidence.rst): one
    # configuration for both tasks.
    for task in ("localisation", "segmentation"):
        defaults = task_defaults(task)
        assert (defaults.fusion, defaults.truncation, defaults.class_gate) == ("mean", None, True)
        assert (defaults.propagation, defaults.gates, defaults.threshold) == (
            "positive",
            "relu-below",
            0.25,
        )
        assert (defaults.scales, defaults.flips) == ((1.0,), False)
    assert tuple(TASK_DEFAULTS) == ("localisation", "segmentation")


def test_the_task_fills_what_is_not_given_and_explicit_arguments_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
    layers = [net[0], net[2]]
    segmentation = TaskDefaults(
        fusion="geometric",
        truncation=SOFT_90,
        propagation="positive",
        gates="relu",
        threshold=0.05,
    )
    monkeypatch.setattr(_defaults, "TASK_DEFAULTS", {**TASK_DEFAULTS, "segmentation": segmentation})
    cam = ShallowCAM(net, layers, task="segmentation")
    assert (cam.fusion, cam.truncations, cam.propagation, cam.gates, cam.task) == (
        "geometric",
        [SOFT_90] * 2,
        "positive",
        "relu",
        "segmentation",
    )
    explicit = ShallowCAM(
        net, layers, task="segmentation", truncation=None, propagation=None, fusion="max"
    )
    assert (explicit.fusion, explicit.truncations, explicit.propagation, explicit.gates) == (
        "max",
        [None, None],
        None,
        None,
    )
    assert ShallowCAM(net, layers, task="segmentation", gates="layers").gates == "layers"
    # localisation keeps its own
    assert ShallowCAM(net, layers).propagation == TASK_DEFAULTS["localisation"].propagation


def test_from_model_passes_the_task(resnet: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    segmentation = TaskDefaults(
        fusion="mean", truncation=None, propagation="positive", gates="layers", threshold=0.1
    )
    monkeypatch.setattr(_defaults, "TASK_DEFAULTS", {**TASK_DEFAULTS, "segmentation": segmentation})
    cam = ShallowCAM.from_model(resnet, task="segmentation", gamma=2.0)
    assert (cam.task, cam.fusion, cam.propagation, cam.gates, cam.gamma) == (
        "segmentation",
        "mean",
        "positive",
        "layers",
        2.0,
    )
    assert repr(cam).endswith("propagation='positive', gates='layers', task='segmentation')")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fusion": "median"}, ValueError, "TaskDefaults: fusion must be one of"),
        ({"truncation": "soft"}, TypeError, "TaskDefaults: truncation must be a GradientTrunc"),
        ({"propagation": "negative"}, ValueError, "propagation must be a GradientTruncation"),
        ({"gates": "all"}, ValueError, "TaskDefaults: gates must be one of"),
        ({"threshold": 1.5}, ValueError, r"TaskDefaults: threshold must lie in \[0, 1\]"),
        ({"threshold": "0.1"}, TypeError, "TaskDefaults: threshold must be a number"),
    ],
)
def test_task_defaults_are_validated(kwargs: dict, error: type[Exception], message: str) -> None:
    values = {
        "fusion": "product",
        "truncation": None,
        "propagation": None,
        "gates": "layers",
        "threshold": 0.15,
    }
    with pytest.raises(error, match=message):
        TaskDefaults(**{**values, **kwargs})


def test_an_unknown_task_is_refused(resnet: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"task must be one of \('localisation', 'segmentation'\)"):
        ShallowCAM.from_model(resnet, task="detection")


class _FunctionalReLU(nn.Module):
    """A CNN whose activations are functional calls: nothing for ReLU gates to hook."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_task_relu_gates_on_a_model_without_relu_modules_warn_and_turn_propagation_off() -> None:
    torch.manual_seed(0)
    net = _FunctionalReLU().eval()
    layers = [net.conv1, net.conv2]
    assert task_defaults("segmentation").gates == "relu-below"
    with pytest.warns(UserWarning, match="task 'segmentation' truncates the gradient at ReLU"):
        cam = ShallowCAM(net, layers, task="segmentation")
    assert (cam.propagation, cam.gates) == (None, None)
    x = torch.rand(2, 3, 12, 12)
    plain = ShallowCAM(net, layers, task="segmentation", propagation=None)
    assert torch.equal(cam.attribute(x, target=1), plain.attribute(x, target=1))
    # Asked for explicitly, the gates are an error that says what to do.
    with pytest.raises(ValueError, match="has no ReLU-family module"):
        ShallowCAM(net, layers, propagation="positive", gates="relu-below").attribute(x, target=1)
    # A model with ReLU modules keeps the task's gates and no warning.
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ShallowCAM(seq, [seq[0], seq[2]], task="segmentation").gates == "relu-below"


def _tiny_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(32, 8, num_layers=4, num_heads=2, hidden_dim=16, mlp_dim=32)
    nn.init.normal_(vit.heads.head.weight, std=0.05)  # torchvision's head starts at zero
    return vit.eval()


def _swin_t() -> nn.Module:
    from torchvision.models import swin_t

    return swin_t(num_classes=5).eval()


@pytest.mark.slow
@pytest.mark.parametrize(("make", "size"), [(_tiny_vit, 32), (_swin_t, 64)])
def test_task_relu_gates_act_at_the_gelu_modules_of_transformers(
    make: Callable[[], nn.Module], size: int
) -> None:
    torch.manual_seed(0)
    model = make()
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    inputs = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    for task in ("localisation", "segmentation"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # GELU is in the ReLU family: no warning
            # No class gate: this untrained model's last-block Grad-CAM may have no
            # positive value, and the test is about the ReLU-family gates.
            cam = ShallowCAM.from_model(model, size, task=task, class_gate=False)
        assert cam.gates == task_defaults(task).gates
        fused, maps = cam.attribute(inputs, target=[1, 2], return_layer_maps=True)
        ungated = ShallowCAM.from_model(model, size, task=task, propagation=None, class_gate=False)
        _, plain = ungated.attribute(inputs, target=[1, 2], return_layer_maps=True)
        assert bool(fused.isfinite().all())
        assert float(fused.amin()) >= 0
        torch.testing.assert_close(fused.amax(dim=(2, 3)), torch.ones(2, 1))
        # Gates act only below the deepest layer, whose map is the ungated one.
        torch.testing.assert_close(maps[-1], plain[-1], rtol=0, atol=0)
        assert float((maps[0] - plain[0]).abs().max()) > 1e-3 * float(plain[0].max())


def test_one_layer_takes_the_tasks_propagation_off_without_a_warning(
    recwarn: pytest.WarningsChecker,
) -> None:
    # With one layer the task's gates (below the deepest layer, or above the
    # shallowest) change no gradient, so the map is the same with propagation off.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    head = nn.Sequential(net, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    torch.manual_seed(0)
    inputs = torch.rand(2, 3, 12, 12)
    for task in TASK_DEFAULTS:
        cam = ShallowCAM(head, [net[2]], task=task)
        assert (cam.propagation, cam.gates) == (None, None)
        off = ShallowCAM(head, [net[2]], task=task, propagation=None)
        torch.testing.assert_close(
            cam.attribute(inputs, target=1), off.attribute(inputs, target=1), rtol=0, atol=0
        )
    assert not [w for w in recwarn.list if "changed no gradient" in str(w.message)]
    # Asked for explicitly, the gates stay (and say when they change nothing).
    explicit = ShallowCAM(head, [net[2]], propagation="positive", gates="relu-below")
    assert explicit.gates == "relu-below"
