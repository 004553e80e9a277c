"""The rule that chooses the task defaults on real photos (benchmarks/real_photos.py's
``choose_real``): real photos first, the synthetic sets and grids as constraints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from captum_shallow import GradientTruncation, TaskDefaults
from captum_shallow.attribution import TASK_DEFAULTS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import quality  # noqa: E402
import real_photos  # noqa: E402

SEG = real_photos.REPLACED["segmentation"]
LOC = real_photos.REPLACED["localisation"]
PLAIN = quality.Config("mean", "none", "positive@relu-below")
SIMPLE = quality.Config("mean", "none", "none")
SHARP = quality.Config("max", "none", "positive@layers")
LITE0, LITE1 = real_photos.CHOOSING
GRADCAM = quality.BASELINE_GRADCAM


def _curve(peak: float, at: int) -> list[float]:
    return [peak - 0.002 * abs(i - at) for i in range(len(real_photos.THRESHOLDS))]


def _group(peak: float, at: int, pointing: float) -> dict[str, object]:
    return {
        "photos": 10,
        "pointing": pointing,
        "pointing_15": pointing,
        "energy": 0.5,
        "iou": _curve(peak, at),
        "miou": _curve(peak, at),
    }


def _real(
    quality_of: dict[str, float], pointing: dict[str, float], at: int = 30
) -> real_photos.RealScores:
    """Two sources per model; a method's IoU peaks at ``quality_of[key]`` in both."""
    real = real_photos.RealScores()
    for model in real_photos.CHOOSING:
        for key, peak in quality_of.items():
            groups = {g: _group(peak, at, pointing[key]) for g in ("all", "coco", "pet")}
            real.values.setdefault(model, {})[key] = groups
    return real


def _synthetic(losses: dict[quality.Config, str]) -> quality.Scores:
    """Every configuration scores 0.5 on every constraint, minus 0.02 where it loses."""
    scores = quality.Scores(thresholds=real_photos.THRESHOLDS)
    for config in (SEG, LOC, PLAIN, SIMPLE, SHARP):
        for dataset, metric in [(d, "miou_best") for d in quality.WSSS_SETS] + [
            (d, m) for d in quality.GRID_SETS for m in ("pointing", "extent")
        ]:
            lost = losses.get(config) == f"{dataset} {metric}"
            scores.put(dataset, config.key, metric, 0.48 if lost else 0.5)
    return scores


def test_real_photos_choose_and_the_constraints_bind() -> None:
    configs = [SEG, LOC, PLAIN, SIMPLE, SHARP]
    real = _real(
        {
            SEG.key: 0.47,
            LOC.key: 0.46,
            PLAIN.key: 0.50,
            SIMPLE.key: 0.44,
            SHARP.key: 0.55,
            GRADCAM: 0.45,
        },
        pointing={
            SEG.key: 0.8,
            LOC.key: 0.9,
            PLAIN.key: 0.8,
            SIMPLE.key: 0.8,
            SHARP.key: 0.9,
            GRADCAM: 0.85,
        },
    )
    # SHARP tops the photos but loses 2 points of grid pointing on Lite0: not eligible.
    synthetic = _synthetic({SHARP: "grid-lite0 pointing"})
    choice = real_photos.choose_real(real, synthetic, configs)
    seg = choice["segmentation"]
    assert seg["config"] == PLAIN.key
    assert seg["multiscale"] is None
    assert seg["quality"] == pytest.approx(0.50)
    assert seg["replaced"] == SEG.key
    assert seg["replaced_quality"] == pytest.approx(0.47)
    assert seg["failures_of_best_overall"] == ["grid-lite0 pointing"]
    assert seg["threshold"] == 0.30
    assert seg["iou_at_threshold"] == {LITE0: pytest.approx(0.50), LITE1: pytest.approx(0.50)}
    # Localisation also needs Grad-CAM's pointing: PLAIN (0.80 < 0.85) fails it; LOC
    # (0.46) passes both checks against Grad-CAM (0.45).
    loc = choice["localisation"]
    assert loc["config"] == LOC.key


def test_ties_go_to_the_simplest() -> None:
    configs = [SEG, PLAIN]
    real = _real(
        {SEG.key: 0.504, PLAIN.key: 0.500, GRADCAM: 0.45},
        pointing={SEG.key: 0.9, PLAIN.key: 0.9, GRADCAM: 0.85},
    )
    choice = real_photos.choose_real(real, _synthetic({}), configs)
    # 0.4 point better is inside the 0.5-point tie: the truncation at the layers goes.
    assert choice["segmentation"]["config"] == PLAIN.key


