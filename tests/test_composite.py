"""Composite WSSS set: seeded scenes with exact masks, the fine-tuned Lite0 and its cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from captum_shallow.datasets import (
    COMPOSITE_CLASSES,
    CompositeClassifier,
    CompositeConfig,
    FineTuneConfig,
    SyntheticConfig,
    TrainConfig,
    TrainedClassifier,
    load_or_train_classifier,
    make_synthetic_split,
)
from captum_shallow.datasets._composite import _BACKGROUNDS, _scene, _silhouette, _template
from captum_shallow.datasets._scenes import _background
from captum_shallow.datasets._training import _cache_key

TINY = CompositeConfig(
    image_size=64, num_train=48, num_test=24, min_object_size=20, max_object_size=40, seed=3
)
TINY_TUNE = FineTuneConfig(frozen_blocks=11, epochs=1, batch_size=16)


def test_split_is_seeded_per_image() -> None:
    a = make_synthetic_split(TINY, "test")
    b = make_synthetic_split(TINY, "test")
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    assert a.images.shape == (24, 3, 64, 64)
    assert a.images.dtype == torch.float32
    assert 0.0 <= a.images.min().item() <= a.images.max().item() <= 1.0
    other = make_synthetic_split(dataclasses.replace(TINY, seed=4), "test")
    assert not torch.equal(a.images, other.images)
    assert not torch.equal(a.images[:5], make_synthetic_split(TINY, "train").images[:5])
    # Image i depends on (seed, split, i) only: a smaller split is a prefix.
    small = make_synthetic_split(dataclasses.replace(TINY, num_test=5), "test")
    assert torch.equal(small.images, a.images[:5])
    assert torch.equal(small.masks, a.masks[:5])


def test_labels_are_the_classes_left_in_the_mask() -> None:
    split = make_synthetic_split(TINY, "test")
    classes = len(COMPOSITE_CLASSES)
    present = torch.stack(
        [torch.bincount(m.flatten(), minlength=classes + 1)[1:] > 0 for m in split.masks]
    )
    assert torch.equal(present.float(), split.labels)
    assert split.labels.sum(1).min() >= 1
    assert split.labels.sum(1).max() <= TINY.max_objects
    assert int(split.masks.max()) <= classes
    # Every object drawn keeps at least 1 - 0.3 - 0.3 * 0.7 of its pixels: it is labelled.
    for index in range(TINY.num_test):
        _, mask, drawn = _scene(TINY, np.random.default_rng([TINY.seed, 1, index]))
        assert {c + 1 for c in drawn} == set(np.unique(mask).tolist()) - {0}


def test_an_object_that_later_objects_hide_is_not_labelled() -> None:
    # Many small objects, no limit on occlusion: now and then one vanishes.
    crowded = CompositeConfig(
        image_size=24,
        num_test=1000,
        max_objects=5,
        min_object_size=8,
        max_object_size=16,
        max_occlusion=1.0,
    )
    split = make_synthetic_split(crowded, "test")
    hidden = []
    for index in range(crowded.num_test):
        _, mask, drawn = _scene(crowded, np.random.default_rng([crowded.seed, 1, index]))
        assert torch.equal(split.masks[index], torch.from_numpy(mask).long())
        labelled = {int(c) for c in split.labels[index].nonzero()}
        assert labelled <= set(drawn)
        hidden += [(index, c) for c in set(drawn) - labelled]
    assert hidden  # (606, 2) and (725, 2) when this was written
    for index, kind in hidden:
        assert not (split.masks[index] == kind + 1).any()


def test_masks_are_exact() -> None:
    """Every pixel outside the mask is the background's; every pixel inside was painted."""
    for index in range(8):
        image, mask, _ = _scene(TINY, np.random.default_rng([TINY.seed, 1, index]))
        replay = np.random.default_rng([TINY.seed, 1, index])  # the background is drawn first
        background = _background(replay, _BACKGROUNDS, TINY.image_size)
        outside = mask == 0
        assert np.array_equal(image[outside], background[outside])
        changed = (image[~outside] != background[~outside]).any(-1)
        assert changed.mean() > 0.98  # a texture pixel may equal the background's by chance


