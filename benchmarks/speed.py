"""Speed and peak memory of the CAMs on EfficientNet-Lite0 (real weights).

Same model, layers, batch and device in one process; the methods run
interleaved, each timed ``--repeats`` times after a warm-up, and the table gives
medians and the ratios the project promises (docs/evidence.rst):

- our truncated LayerCAM / Captum's LayerGradCam on the same shallow block
  (the floor: one forward and the backward down to that block), target <= 1.10;
- ShallowCAM over 4 blocks / ShallowCAM over the shallowest block alone,
  target <= 1.3;
- ShallowCAM with propagation gates (``propagation="positive"`` at its fused
  layers, at the ReLU calls below the deepest one and at every ReLU call) /
  ShallowCAM without (both without truncation at the layers), target <= 1.05;
- each task's defaults (``task=``) / plain ShallowCAM;
- ours / pytorch-grad-cam's LayerCAM and torchcam's LayerCAM + fuse_cams over
  the same 4 blocks.

Peak memory: on the CPU, the max RSS of a separate process per method (minus a
process that only loads the model and runs one forward pass); on CUDA,
``torch.cuda.max_memory_allocated`` per method in this process.

    python benchmarks/speed.py                 # CPU, batch 8, 224 px
    python benchmarks/speed.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from captum_shallow import GradientTruncation
from captum_shallow.attribution import TASK_DEFAULTS

#: The single-layer truncation of the README and the demo: soft, per-sample quantile 0.90.
SOFT_90 = GradientTruncation("soft", quantile=0.90)
SHALLOW_BLOCK = 2  # 56 x 56 at 224 px: the preset's shallow block
FUSED_BLOCKS = (2, 4, 10, 15)  # 56, 28, 14 and 7 px: ShallowCAM.from_model's blocks
PROPAGATION_ROWS = {
    gates: f"ours ShallowCAM, 4 blocks, propagation positive at gates {gates!r}"
    for gates in ("layers", "relu-below", "relu")
}
TASK_ROWS = {task: f"ours ShallowCAM, 4 blocks, task={task!r}" for task in TASK_DEFAULTS}


def build_methods(
    model: nn.Module, inputs: Tensor, target: list[int]
) -> dict[str, Callable[[], object]]:
    from captum.attr import LayerGradCam as CaptumLayerGradCam

    from captum_shallow import LayerCAM, ShallowCAM

    blocks = model._blocks
    shallow = blocks[SHALLOW_BLOCK]
    fused = [blocks[i] for i in FUSED_BLOCKS]
    methods: dict[str, Callable[[], object]] = {
        f"captum LayerGradCam, block {SHALLOW_BLOCK}": lambda: CaptumLayerGradCam(
            model, shallow
        ).attribute(inputs, target=target),
        f"ours LayerCAM, block {SHALLOW_BLOCK}": lambda: LayerCAM(model, shallow).attribute(
            inputs, target=target
        ),
        f"ours LayerCAM {SOFT_90}, block {SHALLOW_BLOCK}": lambda: LayerCAM(
            model, shallow, truncation=SOFT_90
        ).attribute(inputs, target=target),
        # Plain fused LayerCAM (no truncation, no propagation, no class gate): the base
        # of the ratios.
        f"ours ShallowCAM, block {SHALLOW_BLOCK}": lambda: ShallowCAM(
            model, [shallow], truncation=None, propagation=None, class_gate=False
        ).attribute(inputs, target=target),
        "ours ShallowCAM, 4 blocks": lambda: ShallowCAM(
            model, fused, truncation=None, propagation=None, class_gate=False
        ).attribute(inputs, target=target),
    }
    for gates, name in PROPAGATION_ROWS.items():
        methods[name] = lambda gates=gates: ShallowCAM(
            model, fused, truncation=None, propagation="positive", gates=gates, class_gate=False
        ).attribute(inputs, target=target)
    # One pass of each task's settings: the segmentation task's averaging over scales
    # and flips repeats that pass (its cost is reported by benchmarks/real_photos.py).
    for task, name in TASK_ROWS.items():
        methods[name] = lambda task=task: ShallowCAM(
            model, fused, task=task, scales=(1.0,), flips=False
        ).attribute(inputs, target=target)
    try:
        from pytorch_grad_cam import LayerCAM as PGCLayerCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pytorch_grad_cam() -> object:
            with PGCLayerCAM(model=model, target_layers=fused) as cam:
                out = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(t) for t in target])
            model.zero_grad(set_to_none=True)
            return out

        methods["pytorch-grad-cam LayerCAM, 4 blocks"] = pytorch_grad_cam
    except ImportError:
        pass
    try:
        from torchcam.methods import LayerCAM as TorchcamLayerCAM

        names = [f"_blocks.{i}" for i in FUSED_BLOCKS]

        def torchcam() -> object:
            with TorchcamLayerCAM(model, target_layer=names, input_shape=(3, 224, 224)) as cam:
                maps = cam(class_idx=target, scores=model(inputs))
                out = TorchcamLayerCAM.fuse_cams(maps)
            model.zero_grad(set_to_none=True)
            return out

        methods["torchcam LayerCAM + fuse_cams, 4 blocks"] = torchcam
    except ImportError:
        pass
    return methods


def setup(device: str, batch: int, size: int) -> tuple[nn.Module, Tensor, list[int]]:
    from captum_shallow.models import load_model

    model = load_model("efficientnet-lite0").to(device).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(device)
    target = [(285 + 97 * i) % 1000 for i in range(batch)]
    return model, inputs, target


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(
    methods: dict[str, Callable[[], object]], repeats: int, device: str
) -> dict[str, float]:
    for run in methods.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mib(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    """Extra peak memory of each method over one plain forward pass, in MiB."""
    if args.device.startswith("cuda"):
        model, inputs, target = setup(args.device, args.batch, args.size)
        methods = build_methods(model, inputs, target)
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model(inputs)
        base = torch.cuda.max_memory_allocated()
        peaks = {}
        for name in names:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            methods[name]()
            peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return peaks
    peaks = {}
    for name in [None, *names]:
        command = [sys.executable, __file__, "--memory-of", json.dumps(name)]
        command += ["--batch", str(args.batch), "--size", str(args.size)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        peaks[str(name)] = float(result.stdout.strip().splitlines()[-1])
    base = peaks.pop("None")
    return {name: value - base for name, value in peaks.items()}


def _memory_child(name: str | None, batch: int, size: int) -> None:
    model, inputs, target = setup("cpu", batch, size)
    methods = build_methods(model, inputs, target)  # same imports in every child
    if name is None:
        with torch.no_grad():
            model(inputs)
    else:
        methods[name]()
    print(_peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's peak resident set size. Linux's VmHWM belongs to the
    process's own address space; ru_maxrss would carry the parent's peak over
    fork and exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # KiB -> MiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of is not None:
        _memory_child(json.loads(args.memory_of), args.batch, args.size)
        return

    model, inputs, target = setup(args.device, args.batch, args.size)
    methods = build_methods(model, inputs, target)
    medians = time_methods(methods, args.repeats, args.device)
    memory = {} if args.no_memory else peak_memory_mib(args, list(methods))

    device_name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"EfficientNet-Lite0, batch {args.batch}, {args.size} px, {device_name}, "
        f"torch {torch.__version__}, median of {args.repeats} interleaved runs\n"
    )
    floor = medians[f"captum LayerGradCam, block {SHALLOW_BLOCK}"]
    memory_head = " | extra peak MiB" if memory else ""
    print(f"| method | median s | / Captum LayerGradCam{memory_head} |")
    print("| --- | ---: | ---:" + (" | ---:" if memory else "") + " |")
    for name, seconds in medians.items():
        row = f"| {name} | {seconds:.3f} | {seconds / floor:.2f}"
        if memory:
            row += f" | {memory[name]:.0f}"
        print(row + " |")
    ours = medians[f"ours LayerCAM {SOFT_90}, block {SHALLOW_BLOCK}"]
    fused = medians["ours ShallowCAM, 4 blocks"]
    single = medians[f"ours ShallowCAM, block {SHALLOW_BLOCK}"]
    print()
    print(
        f"LayerCAM {SOFT_90} / Captum LayerGradCam, block {SHALLOW_BLOCK}: "
        f"{ours / floor:.3f} (target <= 1.10)"
    )
    print(f"ShallowCAM 4 blocks / 1 block: {fused / single:.3f} (target <= 1.3)")
    for gates, name in PROPAGATION_ROWS.items():
        print(
            f"ShallowCAM 4 blocks, propagation positive at gates {gates!r} / without: "
            f"{medians[name] / fused:.3f} (target <= 1.05)"
        )
    for task, name in TASK_ROWS.items():
        print(f"ShallowCAM 4 blocks, task={task!r} / plain: {medians[name] / fused:.3f}")
    for peer in ("pytorch-grad-cam LayerCAM, 4 blocks", "torchcam LayerCAM + fuse_cams, 4 blocks"):
        if peer in medians:
            print(f"ShallowCAM 4 blocks / {peer}: {fused / medians[peer]:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
