"""CUDA correctness: maps computed on the GPU equal the CPU's.

For every CAM class, with truncation off and with each truncation mode, on
EfficientNet-Lite0 (real weights) and two real photos, at a shallow and a deep
block, and for ShallowCAM: the CUDA map equals the CPU map (TF32 off, so both
sides compute in IEEE float32). Also checks the truncation alone on CUDA
tensors of every floating dtype, and an input past torch.quantile's size cap.
Prints one table and exits non-zero on any mismatch.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from captum_shallow import (
    GradientTruncation,
    LayerCAM,
    LayerGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    ShallowCAM,
)
from captum_shallow.datasets import sample_photo
from captum_shallow.io import preprocess
from captum_shallow.models import layer_preset, load_model

TRUNCATIONS = [
    None,
    GradientTruncation("soft", quantile=0.99),
    GradientTruncation("hard", quantile=0.9, scope="channel"),
    GradientTruncation("clip", fraction=0.5),
]
CLASSES = [LayerGradCam, LayerHiResCam, LayerCAM, LayerGradCamPlusPlus, LayerXGradCam]


def relative_error(gpu: Tensor, cpu: Tensor) -> float:
    scale = float(cpu.abs().max()) or 1.0
    return float((gpu.cpu() - cpu).abs().max()) / scale


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load_model("efficientnet-lite0").eval()
    gpu_model = load_model("efficientnet-lite0").eval().cuda()
    photos = torch.stack([preprocess(sample_photo(n)) for n in ("chelsea", "coffee")])
    target = [285, 967]
    rows: list[tuple[str, float, float]] = []  # name, error, tolerance

    for block in (1, 15):
        for cls in CLASSES:
            for truncation in TRUNCATIONS:
                cpu = cls(model, model._blocks[block], truncation=truncation).attribute(
                    photos, target=target
                )
                gpu = cls(gpu_model, gpu_model._blocks[block], truncation=truncation).attribute(
                    photos.cuda(), target=target
                )
                assert gpu.device.type == "cuda"
                # Near-threshold entries may flip under hard truncation; soft and
                # clip are continuous in the gradient.
                tolerance = 5e-3 if truncation is not None and truncation.mode == "hard" else 1e-4
                rows.append(
                    (
                        f"{cls.__name__} block {block} {truncation}",
                        relative_error(gpu, cpu),
                        tolerance,
                    )
                )

    preset = layer_preset(model)
    names = list(preset.fusion)
    cpu_layers = [model.get_submodule(n) for n in names]
    gpu_layers = [gpu_model.get_submodule(n) for n in names]
    cpu = ShallowCAM(model, cpu_layers).attribute(photos, target=target)
    gpu = ShallowCAM(gpu_model, gpu_layers).attribute(photos.cuda(), target=target)
    rows.append((f"ShallowCAM {names}", relative_error(gpu, cpu), 1e-4))

    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(4, 32, 56, 56, generator=generator)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for mode in ("soft", "hard", "clip"):
            trunc = GradientTruncation(mode, quantile=0.95)  # type: ignore[arg-type]
            cpu_out = trunc(grad.to(dtype))
            gpu_out = trunc(grad.to(dtype).cuda())
            assert gpu_out.dtype == dtype
            assert gpu_out.device.type == "cuda"
            rows.append(
                (
                    f"GradientTruncation {mode} {dtype}",
                    relative_error(gpu_out.float(), cpu_out.float()),
                    0.0,
                )
            )

    big = torch.linspace(-1, 1, 2 * 8_500_000, device="cuda").reshape(2, -1)
    out = GradientTruncation("hard", quantile=0.99)(big)
    positive = int((big[0] > 0).sum())
    kept = int((out[0] > 0).sum())
    expected = positive - int(0.99 * positive)
    rows.append(("17M-entry quantile on CUDA (kept entries off by)", abs(kept - expected), 0.0))

    failed = 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| check | max relative error | tolerance | ok |")
    print("| --- | ---: | ---: | --- |")
    for name, error, tolerance in rows:
        ok = error <= tolerance
        failed += not ok
        print(f"| {name} | {error:.2e} | {tolerance:.0e} | {'yes' if ok else 'NO'} |")
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