def test_multiscale_is_taken_only_when_it_lifts_every_model_and_meets_the_constraints() -> None:
    configs = [SEG, PLAIN]
    label = "x1,0.5,1.5,2+flip 4"
    real = _real(
        {SEG.key: 0.47, PLAIN.key: 0.50, GRADCAM: 0.45},
        pointing={SEG.key: 0.9, PLAIN.key: 0.9, GRADCAM: 0.85},
    )
    for model, gain in ((LITE0, 0.02), (LITE1, 0.012)):
        real.info[model] = {"multiscale_label": label}
        real.values[model][f"{PLAIN.key} @ x1 4"] = {"all": _group(0.49, 30, 0.9)}
        real.values[model][f"{PLAIN.key} @ {label}"] = {"all": _group(0.49 + gain, 25, 0.9)}
    # Without synthetic and grid scores of the multi-scale maps, the constraints fail it.
    synthetic = _synthetic({})
    assert real_photos.choose_real(real, synthetic, configs)["segmentation"]["multiscale"] is None
    for dataset, metric in [(d, "miou_best") for d in quality.WSSS_SETS] + [
        (d, m) for d in quality.GRID_SETS for m in ("pointing", "extent")
    ]:
        # quality.py --multiscale keys them by the processing alone (no photo subsample).
        synthetic.put(dataset, f"{PLAIN.key} @ x1,0.5,1.5,2+flip", metric, 0.5)
    choice = real_photos.choose_real(real, synthetic, configs)
    assert choice["segmentation"]["multiscale"] == label
    assert choice["segmentation"]["key"] == f"{PLAIN.key} @ {label}"
    assert choice["segmentation"]["threshold"] == 0.25
    real.values[LITE1][f"{PLAIN.key} @ {label}"] = {"all": _group(0.495, 25, 0.9)}
    choice = real_photos.choose_real(real, synthetic, configs)
    assert choice["segmentation"]["multiscale"] is None
    assert choice["localisation"]["multiscale"] is None


def test_a_choice_maps_to_task_defaults() -> None:
    choice = {
        "segmentation": {
            "config": PLAIN.key,
            "multiscale": "x1,0.5,1.5,2+flip 8",
            "threshold": 0.254,
        },
        "localisation": {"config": LOC.key, "multiscale": None, "threshold": 0.3},
    }
    out = real_photos.task_defaults_of(choice)
    assert out["segmentation"] == TaskDefaults(
        fusion="mean",
        truncation=None,
        propagation="positive",
        gates="relu-below",
        threshold=0.25,
        scales=(1.0, 0.5, 1.5, 2.0),
        flips=True,
    )
    assert out["localisation"] == TaskDefaults(
        fusion="mean",
        truncation=GradientTruncation("soft", quantile=0.5),
        propagation=GradientTruncation("soft", quantile=0.9),
        gates="layers",
        threshold=0.3,
    )


def test_the_shipped_defaults_are_the_rules_choice_on_the_committed_scores() -> None:
    real = real_photos.load_real([BENCHMARKS / "results" / "real_photos_scores.json"])
    synthetic = quality.load_scores(real_photos.SYNTHETIC)
    configs = real_photos.real_configs()
    choice = real_photos.choose_real(real, synthetic, configs)
    # Lite2 changes nothing: the rule never reads it.
    assert "efficientnet-lite2" in real.values
    real.values.pop("efficientnet-lite2")
    assert real_photos.choose_real(real, synthetic, configs) == choice
    gated = quality.Config("mean gated", "none", "positive@relu-below")
    assert choice["segmentation"]["config"] == gated.key
    # Multi-scale lifts Lite1 by under 1 point, and its own synthetic scores lose more
    # than 1 point: it stays an option.
    assert choice["segmentation"]["multiscale"] is None
    note = choice["segmentation"]["multiscale_note"]
    assert note.startswith("x1,0.5,1.5,2+flip 1: lifts the IoU at the best t by +3.0, +0.8")
    assert note.endswith("constraints lost: wsss-shapes miou_best, wsss-composite miou_best)")
    assert len(configs) == 189  # every configuration of quality.py, scored on both models
    assert all(real.has(m, c.key) for m in real_photos.CHOOSING for c in configs)
    assert choice["localisation"]["config"] == gated.key
    # The gated configurations' synthetic scores come from their own run, which scored
    # the two replaced configurations again on its classifiers.
    run = synthetic.run_of("wsss-shapes", gated.key)
    assert run is not None
    assert SEG.key in run
    assert LOC.key in run
    assert real_photos.task_defaults_of(choice) == dict(TASK_DEFAULTS)
    # Each shipped threshold is within 1 point of its map's best IoU on both models.
    for entry in choice.values():
        for model in real_photos.CHOOSING:
            assert entry["iou_at_threshold"][model] >= entry["iou_best"][model] - 0.01


