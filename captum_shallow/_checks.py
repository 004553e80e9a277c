"""Checks and small tensor helpers shared by the evaluation modules.

Every metric takes maps of shape ``(N, 1, h, w)`` at any resolution and compares
them with images or masks of size ``(H, W)``; maps are upsampled with bilinear
interpolation (``align_corners=False``, as Captum's ``LayerAttribution.interpolate``
and torchcam do) before any score is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Probability = Literal["softmax", "sigmoid", "logits"]

#: Thresholds on max-normalised maps swept by the extent metrics and by IRN's
#: background threshold: 0.00 to 0.95 by 0.01 (SEAM's sweep stops at 0.60, but maps
#: of deep layers and fused maps can peak higher).
THRESHOLD_SWEEP: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(96))
_PROBABILITIES = ("softmax", "sigmoid", "logits")


def check_maps(maps: Tensor, batch: int | None = None, name: str = "maps") -> Tensor:
    """Validate a batch of single-channel maps ``(N, 1, h, w)`` and return it as float."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"{name} must have shape (N, 1, h, w), got {tuple(maps.shape)}")
    if batch is not None and maps.shape[0] != batch:
        raise ValueError(f"{name} has {maps.shape[0]} samples but {batch} were expected")
    if not maps.is_floating_point():
        maps = maps.float()
    return maps


def check_images(images: Tensor) -> Tensor:
    """Validate a batch of images ``(N, C, H, W)``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating point tensor, got {images.dtype}")
    return images


def check_masks(masks: Tensor, batch: int) -> Tensor:
    """Validate boolean region masks ``(N, H, W)`` and return them as bool."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(masks.shape)}")
    if masks.shape[0] != batch:
        raise ValueError(f"masks has {masks.shape[0]} samples but maps has {batch}")
    return masks.bool()


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``(N, 1, h, w)`` maps to ``size`` (no-op if equal)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def model_device(model: Callable[[Tensor], Tensor], fallback: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer, else ``fallback``."""
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
        for buffer in model.buffers():
            return buffer.device
    return fallback


def check_target(target: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """Return ``target`` as a ``(N,)`` long tensor on ``device``."""
    if isinstance(target, bool) or not isinstance(target, int | Tensor):
        raise TypeError(f"target must be an int or a tensor of class indices, got {target!r}")
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=device)
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    target = target.reshape(-1).to(device=device, dtype=torch.long)
    if target.numel() == 1:
        target = target.expand(batch)
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} entries but the batch has {batch}")
    return target


def class_scores(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    target: Tensor,
    probability: Probability,
) -> Tensor:
    """Score of ``target`` for each input: softmax/sigmoid probability or raw logit."""
    logits = model(inputs)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
    if int(target.max()) >= logits.shape[1] or int(target.min()) < 0:
        raise ValueError(
            f"target out of range: classes are 0..{logits.shape[1] - 1}, got "
            f"{int(target.min())}..{int(target.max())}"
        )
    if probability == "softmax":
        logits = logits.softmax(dim=1)
    elif probability == "sigmoid":
        logits = logits.sigmoid()
    return logits.gather(1, target[:, None])[:, 0]


def check_probability(probability: str) -> Probability:
    """Validate the ``probability`` argument."""
    if probability not in _PROBABILITIES:
        raise ValueError(f"probability must be one of {_PROBABILITIES}, got {probability!r}")
    return cast(Probability, probability)


def check_positive_int(value: object, name: str) -> int:
    """Validate a strictly positive integer parameter."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
