"""Map quality of CAM methods x layers x gradient truncation: the evidence behind
the defaults (``DEFAULT_TRUNCATION`` and :meth:`ShallowCAM.from_model`).

Sets and metrics (EVALUATION.md):

- ``grid``: the grid pointing game development set (EfficientNet-Lite0, 2x2 grids
  of 112 px tiles of the four scikit-image photos, 24 arrangements x 4 targets =
  96 cases) and deletion / insertion AUC on the same grids;
- ``photos``: deletion / insertion AUC on the four photos at 224 px;
- ``wsss``: IRN mIoU at t = 0.15 and at the best t on the synthetic WSSS test set
  (the cached classifier of ``benchmarks/synthetic_wsss.py``).

Methods: Captum's ``LayerGradCam`` at the last stage; pytorch-grad-cam's
``LayerCAM`` and ``RefineCAM`` and torchcam's ``LayerCAM`` + ``fuse_cams`` on the
same layer sets as ours; ours at single layers and fused (``ShallowCAM``), for
every truncation mode and a few thresholds, fusions and per-layer thresholds.

Ours is computed from one forward and one backward pass per set: the layers'
activations and gradients are kept and every configuration is evaluated from
them with the package's own ``layer_attribution`` and ``fuse_maps``; a check
line compares this path with ``ShallowCAM.attribute`` end to end. The libraries
we compare against run end to end. Nothing is cached except the synthetic
classifier (keyed by its configuration and code version).

Usage::

    python benchmarks/quality.py                         # everything (the docs' run)
    python benchmarks/quality.py --quick                 # smoke run: few configs, tiny sets
    python benchmarks/quality.py --sets grid,wsss --del-cases 24 --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from captum_shallow import (
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    ShallowCAM,
    fuse_maps,
)
from captum_shallow.attribution import Fusion
from captum_shallow.evaluation import deletion_insertion, grid_pointing_game, make_grid_cases
from captum_shallow.models import (
    SAMPLE_PHOTOS,
    layer_preset,
    load_model,
    preprocess,
    resolve_layers,
    sample_photo,
)
from captum_shallow.segmentation import SYNTHETIC_CLASSES, ThresholdSweep, class_cams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_wsss import benchmark_classifier

Trunc = GradientTruncation | None
# A truncation row: one truncation for every layer, or a rule giving one per layer.

CamFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class PerLayer:
    """Per-layer soft quantiles from ``high`` at the shallowest layer to ``low`` at the deepest."""

    high: float
    low: float

    def __call__(self, count: int) -> list[Trunc]:
        steps = max(count - 1, 1)
        return [
            GradientTruncation(
                "soft", quantile=round(self.high + (self.low - self.high) * i / steps, 4)
            )
            for i in range(count)
        ]


@dataclass(frozen=True)
class AllButLast:
    """One truncation on every fused layer but the deepest, which stays untruncated."""

    truncation: GradientTruncation

    def __call__(self, count: int) -> list[Trunc]:
        return [self.truncation] * (count - 1) + [None]


TruncSpec = Trunc | PerLayer | AllButLast


def _q(mode: str, q: float, scope: str = "sample") -> GradientTruncation:
    return GradientTruncation(mode, quantile=q, scope=scope)  # type: ignore[arg-type]


def _f(mode: str, a: float) -> GradientTruncation:
    return GradientTruncation(mode, fraction=a)  # type: ignore[arg-type]


#: Rows of the single-layer tables: (label, CAM class, truncation).
SINGLE_ROWS: list[tuple[str, type, Trunc]] = [
    ("Grad-CAM", LayerGradCam, None),
    ("LayerCAM", LayerCAM, None),
    ("soft q.50", LayerCAM, _q("soft", 0.5)),
    ("soft q.90", LayerCAM, _q("soft", 0.9)),
    ("soft q.95", LayerCAM, _q("soft", 0.95)),
    ("soft q.99", LayerCAM, _q("soft", 0.99)),
    ("hard q.90", LayerCAM, _q("hard", 0.9)),
    ("hard q.99", LayerCAM, _q("hard", 0.99)),
    ("clip q.95", LayerCAM, _q("clip", 0.95)),
    ("soft a.10", LayerCAM, _f("soft", 0.1)),
    ("soft a.25", LayerCAM, _f("soft", 0.25)),
    ("soft a.50", LayerCAM, _f("soft", 0.5)),
    ("soft q.90 ch", LayerCAM, _q("soft", 0.9, "channel")),
]

#: Truncation rows of the fused (ShallowCAM) tables; "none" is plain LayerCAM.
FUSED_TRUNCS: list[tuple[str, TruncSpec]] = [
    ("none", None),
    ("soft q.50", _q("soft", 0.5)),
    ("soft q.90", _q("soft", 0.9)),
    ("soft q.99", _q("soft", 0.99)),
    ("hard q.99", _q("hard", 0.99)),
    ("soft a.25", _f("soft", 0.25)),
    ("soft q.99->.50", PerLayer(0.99, 0.5)),
]

#: Fused layer sets by role in the preset's shallow-to-deep list. "mid" drops the
#: stem-most layer and the deepest one (Lite0: strides 4-16 = ``preset.fusion``).
LAYER_SETS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "mid": lambda names: list(names[1:-1]),
    "mid+last": lambda names: list(names[1:]),
}
#: Fusion columns: (label, fusion, gamma).
FUSIONS: list[tuple[str, Fusion, float | None]] = [
    ("max", "max", None),
    ("max g2", "max", 2.0),
    ("mean", "mean", None),
    ("product", "product", None),
]


@dataclass(frozen=True)
class Config:
    """One map of ours: layers (by name), per-layer truncations, fusion."""

    family: str  # "single" or "fused"
    row: str  # truncation label
    column: str  # layer (single) or "set fusion" (fused)
    layer_names: tuple[str, ...]
    method: type
    truncations: tuple[Trunc, ...]
    fusion: Fusion = "max"
    gamma: float | None = None


#: ``--explore`` (after the decision run; reported apart, never part of the rule):
#: truncating all fused layers but the deepest, in the product and the mean.
EXPLORE_TRUNCS: list[tuple[str, TruncSpec]] = [
    ("none", None),
    ("soft q.50", _q("soft", 0.5)),
    ("soft q.90", _q("soft", 0.9)),
    ("soft q.50 but last", AllButLast(_q("soft", 0.5))),
    ("soft q.90 but last", AllButLast(_q("soft", 0.9))),
    ("soft q.99 but last", AllButLast(_q("soft", 0.99))),
]


def _per_layer(spec: TruncSpec, count: int) -> tuple[Trunc, ...]:
    return tuple(spec(count) if isinstance(spec, (PerLayer, AllButLast)) else [spec] * count)


def build_configs(names: Sequence[str], quick: bool, explore: bool = False) -> list[Config]:
    """Every configuration of ours for a model whose preset layers are ``names``."""
    if explore:
        chosen = tuple(LAYER_SETS["mid+last"](names))
        return [
            Config(
                "fused",
                label,
                f"mid+last {fusion}",
                chosen,
                LayerCAM,
                _per_layer(spec, len(chosen)),
                fusion,
            )
            for fusion in ("product", "mean")
            for label, spec in EXPLORE_TRUNCS
        ]
    singles = [SINGLE_ROWS[i] for i in (0, 1, 3)] if quick else SINGLE_ROWS
    fused_truncs = [FUSED_TRUNCS[i] for i in (0, 2)] if quick else FUSED_TRUNCS
    fusions = [FUSIONS[i] for i in (0, 3)] if quick else FUSIONS
    configs = [
        Config("single", label, name, (name,), method, (trunc,))
        for label, method, trunc in singles
        for name in names
    ]
    for (set_name, pick), (fusion_label, fusion, gamma), (label, spec) in itertools.product(
        LAYER_SETS.items(), fusions, fused_truncs
    ):
        chosen = tuple(pick(names))
        truncs = _per_layer(spec, len(chosen))
        column = f"{set_name} {fusion_label}"
        configs.append(Config("fused", label, column, chosen, LayerCAM, truncs, fusion, gamma))
    return configs


# ---------------------------------------------------------------- maps of ours


def layer_tensors(
    model: nn.Module, layers: Sequence[nn.Module], images: Tensor, targets: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """(gradient, activation) of the target logit at each layer, one forward and backward."""
    outputs: dict[int, Tensor] = {}
    handles = [
        layer.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out))
        for k, layer in enumerate(layers)
    ]
    try:
        with torch.enable_grad():
            logits = model(images)
            score = logits.gather(1, targets[:, None]).sum()
            acts = [outputs[k] for k in range(len(layers))]
            grads = torch.autograd.grad(score, acts)
    finally:
        for handle in handles:
            handle.remove()
    return [(g.detach(), a.detach()) for g, a in zip(grads, acts, strict=True)]


def config_maps(config: Config, tensors: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """The config's map from cached layer tensors: exactly what ShallowCAM computes."""
    maps = [
        config.method.layer_attribution(*tensors[name], trunc, relu_attributions=True)  # type: ignore[attr-defined]
        for name, trunc in zip(config.layer_names, config.truncations, strict=True)
    ]
    return fuse_maps(maps, None, config.fusion, config.gamma)


