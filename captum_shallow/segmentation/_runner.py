"""The pseudo-mask job runner: one run of :func:`run_masks` over a whole data set,
on one process or many under ``torchrun``, that can stop and resume.

One process, or many under ``torchrun`` (``torch.distributed``: gloo on the
CPU, nccl on GPUs), each rank taking a disjoint shard. The run is resumable
(finished images are skipped), every file is written atomically, unreadable
images are reported and skipped, and the outputs do not depend on the number
of processes (see :mod:`captum_shallow.segmentation._mask_pipeline`). One run
at a time holds an output folder (a lock file naming its process), a resume
must match the manifest's options and the labels' content, and room for the
report (``failures.txt`` and the manifest) is set aside before any work, so a
run stopped by a full disk still says so.

The ``pseudo-masks`` command parses its options into a :class:`MaskJobSpec`
and a ``prepare`` function (the model and CAM on a rank's device), and calls
:func:`run_mask_job`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import __version__
from .._errors import UserError, one_line, signal_name
from .._signals import stopped_worker
from ..io._atomic import (
    FolderLockedError,
    atomic_write,
    folder_lock,
    make_folder,
    remove_temporaries,
    space_reserve,
)
from ..io._paths import inside, name_limit, open_regular, read_text
from ._jobs import MaskJob
from ._mask_pipeline import CamFn, MaskRun, RunCounts, cams_path, mask_path, run_masks, shard

__all__ = [
    "FAILURES",
    "INTERRUPTED",
    "MANIFEST",
    "MaskJobSpec",
    "Prepared",
    "check_out_outside_root",
    "check_output_paths",
    "file_digest",
    "masks_digest",
    "run_mask_job",
]

#: The command whose manifests the runner writes and resumes.
COMMAND = "pseudo-masks"
MANIFEST = "manifest.json"
FAILURES = "failures.txt"
#: Room set aside on the output's disk for the report (failures.txt and the
#: manifest), freed before writing it: a run stopped by a full disk still says so.
REPORT_RESERVE_BASE = 64 * 1024
REPORT_RESERVE_PER_IMAGE = 256
REPORT_RESERVE_MAX = 16 * 2**20


def interrupted_note(signum: int) -> str:
    """The manifest's note after signal ``signum`` stopped a run (the masks written
    so far are complete)."""
    how = "Ctrl-C" if signum == signal.SIGINT else signal_name(signum)
    return f"interrupted ({how}); rerun the same command to resume"


#: The manifest's note after Ctrl-C.
INTERRUPTED = interrupted_note(signal.SIGINT)


@dataclass(frozen=True)
class Prepared:
    """What a rank computes with, built on its device by the caller's ``prepare``.

    Args:
        cam_fn (Callable): ``cam_fn(images, target) -> (B, 1, h, w)``.
        input_size (int): Side of the square model input.
        threshold (float): Background score.
        config (dict): Everything the masks depend on (the manifest's ``config``;
            a resume must match it).
    """

    cam_fn: CamFn
    input_size: int
    threshold: float
    config: dict[str, Any]


@dataclass(frozen=True)
class MaskJobSpec:
    """A pseudo-mask run over a data set's jobs.

    Args:
        jobs (Sequence[MaskJob]): Every job, sorted by name (the same on every rank).
        out (str or os.PathLike): Output folder.
        device (torch.device): The device; under ``torchrun`` a CUDA device
            becomes the rank's ``LOCAL_RANK``.
        crf (bool): Refine with a dense CRF.
        save_cams (bool): Also write ``cams/<name>.npz``.
        batch_size (int): Images per batch and pairs per CAM pass.
        workers (int): Image-decoding processes per rank.
        threads (int): Intra-op threads per process.
        log_name (str, optional): What progress and log lines start with.
            Default: ``"pseudo-masks"``
    """

    jobs: Sequence[MaskJob]
    out: str | os.PathLike[str]
    device: torch.device
    crf: bool
    save_cams: bool
    batch_size: int
    workers: int
    threads: int
    log_name: str = COMMAND


def run_mask_job(spec: MaskJobSpec, prepare: Callable[[torch.device], Prepared]) -> RunCounts:
    """Make the pseudo-masks of this rank's shard, then write the manifest and report.

    Args:
        spec (MaskJobSpec): The jobs and how to run them.
        prepare (Callable): ``prepare(device)`` builds the model and CAM on the
            rank's device (inside the process group) and returns
            :class:`Prepared`.

    Returns:
        RunCounts: The counts of every rank together; ``failures`` lists the
        images that failed (also in ``failures.txt``).

    Raises:
        UserError: For a locked or foreign output folder, a resume with other
            options or inputs, a disk without room for the report, and when a
            full disk stops the run (after ``failures.txt`` and the manifest
            record it).
    """
    jobs = list(spec.jobs)
    check_output_paths(spec.out, jobs, spec.save_cams)
    with _process_group(spec.device) as (rank, world_size, device), ExitStack() as held:
        try:
            prepared, out, release_reserve = _set_up(
                spec, jobs, prepare, held, rank, world_size, device
            )
            error = None
        except UserError as caught:
            error = caught
        # Every rank stops with the same line, or none does, before any other
        # collective call: a rank that left alone would break the others' calls.
        _agree(world_size, error)
        config = prepared.config

        mask_run = MaskRun(
            cam_fn=prepared.cam_fn,
            num_classes=len(config["classes"]),
            input_size=prepared.input_size,
            out=out,
            device=device,
            threshold=prepared.threshold,
            crf=spec.crf,
            save_cams=spec.save_cams,
            batch_size=spec.batch_size,
            workers=spec.workers,
            threads=spec.threads,
        )
        mine = shard(jobs, rank, world_size)
        with tqdm(
            total=len(mine),
            unit="image",
            desc=f"rank {rank}/{world_size}" if world_size > 1 else spec.log_name,
            disable=None if rank == 0 else True,
        ) as bar:
            try:
                counts = run_masks(
                    mask_run,
                    mine,
                    progress=bar.update,
                    log=lambda line: bar.write(f"{spec.log_name}: {line}", file=sys.stderr),
                )
            except (KeyboardInterrupt, RuntimeError) as error:
                # A stop signal sent to the process group may kill a data-loading
                # worker before this process sees it: torch then raises a RuntimeError.
                ended = error if isinstance(error, KeyboardInterrupt) else stopped_worker(error)
                if ended is None:
                    raise
                if rank == 0:  # the manifest must not say "running" after Ctrl-C
                    why = (
                        interrupted_note(getattr(ended, "signum", signal.SIGINT))
                        if isinstance(ended, KeyboardInterrupt)
                        else f"stopped: {ended}"
                    )
                    with suppress(UserError):
                        _write_manifest(out, config, world_size, None, len(jobs), why)
                if ended is error:
                    raise
                raise ended from None
        totals = _gather(counts, world_size)
        stop = None
        if totals.stopped is not None:
            stop = (
                f"{totals.stopped}: the disk holding {out} is full; free space, then rerun "
                "the same command to resume"
            )
        unreported = None
        if release_reserve is not None:
            release_reserve()  # a full disk still has room for the report
            try:
                _report(out, config, world_size, totals, len(jobs), spec.log_name)
            except UserError as error:
                if stop is None:
                    unreported = error
                else:
                    stop += f" ({error}: the manifest still says running)"
        _agree(world_size, UserError(stop) if stop is not None else unreported)
    return totals


def _set_up(
    spec: MaskJobSpec,
    jobs: list[MaskJob],
    prepare: Callable[[torch.device], Prepared],
    held: ExitStack,
    rank: int,
    world_size: int,
    device: torch.device,
) -> tuple[Prepared, Path, Callable[[], None] | None]:
    """Everything before the work: the model, the folder, and on rank 0 the lock,
    the resume check, the cleanup of a killed run's leftovers, the report's
    reserve and the manifest. Raises UserError for anything the user can fix."""
    prepared = prepare(device)
    config = prepared.config
    out = make_folder(spec.out)
    if rank != 0:
        return prepared, out, None
    _take_lock(held, out)
    previous = _read_manifest(out)
    if previous is not None and previous["config"] != config:
        changed = sorted(
            key
            for key in set(config) | set(previous["config"])
            if config.get(key) != previous["config"].get(key)
        )
        raise UserError(
            f"{out} holds masks made with other options or inputs (changed: "
            f"{', '.join(changed)}); refusing to mix them: rerun with the same options "
            "and inputs to resume, or choose another --out"
        )
    if previous is None:
        _refuse_foreign_outputs(out, jobs, spec.save_cams)
    for folder in _output_folders(out, jobs):
        remove_temporaries(folder)
    release_reserve = _reserve_report_space(held, out, len(jobs))
    _write_manifest(out, config, world_size, None, len(jobs))
    return prepared, out, release_reserve


def _agree(world_size: int, error: UserError | None) -> None:
    """Raise on every rank the first rank's error, if any rank has one.

    With one process, raise ``error`` itself. Under ``torchrun`` it is a
    collective call: every rank must reach it.
    """
    if world_size <= 1:
        if error is not None:
            raise error
        return
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, None if error is None else str(error))
    first = next((message for message in everyone if message is not None), None)
    if first is not None:
        raise UserError(first)


def check_out_outside_root(out: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Refuse an output folder that is the data set's folder or inside it.

    Raises:
        UserError: When it is.
    """
    resolved, dataset = Path(out).resolve(), Path(root).resolve()
    if resolved == dataset or dataset in resolved.parents:
        raise UserError(
            f"--out {out} is inside --root {root}: the dataset's own files could be taken "
            "for finished masks or overwritten; choose an --out outside the dataset"
        )


