r"""Pseudo-masks for a whole dataset: sharded, streamed, resumable, deterministic.

The jobs (sorted by name) are split between the ``W`` processes of a run:
rank :math:`r` takes jobs :math:`r, r + W, r + 2W, \dots`, so the shards are
disjoint and cover every job. Before any work each rank drops the jobs whose
outputs already exist (resuming), then streams the rest through a
:class:`~torch.utils.data.DataLoader` (decoding in worker processes).

Per batch of images: the CAM of every present class
(:func:`present_class_maps`, one pass per ``slots`` (image, class) pairs),
upsampled bilinearly once, from the map's size to the image's own size, and
normalised as IRN does, then IRN's argmax (:func:`pseudo_masks`' rule) at the
background threshold, optionally refined by :func:`dense_crf`.

Determinism: CPU (and GPU) kernels may sum in another order when the batch
*size* changes, so a map could differ in its last bits with its batch
neighbours. Every CAM pass therefore has exactly ``slots`` pairs (the last
one padded with zero images), and nothing in a pass mixes samples (the
truncation threshold, the layer weights and the normalisation are per
sample). Some CPU kernels (bilinear upsampling, parts of EfficientNet's
backward) also sum in another order with another number of threads, so every
process, DataLoader workers included, computes with the same fixed ``threads``
(the caller's :func:`torch.set_num_threads`; ``torchrun`` would otherwise set
one thread per rank). An image's mask and maps then depend only on the image,
its labels, the model, the options, ``slots`` and ``threads``: not on which
batch, rank or number of ranks it lands in, nor on where a resumed run
restarts. Other ``slots``, ``threads``, devices or torch builds may change the
last bits of a map (and rarely a pixel of a mask), so the command's manifest
records them and refuses to resume with other values.

Files per job ``name`` in the output folder: ``<name>.png`` (the mask, written
last: it marks the job done) and, when asked, ``cams/<name>.npz`` (float16
maps of the present classes, ``cams`` ``(k, H, W)``, and their 0-based
``classes``). Every file is written under a temporary name and renamed, so a
killed run leaves whole files only and loses just the jobs in flight.

Failures are counted per job, and the run goes on: an image that cannot be
read, a map that is not finite (NaN or inf: such a mask would silently read as
all background), a file that cannot be written. A full disk (or quota) stops
the run instead, since every later write would fail the same way.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._checks import upsample
from .._errors import one_line
from ..io._atomic import atomic_write
from ..io._label_png import write_label_png
from ._irn import IRN_THRESHOLD, dense_crf, irn_normalise, present_class_maps
from ._jobs import MaskJob

__all__ = [
    "CRASH_AFTER_ENV",
    "MaskRun",
    "RunCounts",
    "broken_output",
    "fixed_shape_cam",
    "is_done",
    "mask_path",
    "run_masks",
    "shard",
]

#: Test hook: a process exits abruptly (``os._exit``) after writing this many
#: masks, as a killed process would.
CRASH_AFTER_ENV = "_CAPTUM_SHALLOW_CRASH_AFTER"

#: Write errors that stop a run: every later write would fail the same way.
STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

CamFn = Callable[[Tensor, Tensor], Tensor]
Writer = Callable[[str | os.PathLike[str]], contextlib.AbstractContextManager[IO[bytes]]]


def shard(jobs: Sequence[MaskJob], rank: int, world_size: int) -> list[MaskJob]:
    """Rank ``rank``'s share of the jobs: items ``rank, rank + W, ...``.

    Args:
        jobs (Sequence[MaskJob]): All jobs, in the same order on every rank.
        rank (int): This process's rank, ``0 <= rank < world_size``.
        world_size (int): Number of processes ``W``.

    Returns:
        list[MaskJob]: The shard.

    Examples::

        >>> [job.name for job in shard([MaskJob(str(i), "", ()) for i in range(5)], 1, 2)]
        ['1', '3']
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    return list(jobs[rank::world_size])


def mask_path(out: Path, job: MaskJob) -> Path:
    """The mask file of a job: ``<out>/<name>.png``."""
    return out / f"{job.name}.png"


def cams_path(out: Path, job: MaskJob) -> Path:
    """The maps file of a job: ``<out>/cams/<name>.npz``."""
    return out / "cams" / f"{job.name}.npz"