def cached_tensors(
    model: nn.Module, names: Sequence[str], images: Tensor, targets: Tensor, chunk: int
) -> dict[str, tuple[Tensor, Tensor]]:
    layers = resolve_layers(model, list(names))
    parts: list[list[tuple[Tensor, Tensor]]] = []
    for start in range(0, len(images), chunk):
        parts.append(
            layer_tensors(
                model, layers, images[start : start + chunk], targets[start : start + chunk]
            )
        )
    return {
        name: (torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts]))
        for k, name in enumerate(names)
    }


# ---------------------------------------------------------------- baselines (end to end)


def baseline_fns(
    model: nn.Module, names: Sequence[str], input_shape: tuple[int, int, int]
) -> dict[str, CamFn]:
    """cam_fn(images, targets) -> (B, 1, h, w) of the other libraries, on their layers."""
    from captum.attr import LayerGradCam as CaptumLayerGradCam

    fns: dict[str, CamFn] = {}
    last = resolve_layers(model, [names[-1]])[0]

    def captum_gradcam(x: Tensor, t: Tensor) -> Tensor:
        out = CaptumLayerGradCam(model, last).attribute(x, target=t, relu_attributions=True)
        model.zero_grad(set_to_none=True)
        return out.detach()

    fns[f"Captum LayerGradCam | {names[-1]}"] = captum_gradcam
    from pytorch_grad_cam import LayerCAM as PGCLayerCAM
    from pytorch_grad_cam import RefineCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import LayerCAM as TorchcamLayerCAM

    for set_name, pick in LAYER_SETS.items():
        chosen = pick(names)
        modules = resolve_layers(model, chosen)

        def pgc_layercam(x: Tensor, t: Tensor, modules: list[nn.Module] = modules) -> Tensor:
            targets = [ClassifierOutputTarget(int(c)) for c in t]
            with PGCLayerCAM(model=model, target_layers=modules) as cam:
                out = cam(input_tensor=x, targets=targets)
            model.zero_grad(set_to_none=True)
            return torch.from_numpy(np.asarray(out, dtype=np.float32))[:, None].to(x.device)

        def pgc_refinecam(x: Tensor, t: Tensor, modules: list[nn.Module] = modules) -> Tensor:
            targets = [ClassifierOutputTarget(int(c)) for c in t]
            cam = RefineCAM(model, modules)
            try:
                out = cam(x, targets)
            finally:
                for base in cam.base_cam_per_layer:
                    base.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
            return torch.from_numpy(np.asarray(out, dtype=np.float32))[:, None].to(x.device)

        def torchcam_layercam(x: Tensor, t: Tensor, chosen: list[str] = chosen) -> Tensor:
            layers = cast(list[nn.Module | str], chosen)
            with TorchcamLayerCAM(model, target_layer=layers, input_shape=input_shape) as cam:
                maps = cam(class_idx=[int(c) for c in t], scores=model(x))
                out = TorchcamLayerCAM.fuse_cams(maps)
            model.zero_grad(set_to_none=True)
            return out.detach()[:, None]

        fns[f"pytorch-grad-cam LayerCAM | {set_name}"] = pgc_layercam
        fns[f"pytorch-grad-cam RefineCAM | {set_name}"] = pgc_refinecam
        fns[f"torchcam LayerCAM+fuse_cams | {set_name}"] = torchcam_layercam
    return fns


