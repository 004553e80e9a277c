"""Synthetic WSSS benchmarks: train (or load) a set's cached classifier, print its
test metrics and, with ``--cams``, the IRN mIoU of baseline CAMs per stage.

Two sets (docs/segmentation.rst): ``shapes`` (64 px primitive shapes, a small
CNN trained from scratch) and ``composite`` (128 px real silhouettes textured
with photos, EfficientNet-Lite0 fine-tuned from its ImageNet weights); and a
held-out variant of each (``shapes-heldout``, ``composite-heldout``: other
scenes and another classifier), which no default is chosen on.

Usage::

    python benchmarks/synthetic_wsss.py                          # shapes: train/load, metrics
    python benchmarks/synthetic_wsss.py --set composite --cams   # + Grad-CAM / LayerCAM per stage
    python benchmarks/synthetic_wsss.py --set composite --quick  # tiny config, seconds (smoke run)

Other scripts reuse :func:`benchmark_classifier` to get the same cached model and
test split. Every mIoU row repeats the classifier's test mAP and exact-match
accuracy, so a weak classifier cannot hide behind a map.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from captum_shallow.datasets import (
    CompositeConfig,
    FineTuneConfig,
    SyntheticConfig,
    SyntheticSplit,
    TrainConfig,
    TrainedClassifier,
    load_or_train_classifier,
    make_synthetic_split,
)
from captum_shallow.evaluation import evaluate_cams

Configs = tuple[SyntheticConfig | CompositeConfig, TrainConfig | FineTuneConfig]

#: Each set's benchmark configuration (the one whose numbers the docs quote).
BENCHMARK: dict[str, Configs] = {
    "shapes": (SyntheticConfig(), TrainConfig()),
    "composite": (CompositeConfig(), FineTuneConfig()),
}
#: Tiny configurations for smoke runs (seconds).
QUICK: dict[str, Configs] = {
    "shapes": (
        SyntheticConfig(
            image_size=32, num_train=256, num_test=64, min_object_size=8, max_object_size=14
        ),
        TrainConfig(width=8, epochs=3, batch_size=32),
    ),
    "composite": (
        CompositeConfig(
            image_size=64, num_train=96, num_test=32, min_object_size=20, max_object_size=40
        ),
        FineTuneConfig(epochs=2, batch_size=32),
    ),
}
# Held-out checks, never used to choose a default: other scenes (generator seed 1)
# and another classifier (training seed 1; the shapes CNN also wider).
BENCHMARK["shapes-heldout"] = (SyntheticConfig(seed=1), TrainConfig(width=24, seed=1))
BENCHMARK["composite-heldout"] = (CompositeConfig(seed=1), FineTuneConfig(seed=1))
QUICK["shapes-heldout"] = (replace(QUICK["shapes"][0], seed=1), replace(QUICK["shapes"][1], seed=1))
QUICK["composite-heldout"] = (
    replace(QUICK["composite"][0], seed=1),
    replace(QUICK["composite"][1], seed=1),
)
# Kept for scripts that read the shapes set's configurations by name.
BENCHMARK_DATA, BENCHMARK_TRAIN = BENCHMARK["shapes"]
QUICK_DATA, QUICK_TRAIN = QUICK["shapes"]


def benchmark_classifier(
    quick: bool = False,
    cache_dir: str | Path | None = None,
    retrain: bool = False,
    verbose: bool = False,
    set_name: str = "shapes",
) -> tuple[TrainedClassifier, SyntheticSplit]:
    """The cached classifier of a set (``"shapes"`` or ``"composite"``) and the
    test split it was scored on."""
    if set_name not in BENCHMARK:
        raise ValueError(f"unknown set {set_name!r}; choose from {', '.join(BENCHMARK)}")
    data, train = (QUICK if quick else BENCHMARK)[set_name]
    trained = load_or_train_classifier(
        data, train, cache_dir=cache_dir, retrain=retrain, verbose=verbose
    )
    return trained, make_synthetic_split(data, "test")


def _baselines(model: nn.Module) -> list[tuple[str, str, Callable[[Tensor, Tensor], Tensor]]]:
    from captum.attr import LayerGradCam

    methods: list[tuple[str, Callable[[nn.Module, nn.Module], object]]] = [
        ("Captum Grad-CAM", lambda m, layer: LayerGradCam(m, layer)),
    ]
    try:
        from captum_shallow import LayerCAM

        methods.append(("LayerCAM", lambda m, layer: LayerCAM(m, layer)))
    except ImportError:
        pass
    rows = []
    for name, build in methods:
        for stage_name, stage in model.named_stages().items():  # type: ignore[operator]
            explainer = build(model, stage)

            def cam_fn(x: Tensor, t: Tensor, explainer: object = explainer) -> Tensor:
                out = explainer.attribute(x, target=t, relu_attributions=True)  # type: ignore[attr-defined]
                return out.detach()

            rows.append((name, stage_name, cam_fn))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="shapes", choices=sorted(BENCHMARK), help="the set")
    parser.add_argument("--quick", action="store_true", help="tiny configuration (seconds)")
    parser.add_argument("--cache-dir", default=None, help="default: ~/.cache/captum_shallow")
    parser.add_argument("--retrain", action="store_true", help="ignore the cache")
    parser.add_argument("--cams", action="store_true", help="evaluate baseline CAMs per stage")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the CAMs")
    args = parser.parse_args()

    start = time.perf_counter()
    trained, test = benchmark_classifier(
        args.quick, args.cache_dir, args.retrain, verbose=True, set_name=args.set
    )
    data, train = trained.config, trained.train_config
    classes = type(data).classes
    print(f"set    : {args.set}{' (quick)' if args.quick else ''}")
    print(f"data   : {data}")
    print(f"train  : {train}")
    print(f"classes: {', '.join(classes)}; test images: {len(test)}")
    print(f"cache  : {trained.path} ({'loaded' if trained.cached else 'trained now'})")
    m = trained.metrics
    print(
        f"classifier: test mAP {m['mAP']:.3f}, exact-match accuracy {m['exact_match']:.3f}, "
        f"label accuracy {m['label_accuracy']:.3f}; training took {m['train_seconds']:.0f} s "
        f"(this call {time.perf_counter() - start:.0f} s)"
    )
    if not args.cams:
        return

    torch.set_num_threads(args.threads)
    width = max(len(name) for name in trained.model.named_stages())
    header = f"{'method':<16} {'layer':<{width}} {'mIoU@.15':>8} {'best mIoU':>9} {'best t':>6}"
    print("\n" + header + f" {'cls mAP':>8} {'cls acc':>8}")
    print("-" * (len(header) + 18))
    for name, stage, cam_fn in _baselines(trained.model):
        result = evaluate_cams(cam_fn, test.batches(32), len(classes) + 1)
        print(
            f"{name:<16} {stage:<{width}} {result.miou_at(0.15):>8.3f} {result.best_miou:>9.3f} "
            f"{result.best_threshold:>6.2f} {m['mAP']:>8.3f} {m['exact_match']:>8.3f}"
        )


if __name__ == "__main__":
    main()
