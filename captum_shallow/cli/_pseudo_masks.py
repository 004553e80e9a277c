"""``captum-shallow pseudo-masks``: IRN pseudo-masks for a whole dataset.

One process, or many under ``torchrun`` (``torch.distributed``: gloo on the
CPU, nccl on GPUs), each rank taking a disjoint shard. The run is resumable
(finished images are skipped), every file is written atomically, unreadable
images are reported and skipped, and the outputs do not depend on the number
of processes (see :mod:`captum_shallow.segmentation._mask_pipeline`). One run
at a time holds an output folder (a lock file naming its process), and a
resume must match the manifest's options and the labels' content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from captum_shallow import ShallowCAM, __version__, task_defaults
from captum_shallow.attribution._multiscale import check_scales
from captum_shallow.io._atomic import (
    FolderLockedError,
    folder_lock,
    remove_temporaries,
    space_reserve,
)
from captum_shallow.segmentation._irn import IRN_THRESHOLD
from captum_shallow.segmentation._jobs import MaskJob, folder_jobs, voc_jobs
from captum_shallow.segmentation._mask_pipeline import (
    MaskRun,
    RunCounts,
    cams_path,
    mask_path,
    run_masks,
    shard,
)

from ._errors import CLIError
from ._files import atomic_write, make_folder
from ._options import (
    add_cam_options,
    add_model_options,
    build_shallowcam,
    describe_cam,
    load_model_from_args,
    one_line,
    parse_device,
    positive_int,
    resolve_layer_spec,
)

NAME = "pseudo-masks"
MANIFEST = "manifest.json"
FAILURES = "failures.txt"
#: Exit status when some images could not be read (the others are written).
EXIT_FAILED_IMAGES = 1
#: Room set aside on the output's disk for the report (failures.txt and the
#: manifest), freed before writing it: a run stopped by a full disk still says so.
REPORT_RESERVE_BASE = 64 * 1024
REPORT_RESERVE_PER_IMAGE = 256
REPORT_RESERVE_MAX = 16 * 2**20
#: The manifest's note after Ctrl-C (the masks written so far are complete).
INTERRUPTED = "interrupted (Ctrl-C); rerun the same command to resume"


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
    _check_out_outside_root(args.out, args.root)
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
    with _process_group(args.device) as (rank, world_size, device), ExitStack() as held:
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
        out = make_folder(args.out)
        if rank == 0:
            _take_lock(held, out)
        config = _config(args, loaded.name, loaded.input_size, names, cam, classes, jobs)
        previous = _read_manifest(out)
        if previous is not None and previous["config"] != config:
            changed = sorted(
                key
                for key in set(config) | set(previous["config"])
                if config.get(key) != previous["config"].get(key)
            )
            raise CLIError(
                f"{out} holds masks made with other options or inputs (changed: "
                f"{', '.join(changed)}); refusing to mix them: rerun with the same options "
                "and inputs to resume, or choose another --out"
            )
        release_reserve = None
        if rank == 0:
            for folder in _output_folders(out, jobs):
                remove_temporaries(folder)
            release_reserve = _reserve_report_space(held, out, len(jobs))
            _write_manifest(out, config, world_size, None, len(jobs))
        _barrier(world_size)

        def cam_fn(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return cam.attribute(images, target=target)

        mask_run = MaskRun(
            cam_fn=cam_fn,
            num_classes=len(classes),
            input_size=loaded.input_size,
            out=out,
            device=device,
            threshold=args.threshold,
            crf=args.crf,
            save_cams=args.save_cams,
            batch_size=args.batch_size,
            workers=args.workers,
            threads=args.threads,
        )
        mine = shard(jobs, rank, world_size)
        with tqdm(
            total=len(mine),
            unit="image",
            desc=f"rank {rank}/{world_size}" if world_size > 1 else NAME,
            disable=None if rank == 0 else True,
        ) as bar:
            try:
                counts = run_masks(
                    mask_run,
                    mine,
                    progress=bar.update,
                    log=lambda line: bar.write(f"{NAME}: {line}", file=sys.stderr),
                )
            except KeyboardInterrupt:
                if rank == 0:  # the manifest must not say "running" after Ctrl-C
                    with suppress(CLIError):
                        _write_manifest(out, config, world_size, None, len(jobs), INTERRUPTED)
                raise
        totals = _gather(counts, world_size)
        stop = None
        if totals.stopped is not None:
            stop = (
                f"{totals.stopped}: the disk holding {out} is full; free space, then rerun "
                "the same command to resume"
            )
        if release_reserve is not None:
            release_reserve()  # a full disk still has room for the report
            try:
                _report(out, config, world_size, totals, len(jobs))
            except CLIError as error:
                if stop is None:
                    raise
                stop += f" ({error}: the manifest still says running)"
        if stop is not None:
            raise CLIError(stop)
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


@contextmanager
def _process_group(device_name: str) -> Iterator[tuple[int, int, torch.device]]:
    """This process's rank, the world size and its device; under ``torchrun`` the
    process group (gloo on the CPU, nccl on CUDA) lives for the block."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = parse_device(device_name)
    if device.type == "cuda":
        # Heuristic (not timed) algorithm choice and deterministic kernels: a
        # pass of a fixed shape then computes the same bits every time.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    if world_size <= 1:
        yield 0, 1, device
        return
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size(), device
        # Leave together: no rank tears its connections down (or exits) while
        # another still works or talks to it, which can abort gloo's threads.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def _gather(counts: RunCounts, world_size: int) -> RunCounts:
    if world_size <= 1:
        return counts
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, counts)
    total = RunCounts()
    for part in everyone:
        total.shard += part.shard
        total.skipped += part.skipped
        total.written += part.written
        total.failures += part.failures
        total.seconds = max(total.seconds, part.seconds)
        total.peak_gpu_bytes = max(total.peak_gpu_bytes, part.peak_gpu_bytes)
        total.stopped = total.stopped or part.stopped
    return total


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
        "labels": _file_digest(labels) if labels else _masks_digest(jobs),
        "classes": list(classes),
        "model": model,
        "weights": _file_digest(args.weights) if args.weights else None,
        "input_size": input_size,
        "method": args.method,
        "layers": layers,
        **describe_cam(cam),
        "threshold": args.threshold,
        "scales": list(cam.scales),
        "flips": cam.flips,
        "crf": args.crf,
        "save_cams": args.save_cams,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device_type": torch.device(args.device).type,
    }


