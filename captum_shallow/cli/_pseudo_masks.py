"""``captum-shallow pseudo-masks``: IRN pseudo-masks for a whole dataset.

The command parses its options, lists the dataset's jobs
(:mod:`captum_shallow.segmentation._jobs`) and hands them to the job runner
(:func:`captum_shallow.segmentation._runner.run_mask_job`): one process, or many
under ``torchrun``; resumable; one run at a time per output folder; every file
written atomically; unreadable images reported and skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from captum_shallow import ShallowCAM, task_defaults
from captum_shallow.attribution._multiscale import check_scales
from captum_shallow.segmentation._irn import IRN_THRESHOLD
from captum_shallow.segmentation._jobs import MaskJob, folder_jobs, voc_jobs
from captum_shallow.segmentation._runner import (
    MaskJobSpec,
    Prepared,
    check_out_outside_root,
    file_digest,
    masks_digest,
    run_mask_job,
)

from ._errors import CLIError
from ._options import (
    add_cam_options,
    add_model_options,
    build_shallowcam,
    load_model_from_args,
    one_line,
    parse_device,
    positive_int,
    resolve_layer_spec,
)

NAME = "pseudo-masks"
#: Exit status when some images could not be read (the others are written).
EXIT_FAILED_IMAGES = 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``pseudo-masks`` on the ``captum-shallow`` subparsers.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned.

    Returns:
        argparse.ArgumentParser: The subcommand's parser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        NAME,
        help="pseudo-masks of a dataset (VOC or a folder), resumable, on one or many processes",
        description=(
            "Write one VOC-format palette PNG pseudo-mask per image (IRN's protocol: the "
            "CAM of each present class, normalised, against a constant background score) "
            "and manifest.json. Rerun the same command to resume. Many processes: "
            "torchrun --nproc_per_node=N -m captum_shallow pseudo-masks ..."
        ),
    )
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", choices=["voc", "folder"], required=True)
    data.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="voc: the folder holding VOCdevkit/ (or VOC2012/ itself); folder: the images",
    )
    data.add_argument(
        "--split",
        default="train",
        metavar="NAME",
        help="voc: ImageSets/Segmentation/NAME.txt (default: train)",
    )
    data.add_argument(
        "--labels",
        metavar="CSV",
        help="image-level labels, CSV with header 'image,classes' (classes separated by "
        "spaces); folder default: ROOT/labels.csv; voc default: read off SegmentationClass",
    )
    data.add_argument(
        "--classes",
        metavar="TXT",
        help="folder: class names, one per line in the model's output order "
        "(default: ROOT/classes.txt); voc: VOC's 20",
    )
    add_model_options(parser)
    add_cam_options(parser, task="segmentation")
    masks = parser.add_argument_group("masks")
    masks.add_argument(
        "--threshold",
        type=_unit_float,
        default=None,
        metavar="T",
        help="background score in [0, 1] (default: the task's, measured with its maps; "
        f"segmentation: {task_defaults('segmentation').threshold}; IRN's is {IRN_THRESHOLD})",
    )
    segmentation = task_defaults("segmentation")
    masks.add_argument(
        "--scales",
        type=_scales,
        default=None,
        metavar="S,S,...",
        help="input sizes relative to the model's input whose maps are averaged before "
        "normalising (IRN's multi-scale inference: 1,0.5,1.5,2) (default: the task's; "
        f"segmentation: {','.join(f'{v:g}' for v in segmentation.scales)})",
    )
    masks.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also average the maps of the images mirrored left-right (default: the "
        f"task's; segmentation: {'on' if segmentation.flips else 'off'})",
    )
    masks.add_argument(
        "--crf",
        action="store_true",
        help="refine with a dense CRF (pydensecrf; recommended: about +8 points of IoU on "
        "real photos, docs/evidence.rst)",
    )
    masks.add_argument(
        "--save-cams",
        action="store_true",
        help="also write cams/<name>.npz: float16 maps of the present classes",
    )
    masks.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="images per batch and (image, class) pairs per CAM pass; outputs are "
        "reproducible for a given N (default: 8)",
    )
    run.add_argument(
        "--workers",
        type=_non_negative_int,
        default=2,
        metavar="N",
        help="image-decoding processes per rank (default: 2; 0: in the main process)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="intra-op threads per process (default: 1; some CPU kernels sum in another "
        "order with another thread count, so outputs are reproducible for a given N; "
        "use more processes to use more cores)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Make the pseudo-masks of this rank's shard and report.

    Args:
        args (argparse.Namespace): The parsed options.

    Returns:
        int: 0 when every image was written (or already done), 1 when some
        images failed (unreadable, a map that is not finite, a file that could
        not be written; listed in ``failures.txt``).

    Raises:
        CLIError: For a user error, and when a full disk stops the run (after
            ``failures.txt`` and the manifest record it).
    """
    check_out_outside_root(args.out, args.root)
    jobs, classes = _list_jobs(args)
    if len(classes) > 254:
        # Mask labels are class + 1 in one byte, and 255 means "void" in VOC's format.
        raise CLIError(
            f"{len(classes)} classes do not fit VOC's one-byte label PNGs (at most 254 "
            "classes besides the background)"
        )
    if args.crf:
        _require_crf()
    # Not left to OMP_NUM_THREADS, which torchrun sets to 1: the thread count
    # must not change with the number of processes (see _mask_pipeline).
    torch.set_num_threads(args.threads)

    def prepare(device: torch.device) -> Prepared:
        args.device = str(device)
        loaded = load_model_from_args(args)
        if len(loaded.classes) != len(classes):
            raise CLIError(
                f"the model has {len(loaded.classes)} outputs but the dataset has "
                f"{len(classes)} classes ({classes[0]}, ...)"
            )
        names, layers = resolve_layer_spec(loaded.model, args.layers)
        cam = build_shallowcam(args, loaded.model, layers)
        if args.threshold is None:
            args.threshold = task_defaults(args.task).threshold

        def cam_fn(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return cam.attribute(images, target=target)

        config = _config(args, loaded.name, loaded.input_size, names, cam, classes, jobs)
        return Prepared(cam_fn, loaded.input_size, args.threshold, config)

    spec = MaskJobSpec(
        jobs=jobs,
        out=args.out,
        device=parse_device(args.device),
        crf=args.crf,
        save_cams=args.save_cams,
        batch_size=args.batch_size,
        workers=args.workers,
        threads=args.threads,
        log_name=NAME,
    )
    totals = run_mask_job(spec, prepare)
    return EXIT_FAILED_IMAGES if totals.failures else 0


def _list_jobs(args: argparse.Namespace) -> tuple[list[MaskJob], tuple[str, ...]]:
    try:
        if args.dataset == "voc":
            if args.classes is not None:
                raise CLIError("--classes is for --dataset folder; VOC has its 20 classes")
            return voc_jobs(args.root, args.split, args.labels)
        return folder_jobs(args.root, args.labels, args.classes)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(one_line(error)) from None


def _require_crf() -> None:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        raise CLIError(
            '--crf needs pydensecrf: pip install "captum-shallow[crf]" (PyPI pydensecrf2)'
        ) from None


def _config(
    args: argparse.Namespace,
    model: str,
    input_size: int,
    layers: list[str],
    cam: ShallowCAM,
    classes: tuple[str, ...],
    jobs: list[MaskJob],
) -> dict[str, Any]:
    """Everything the masks depend on; a resume must match it (the labels by content:
    the labels file, or VOC's ground-truth masks they are read off)."""
    labels = args.labels
    if labels is None and args.dataset == "folder":
        labels = str(Path(args.root) / "labels.csv")
    return {
        "dataset": args.dataset,
        "root": str(Path(args.root).resolve()),
        "split": args.split if args.dataset == "voc" else None,
        "labels": file_digest(labels) if labels else masks_digest(jobs),
        "classes": list(classes),
        "model": model,
        "weights": file_digest(args.weights) if args.weights else None,
        "input_size": input_size,
        "method": args.method,
        "layers": layers,
        "cam": cam.settings(),
        "threshold": args.threshold,
        "scales": list(cam.scales),
        "flips": cam.flips,
        "crf": args.crf,
        "save_cams": args.save_cams,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device_type": torch.device(args.device).type,
    }


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _scales(text: str) -> tuple[float, ...]:
    try:
        return check_scales([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected positive numbers separated by commas, e.g. 1,0.5,1.5,2, got {text!r}"
        ) from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value
