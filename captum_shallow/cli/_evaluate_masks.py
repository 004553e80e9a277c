"""``captum-shallow evaluate-masks``: per-class IoU and mIoU of label PNGs.

Every ``<name>.png`` under ``--pred`` (hidden files skipped) is compared with
``<name>.png`` under ``--gt``; ground-truth label 255 is ignored. One confusion
matrix over all images gives :math:`IoU_c = C_{cc} / (\\sum_j C_{cj} +
\\sum_i C_{ic} - C_{cc})` and mIoU = their mean over the classes that occur
(in the ground truth or the prediction), as the evaluation module computes it.
An IoU without any pixel to count (every ground-truth pixel void, say) is
``null`` in the JSON, ``-`` in the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from captum_shallow.datasets import VOC_CLASSES
from captum_shallow.evaluation import confusion_matrix, iou_from_confusion
from captum_shallow.io._label_png import read_label_png
from captum_shallow.segmentation._jobs import read_class_names

from ._errors import CLIError
from ._files import atomic_write
from ._options import one_line

NAME = "evaluate-masks"
IGNORE_INDEX = 255


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate-masks`` on the ``captum-shallow`` subparsers.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned.

    Returns:
        argparse.ArgumentParser: The subcommand's parser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        NAME,
        help="per-class IoU and mIoU of predicted label PNGs against ground truth",
        description=(
            "Compare every PNG under --pred with the PNG of the same name under --gt "
            "(VOC format: one label per pixel, 0 the background, 255 ignored) and print "
            "the per-class IoU and the mIoU."
        ),
    )
    parser.add_argument("--pred", required=True, metavar="DIR", help="predicted masks")
    parser.add_argument("--gt", required=True, metavar="DIR", help="ground-truth masks")
    parser.add_argument(
        "--classes",
        metavar="TXT",
        help="object class names, one per line (label c + 1 is line c + 1); "
        "default: VOC's 20 (the background is added)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table.

    Args:
        args (argparse.Namespace): The parsed options.

    Returns:
        int: 0.
    """
    names = _class_names(args.classes)
    pred_dir, gt_dir = Path(args.pred), Path(args.gt)
    for folder, option in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not folder.is_dir():
            raise CLIError(f"{option} {folder} is not a folder")
    if args.json and Path(args.json).is_dir():
        raise CLIError(f"--json {args.json} is a folder; give a file name")
    files = sorted(
        path.relative_to(pred_dir)
        for path in pred_dir.rglob("*.png")
        if not any(part.startswith(".") for part in path.relative_to(pred_dir).parts)
    )
    if not files:
        raise CLIError(f"--pred {pred_dir} holds no .png masks")
    missing = [str(name) for name in files if not (gt_dir / name).is_file()]
    if missing:
        raise CLIError(
            f"{len(missing)} of {len(files)} masks have no ground truth in {gt_dir}, "
            f"e.g. {missing[0]}"
        )
    # A ground-truth folder often holds more than one split (VOC's
    # SegmentationClass does), so masks without a prediction are counted and
    # reported, not treated as an error: a failed image must not pass unseen.
    scored = set(files)
    unscored = sum(
        1
        for path in gt_dir.rglob("*.png")
        if path.relative_to(gt_dir) not in scored
        and not any(part.startswith(".") for part in path.relative_to(gt_dir).parts)
    )
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    for name in files:
        pred, gt = _read(pred_dir / name), _read(gt_dir / name)
        if pred.shape != gt.shape:
            raise CLIError(
                f"size mismatch for {name}: prediction {pred.shape[1]}x{pred.shape[0]}, "
                f"ground truth {gt.shape[1]}x{gt.shape[0]} (width x height)"
            )
        try:
            confusion += confusion_matrix(pred, gt, len(names), IGNORE_INDEX)
        except ValueError as error:
            raise CLIError(f"{name}: {one_line(error)}") from None
    iou, miou = iou_from_confusion(confusion)
    table = {
        "images": len(files),
        "ground_truth_without_prediction": unscored,
        "classes": {
            label: _number_or_none(value) for label, value in zip(names, iou.tolist(), strict=True)
        },
        "miou": _number_or_none(float(miou)),
        "confusion": confusion.tolist(),
    }
    print(_format_table(table))
    if unscored:
        print(
            f"note: {unscored} ground-truth masks in {gt_dir} have no prediction and are "
            "not scored",
            file=sys.stderr,
        )
    if args.json:
        with atomic_write(args.json) as stream:
            stream.write((json.dumps(table, indent=2, allow_nan=False) + "\n").encode())
    return 0


def _number_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined IoU is null."""
    return None if math.isnan(value) else value


def _class_names(path: str | None) -> tuple[str, ...]:
    if path is None:
        return VOC_CLASSES
    try:
        return ("background", *read_class_names(path))
    except ValueError as error:
        raise CLIError(one_line(error)) from None


def _read(path: Path) -> torch.Tensor:
    try:
        return torch.from_numpy(read_label_png(path)).long()
    except ValueError as error:
        raise CLIError(one_line(error)) from None


def _format_table(table: dict[str, Any]) -> str:
    width = max(len(name) for name in table["classes"])
    rows = [f"{'class':<{width}}  IoU (%)"]
    for name, value in table["classes"].items():
        rows.append(f"{name:<{width}}  {'-' if value is None else f'{100 * value:6.2f}':>7}")
    miou = "-" if table["miou"] is None else f"{100 * table['miou']:7.2f}"
    rows.append(f"{'mIoU':<{width}}  {miou:>7}  ({table['images']} images)")
    return "\n".join(rows)