def test_silhouettes_keep_their_area_at_any_angle() -> None:
    # Glyphs are filled by the even-odd rule: the anchor's ring keeps its hole, so
    # the middle column goes ring, hole, ring (and shaft) from the top.
    column = _template("anchor")[:, _template("anchor").shape[1] // 2]
    top = int(column.argmax())
    hole = top + int((~column[top:]).argmax())
    assert column[top]
    assert not column[hole]
    assert hole < len(column) // 4
    assert column[hole:].any()
    rng = np.random.default_rng(0)
    size = 64
    for kind, name in enumerate(COMPOSITE_CLASSES):
        areas = [int(_silhouette(kind, size, 180.0, rng).sum()) for _ in range(6)]
        boxes = [max(_silhouette(kind, size, 180.0, rng).shape) for _ in range(6)]
        assert max(boxes) <= int(np.ceil(size * np.sqrt(2))) + 1
        if name == "blob":  # random shapes between a disk of radius 0.4 and one of radius 1
            assert np.pi * (0.4 * size / 2) ** 2 < min(areas)
            assert max(areas) < np.pi * (size / 2) ** 2
        else:  # rotation and mirroring keep the template's area, scaled
            template = _template(name)
            expected = template.sum() * (size / max(template.shape)) ** 2
            assert areas == pytest.approx([expected] * 6, rel=0.06), name
            # Upright (no rotation), the box is the template's box, scaled.
            upright = _silhouette(kind, size, 0.0, rng).shape
            scaled = np.array(template.shape) * size / max(template.shape)
            assert np.abs(np.array(upright) - scaled).max() <= 1.0, name


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"max_objects must be in 1\.\.5, got 6"):
        CompositeConfig(max_objects=6)
    with pytest.raises(ValueError, match=r"image_size must be in 16\.\.200, got 256"):
        CompositeConfig(image_size=256)
    with pytest.raises(ValueError, match=r"image_size / sqrt\(2\) = 90.5, got 44 and 100"):
        CompositeConfig(max_object_size=100)
    with pytest.raises(ValueError, match="got 60 and 50"):
        CompositeConfig(min_object_size=60, max_object_size=50)
    with pytest.raises(ValueError, match=r"max_occlusion must be in \[0, 1\], got 1.5"):
        CompositeConfig(max_occlusion=1.5)
    with pytest.raises(ValueError, match=r"max_rotation must be in \[0, 180\] degrees, got -5"):
        CompositeConfig(max_rotation=-5)
    with pytest.raises(ValueError, match="positive"):
        CompositeConfig(num_test=0)
    with pytest.raises(ValueError, match=r"frozen_blocks must be in 0\.\.16, got -1"):
        FineTuneConfig(frozen_blocks=-1)
    with pytest.raises(ValueError, match="positive"):
        FineTuneConfig(epochs=0)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        make_synthetic_split(TINY, "val")
    with pytest.raises(TypeError, match="SyntheticConfig or a CompositeConfig, got dict"):
        make_synthetic_split({}, "test")
    with pytest.raises(TypeError, match="CompositeConfig and TrainConfig do not go together"):
        load_or_train_classifier(TINY, TrainConfig())
    with pytest.raises(TypeError, match="SyntheticConfig and FineTuneConfig do not go together"):
        load_or_train_classifier(SyntheticConfig(), TINY_TUNE)


def test_classifier_is_the_backbone_with_a_new_head_and_frozen_shallow_layers(
    lite0: nn.Module,
) -> None:
    model = CompositeClassifier(frozen_blocks=5).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(images)
        direct = model.backbone((images - model.mean) / model.std)
        imagenet = lite0.extract_features((images - model.mean) / model.std)
        shared = model.backbone.extract_features((images - model.mean) / model.std)
    assert ours.shape == (2, len(COMPOSITE_CLASSES))
    assert torch.equal(ours, direct)
    assert torch.equal(imagenet, shared)  # every layer but the last is ImageNet's
    backbone = model.backbone
    trainable = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in backbone.named_parameters()
        if p.requires_grad and n.startswith("_blocks")
    }
    assert trainable == {f"_blocks.{i}" for i in range(5, 16)}
    assert not any(p.requires_grad for p in backbone._conv_stem.parameters())
    model.train()
    assert not backbone._bn0.training
    assert not backbone._blocks[4]._bn1.training  # frozen statistics stay ImageNet's
    assert backbone._blocks[5]._bn1.training
    shapes = []
    hooks = [
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        for stage in model.named_stages().values()
    ]
    with torch.no_grad():
        model.eval()(images)
    for hook in hooks:
        hook.remove()
    assert list(model.named_stages()) == [f"backbone._blocks.{i}" for i in (0, 2, 4, 10, 15)]
    assert shapes == [(16, 32, 32), (24, 16, 16), (40, 8, 8), (112, 4, 4), (320, 2, 2)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedClassifier:
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    result = load_or_train_classifier(TINY, TINY_TUNE, cache_dir=tmp_path_factory.mktemp("c"))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert not torch.are_deterministic_algorithms_enabled()
    return result


@pytest.mark.slow
def test_fine_tuning_is_deterministic_and_cached(
    trained: TrainedClassifier, lite0: nn.Module
) -> None:
    assert not trained.cached
    assert trained.path.parent.name == "composite"
    assert set(trained.metrics) == {"mAP", "label_accuracy", "exact_match", "train_seconds"}
    assert isinstance(trained.model, CompositeClassifier)
    assert not trained.model.training
    # The frozen part kept the ImageNet weights and statistics; the rest moved.
    state = trained.model.backbone.state_dict()
    imagenet = lite0.state_dict()
    for key in ("_conv_stem.weight", "_bn0.running_mean", "_blocks.10._bn2.running_var"):
        assert torch.equal(state[key], imagenet[key]), key
    assert not torch.equal(state["_blocks.11._bn2.weight"], imagenet["_blocks.11._bn2.weight"])

    cache_dir = trained.path.parent.parent
    again = load_or_train_classifier(TINY, TINY_TUNE, cache_dir=cache_dir)
    assert again.cached
    assert again.metrics == trained.metrics
    retrained = load_or_train_classifier(TINY, TINY_TUNE, cache_dir=cache_dir, retrain=True)
    assert not retrained.cached
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
        assert torch.equal(value, retrained.model.state_dict()[key]), key
    test = make_synthetic_split(TINY, "test")
    with torch.no_grad():
        assert torch.equal(trained.model(test.images[:4]), again.model(test.images[:4]))


def test_cache_key_follows_every_setting() -> None:
    base = _cache_key(TINY, TINY_TUNE)
    assert base == _cache_key(dataclasses.replace(TINY), dataclasses.replace(TINY_TUNE))
    for change in ({"max_occlusion": 0.5}, {"seed": 9}, {"num_train": 49}):
        assert base != _cache_key(dataclasses.replace(TINY, **change), TINY_TUNE), change
    for change in ({"frozen_blocks": 5}, {"epochs": 2}, {"lr": 2e-3}):
        assert base != _cache_key(TINY, dataclasses.replace(TINY_TUNE, **change)), change