def is_done(out: Path, job: MaskJob, save_cams: bool) -> bool:
    """Whether a job's outputs exist (its mask is written last)."""
    return mask_path(out, job).is_file() and (not save_cams or cams_path(out, job).is_file())


def broken_output(run: MaskRun, job: MaskJob) -> str | None:
    """Why a done job's outputs cannot be trusted, or None when they can.

    A mask must decode as a label PNG, have the image's size (EXIF orientation
    applied) and hold only the background and the image's classes (label
    ``c + 1`` for class ``c``); the maps, when asked for, must load with one map
    per present class at that size. An emptied or truncated file (a power cut
    before the data reached the disk, a full disk, a user's edit) fails this.
    """
    from ..io._images import image_size
    from ..io._label_png import read_label_png

    try:
        labels = job.labels if job.labels is not None else _labels_from_mask(job)
        size = image_size(job.image)
    except (OSError, ValueError):
        return None  # the job itself fails when rerun; nothing to say about its mask
    try:
        mask = read_label_png(mask_path(run.out, job))
    except (OSError, ValueError) as error:
        return f"it does not decode ({one_line(error)})"
    if mask.shape != size:
        return f"it is {mask.shape[1]}x{mask.shape[0]}, the image {size[1]}x{size[0]}"
    known = {0, *(c + 1 for c in labels)}
    unknown = sorted(set(np.unique(mask).tolist()) - known)
    if unknown:
        return f"it holds label {unknown[0]}, which is not one of the image's ({sorted(known)})"
    if run.save_cams:
        try:
            with np.load(cams_path(run.out, job)) as archive:
                maps, classes = archive["cams"], archive["classes"]
        except Exception as error:  # zip, pickle and key errors alike
            return f"its maps {cams_path(run.out, job)} do not load ({one_line(error)})"
        if maps.shape != (len(labels), *size) or sorted(classes.tolist()) != sorted(labels):
            return f"its maps {cams_path(run.out, job)} do not match the image"
    return None


def fixed_shape_cam(cam_fn: CamFn, slots: int) -> CamFn:
    """Wrap a CAM function so that every call computes exactly ``slots`` maps.

    Fewer pairs are padded with zero images (target 0) and the padding's maps
    dropped, so the kernels always see one shape and a map never depends on how
    many neighbours it had.

    Args:
        cam_fn (Callable): ``cam_fn(images (B, C, H, W), target (B,)) -> (B, 1, h, w)``.
        slots (int): Pairs per call; calls with more raise ``ValueError``.

    Returns:
        Callable: The wrapped function.
    """

    def padded(images: Tensor, target: Tensor) -> Tensor:
        count = images.shape[0]
        if count > slots:
            raise ValueError(f"{count} pairs do not fit {slots} slots")
        if count < slots:
            images = torch.cat([images, images.new_zeros(slots - count, *images.shape[1:])])
            target = torch.cat([target, target.new_zeros(slots - count)])
        return cam_fn(images, target)[:count]

    return padded


@dataclass(frozen=True)
class MaskRun:
    """What a pseudo-mask run computes and where it writes.

    Args:
        cam_fn (Callable): ``cam_fn(images, target) -> (B, 1, h, w)`` on the device.
        num_classes (int): Classifier classes ``K`` (labels ``1..K`` in the masks).
        input_size (int): Side of the square model input.
        out (Path): Output folder.
        device (torch.device): The model's device.
        threshold (float, optional): Background score. Default: 0.15 (IRN).
        crf (bool, optional): Refine with :func:`dense_crf`. Default: False.
        save_cams (bool, optional): Also write ``cams/<name>.npz``. Default: False.
        batch_size (int, optional): Images per loaded batch and (image, class)
            pairs per CAM pass (every pass is padded to it). Default: 8.
        workers (int, optional): DataLoader worker processes. Default: 2.
        threads (int, optional): Intra-op threads of the workers (the caller sets
            its own process's with :func:`torch.set_num_threads`). Default: 1.
        writer (Callable, optional): ``writer(path)`` opens a binary stream that
            appears under ``path`` only when closed without error.
            Default: ``captum_shallow.io._atomic.atomic_write``.
        mean, std (tuple[float, float, float]): Input normalisation (ImageNet's).
    """

    cam_fn: CamFn
    num_classes: int
    input_size: int
    out: Path
    device: torch.device
    threshold: float = IRN_THRESHOLD
    crf: bool = False
    save_cams: bool = False
    batch_size: int = 8
    workers: int = 2
    threads: int = 1
    writer: Writer | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class RunCounts:
    """What one rank did: jobs in its shard, skipped as done, written, failed.

    ``failures`` holds ``(image path, reason)`` per failed job; ``seconds`` the
    time of the loop; ``peak_gpu_bytes`` ``torch.cuda.max_memory_allocated``
    on a CUDA device (else 0); ``stopped`` why the run stopped early (a full
    disk), else None; ``recomputed`` how many done jobs had broken outputs
    (see :func:`broken_output`) and were made again.
    """

    shard: int = 0
    skipped: int = 0
    written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    peak_gpu_bytes: int = 0
    stopped: str | None = None
    recomputed: int = 0


