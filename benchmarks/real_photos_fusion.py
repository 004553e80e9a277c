"""An exploration, not a rule: how the fusion's details move real-photo IoU and grid pointing.

``real_photos.py`` chose the task defaults among ``quality.py``'s configurations. This
script asks what lies outside that family, for the segmentation default's reading of
the propagation (the positive part at the ReLU calls below the deepest layer) with and
without its truncation at the layers (soft, quantile 0.90):

- per-layer normalisation before the mean: by the maximum (the package's) or by the
  0.95-quantile of the map, clamped at 1 (robust to a few hot pixels);
- the fused layers: all four of the preset, or without the shallowest, or without the
  second;
- smoothing of the fused map: none, or a Gaussian of sigma 1 pixel of the shallowest
  layer's grid (torchvision's ``gaussian_blur``);
- a class gate (for the maximum normalisation, all layers, no smoothing): the fused
  map times the deepest layer's own LayerCAM map or last-block Grad-CAM (from the same
  backward pass; the gates below the deepest layer leave its gradient untouched), each
  normalised, raised to 1, 0.5 or 0.25 (Grad-CAM) or 1, 0.5 (LayerCAM). This is where
  ShallowCAM's ``class_gate`` came from: ``quality.py``'s family then took Grad-CAM to
  the power 1 (``GATED_FUSIONS``) and the rule chose among it (docs/evidence.rst).

Each variant is scored on the real photos as ``real_photos.py`` scores (IoU at the best
shared threshold over all photos, and per source data set) and by grid pointing on the
model's 2x2 grids (``quality.py``'s grid set), the constraint that kept the truncation at
the layers in the segmentation default. Nothing here feeds a default: the variants were
picked after the rule's run, on the same photos, so their numbers are optimistic.

Usage::

    python benchmarks/real_photos_fusion.py --models efficientnet-lite0,efficientnet-lite1
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from captum_shallow import LayerCAM, LayerGradCam
from captum_shallow.datasets._real_photos import RealPhotoSet, listed_target
from captum_shallow.evaluation import grid_pointing_game
from captum_shallow.evaluation._real_photos import score_photo
from captum_shallow.io import preprocess
from captum_shallow.models import layer_preset, load_model, resolve_layers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "realmasks"
GRIDS = {"efficientnet-lite0": "grid-lite0", "efficientnet-lite1": "grid-lite1"}
FORWARD = {"none": None, "soft q.90": quality._q("soft", 0.9)}
NORMALISATIONS = ("max", "q.95")
SUBSETS = {"all": (0, 1, 2, 3), "no 1st": (1, 2, 3), "no 2nd": (0, 2, 3)}
SIGMAS = (0.0, 1.0)
#: Class gates: (map, exponent); "none" for no gate.
GATES = {
    "none": ("none", 1.0),
    "LayerCAM": ("layercam", 1.0),
    "LayerCAM^0.5": ("layercam", 0.5),
    "Grad-CAM": ("gradcam", 1.0),
    "Grad-CAM^0.5": ("gradcam", 0.5),
    "Grad-CAM^0.25": ("gradcam", 0.25),
}

Variant = tuple[str, str, str, float, str]


def variants() -> list[Variant]:
    plain = [(*v, "none") for v in itertools.product(FORWARD, NORMALISATIONS, SUBSETS, SIGMAS)]
    gated = [(f, "max", "all", 0.0, g) for f in FORWARD for g in GATES if g != "none"]
    return plain + gated


def normalise(maps: Tensor, how: str) -> Tensor:
    """``(N, 1, h, w)`` maps clamped at 0 and divided by their max or 0.95-quantile."""
    maps = maps.clamp(min=0)
    flat = maps.flatten(1)
    peak = flat.amax(dim=1) if how == "max" else torch.quantile(flat, 0.95, dim=1)
    peak = torch.where(peak > 0, peak, flat.amax(dim=1))
    scaled = maps / peak.clamp(min=1e-12)[:, None, None, None]
    return scaled.clamp(max=1.0) if how != "max" else scaled


def fuse(layer_maps: Sequence[Tensor], variant: Variant, gradcam: Tensor) -> Tensor:
    """The variant's fused map of per-layer maps ``(N, 1, h_l, w_l)``, shallowest first;
    ``gradcam``: Grad-CAM at the deepest layer, for the gate."""
    _forward, how, subset, sigma, gate = variant
    size = layer_maps[0].shape[-2:]
    chosen = [
        normalise(
            F.interpolate(layer_maps[i], size=size, mode="bilinear", align_corners=False), how
        )
        for i in SUBSETS[subset]
    ]
    fused = torch.stack(chosen).mean(dim=0)
    kind, exponent = GATES[gate]
    if kind != "none":
        deep = layer_maps[-1] if kind == "layercam" else gradcam
        deep = F.interpolate(deep, size=size, mode="bilinear", align_corners=False)
        fused = fused * normalise(deep, "max") ** exponent
    if sigma > 0:
        radius = int(3 * sigma + 0.5)
        fused = gaussian_blur(fused, [2 * radius + 1] * 2, [sigma, sigma])
    return fused


def layer_maps(
    model: torch.nn.Module, layers: list[torch.nn.Module], x: Tensor, t: Tensor
) -> tuple[dict[str, list[Tensor]], Tensor]:
    """LayerCAM at each fused layer under each forward truncation, and Grad-CAM at the
    deepest layer, in one backward."""
    tensors = quality.layer_tensors(model, layers, x, t, "positive", "relu-below")
    maps = {
        label: [
            LayerCAM.layer_attribution(g, a, trunc, relu_attributions=True).float()
            for g, a in tensors
        ]
        for label, trunc in FORWARD.items()
    }
    gradcam = LayerGradCam.layer_attribution(*tensors[-1], None, relu_attributions=True)
    return maps, gradcam.float()


def photo_scores(
    name: str, root: str, batch: int, limit: int = 0
) -> dict[Variant, dict[str, float]]:
    model = load_model(name).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    size = int(getattr(model, "input_image_size", 224))
    layers = resolve_layers(model, list(layer_preset(model).fusion))
    photos = RealPhotoSet(root)
    if limit:
        photos = photos.subset(range(limit))
    all_variants = variants()
    curves: dict[Variant, list[Tensor]] = {v: [] for v in all_variants}
    for s in range(0, len(photos), batch):
        items = [photos.photo(i) for i in range(s, min(s + batch, len(photos)))]
        x = torch.stack([preprocess(p.image, size) for p in items])
        with torch.no_grad():
            logits = model(x)
        t = listed_target(logits, [p.imagenet_indices for p in items])
        maps, gradcam = layer_maps(model, layers, x, t)
        fused = {v: fuse(maps[v[0]], v, gradcam) for v in all_variants}
        for j, photo in enumerate(items):
            stacked = torch.cat([fused[v][j : j + 1] for v in all_variants])
            iou = score_photo(stacked, photo.mask, photo.ignore).iou
            for k, v in enumerate(all_variants):
                curves[v].append(iou[k])
    datasets = np.array(photos.datasets)
    out: dict[Variant, dict[str, float]] = {}
    for v, rows in curves.items():
        curve = torch.stack(rows)  # (photos, thresholds)
        best = int(curve.mean(dim=0).argmax())
        result = {"iou": float(curve[:, best].mean()), "t": best / 100}
        for source in sorted(set(photos.datasets)):
            result[source] = float(curve[torch.from_numpy(datasets == source), best].mean())
        out[v] = result
    return out


def grid_scores(name: str) -> dict[Variant, float]:
    data = quality.grid_set(GRIDS[name], torch.device("cpu"), False)
    model = data["model"]
    layers = resolve_layers(model, data["names"])
    images, targets = data["images"], data["targets"]
    parts = [
        layer_maps(model, layers, images[s : s + 32], targets[s : s + 32])
        for s in range(0, len(images), 32)
    ]
    maps = {
        label: [torch.cat([p[label][k] for p, _ in parts]) for k in range(len(layers))]
        for label in FORWARD
    }
    gradcam = torch.cat([g for _, g in parts])
    return {
        v: float(
            grid_pointing_game(fuse(maps[v[0]], v, gradcam), data["cells"], 2, data["size"]).mean()
        )
        for v in variants()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help="the photos' folder")
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-lite1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print("command: python benchmarks/real_photos_fusion.py " + " ".join(sys.argv[1:]))
    for name in args.models.split(","):
        photos = photo_scores(name, args.root, args.batch, args.limit)
        grid = grid_scores(name)
        sources = [k for k in next(iter(photos.values())) if k not in ("iou", "t")]
        header = [
            "forward",
            "normalise",
            "layers",
            "sigma",
            "gate",
            "IoU best",
            "t",
            *sources,
            "grid pointing",
        ]
        print(f"\n### {name}: segmentation default's propagation, fusion variants\n")
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for v in sorted(photos, key=lambda v: -photos[v]["iou"]):
            p = photos[v]
            cells = [v[0], v[1], v[2], f"{v[3]:g}", v[4], f"{p['iou']:.3f}", f"{p['t']:.2f}"]
            cells += [f"{p[s]:.3f}" for s in sources] + [f"{grid[v]:.3f}"]
            print("| " + " | ".join(cells) + " |")
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
