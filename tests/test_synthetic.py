"""Synthetic WSSS set: seeded exact scenes, the classifier, its cache and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from captum_shallow.datasets import (
    SYNTHETIC_CLASSES,
    SyntheticClassifier,
    SyntheticConfig,
    TrainConfig,
    TrainedClassifier,
    load_or_train_classifier,
    make_synthetic_split,
    multilabel_metrics,
)
from captum_shallow.datasets._shapes import _shape_mask
from captum_shallow.datasets._training import _cache_key
from captum_shallow.evaluation import evaluate_cams

TINY = SyntheticConfig(
    image_size=32, num_train=96, num_test=32, min_object_size=8, max_object_size=14, seed=3
)
TINY_TRAIN = TrainConfig(width=4, epochs=2, batch_size=32)


def test_split_is_seeded_and_labels_come_from_exact_masks() -> None:
    a = make_synthetic_split(TINY, "test")
    b = make_synthetic_split(TINY, "test")
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    other = make_synthetic_split(SyntheticConfig(**{**TINY.__dict__, "seed": 4}), "test")
    assert not torch.equal(a.images, other.images)
    assert not torch.equal(a.images[:5], make_synthetic_split(TINY, "train").images[:5])
    assert a.images.dtype == torch.float32
    assert a.images.min().item() >= 0.0
    assert a.images.max().item() <= 1.0
    present = torch.stack([torch.bincount(m.flatten(), minlength=6)[1:] > 0 for m in a.masks])
    assert torch.equal(present.float(), a.labels)
    counts = a.labels.sum(1)
    assert counts.min() >= 1
    assert counts.max() <= TINY.max_objects
    # Images are drawn independently: a smaller split is a prefix of a bigger one.
    small = make_synthetic_split(SyntheticConfig(**{**TINY.__dict__, "num_test": 5}), "test")
    assert torch.equal(small.masks, a.masks[:5])


def test_shape_masks_have_the_expected_geometry() -> None:
    size = 40
    disk = _shape_mask(SYNTHETIC_CLASSES.index("disk"), size, 0.0)
    assert disk.sum() == pytest.approx(math.pi * (0.95 * size / 2) ** 2, rel=0.03)
    square = _shape_mask(SYNTHETIC_CLASSES.index("square"), size, 0.0)
    rows = np.flatnonzero(square.any(1))
    assert square.sum() == len(rows) ** 2  # axis-aligned block at angle 0
    turned = _shape_mask(SYNTHETIC_CLASSES.index("square"), size, math.pi / 4)
    assert abs(int(turned.sum()) - int(square.sum())) < 0.05 * square.sum()
    ring = _shape_mask(SYNTHETIC_CLASSES.index("ring"), size, 0.0)
    assert not ring[size // 2, size // 2]
    assert ring.sum() == pytest.approx(math.pi * (0.97**2 - 0.55**2) * (size / 2) ** 2, rel=0.05)
    triangle = _shape_mask(SYNTHETIC_CLASSES.index("triangle"), size, 0.0)
    area = 3 * math.sqrt(3) / 4 * (size / 2) ** 2  # equilateral, circumradius size / 2
    assert triangle.sum() == pytest.approx(area, rel=0.05)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        SyntheticConfig(max_objects=9)
    with pytest.raises(ValueError, match="object_size"):
        SyntheticConfig(min_object_size=40, max_object_size=30)
    with pytest.raises(ValueError, match="split"):
        make_synthetic_split(TINY, "val")


def test_multilabel_metrics_match_sklearn() -> None:
    from sklearn import metrics

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 5, generator=gen)
    labels = (torch.rand(50, 5, generator=gen) < 0.4).float()
    ours = multilabel_metrics(logits, labels)
    assert ours["mAP"] == pytest.approx(
        metrics.average_precision_score(labels.numpy(), logits.numpy(), average="macro")
    )
    assert ours["exact_match"] == pytest.approx(
        metrics.accuracy_score(labels.numpy(), (logits > 0).float().numpy())
    )
    assert ours["label_accuracy"] == pytest.approx(((logits > 0) == labels.bool()).float().mean())


def test_classifier_stages_go_from_shallow_to_deep() -> None:
    model = SyntheticClassifier(width=4).eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
        for stage in model.named_stages().values()
    ]
    model(torch.rand(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert shapes == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert list(model.named_stages()) == ["stage1", "stage2", "stage3", "stage4"]


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedClassifier:
    """The tiny classifier, trained once for this module (its global-state checks inside)."""
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    result = load_or_train_classifier(TINY, TINY_TRAIN, cache_dir=tmp_path_factory.mktemp("c"))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert not torch.are_deterministic_algorithms_enabled()
    return result


@pytest.mark.slow
def test_training_is_deterministic_and_cached(trained: TrainedClassifier) -> None:
    assert not trained.cached
    assert trained.path.exists()
    assert trained.path.parent.name == "synthetic"
    assert set(trained.metrics) == {"mAP", "label_accuracy", "exact_match", "train_seconds"}
    assert 0.0 <= trained.metrics["mAP"] <= 1.0
    cache_dir = trained.path.parent.parent

    rng_state = torch.get_rng_state()
    again = load_or_train_classifier(TINY, TINY_TRAIN, cache_dir=cache_dir)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert again.cached
    assert again.metrics == trained.metrics
    for key, value in _state(trained.model).items():
        assert torch.equal(value, again.model.state_dict()[key])

    retrained = load_or_train_classifier(TINY, TINY_TRAIN, cache_dir=cache_dir, retrain=True)
    assert not retrained.cached
    for key, value in _state(trained.model).items():
        assert torch.equal(value, retrained.model.state_dict()[key]), key


def test_cache_key_follows_every_setting() -> None:
    base = _cache_key(TINY, TINY_TRAIN)
    assert base == _cache_key(SyntheticConfig(**TINY.__dict__), TrainConfig(**TINY_TRAIN.__dict__))
    assert base != _cache_key(TINY, TrainConfig(**{**TINY_TRAIN.__dict__, "epochs": 3}))
    assert base != _cache_key(SyntheticConfig(**{**TINY.__dict__, "seed": 9}), TINY_TRAIN)


def test_tiny_benchmark_runs_end_to_end(trained: TrainedClassifier) -> None:
    from captum.attr import LayerGradCam

    model = trained.model
    batch = next(make_synthetic_split(TINY, "test").batches(16))
    stages = model.named_stages()
    for layer in (stages["stage1"], stages["stage4"]):
        gradcam = LayerGradCam(model, layer)

        def cam_fn(x: Tensor, t: Tensor, gradcam: LayerGradCam = gradcam) -> Tensor:
            return gradcam.attribute(x, target=t, relu_attributions=True)

        result = evaluate_cams(cam_fn, [batch], len(SYNTHETIC_CLASSES) + 1)
        assert result.miou.shape == (96,)
        assert 0.0 <= result.miou.min() <= result.best_miou <= 1.0
        # A higher background threshold can only turn foreground into background.
        assert result.iou[0, 0] <= result.iou[-1, 0]
