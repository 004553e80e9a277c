"""Quantus' scores of our ShallowCAM and Captum's LayerGradCam on real photos with masks.

Both methods run through the same adapter, :func:`captum_shallow.quantus.explain`,
on EfficientNet-Lite0 (its ImageNet weights, ``load_model("efficientnet-lite0")``):

- ours: ``ShallowCAM.from_model(model, task=...)`` (the task's defaults);
- Captum's ``LayerGradCam`` on the last block (the preset's ``last`` layer),
  ``relu_attributions`` left at Captum's default (False).

Photos: the folder of ``realmasks`` (``index.csv``, ``images/``, ``masks/``,
``ignore/``); each photo is resized whole to the input size (no crop), its
mask with it (nearest). The target is the highest-scoring of the row's
ImageNet classes (one for ``exact`` rows). Quantus has no ignore mask, so the
uncertain band of ``ignore/`` counts as background in every score here.

Metrics, from Quantus itself on the adapter's maps (``a_batch``, computed once
per method): ``PointingGame``, ``AttributionLocalisation`` (positive part,
unweighted: the energy pointing game), ``RelevanceRankAccuracy``,
``Sparseness`` and ``FaithfulnessCorrelation`` (``--nr-runs`` random subsets
of ``--subset-size`` pixels set to black, seeded). Next to them, the package's
own ``pointing_game(tolerance=0)`` and ``energy_pointing_game`` on the same
maps and masks, and the number of photos where each differs from Quantus'.

    python benchmarks/quantus_realmasks.py                    # ../shared/realmasks
    python benchmarks/quantus_realmasks.py /path/to/realmasks --limit 16

Needs the ``quantus`` and ``demo`` extras (see the README for a separate
environment: Quantus pins ``opencv-python``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerGradCam as CaptumLayerGradCam
from torch.nn import functional as F

from captum_shallow import ShallowCAM
from captum_shallow.evaluation import energy_pointing_game, pointing_game
from captum_shallow.io import preprocess, read_image, read_label_png
from captum_shallow.models import layer_preset, load_model, resolve_layers
from captum_shallow.quantus import explain, quantus_module


def read_photos(
    folder: Path, size: int, limit: int | None
) -> tuple[list[str], torch.Tensor, torch.Tensor, list[list[int]]]:
    """Names, inputs ``(N, 3, size, size)``, masks ``(N, 1, size, size)`` and class lists."""
    with open(folder / "index.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    names, images, masks, classes = [], [], [], []
    for row in rows:
        names.append(row["name"])
        images.append(preprocess(read_image(folder / row["image"]), size))
        mask = torch.as_tensor(read_label_png(folder / row["mask"]) > 127)
        masks.append(F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0])
        classes.append([int(index) for index in row["imagenet_indices"].split()])
    return names, torch.stack(images), torch.stack(masks), classes


def targets_of(
    model: torch.nn.Module, images: torch.Tensor, classes: list[list[int]], batch: int
) -> np.ndarray:
    """The highest-scoring listed class of each photo."""
    chosen = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            scores = model(images[start : start + batch])
            for row, listed in zip(scores, classes[start : start + batch]):
                chosen.append(listed[int(row[listed].argmax())])
    return np.asarray(chosen)


def maps_of(model, images: np.ndarray, targets: np.ndarray, method, batch: int) -> np.ndarray:
    """The adapter's maps, in batches."""
    return np.concatenate(
        [
            explain(model, images[s : s + batch], targets[s : s + batch], method=method)
            for s in range(0, len(images), batch)
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("../shared/realmasks"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="the first N photos only")
    parser.add_argument("--task", default="localisation", choices=["localisation", "segmentation"])
    parser.add_argument("--nr-runs", type=int, default=20)
    parser.add_argument("--subset-size", type=int, default=224)
    args = parser.parse_args(argv)
    if not (args.folder / "index.csv").is_file():
        parser.error(f"{args.folder / 'index.csv'} not found: pass the realmasks folder")
    quantus = quantus_module()
    torch.manual_seed(0)
    model = load_model("efficientnet-lite0").eval()
    names, images, masks, classes = read_photos(args.folder, args.size, args.limit)
    targets = targets_of(model, images, classes, args.batch)
    x, s = images.numpy(), masks.numpy()
    last = resolve_layers(model, [layer_preset(model).last])[0]
    methods = {
        f"ours ShallowCAM.from_model(task={args.task!r})": ShallowCAM.from_model(
            model, task=args.task
        ),
        f"Captum LayerGradCam, {layer_preset(model).last}": CaptumLayerGradCam(model, last),
    }
    metrics = {
        "pointing": lambda: quantus.PointingGame(disable_warnings=True),
        "energy": lambda: quantus.AttributionLocalisation(
            disable_warnings=True, abs=False, normalise=False, positive_attributions=True
        ),
        "rank acc.": lambda: quantus.RelevanceRankAccuracy(disable_warnings=True),
        "sparseness": lambda: quantus.Sparseness(disable_warnings=True),
        "faithf. corr.": lambda: quantus.FaithfulnessCorrelation(
            disable_warnings=True,
            nr_runs=args.nr_runs,
            subset_size=args.subset_size,
            return_aggregate=False,
        ),
    }
    print(
        f"# Quantus {quantus.__version__} on {len(names)} photos of {args.folder.name}, "
        f"EfficientNet-Lite0, {args.size} px, targets: the best-scoring listed class\n"
    )
    print("    python benchmarks/quantus_realmasks.py " + " ".join(argv or sys.argv[1:]) + "\n")
    header = [
        "method",
        *metrics,
        "own pointing",
        "own energy",
        "pointing differs",
        "energy max diff",
    ]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for label, method in methods.items():
        began = time.perf_counter()
        a = maps_of(model, x, targets, method, args.batch)
        row = [label]
        scores = {}
        for name, build in metrics.items():
            np.random.seed(0)  # noqa: NPY002 (Quantus draws its subsets from the global state)
            # Quantus prints some of its warnings: keep them out of the table.
            with contextlib.redirect_stdout(sys.stderr):
                raw = build()(
                    model=model,
                    x_batch=x,
                    y_batch=targets,
                    a_batch=a,
                    s_batch=s,
                    explain_func=explain,
                    explain_func_kwargs={"method": method},
                    device="cpu",
                    batch_size=args.batch,
                )
            values = np.asarray(raw, dtype=np.float64)
            scores[name] = values
            row.append(f"{np.nanmean(values):.3f}")
        maps, regions = torch.from_numpy(a), torch.from_numpy(s[:, 0] > 0.5)
        own_pointing = pointing_game(maps, regions, tolerance=0).double().numpy()
        own_energy = energy_pointing_game(maps, regions).double().numpy()
        row += [f"{np.nanmean(own_pointing):.3f}", f"{np.nanmean(own_energy):.3f}"]
        row.append(f"{int((own_pointing != scores['pointing']).sum())} of {len(names)}")
        row.append(f"{np.nanmax(np.abs(own_energy - scores['energy'])):.1e}")
        print("| " + " | ".join(row) + " |", flush=True)
        print(f"<!-- {label}: {time.perf_counter() - began:.0f} s -->", file=sys.stderr)
    print(
        f"\n{platform.machine()}, torch {torch.__version__}, means over photos; "
        "pointing and rank accuracy: higher is better; energy: share of positive mass inside "
        "the mask; sparseness: Gini index of the map; faithfulness correlation: Pearson "
        "correlation between the attribution removed and the score drop"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
