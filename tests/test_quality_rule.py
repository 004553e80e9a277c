"""The rule that chooses the task defaults (benchmarks/quality.py's ``choose``), and
the shipped defaults against the committed scores it was applied to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from captum_shallow import GradientTruncation, TaskDefaults
from captum_shallow.attribution import TASK_DEFAULTS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import quality  # noqa: E402

THRESHOLDS = [round(0.01 * i, 2) for i in range(96)]
SIMPLE = quality.Config("mean", "none", "none")
TRUNCATED = quality.Config("mean", "soft q.50", "none")
SHARP = quality.Config("max", "none", "positive@layers")


def _curve(peak: float, at: int) -> list[float]:
    return [peak - 0.001 * abs(i - at) for i in range(len(THRESHOLDS))]


def _scores(
    pointing: dict[quality.Config, float],
    extent: dict[quality.Config, float],
    quality_of: dict[quality.Config, float],
    peak_at: int = 30,
) -> quality.Scores:
    scores = quality.Scores(thresholds=THRESHOLDS)
    gradcam = quality.BASELINE_GRADCAM
    scores.put("wsss-shapes", gradcam, "miou_best", 0.50)
    scores.put("grid-lite0", gradcam, "pointing", 0.60)
    scores.put("grid-lite0", gradcam, "extent", 0.70)
    for config, value in quality_of.items():
        scores.put("wsss-shapes", config.key, "miou_best", value)
        scores.curves.setdefault("wsss-shapes", {})[config.key] = _curve(value, peak_at)
        scores.put("grid-lite0", config.key, "pointing", pointing[config])
        scores.put("grid-lite0", config.key, "extent", extent[config])
    return scores


def test_ties_go_to_the_simplest_and_each_task_keeps_its_constraints() -> None:
    configs = [SIMPLE, TRUNCATED, SHARP]
    scores = _scores(
        pointing={SIMPLE: 0.55, TRUNCATED: 0.65, SHARP: 0.45},
        extent={SIMPLE: 0.80, TRUNCATED: 0.75, SHARP: 0.30},
        quality_of={SIMPLE: 0.600, TRUNCATED: 0.604, SHARP: 0.700},
    )
    choice = quality.choose(scores, configs)
    # SHARP scores best but points 0.15 below Grad-CAM: not even segmentation takes it;
    # TRUNCATED is 0.4 point better than SIMPLE, inside the 0.5-point tie.
    assert choice["segmentation"]["config"] == SIMPLE
    assert choice["segmentation"]["eligible"] == 2
    # Localisation needs pointing >= Grad-CAM's: only TRUNCATED has it.
    assert choice["localisation"]["config"] == TRUNCATED
    assert choice["localisation"]["relaxed"] == ""
    assert choice["segmentation"]["threshold"] == pytest.approx(0.30)
    assert choice["segmentation"]["miou_at_threshold"] == {"wsss-shapes": pytest.approx(0.600)}


def test_a_better_configuration_outside_the_tie_wins() -> None:
    scores = _scores(
        pointing={SIMPLE: 0.65, TRUNCATED: 0.65},
        extent={SIMPLE: 0.80, TRUNCATED: 0.75},
        quality_of={SIMPLE: 0.600, TRUNCATED: 0.606},
        peak_at=52,
    )
    choice = quality.choose(scores, [SIMPLE, TRUNCATED])
    assert choice["segmentation"]["config"] == TRUNCATED
    assert choice["localisation"]["config"] == TRUNCATED
    assert choice["localisation"]["threshold"] == pytest.approx(0.52)


def test_when_nothing_meets_every_constraint_pointing_is_the_last_to_go() -> None:
    # SIMPLE fails extent; TRUNCATED fails extent and the WSSS margin (0.52 < 0.50 +
    # 0.05); SHARP, the best by mIoU, fails only pointing, the rarest failure here.
    scores = _scores(
        pointing={SIMPLE: 0.70, TRUNCATED: 0.65, SHARP: 0.50},
        extent={SIMPLE: 0.40, TRUNCATED: 0.30, SHARP: 0.65},
        quality_of={SIMPLE: 0.600, TRUNCATED: 0.520, SHARP: 0.700},
    )
    choice = quality.choose(scores, [SIMPLE, TRUNCATED, SHARP])
    assert choice["localisation"]["relaxed"].endswith("relaxed: mIoU, extent")
    assert choice["localisation"]["config"] == SIMPLE
    assert choice["localisation"]["eligible"] == 2
    assert choice["segmentation"]["relaxed"] == ""
    assert quality.choose(quality.Scores(), [SIMPLE]) == {
        "note": "rule not applied: no WSSS set was run"
    }


def test_a_choice_maps_to_task_defaults() -> None:
    choice = {
        "localisation": {"config": "mean | soft q.50 | soft q.90@layers", "threshold": 0.514},
        "segmentation": {"config": SIMPLE, "threshold": 0.3},
    }
    out = quality.task_defaults_of(choice)
    assert out["localisation"] == TaskDefaults(
        fusion="mean",
        truncation=GradientTruncation("soft", quantile=0.5),
        propagation=GradientTruncation("soft", quantile=0.9),
        gates="layers",
        threshold=0.51,
    )
    assert out["segmentation"] == TaskDefaults("mean", None, None, "layers", 0.3)
    with pytest.raises(ValueError, match="no TaskDefaults form"):
        quality.task_defaults_of(
            {**choice, "segmentation": {"config": "max g2 | none | none", "threshold": 0.3}}
        )


def test_the_shipped_defaults_are_the_rules_choice_on_the_committed_scores() -> None:
    scores = quality.load_scores([BENCHMARKS / "results" / "quality_scores.json"])
    decision = {"wsss-shapes", "wsss-composite", "grid-lite0", "grid-lite1"}
    assert decision <= set(scores.values) <= decision | set(quality.HELDOUT_SETS)
    choice = quality.choose(scores, quality.build_configs(quick=False))
    # The held-out sets change nothing: the rule never reads them.
    for name in quality.HELDOUT_SETS:
        scores.values.pop(name, None)
        scores.curves.pop(name, None)
    assert quality.choose(scores, quality.build_configs(quick=False)) == choice
    # Only the localisation's WSSS margin had to go (docs/evidence.rst).
    assert choice["segmentation"]["relaxed"] == ""
    assert choice["localisation"]["relaxed"].endswith("relaxed: mIoU")
    # Real photos now decide (benchmarks/real_photos.py, tests/test_real_photos_rule.py):
    # this rule's choice is the configuration each real-photo default replaced.
    import real_photos

    for task in TASK_DEFAULTS:
        assert choice[task]["config"] == real_photos.REPLACED[task]


def test_loading_several_dumps_merges_their_methods(tmp_path: Path) -> None:
    # A run of the multi-scale maps alone adds to the full run's sets; it replaces
    # nothing but the methods it scored again.
    full, extra = quality.Scores(), quality.Scores()
    full.put("grid-lite0", SIMPLE.key, "pointing", 0.5)
    full.put("grid-lite0", SHARP.key, "pointing", 0.7)
    full.curves["wsss-shapes"] = {SIMPLE.key: [0.1, 0.2]}
    extra.put("grid-lite0", f"{SIMPLE.key} @ x1,2", "pointing", 0.6)
    extra.put("grid-lite0", SHARP.key, "pointing", 0.8)
    extra.curves["wsss-shapes"] = {f"{SIMPLE.key} @ x1,2": [0.3, 0.4]}
    quality.dump_scores(tmp_path / "full.json", full, {})
    quality.dump_scores(tmp_path / "extra.json", extra, {})
    merged = quality.load_scores([tmp_path / "full.json", tmp_path / "extra.json"])
    assert merged.get("grid-lite0", SIMPLE.key, "pointing") == 0.5
    assert merged.get("grid-lite0", SHARP.key, "pointing") == 0.8
    assert merged.get("grid-lite0", f"{SIMPLE.key} @ x1,2", "pointing") == 0.6
    assert set(merged.curves["wsss-shapes"]) == {SIMPLE.key, f"{SIMPLE.key} @ x1,2"}