class _JobDataset(Dataset[dict[str, Any]]):
    """Reads one job: the model input, the image's size, labels, RGB for the CRF."""

    def __init__(self, jobs: Sequence[MaskJob], run: MaskRun) -> None:
        self.jobs = list(jobs)
        self.num_classes = run.num_classes
        self.input_size = run.input_size
        self.crf = run.crf
        self.mean, self.std = run.mean, run.std

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from captum_shallow.io import preprocess, read_image

        job = self.jobs[index]
        item: dict[str, Any] = {"index": index, "error": None}
        try:
            image = read_image(job.image)
            labels = job.labels if job.labels is not None else _labels_from_mask(job)
            bad = [c for c in labels if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(f"class {bad[0]} is outside the model's {self.num_classes}")
        except Exception as error:  # one bad file must not end a 10k-image run
            item["error"] = one_line(error)
            return item
        multi_hot = torch.zeros(self.num_classes)
        multi_hot[list(labels)] = 1.0
        item["input"] = preprocess(image, self.input_size, self.mean, self.std)
        item["labels"] = multi_hot
        item["size"] = tuple(image.shape[1:])
        item["rgb"] = image if self.crf else None
        return item


def _labels_from_mask(job: MaskJob) -> tuple[int, ...]:
    from ..io._label_png import read_label_png

    if job.mask is None or not os.path.isfile(job.mask):
        raise ValueError(f"no labels: missing mask {job.mask} (give a labels file)")
    present = np.unique(read_label_png(job.mask))
    return tuple(int(label) - 1 for label in present if 0 < label < 255)


def _set_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(threads)


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def run_masks(
    run: MaskRun,
    jobs: Sequence[MaskJob],
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunCounts:
    """Make the masks of this rank's jobs that are not done yet.

    Args:
        run (MaskRun): What to compute and where.
        jobs (Sequence[MaskJob]): This rank's shard (see :func:`shard`).
        progress (Callable, optional): Called with the number of jobs finished
            (written or failed) after each batch.
        log (Callable, optional): Called with one line per failed job and per
            done job whose outputs are broken (see :func:`broken_output`) and
            are made again.

    Returns:
        RunCounts: The counts and the failures (path and reason); ``stopped``
        is set when a full disk ended the loop early.
    """
    start = time.perf_counter()
    counts = RunCounts(shard=len(jobs))
    pending = []
    for job in jobs:
        if not is_done(run.out, job, run.save_cams):
            pending.append(job)
            continue
        problem = broken_output(run, job)
        if problem is not None:
            counts.recomputed += 1
            pending.append(job)
            if log is not None:
                log(f"recomputing {mask_path(run.out, job)}: {problem}")
    counts.skipped = len(jobs) - len(pending)
    crash_after = int(os.environ.get(CRASH_AFTER_ENV, "0") or 0)
    cam_fn = fixed_shape_cam(run.cam_fn, run.batch_size)
    loader = DataLoader(
        _JobDataset(pending, run),
        batch_size=run.batch_size,
        num_workers=run.workers,
        collate_fn=_collate,
        pin_memory=run.device.type == "cuda",
        worker_init_fn=functools.partial(_set_threads, run.threads),
    )

    def fail(job: MaskJob, reason: str) -> None:
        counts.failures.append((job.image, reason))
        if log is not None:
            log(f"skipped {job.image}: {reason}")

    batches = iter(loader)
    try:
        for batch in batches:
            ready = [item for item in batch if item["error"] is None]
            for item in batch:
                if item["error"] is not None:
                    fail(pending[item["index"]], item["error"])
            if ready:
                inputs = torch.stack([item["input"] for item in ready]).to(run.device)
                labels = torch.stack([item["labels"] for item in ready]).to(run.device)
                results = _image_maps(cam_fn, inputs, labels, run.batch_size)
                for item, result in zip(ready, results, strict=True):
                    job = pending[item["index"]]
                    if isinstance(result, str):
                        fail(job, result)
                        continue
                    try:
                        _write_job(run, job, *result, item)
                    except OSError as error:
                        reason = f"{error.strerror or error} writing {error.filename}"
                        if error.errno in STOPPING_ERRNOS:
                            counts.failures.append((job.image, reason))
                            counts.stopped = reason
                            break
                        fail(job, reason)
                        continue
                    counts.written += 1
                    if crash_after and counts.written >= crash_after:
                        os._exit(3)  # as if killed: no cleanup, no summary
            if progress is not None:
                progress(len(batch))
            if counts.stopped is not None:
                break
    finally:
        _shut_down(batches)
    counts.seconds = time.perf_counter() - start
    if run.device.type == "cuda":
        counts.peak_gpu_bytes = torch.cuda.max_memory_allocated(run.device)
    return counts


def _shut_down(batches: Any) -> None:
    """Join the DataLoader's workers now, however the loop ended.

    A run stopped by a signal leaves the iterator in the traceback, so its workers
    (killed by the same signal, or still running) would be joined only when it is
    collected, maybe at exit, after torch's ``SIGCHLD`` handler is back, which then
    reports each dead worker as a ``RuntimeError``. torch has no public way to close
    an iterator; ``_shutdown_workers`` is what its own ``__del__`` calls.
    """
    shut_down = getattr(batches, "_shutdown_workers", None)
    if callable(shut_down):
        shut_down()


def _image_maps(
    cam_fn: CamFn, inputs: Tensor, labels: Tensor, slots: int
) -> list[tuple[Tensor, Tensor] | str]:
    """Per image: its present classes and their raw maps, or why it has none."""
    try:
        pairs, maps = present_class_maps(cam_fn, inputs, labels, batch_size=slots)
    except ValueError as error:  # e.g. ShallowCAM refusing a non-finite map
        if inputs.shape[0] == 1:
            return [one_line(error)]
        # A pass fails as a whole. Every pass has the same fixed shape, so an
        # image alone gets the same bits: redo image by image, and only the
        # image at fault fails.
        return [
            result
            for i in range(inputs.shape[0])
            for result in _image_maps(cam_fn, inputs[i : i + 1], labels[i : i + 1], slots)
        ]
    # A cam_fn that returns NaN or inf without raising: such a mask would read
    # as all background, so the image fails instead.
    not_finite = set(pairs[~torch.isfinite(maps).flatten(1).all(dim=1), 0].tolist())
    results: list[tuple[Tensor, Tensor] | str] = []
    for i in range(inputs.shape[0]):
        rows = pairs[:, 0] == i
        if i in not_finite:
            results.append("the CAM holds NaN or inf (the model's output is not finite)")
        else:
            results.append((pairs[rows, 1], maps[rows]))
    return results


def _write_job(
    run: MaskRun, job: MaskJob, present: Tensor, raw_maps: Tensor, item: dict[str, Any]
) -> None:
    """Write the job's files; an OSError names the file it could not write."""
    height, width = item["size"]
    # Upsampled once, from the map's own size straight to the image's, then
    # normalised, as IRN does (a background-only image has no map at all).
    maps = irn_normalise(upsample(raw_maps[:, None], (height, width)))[:, 0]
    # IRN's argmax over {background = t} and the present classes only (as
    # pseudo_masks does, without a dense (K, H, W) tensor of absent classes).
    scores = torch.cat([maps.new_full((1, height, width), float(run.threshold)), maps])
    mask = torch.cat([present.new_zeros(1), present + 1])[scores.argmax(dim=0)].cpu()
    if run.crf:
        mask = dense_crf(item["rgb"], mask)
    if run.save_cams:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            cams=maps.cpu().numpy().astype(np.float16),
            classes=present.cpu().numpy().astype(np.int64),
        )
        _write_file(run, cams_path(run.out, job), buffer.getvalue())
    buffer = io.BytesIO()
    write_label_png(buffer, mask.numpy())
    _write_file(run, mask_path(run.out, job), buffer.getvalue())


def _write_file(run: MaskRun, path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with (run.writer or atomic_write)(path) as stream:
            stream.write(data)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
