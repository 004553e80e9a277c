"""How far the model's own GPU numerics are from the CPU's, without our code:
Captum's LayerGradientXActivation (gradient x activation, summed over channels,
ReLU) on EfficientNet-Lite0's blocks, CPU vs CUDA, TF32 off.

    python benchmarks/gpu_numerics.py
"""

from __future__ import annotations

import torch
from captum.attr import LayerGradientXActivation

from captum_shallow.datasets import sample_photo
from captum_shallow.io import preprocess
from captum_shallow.models import load_model


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_model = load_model("efficientnet-lite0").eval()
    gpu_model = load_model("efficientnet-lite0").eval().cuda()
    photos = torch.stack([preprocess(sample_photo(n)) for n in ("chelsea", "coffee")])
    with torch.no_grad():
        cpu_logits = cpu_model(photos)
        gpu_logits = gpu_model(photos.cuda()).cpu()
    error = float((cpu_logits - gpu_logits).abs().max() / cpu_logits.abs().max())
    print(f"logits: max relative error {error:.2e}")
    for block in (1, 15):
        maps = []
        for model, x in ((cpu_model, photos), (gpu_model, photos.cuda())):
            attr = LayerGradientXActivation(model, model._blocks[block]).attribute(
                x, target=[285, 967]
            )
            maps.append(attr.sum(dim=1).clamp(min=0).cpu())
        error = float((maps[0] - maps[1]).abs().max() / maps[0].abs().max())
        print(f"Captum gradient x activation, block {block}: max relative error {error:.2e}")


if __name__ == "__main__":
    main()
