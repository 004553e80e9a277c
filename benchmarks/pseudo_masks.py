"""Throughput and peak memory of ``captum-shallow pseudo-masks`` on 1 and N processes.

Writes a VOC-format folder of ``--images`` random-texture JPEGs (VOC's typical
500 x 375, one to three classes each, seeded) and a 20-class EfficientNet-Lite0
state dict (random weights: the speed does not depend on them), then runs the
real command, each configuration in a fresh process tree and a fresh output
folder:

- one process: ``python -m captum_shallow pseudo-masks ...``;
- N processes: ``python -m torch.distributed.run --nproc_per_node=N -m
  captum_shallow pseudo-masks ...`` (gloo on the CPU).

Columns: images/s of the loop (images written / the slowest rank's loop time,
from the manifest), images/s end to end (wall time including interpreter start,
model load and process-group setup), peak RSS of the largest process (a rank or
a DataLoader worker: ``RUSAGE_CHILDREN`` of a wrapper process) and, on CUDA,
``torch.cuda.max_memory_allocated`` of the largest rank. It also checks that
every configuration wrote byte-identical masks.

    python benchmarks/pseudo_masks.py                              # CPU, 1 and 2 processes
    python benchmarks/pseudo_masks.py --device cuda --processes 1  # one GPU

Measured (random-weight EfficientNet-Lite0 with 20 outputs, 375 x 500 JPEGs,
224 px input; one intra-op thread per process, the default ``--threads 1``):

``python benchmarks/pseudo_masks.py --device cuda --processes 1 --images 384
--batch-size 32 --workers 8 --repeats 2`` on one NVIDIA H200 (16 CPUs, torch
2.11.0+cu130)::

    processes loop img/s  e2e img/s peak RSS MiB peak GPU MiB  masks sha256
            1     110.41      29.34         2092         2947  86e8af5e64e7d1a5
            1     133.10      32.06         2080         2947  86e8af5e64e7d1a5

``python benchmarks/pseudo_masks.py --device cpu --processes 1,2 --images 32
--batch-size 8 --workers 2`` on the same machine's CPUs (16 cores, idle)::

    processes loop img/s  e2e img/s peak RSS MiB peak GPU MiB  masks sha256
            1       3.01       1.48         1459          nan  85435f4f5ced09a9
            2       8.04       1.69         1463          nan  85435f4f5ced09a9

End-to-end rates of these short runs are dominated by start-up (imports,
model load, process group): tens of seconds, paid once per run. The masks of 1
and 2 processes are byte-identical (same sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captum_shallow.io._label_png import voc_palette
from captum_shallow.models import build_model

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def write_dataset(root: Path, images: int, height: int, width: int, seed: int = 0) -> None:
    """A VOC-format folder: JPEGs, palette masks and ``train.txt``."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = np.array(voc_palette(), dtype=np.float64).reshape(-1, 3)
    names = []
    for i in range(images):
        mask = np.zeros((height, width), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
            mask[top : top + height // 2, left : left + width // 2] = int(rng.integers(1, 21))
        rgb = rng.random((height, width, 3)) * 80 + colours[mask] * 0.6
        name = f"bench_{i:06d}"
        Image.fromarray(rgb.astype(np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        png = Image.fromarray(mask, "P")
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names) + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_config(args: argparse.Namespace, root: Path, out: Path, processes: int) -> dict[str, float]:
    command = [
        "pseudo-masks",
        "--dataset",
        "voc",
        "--root",
        str(root),
        "--arch",
        args.arch,
        "--weights",
        str(root / "weights.pt"),
        "--input-size",
        str(args.input_size),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--device",
        args.device,
        "--out",
        str(out),
    ]
    if processes == 1:
        launch = [sys.executable, "-m", "captum_shallow"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
        launch += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
        launch += ["-m", "captum_shallow"]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *launch, *command], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{result.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "loop": manifest["written"] / manifest["seconds"],
        "end_to_end": manifest["written"] / wall,
        "rss_mib": int(result.stderr.strip().splitlines()[-1]) / 1024,
        "gpu_mib": float(manifest.get("peak_gpu_memory_mib", float("nan"))),
    }


def digest(folder: Path) -> str:
    total = hashlib.sha256()
    for path in sorted(folder.glob("*.png")):
        total.update(path.name.encode() + path.read_bytes())
    return total.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--image-size", default="375x500", help="HxW of the JPEGs")
    parser.add_argument("--arch", default="efficientnet-lite0")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", help="keep the dataset and outputs here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.image_size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.dir or scratch)
        root = base / "data"
        if not (root / "weights.pt").exists():
            write_dataset(root, args.images, height, width)
            torch.manual_seed(0)
            model = build_model(args.arch, num_classes=20)
            torch.save(model.state_dict(), root / "weights.pt")
        device = args.device
        if device.startswith("cuda"):
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        print(
            f"# {args.images} images {height}x{width}, {args.arch} at {args.input_size} px, "
            f"batch {args.batch_size}, {args.workers} workers/rank, device {device}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"torch {torch.__version__}"
        )
        print(
            f"{'processes':>9} {'loop img/s':>10} {'e2e img/s':>10} "
            f"{'peak RSS MiB':>12} {'peak GPU MiB':>12}  masks sha256"
        )
        for repeat in range(args.repeats):
            for processes in (int(p) for p in args.processes.split(",")):
                out = base / f"out-{processes}-{repeat}"
                stats = run_config(args, root, out, processes)
                print(
                    f"{processes:>9} {stats['loop']:>10.2f} {stats['end_to_end']:>10.2f} "
                    f"{stats['rss_mib']:>12.0f} {stats['gpu_mib']:>12.0f}  {digest(out)[:16]}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