def run_chunked(fn: CamFn, images: Tensor, targets: Tensor, chunk: int) -> Tensor:
    return torch.cat(
        [
            fn(images[s : s + chunk], targets[s : s + chunk]).float()
            for s in range(0, len(images), chunk)
        ]
    )


# ---------------------------------------------------------------- the sets


def lite0_sets(device: torch.device, quick: bool) -> tuple[nn.Module, dict[str, Tensor]]:
    model = load_model("efficientnet-lite0").to(device).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    names = list(SAMPLE_PHOTOS)
    labels = torch.tensor([SAMPLE_PHOTOS[n] for n in names])
    tiles = torch.stack([preprocess(sample_photo(n), 112) for n in names])
    cases = make_grid_cases(tiles, labels)
    index = torch.arange(len(cases.target))
    if quick:
        index = index[:8]
    photos = torch.stack([preprocess(sample_photo(n), 224) for n in names])
    return model, {
        "grid_images": cases.images[cases.image[index]].to(device),
        "grid_cells": cases.cell[index].to(device),
        "grid_targets": cases.target[index].to(device),
        "photo_images": photos.to(device),
        "photo_targets": labels.to(device),
    }


@dataclass
class Scores:
    values: dict[tuple[str, str], float]

    def put(self, key: str, metric: str, value: float) -> None:
        self.values[(key, metric)] = value

    def get(self, key: str, metric: str) -> float:
        return self.values.get((key, metric), math.nan)


