"""``captum-shallow demo``: why shallow truncated CAMs, on a real photo and model.

One figure, one photo, one class: Grad-CAM at the last stage, LayerCAM at a
shallow stage, the same with gradient truncation, the fused ShallowCAM (shown
through :func:`~captum_shallow.visualization.display_scaling`, as its title says),
and the pseudo-mask that ``pseudo-masks`` would write: the segmentation task's map
above its background threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from captum_shallow import GradientTruncation, LayerCAM, LayerGradCam, ShallowCAM, task_defaults
from captum_shallow.datasets import SAMPLE_PHOTOS, imagenet_classes, sample_photo
from captum_shallow.io import preprocess
from captum_shallow.models import available_models, layer_preset, load_model, resolve_layers
from captum_shallow.visualization import attribution_figure, display_scaling

from ._errors import CLIError
from ._files import make_folder, write_figure
from ._options import (
    DEFAULT_MODEL,
    one_line,
    parse_device,
    parse_target,
    parse_truncation,
    settings_caption,
)

NAME = "demo"
#: The truncation of the shallow LayerCAM panel: soft at the 0.90 quantile, which lifts
#: the grid pointing game at every single layer measured (docs/evidence.rst). The fused
#: panels take the tasks' defaults, which truncate while the gradient propagates instead.
SHALLOW_TRUNCATION = GradientTruncation("soft", quantile=0.9)
#: The file the demo writes in ``--out``.
FIGURE_NAME = "demo.png"
DPI = 100


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``captum-shallow`` subparsers.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned.

    Returns:
        argparse.ArgumentParser: The subcommand's parser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        NAME,
        help="compare Grad-CAM, shallow LayerCAM and ShallowCAM on a real photo and model",
        description=(
            "Explain a scikit-image photo with a real ImageNet model and write one "
            f"figure, {FIGURE_NAME}: Grad-CAM at the last stage, LayerCAM at a shallow "
            "stage without and with gradient truncation, the fused ShallowCAM, and the "
            "pseudo-mask of the segmentation task (its map above its threshold)."
        ),
    )
    parser.add_argument(
        "--photo",
        default="chelsea",
        choices=list(SAMPLE_PHOTOS),
        help="scikit-image photo (default: chelsea)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        choices=list(available_models()),
        help=f"pretrained model (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--target", default="auto", help="auto (top prediction), a class index or a class name"
    )
    parser.add_argument(
        "--truncation",
        metavar="SPEC",
        help=f"gradient truncation of the shallow LayerCAM panel (default: {SHALLOW_TRUNCATION})",
    )
    parser.add_argument(
        "--out", default=".", metavar="DIR", help=f"folder for {FIGURE_NAME} (default: .)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Compute the four maps, print the top-5 predictions, write the figure.

    Args:
        args (argparse.Namespace): The parsed options.

    Returns:
        int: 0.
    """
    truncation = parse_truncation(args.truncation, default=SHALLOW_TRUNCATION)
    classes = imagenet_classes()
    target = parse_target(args.target, classes)
    device = parse_device(args.device)
    try:
        model = load_model(args.model, device=device)
        photo = sample_photo(args.photo)
    except (ValueError, ImportError, RuntimeError) as error:
        raise CLIError(one_line(error)) from None
    size = int(getattr(model, "input_image_size", 224))
    inputs = preprocess(photo, size).unsqueeze(0).to(device)
    with torch.no_grad():
        probabilities = model(inputs).softmax(dim=1)[0]
    top = probabilities.topk(5)
    print(f"{args.model} on {args.photo}: top-5 predictions")
    for probability, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {index:4d}  {probability:.3f}  {classes[index]}")
    if target is None:
        target = int(top.indices[0])
    label = f"{classes[target]} ({target}), p = {float(probabilities[target]):.2f}"

    preset = layer_preset(model)
    last, shallow = resolve_layers(model, [preset.last, preset.shallow])
    fused_layers = resolve_layers(model, preset.fusion)
    truncated = "no truncation" if truncation is None else str(truncation)
    cam = ShallowCAM(model, fused_layers)
    scaling = display_scaling(cam.fusion, len(fused_layers))
    maps = [
        LayerGradCam(model, last).attribute(inputs, target=target),
        LayerCAM(model, shallow).attribute(inputs, target=target),
        LayerCAM(model, shallow, truncation=truncation).attribute(inputs, target=target),
        scaling(cam.attribute(inputs, target=target)),
    ]
    segmentation = task_defaults("segmentation")
    seg_map = ShallowCAM(model, fused_layers, task="segmentation").attribute(inputs, target=target)
    mask = _pseudo_mask(
        seg_map.detach(), (int(photo.shape[-2]), int(photo.shape[-1])), segmentation.threshold
    )
    maps.append(mask)
    titles = [
        f"Grad-CAM at {preset.last}\n{_size(maps[0])}, last stage",
        f"LayerCAM at {preset.shallow}\n{_size(maps[1])}, no truncation",
        f"LayerCAM at {preset.shallow}\n{_size(maps[2])}, {truncated}",
        f"ShallowCAM, {cam.fusion} of {len(fused_layers)} ({_size(maps[3])})\n{scaling.label}",
        f"pseudo-mask: segmentation map > {segmentation.threshold:.2f}\n"
        f"{float(mask.mean()):.0%} of the photo",
    ]
    figure = attribution_figure(
        photo,
        [(f"{args.photo}\n{classes[target]}", None), *zip(titles, maps, strict=True)],
        title=f"{args.model} on '{args.photo}': {label}",
        caption=settings_caption(cam, "ShallowCAM panel"),
    )
    folder = make_folder(args.out)
    path = write_figure(figure, folder / FIGURE_NAME, dpi=DPI)
    print(f"wrote {Path(path)}")
    return 0


def _pseudo_mask(maps: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """The map upsampled to the photo, divided by its maximum, above ``threshold``
    (what ``pseudo-masks`` writes for one class), as a 0/1 map."""
    full = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    full = full.clamp(min=0)
    return (full / full.amax().clamp(min=1e-12) > threshold).float().cpu()


def _size(attribution: torch.Tensor) -> str:
    return f"{attribution.shape[-2]}×{attribution.shape[-1]}"