def check_output_paths(
    out: str | os.PathLike[str], jobs: Sequence[MaskJob], save_cams: bool
) -> None:
    """Refuse a run any of whose output files would land outside ``out``.

    Every job's mask (and maps) path is resolved, following every symbolic link
    on the way (a folder inside ``out`` that links into the data set, say), and
    must stay inside ``out``'s own real path. Checked before any work, on every
    rank alike.

    Each file name must also fit the disk's limit on a name's length (255 bytes on
    most), so that a long image name stops the run here, not as a failed job.

    Raises:
        UserError: Naming the first job whose output leaves ``out``, or whose file
            name is too long.
    """
    limit = name_limit(out)
    for job in jobs:
        outputs = [(mask_path(Path(out), job), "mask")]
        if save_cams:
            outputs.append((cams_path(Path(out), job), "maps"))
        for path, what in outputs:
            relative = path.relative_to(out)
            size = max(len(os.fsencode(part)) for part in relative.parts)
            if size > limit:
                raise UserError(
                    f"the output of {job.name!r}, {relative}, has a name of {size} bytes, "
                    f"over the file system's limit of {limit}; give the image a shorter "
                    "name (its id names the outputs)"
                )
            inside(out, path, f"the {what} of {job.name!r},")


def file_digest(path: str | os.PathLike[str]) -> dict[str, str]:
    """A file's resolved path and SHA-256, for the manifest.

    Raises:
        UserError: When it cannot be read (a FIFO or a device too).
    """
    digest = hashlib.sha256()
    try:
        with open_regular(path) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except (OSError, ValueError) as error:
        raise UserError(one_line(error)) from None
    return {"path": str(Path(path).resolve()), "sha256": digest.hexdigest()}