def key_of(config: Config) -> str:
    return f"{config.family} | {config.column} | {config.row}"


def evaluate_lite0(
    args: argparse.Namespace, configs: list[Config], scores: Scores, log: Callable[[str], None]
) -> None:
    device = torch.device(args.device)
    model, data = lite0_sets(device, args.quick)
    names = list(layer_preset(model).layers)
    chunk = args.chunk
    grid_x, grid_t, cells = data["grid_images"], data["grid_targets"], data["grid_cells"]
    photo_x, photo_t = data["photo_images"], data["photo_targets"]
    del_index = torch.linspace(0, len(grid_t) - 1, min(args.del_cases, len(grid_t))).round().long()
    del_index = del_index.unique().to(device)
    log(
        f"lite0 layers {names}; grid cases {len(grid_t)}; deletion/insertion grid cases "
        f"{len(del_index)}; photos {len(photo_t)}; steps {args.steps}"
    )

    def faithfulness(key: str, grid_maps: Tensor | None, photo_maps: Tensor | None) -> None:
        if "grid" in args.sets and grid_maps is not None and args.del_cases > 0:
            out = deletion_insertion(
                model,
                grid_x[del_index],
                grid_maps[del_index],
                grid_t[del_index],
                steps=args.steps,
                batch_size=args.batch,
            )
            scores.put(key, "grid_ins", float(out.insertion_auc.mean()))
            scores.put(key, "grid_del", float(out.deletion_auc.mean()))
        if "photos" in args.sets and photo_maps is not None:
            out = deletion_insertion(
                model, photo_x, photo_maps, photo_t, steps=args.steps, batch_size=args.batch
            )
            scores.put(key, "photo_ins", float(out.insertion_auc.mean()))
            scores.put(key, "photo_del", float(out.deletion_auc.mean()))

    start = time.perf_counter()
    grid_tensors = cached_tensors(model, names, grid_x, grid_t, chunk)
    photo_tensors = cached_tensors(model, names, photo_x, photo_t, chunk)
    log(f"lite0 gradients cached in {time.perf_counter() - start:.0f} s")

    # The cached path must equal ShallowCAM end to end (first fused config with truncation).
    check = next(c for c in configs if c.family == "fused" and c.truncations[0] is not None)
    direct = ShallowCAM(
        model,
        resolve_layers(model, list(check.layer_names)),
        truncation=list(check.truncations),
        fusion=check.fusion,
        gamma=check.gamma,
    ).attribute(grid_x[:4], target=grid_t[:4])
    model.zero_grad(set_to_none=True)
    cached = config_maps(check, {n: (g[:4], a[:4]) for n, (g, a) in grid_tensors.items()})
    log(
        f"check: cached path vs ShallowCAM.attribute ({key_of(check)}): max |diff| "
        f"{float((direct - cached).abs().max()):.2e}"
    )

    start = time.perf_counter()
    for config in configs:
        key = key_of(config)
        grid_maps = config_maps(config, grid_tensors)
        scores.put(
            key, "grid_pg", float(grid_pointing_game(grid_maps, cells, 2, (224, 224)).mean())
        )
        faithful = config.family == "fused" or config.row in args.faithful_rows
        if faithful:
            faithfulness(key, grid_maps, config_maps(config, photo_tensors))
    log(f"lite0 ours: {len(configs)} configs in {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    others = {} if args.explore else baseline_fns(model, names, (3, 224, 224))
    for key, fn in others.items():
        try:
            grid_maps = run_chunked(fn, grid_x, grid_t, chunk)
        except Exception as error:  # one library's failure must not lose the run
            log(f"FAILED {key}: {type(error).__name__}: {error}")
            continue
        scores.put(
            key, "grid_pg", float(grid_pointing_game(grid_maps, cells, 2, (224, 224)).mean())
        )
        faithfulness(key, grid_maps, run_chunked(fn, photo_x, photo_t, chunk))
    log(f"lite0 baselines in {time.perf_counter() - start:.0f} s")


def _constant(maps: Tensor) -> CamFn:
    """A cam_fn that returns maps already computed for class_cams' own pair order."""

    def cam_fn(images: Tensor, _target: Tensor) -> Tensor:
        assert len(images) == len(maps)
        return maps

    return cam_fn


def evaluate_wsss(
    args: argparse.Namespace, scores: Scores, log: Callable[[str], None]
) -> list[Config]:
    device = torch.device(args.device)
    trained, test = benchmark_classifier(args.quick)
    model = trained.model.to(device).eval()
    qualified = [f"stages.{i}" for i in range(len(model.named_stages()))]
    configs = build_configs(qualified, args.quick, args.explore)
    m = trained.metrics
    log(
        f"wsss classifier: test mAP {m['mAP']:.3f}, exact-match {m['exact_match']:.3f}, "
        f"label accuracy {m['label_accuracy']:.3f}; test images {len(test)}; cache "
        f"{'loaded' if trained.cached else 'trained now'} ({trained.path.name})"
    )
    num_classes = len(SYNTHETIC_CLASSES) + 1
    sweeps = {key_of(c): ThresholdSweep(num_classes) for c in configs}
    base = (
        {} if args.explore else baseline_fns(model, qualified, tuple(test.images.shape[1:]))  # type: ignore[arg-type]
    )
    base_sweeps = {key: ThresholdSweep(num_classes) for key in base}
    start = time.perf_counter()
    for images, labels, masks in test.batches(args.wsss_batch):
        images, labels, masks = images.to(device), labels.to(device), masks.to(device)
        pairs = labels.nonzero()
        tensors = cached_tensors(model, qualified, images[pairs[:, 0]], pairs[:, 1], len(pairs))
        for config in configs:
            maps = config_maps(config, tensors)
            cams = class_cams(_constant(maps), images, labels, batch_size=len(pairs))
            sweeps[key_of(config)].update(cams, labels, masks)
        for key, fn in base.items():
            cams = class_cams(fn, images, labels, batch_size=args.chunk)
            base_sweeps[key].update(cams, labels, masks)
    for key, sweep in {**sweeps, **base_sweeps}.items():
        result = sweep.result()
        scores.put(key, "wsss_15", result.miou_at(0.15))
        scores.put(key, "wsss_best", result.best_miou)
        scores.put(key, "wsss_t", result.best_threshold)
    log(f"wsss: {len(configs) + len(base)} maps in {time.perf_counter() - start:.0f} s")
    return configs


# ---------------------------------------------------------------- tables and the rule

METRICS = {
    "grid_pg": "Grid pointing game, development set (96 cases; chance 0.25; higher is better)",
    "grid_ins": "Insertion AUC on the grids (higher is better)",
    "grid_del": "Deletion AUC on the grids (lower is better)",
    "photo_ins": "Insertion AUC on the four photos (higher is better)",
    "photo_del": "Deletion AUC on the four photos (lower is better)",
    "wsss_15": "Synthetic WSSS mIoU at t = 0.15 (higher is better)",
    "wsss_best": "Synthetic WSSS mIoU at the best t (higher is better)",
}


def _fmt(value: float) -> str:
    return "  -  " if math.isnan(value) else f"{value:.3f}"


def pivot(
    title: str, rows: list[str], columns: list[str], cell: Callable[[str, str], float]
) -> str:
    width = max(len(r) for r in rows)
    lines = [title, "", "| " + " | ".join([" " * width, *columns]) + " |"]
    lines.append("| " + " | ".join(["-" * width] + ["-" * len(c) for c in columns]) + " |")
    for row in rows:
        values = [_fmt(cell(row, c)).rjust(len(c)) for c in columns]
        lines.append("| " + " | ".join([row.ljust(width), *values]) + " |")
    return "\n".join(lines)


def _family_cell(
    scores: Scores,
    index: dict[tuple[str, str, str], str],
    family: str,
    metric: str,
    row: str,
    column: str,
) -> float:
    return scores.get(index[(family, row, column)], metric)


def _library_cell(scores: Scores, metric: str, row: str, _column: str) -> float:
    return scores.get(row, metric)


def tables(
    scores: Scores, lite: list[Config], synth: list[Config], baselines: list[str]
) -> list[str]:
    out = []
    for metric, title in METRICS.items():
        configs = synth if metric.startswith("wsss") else lite
        if not configs or all(math.isnan(scores.get(key_of(c), metric)) for c in configs):
            continue
        index = {(c.family, c.row, c.column): key_of(c) for c in configs}
        for family in ("single", "fused"):
            chosen = [c for c in configs if c.family == family]
            rows = list(dict.fromkeys(c.row for c in chosen))
            columns = list(dict.fromkeys(c.column for c in chosen))
            rows = [
                r
                for r in rows
                if any(not math.isnan(scores.get(index[(family, r, c)], metric)) for c in columns)
            ]
            if not rows:
                continue
            label = (
                "single layers (ours)"
                if family == "single"
                else "ShallowCAM fused (ours; LayerCAM rule)"
            )
            out.append(
                pivot(
                    f"### {title}: {label}",
                    rows,
                    columns,
                    partial(_family_cell, scores, index, family, metric),
                )
            )
        rows = [b for b in baselines if not math.isnan(scores.get(b, metric))]
        if rows:
            out.append(
                pivot(
                    f"### {title}: other libraries",
                    rows,
                    ["value"],
                    partial(_library_cell, scores, metric),
                )
            )
    return out


RULE_METRICS = ("grid_pg", "grid_ins", "wsss_best")


def choose(scores: Scores, lite: list[Config], synth: list[Config]) -> list[str]:
    """The rule fixed before the run (docs/evidence.rst):

    Candidates: every fused configuration (same (set, fusion, truncation) on both
    models). Eligible: grid pointing, grid insertion and WSSS best-t mIoU each >=
    and grid deletion <= the same set and fusion without truncation (plain
    LayerCAM). Pick the lowest mean rank (over all candidates) across grid
    pointing, grid insertion and WSSS best-t mIoU; ties go to the higher grid
    pointing score.
    """
    synth_by = {(c.row, c.column): key_of(c) for c in synth if c.family == "fused"}
    rows = []
    for c in lite:
        if c.family != "fused" or (c.row, c.column) not in synth_by:
            continue
        values = {
            "grid_pg": scores.get(key_of(c), "grid_pg"),
            "grid_ins": scores.get(key_of(c), "grid_ins"),
            "grid_del": scores.get(key_of(c), "grid_del"),
            "wsss_best": scores.get(synth_by[(c.row, c.column)], "wsss_best"),
            "wsss_15": scores.get(synth_by[(c.row, c.column)], "wsss_15"),
        }
        rows.append((c.column, c.row, values))
    if not rows or any(math.isnan(v[m]) for *_x, v in rows for m in RULE_METRICS):
        return ["rule: not applied (a metric of the rule is missing; run all sets)"]
    plain = {col: v for col, row, v in rows if row == "none"}
    ranks: dict[tuple[str, str], list[float]] = {(col, row): [] for col, row, _ in rows}
    for metric in RULE_METRICS:
        ordered = sorted(rows, key=lambda r: -r[2][metric])
        for position, (col, row, _v) in enumerate(ordered):
            ranks[(col, row)].append(position + 1)
    table = []
    for col, row, v in rows:
        ref = plain[col]
        eligible = all(v[m] >= ref[m] for m in RULE_METRICS) and v["grid_del"] <= ref["grid_del"]
        table.append(
            (sum(ranks[(col, row)]) / len(RULE_METRICS), -v["grid_pg"], col, row, v, eligible)
        )
    table.sort()
    lines = [
        "### The rule: mean rank over grid pointing, grid insertion, WSSS best-t mIoU;",
        "### eligible = none of those below, and grid deletion not above, the same set+fusion",
        "### without truncation. Top 15 by mean rank:",
        "",
        "| rank | set fusion | truncation | grid PG | grid ins | grid del | WSSS best "
        "| WSSS .15 | eligible |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mean_rank, _, col, row, v, eligible in table[:15]:
        lines.append(
            f"| {mean_rank:.1f} | {col} | {row} | {_fmt(v['grid_pg'])} | {_fmt(v['grid_ins'])} "
            f"| {_fmt(v['grid_del'])} | {_fmt(v['wsss_best'])} | {_fmt(v['wsss_15'])} "
            f"| {'yes' if eligible else 'no'} |"
        )
    winner = next((t for t in table if t[5]), None)
    if winner is not None:
        lines.append(f"\nchosen: {winner[2]} | {winner[3]} (mean rank {winner[0]:.1f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 single rows, 2 truncations x 2 fusions fused, 8 grid cases, "
        "deletion/insertion on 2 grids and the photos in 4 steps, the tiny WSSS config",
    )
    parser.add_argument("--sets", default="grid,photos,wsss", help="comma list of grid,photos,wsss")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--explore",
        action="store_true",
        help="only the exploratory fused rows (truncating all layers but the deepest), "
        "no other libraries",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dump", default=None, help="also write the raw scores (JSON) here")
    parser.add_argument(
        "--steps", type=int, default=None, help="deletion/insertion steps (16; --quick: 4)"
    )
    parser.add_argument(
        "--del-cases",
        type=int,
        default=None,
        help="grid cases for deletion/insertion (96; --quick: 2)",
    )
    parser.add_argument("--batch", type=int, default=128, help="forward batch of the perturbations")
    parser.add_argument("--chunk", type=int, default=32, help="CAM batch")
    parser.add_argument("--wsss-batch", type=int, default=50, help="synthetic images per pass")
    parser.add_argument(
        "--faithful-rows",
        default=None,
        help="single-layer rows that also get deletion/insertion "
        "(Grad-CAM,LayerCAM,soft q.90,soft q.99; --quick: LayerCAM)",
    )
    args = parser.parse_args()
    args.sets = set(args.sets.split(","))
    if args.steps is None:
        args.steps = 4 if args.quick else 16
    if args.del_cases is None:
        args.del_cases = 2 if args.quick else 96
    if args.faithful_rows is None:
        args.faithful_rows = "LayerCAM" if args.quick else "Grad-CAM,LayerCAM,soft q.90,soft q.99"
    args.faithful_rows = set(args.faithful_rows.split(","))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

    log(f"command: python benchmarks/quality.py {' '.join(sys.argv[1:])}")
    log(
        f"torch {torch.__version__}, device {args.device}, threads {args.threads}, "
        f"{platform.processor() or platform.machine()}"
    )
    trainer = None
    if "wsss" in args.sets:
        # Train (or load) the synthetic classifier in its own process, on the CPU,
        # while the Lite0 sets run; its deterministic settings stay in that process.
        command = [sys.executable, str(Path(__file__).with_name("synthetic_wsss.py"))]
        trainer = subprocess.Popen(
            [*command, "--quick"] if args.quick else command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    scores = Scores({})
    lite: list[Config] = []
    synth: list[Config] = []
    if args.sets & {"grid", "photos"}:
        names = list(layer_preset(load_model("efficientnet-lite0")).layers)
        lite = build_configs(names, args.quick, args.explore)
        evaluate_lite0(args, lite, scores, log)
    if trainer is not None:
        output, _ = trainer.communicate()
        log("synthetic classifier:\n" + output.strip())
        if trainer.returncode != 0:
            raise SystemExit(f"training the synthetic classifier failed ({trainer.returncode})")
        synth = evaluate_wsss(args, scores, log)
    if args.dump:
        Path(args.dump).write_text(
            json.dumps([[k, m, v] for (k, m), v in scores.values.items()], indent=0)
        )
    baselines = sorted({k for k, _m in scores.values if not k.startswith(("single", "fused"))})
    print()
    for table in tables(scores, lite, synth, baselines):
        print(table, end="\n\n")
    for line in choose(scores, lite, synth):
        print(line)
    log("done")


if __name__ == "__main__":
    main()