def _file_digest(path: str) -> dict[str, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(Path(path).resolve()), "sha256": digest.hexdigest()}


def _masks_digest(jobs: list[MaskJob]) -> dict[str, str]:
    """The content of the ground-truth masks that the jobs' labels are read off."""
    digest = hashlib.sha256()
    folders = set()
    for job in jobs:
        digest.update(f"{job.name}\0".encode())
        if job.mask is not None:
            folders.add(str(Path(job.mask).parent.resolve()))
            try:
                digest.update(Path(job.mask).read_bytes())
            except OSError:
                digest.update(b"\0unreadable")  # the job fails; a mask put there later counts
        digest.update(b"\0")
    return {"path": ", ".join(sorted(folders)), "sha256": digest.hexdigest()}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "captum_shallow": __version__}
    for package in ("torch", "torchvision", "captum", "numpy", "pillow", "pydensecrf2"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read {path}: {one_line(error)}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("command") != NAME
        or not isinstance(manifest.get("config"), dict)
    ):
        raise CLIError(
            f"{path} is not a {NAME} manifest (a JSON object with the run's config), so "
            "the folder was not written by this command; choose another --out"
        )
    return manifest


def _write_manifest(
    out: Path,
    config: dict[str, Any],
    world_size: int,
    totals: RunCounts | None,
    images: int,
    interrupted: str | None = None,
) -> None:
    """Write the manifest: running (``totals`` None), complete, stopped by a full disk
    (``totals.stopped``), or interrupted (``interrupted`` says how to go on)."""
    manifest: dict[str, Any] = {
        "command": NAME,
        "config": config,
        "versions": _versions(),
        "processes": world_size,
        "images": images,
        "status": "running" if totals is None else "complete",
    }
    if interrupted is not None:
        manifest.update(status="interrupted", error=interrupted)
    if totals is not None:
        manifest.update(
            written=totals.written,
            skipped_done=totals.skipped,
            failed=len(totals.failures),
            seconds=round(totals.seconds, 3),
        )
        if totals.stopped is not None:
            manifest.update(status="stopped", error=totals.stopped)
        if totals.peak_gpu_bytes:
            manifest["peak_gpu_memory_mib"] = round(totals.peak_gpu_bytes / 2**20, 1)
    with atomic_write(out / MANIFEST) as stream:
        stream.write((json.dumps(manifest, indent=2) + "\n").encode())