def masks_digest(jobs: Sequence[MaskJob]) -> dict[str, str]:
    """The content of the ground-truth masks that the jobs' labels are read off."""
    digest = hashlib.sha256()
    folders = set()
    for job in jobs:
        digest.update(f"{job.name}\0".encode())
        if job.mask is not None:
            folders.add(str(Path(job.mask).parent.resolve()))
            try:
                with open_regular(job.mask, "mask") as stream:
                    digest.update(stream.read())
            except (OSError, ValueError):
                digest.update(b"\0unreadable")  # the job fails; a mask put there later counts
        digest.update(b"\0")
    return {"path": ", ".join(sorted(folders)), "sha256": digest.hexdigest()}


@contextmanager
def _process_group(device: torch.device) -> Iterator[tuple[int, int, torch.device]]:
    """This process's rank, the world size and its device; under ``torchrun`` the
    process group (gloo on the CPU, nccl on CUDA) lives for the block."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
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
        total.recomputed += part.recomputed
    return total


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
    if not os.path.lexists(path):
        return None
    try:
        text = read_text(path, "manifest")
    except (OSError, ValueError) as error:
        raise UserError(one_line(error)) from None
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise UserError(f"cannot read {path}: {one_line(error)}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("command") != COMMAND
        or not isinstance(manifest.get("config"), dict)
    ):
        raise UserError(
            f"{path} is not a {COMMAND} manifest (a JSON object with the run's config), so "
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
        "command": COMMAND,
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
        if totals.recomputed:
            manifest["recomputed_broken"] = totals.recomputed
        if totals.peak_gpu_bytes:
            manifest["peak_gpu_memory_mib"] = round(totals.peak_gpu_bytes / 2**20, 1)
    with atomic_write(out / MANIFEST) as stream:
        stream.write((json.dumps(manifest, indent=2) + "\n").encode())


def _refuse_foreign_outputs(out: Path, jobs: Sequence[MaskJob], save_cams: bool) -> None:
    """Without a manifest no file in ``out`` is the run's own: one at an output's
    name would be taken for a finished mask, or replaced."""
    paths = [mask_path(out, job) for job in jobs]
    if save_cams:
        paths += [cams_path(out, job) for job in jobs]
    there = [path for path in paths if os.path.lexists(path)]
    if there:
        more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
        raise UserError(
            f"{out} already holds {there[0]}{more} but no {MANIFEST}, so this command did "
            "not write it; refusing to take it for a finished mask or replace it: choose "
            "another --out"
        )


def _take_lock(held: ExitStack, out: Path) -> None:
    """Lock ``out`` until ``held`` closes: one run at a time writes there."""
    try:
        held.enter_context(folder_lock(out))
    except UserError:
        raise
    except FolderLockedError as error:
        raise UserError(
            f"{out} is in use by another run ({error.owner}); wait for it to end, or "
            "choose another --out"
        ) from None
    except OSError as error:
        raise UserError(f"cannot lock {out}: {error.strerror or error}") from None


def _reserve_report_space(held: ExitStack, out: Path, images: int) -> Callable[[], None]:
    """Set aside room for ``failures.txt`` and the manifest until ``held`` closes."""
    size = min(REPORT_RESERVE_BASE + REPORT_RESERVE_PER_IMAGE * images, REPORT_RESERVE_MAX)
    try:
        release: Callable[[], None] = held.enter_context(space_reserve(out, size))
    except OSError as error:
        raise UserError(
            f"cannot set aside {size // 1024} KiB in {out} for the run's report "
            f"({error.strerror or error}); free space on that disk, then rerun"
        ) from None
    return release


def _output_folders(out: Path, jobs: Sequence[MaskJob]) -> set[Path]:
    """The folders a run writes to: the only places where its temporaries can be."""
    folders = {out}
    for job in jobs:
        folders.update((mask_path(out, job).parent, cams_path(out, job).parent))
    return folders


def _report(
    out: Path,
    config: dict[str, Any],
    world_size: int,
    totals: RunCounts,
    images: int,
    log_name: str,
) -> None:
    failures = sorted(totals.failures)
    lines = "".join(f"{path}\t{reason}\n" for path, reason in failures)
    unwritten = None
    if failures or (out / FAILURES).exists():
        try:
            with atomic_write(out / FAILURES) as stream:
                # A path that is not UTF-8 is written back as the bytes it names.
                stream.write(lines.encode("utf-8", "surrogateescape"))
        except UserError as error:
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
    recomputed = f" ({totals.recomputed} of them broken, made again)" if totals.recomputed else ""
    print(
        f"{log_name}: {images} images: {totals.written} written{recomputed}, {totals.skipped} "
        f"already done, {len(failures)} failed; {rate:.1f} images/s on {world_size} process"
        f"{'es' if world_size > 1 else ''} -> {out}",
        file=sys.stderr,
    )
    for path, reason in failures:
        print(f"{log_name}: failed: {path}: {reason}", file=sys.stderr)