def test_quality_scores_multiscale_maps_under_the_key_the_rule_reads() -> None:
    # quality.py --multiscale writes "<config> @ <processing>"; the rule strips the
    # photo subsample ("... 8") from its label and looks that key up.
    assert quality.multiscale_label((1.0, 0.5, 1.5, 2.0), True) == real_photos.MULTISCALE_LABEL
    assert quality.multiscale_label((1.0, 2.0), False) == "x1,2"


def test_multiscale_maps_are_compared_with_one_scale_maps_of_the_same_run() -> None:
    # The synthetic sets' classifiers trained again elsewhere are other networks: the
    # multi-scale maps' scores compare with the replaced configuration's "@ x1" scores
    # of the same run where those exist, else with the full run's.
    synthetic = _synthetic({})
    ms_key = f"{SEG.key} @ x1,0.5,1.5,2+flip"
    checks = [(d, "miou_best") for d in quality.WSSS_SETS] + [
        (d, m) for d in quality.GRID_SETS for m in ("pointing", "extent")
    ]
    for dataset, metric in checks:
        synthetic.put(dataset, ms_key, metric, 0.45)  # 5 points under the full run's 0.5
    assert len(real_photos.constraint_failures(synthetic, ms_key, SEG, " @ x1")) == len(checks)
    for dataset, metric in checks:
        synthetic.put(dataset, f"{SEG.key} @ x1", metric, 0.455)  # the same run's one scale
    assert real_photos.constraint_failures(synthetic, ms_key, SEG, " @ x1") == []
    assert len(real_photos.constraint_failures(synthetic, ms_key, SEG)) == len(checks)
    synthetic.put("wsss-shapes", f"{SEG.key} @ x1", "miou_best", 0.47)
    assert real_photos.constraint_failures(synthetic, ms_key, SEG, " @ x1") == [
        "wsss-shapes miou_best"
    ]


def test_a_later_run_is_compared_with_the_replaced_configuration_of_that_run(
    tmp_path: Path,
) -> None:
    # A later run of a few configurations, on classifiers trained again, scores the
    # replaced configuration too: its own configurations compare with that, and the
    # full run's keep comparing with the full run's, whatever order the files merge in.
    checks = [(d, "miou_best") for d in quality.WSSS_SETS] + [
        (d, m) for d in quality.GRID_SETS for m in ("pointing", "extent")
    ]
    gated = quality.Config("mean gated", "none", "positive@relu-below")
    full, later = quality.Scores(), quality.Scores()
    for dataset, metric in checks:
        full.put(dataset, SEG.key, metric, 0.5)
        full.put(dataset, PLAIN.key, metric, 0.485)  # 1.5 points under
        later.put(dataset, SEG.key, metric, 0.46)
        later.put(dataset, gated.key, metric, 0.455)  # 0.5 under the same run's
    paths = [tmp_path / "later.json", tmp_path / "full.json"]
    for path, scores in zip(paths, (later, full)):
        quality.dump_scores(path, scores, {})
    for order in (paths, paths[::-1]):
        synthetic = quality.load_scores(order)
        assert real_photos.constraint_failures(synthetic, gated, SEG) == []
        assert len(real_photos.constraint_failures(synthetic, PLAIN, SEG)) == len(checks)
    synthetic = quality.load_scores(paths)
    assert synthetic.get("wsss-shapes", SEG.key, "miou_best") == 0.5  # the last file wins
    synthetic.runs[str(paths[0])]["wsss-shapes"][SEG.key]["miou_best"] = 0.47
    assert real_photos.constraint_failures(synthetic, gated, SEG) == ["wsss-shapes miou_best"]


def test_gated_configurations_build_class_gated_shallowcams() -> None:
    config = quality.Config("mean gated", "none", "positive@relu-below")
    assert config.class_gate
    assert config.fusion_args == ("mean", None)
    assert not quality.Config("mean", "none", "none").class_gate
    defaults = real_photos.task_defaults_of(
        {
            task: {"config": config.key, "threshold": 0.3, "multiscale": None}
            for task in TASK_DEFAULTS
        }
    )
    assert defaults["segmentation"].class_gate
    assert defaults["segmentation"].truncation is None
    selected = quality.build_configs(False, f"mean gated; {SEG.key}")
    assert SEG in selected
    assert config in selected
    assert len(selected) == 28
    with pytest.raises(ValueError, match="no candidate key or fusion label"):
        quality.build_configs(False, "mean gatd")