def _check_out_outside_root(out: str, root: str) -> None:
    resolved, dataset = Path(out).resolve(), Path(root).resolve()
    if resolved == dataset or dataset in resolved.parents:
        raise CLIError(
            f"--out {out} is inside --root {root}: the dataset's own files could be taken "
            "for finished masks or overwritten; choose an --out outside the dataset"
        )


def _take_lock(held: ExitStack, out: Path) -> None:
    """Lock ``out`` until ``held`` closes: one run at a time writes there."""
    try:
        held.enter_context(folder_lock(out))
    except FolderLockedError as error:
        raise CLIError(
            f"{out} is in use by another run ({error.owner}); wait for it to end, or "
            "choose another --out"
        ) from None
    except OSError as error:
        raise CLIError(f"cannot lock {out}: {error.strerror or error}") from None


def _reserve_report_space(held: ExitStack, out: Path, images: int) -> Callable[[], None]:
    """Set aside room for ``failures.txt`` and the manifest until ``held`` closes."""
    size = min(REPORT_RESERVE_BASE + REPORT_RESERVE_PER_IMAGE * images, REPORT_RESERVE_MAX)
    try:
        release: Callable[[], None] = held.enter_context(space_reserve(out, size))
    except OSError as error:
        raise CLIError(
            f"cannot set aside {size // 1024} KiB in {out} for the run's report "
            f"({error.strerror or error}); free space on that disk, then rerun"
        ) from None
    return release


def _output_folders(out: Path, jobs: list[MaskJob]) -> set[Path]:
    """The folders a run writes to: the only places where its temporaries can be."""
    folders = {out}
    for job in jobs:
        folders.update((mask_path(out, job).parent, cams_path(out, job).parent))
    return folders


def _report(
    out: Path, config: dict[str, Any], world_size: int, totals: RunCounts, images: int
) -> None:
    failures = sorted(totals.failures)
    lines = "".join(f"{path}\t{reason}\n" for path, reason in failures)
    unwritten = None
    if failures or (out / FAILURES).exists():
        try:
            with atomic_write(out / FAILURES) as stream:
                stream.write(lines.encode())
        except CLIError as error:
            unwritten = error
            with suppress(OSError):
                (out / FAILURES).unlink()  # an earlier run's list would now be false
    # The manifest still records the run (and how many failed) when the list did not fit.
    _write_manifest(out, config, world_size, totals, images)
    if unwritten is not None:
        raise unwritten
    if totals.stopped is not None:
        return  # the caller's one-line error says the rest
    rate = totals.written / totals.seconds if totals.seconds > 0 else 0.0
    print(
        f"{NAME}: {images} images: {totals.written} written, {totals.skipped} already done, "
        f"{len(failures)} failed; {rate:.1f} images/s on {world_size} process"
        f"{'es' if world_size > 1 else ''} -> {out}",
        file=sys.stderr,
    )
    for path, reason in failures:
        print(f"{NAME}: failed: {path}: {reason}", file=sys.stderr)


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
