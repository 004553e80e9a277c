r"""Faithfulness metrics: does the model's score follow what the map highlights?

- Deletion and insertion (Petsiuk, Das and Saenko, 2018, "RISE",
  https://arxiv.org/abs/1806.07421): remove (deletion) or restore (insertion)
  pixels from the most to the least highlighted and integrate the class
  probability over the fraction of pixels changed.
- Average drop and increase in confidence (Chattopadhay et al., 2018,
  "Grad-CAM++", https://arxiv.org/abs/1710.11063): score the image multiplied by
  the map.

Both take a forward function returning logits, images ``(N, C, H, W)``, maps
``(N, 1, h, w)`` (upsampled bilinearly to ``(H, W)``) and targets; they run on
the model's device, batched, under :func:`torch.no_grad`. The model should be in
eval mode (batch-norm statistics would otherwise depend on the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .._checks import (
    Probability,
    check_images,
    check_maps,
    check_positive_int,
    check_probability,
    check_target,
    class_scores,
    model_device,
    upsample,
)

__all__ = ["ConfidenceChange", "DeletionInsertion", "average_drop_increase", "deletion_insertion"]

Substrate = Literal["blur", "zeros"]


@dataclass(frozen=True)
class DeletionInsertion:
    """Curves and areas of the deletion and insertion games.

    Attributes:
        fractions (Tensor): ``(S + 1,)`` fraction of pixels changed at each point.
        deletion (Tensor): ``(N, S + 1)`` target score while deleting.
        insertion (Tensor): ``(N, S + 1)`` target score while inserting.
        deletion_auc (Tensor): ``(N,)`` trapezoid area under ``deletion`` (lower is
            better).
        insertion_auc (Tensor): ``(N,)`` trapezoid area under ``insertion`` (higher
            is better).

    Examples::

        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
        >>> out = deletion_insertion(model, torch.rand(1, 3, 2, 2), torch.rand(1, 1, 2, 2),
        ...                          target=0, steps=2, substrate="zeros")
        >>> out.fractions.tolist()
        [0.0, 0.5, 1.0]
        >>> bool(torch.allclose(out.deletion_auc, torch.trapezoid(out.deletion, out.fractions)))
        True
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor


def _substrate(
    images: Tensor, substrate: Substrate | Tensor, kernel_size: int, sigma: float
) -> Tensor:
    if isinstance(substrate, Tensor):
        try:
            return torch.broadcast_to(substrate.to(images), images.shape)
        except RuntimeError as error:
            raise ValueError(
                f"substrate of shape {tuple(substrate.shape)} does not broadcast to the "
                f"images' shape {tuple(images.shape)}"
            ) from error
    if substrate == "zeros":
        return torch.zeros_like(images)
    if substrate == "blur":
        # Reflect padding needs kernel_size // 2 < side: shrink the kernel on tiny images.
        side = min(images.shape[-2:])
        kernel_size = min(kernel_size, 2 * side - 1)
        # Imported here: torchvision's import is slow, and only the blur needs it.
        import torchvision.transforms.functional as TF

        return TF.gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])
    raise ValueError(f"substrate must be 'blur', 'zeros' or a tensor, got {substrate!r}")


@torch.no_grad()
def deletion_insertion(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    target: int | Tensor,
    *,
    steps: int = 20,
    substrate: Substrate | Tensor = "blur",
    probability: Probability = "softmax",
    batch_size: int = 64,
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
) -> DeletionInsertion:
    r"""Deletion and insertion AUC of Petsiuk et al. (2018), "RISE"
    (https://arxiv.org/abs/1806.07421).

    The map is upsampled to the image size and its :math:`P = HW` pixels are
    ranked from the highest to the lowest value; ties are broken by row-major
    pixel index (a stable sort), so the ranking is deterministic. At step
    :math:`k = 0..S` the :math:`n_k = \operatorname{round}(kP/S)` top-ranked
    pixels (all channels) are changed:

    - deletion: :math:`x^{del}_k = x` with the top :math:`n_k` pixels replaced by
      the substrate :math:`b`;
    - insertion: :math:`x^{ins}_k = b` with the top :math:`n_k` pixels restored
      from :math:`x`.

    With :math:`f_c` the target's probability and :math:`r_k = n_k / P`,

    .. math::

        \mathrm{AUC} = \sum_{k=1}^{S} \frac{(r_k - r_{k-1})
        (f_c(x_k) + f_c(x_{k-1}))}{2}.

    The substrate is RISE's: the image blurred by a Gaussian (kernel 11, sigma 5,
    reflect padding, :func:`torchvision.transforms.functional.gaussian_blur`; the
    kernel shrinks to :math:`2\min(H, W) - 1` on smaller images), or
    zeros, or a given tensor. Every perturbed input goes through the model once;
    the endpoints are shared (:math:`x^{ins}_0 = x^{del}_S = b`).

    torchcam's ``DeletionInsertionMetric`` uses the same ranking, substrate and
    trapezoid; its step is :math:`\lceil P/S \rceil` pixels, so when :math:`S`
    divides :math:`P` both give the same curves and areas (checked in the tests),
    otherwise torchcam's last interval is shorter. pytorch-grad-cam has no
    deletion curve (its ``ROADMostRelevantFirst`` imputes pixels from their
    neighbours instead).

    Args:
        model (Callable): forward function returning logits ``(N, classes)``.
        images (Tensor): ``(N, C, H, W)`` model inputs.
        maps (Tensor): ``(N, 1, h, w)`` maps ranking the pixels.
        target (int or Tensor): class to score, one for all or ``(N,)``.
        steps (int, optional): :math:`S`, the number of intervals. Default: 20.
        substrate (str or Tensor, optional): ``"blur"``, ``"zeros"`` or a tensor
            broadcastable to ``images``. Default: ``"blur"``.
        probability (str, optional): score :math:`f_c`: ``"softmax"``,
            ``"sigmoid"`` (multi-label models) or ``"logits"``. Default:
            ``"softmax"``.
        batch_size (int, optional): perturbed inputs per forward. Default: 64.
        blur_kernel_size (int, optional): Gaussian kernel size. Default: 11.
        blur_sigma (float, optional): Gaussian sigma. Default: 5.0.

    Returns:
        DeletionInsertion: curves ``(N, S + 1)``, fractions and areas ``(N,)``.

    Examples::

        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
        >>> images = torch.rand(2, 3, 4, 4)
        >>> maps = torch.rand(2, 1, 2, 2)
        >>> out = deletion_insertion(model, images, maps, target=0, steps=4)
        >>> out.deletion.shape, out.insertion_auc.shape
        (torch.Size([2, 5]), torch.Size([2]))
        >>> torch.equal(out.deletion[:, -1], out.insertion[:, 0])
        True
    """
    images = check_images(images)
    batch, _, height, width = images.shape
    maps = check_maps(maps, batch)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    probability = check_probability(probability)
    pixels = height * width
    if steps > pixels:
        raise ValueError(f"steps ({steps}) cannot exceed the number of pixels ({pixels})")
    device = model_device(model, images.device)
    images = images.to(device)
    target = check_target(target, batch, device)
    if blur_kernel_size % 2 == 0 or blur_kernel_size < 1 or blur_sigma <= 0:
        raise ValueError("blur_kernel_size must be odd and positive and blur_sigma positive")
    base = _substrate(images, substrate, blur_kernel_size, blur_sigma)

    ranked = upsample(maps.to(device), (height, width)).flatten(1)
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)
    k = torch.arange(steps + 1, device=device)
    counts = (2 * k * pixels + steps) // (2 * steps)  # round(k P / S), half up
    fractions = counts.float() / pixels

    # Jobs: deletion at k = 0..S, insertion at k = 1..S-1 (its ends are deletion's).
    sample = torch.arange(batch, device=device)
    del_sample, del_k = torch.meshgrid(sample, k, indexing="ij")
    ins_sample, ins_k = torch.meshgrid(sample, k[1:-1], indexing="ij")
    job_sample = torch.cat([del_sample.flatten(), ins_sample.flatten()])
    job_k = torch.cat([del_k.flatten(), ins_k.flatten()])
    job_insert = torch.cat(
        [
            torch.zeros(del_k.numel(), dtype=torch.bool, device=device),
            torch.ones(ins_k.numel(), dtype=torch.bool, device=device),
        ]
    )
    flat_images, flat_base = images.flatten(2), base.flatten(2)
    scores = torch.empty(job_k.numel(), device=device)
    for start in range(0, job_k.numel(), batch_size):
        s = job_sample[start : start + batch_size]
        changed = ranks[s] < counts[job_k[start : start + batch_size]][:, None]
        keep_image = changed == job_insert[start : start + batch_size, None]
        perturbed = torch.where(keep_image[:, None], flat_images[s], flat_base[s])
        scores[start : start + batch_size] = class_scores(
            model, perturbed.view(-1, *images.shape[1:]), target[s], probability
        ).float()

    deletion = scores[: del_k.numel()].view(batch, steps + 1)
    inner = scores[del_k.numel() :].view(batch, steps - 1)
    insertion = torch.cat([deletion[:, -1:], inner, deletion[:, :1]], dim=1)
    return DeletionInsertion(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
    )


@dataclass(frozen=True)
class ConfidenceChange:
    """Per-sample confidence change when the image is multiplied by the map.

    Attributes:
        score (Tensor): ``(N,)`` target score :math:`Y` on the image.
        masked_score (Tensor): ``(N,)`` target score :math:`O` on image x map.
        drop (Tensor): ``(N,)`` :math:`\\max(0, Y - O) / Y`.
        increase (Tensor): ``(N,)`` boolean :math:`Y < O`.

    Examples::

        >>> change = ConfidenceChange(score=torch.tensor([0.8, 0.5]),
        ...     masked_score=torch.tensor([0.4, 0.6]), drop=torch.tensor([0.5, 0.0]),
        ...     increase=torch.tensor([False, True]))
        >>> change.average_drop, change.increase_in_confidence
        (0.25, 0.5)
    """

    score: Tensor
    masked_score: Tensor
    drop: Tensor
    increase: Tensor

    @property
    def average_drop(self) -> float:
        """Mean of ``drop`` (Grad-CAM++ reports it x 100, in percent)."""
        return float(self.drop.mean())

    @property
    def increase_in_confidence(self) -> float:
        """Share of samples whose score increased (x 100 for percent)."""
        return float(self.increase.float().mean())


@torch.no_grad()
def average_drop_increase(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    target: int | Tensor,
    *,
    normalize: bool = True,
    probability: Probability = "softmax",
) -> ConfidenceChange:
    r"""Average drop and increase in confidence of Grad-CAM++ (Chattopadhay et
    al., 2018, https://arxiv.org/abs/1710.11063).

    With :math:`E` the map normalised to :math:`[0, 1]` per sample (min-max at the
    map's own resolution, :math:`(M - \min M) / (\max M - \min M + 10^{-8})`) and
    then upsampled bilinearly, :math:`Y = f_c(x)` and :math:`O = f_c(E \odot x)`:

    .. math::

        \text{drop} = \frac{\max(0, Y - O)}{Y}, \qquad
        \text{increase} = [Y < O].

    Average drop is the mean of drop (lower is better), increase in confidence
    the mean of increase (higher is better).

    torchcam's ``ClassificationMetric`` is the same definition (it normalises
    the CAM the same way before resizing; it adds :math:`10^{-7}` to
    :math:`Y`). pytorch-grad-cam's ``DropInConfidence`` returns the unnormalised
    :math:`\max(0, Y - O)`, i.e. ``drop * score`` here, and its
    ``IncreaseInConfidence`` equals ``increase``; both are checked in the tests.

    Args:
        model (Callable): forward function returning logits ``(N, classes)``.
        images (Tensor): ``(N, C, H, W)`` model inputs.
        maps (Tensor): ``(N, 1, h, w)`` maps.
        target (int or Tensor): class to score, one for all or ``(N,)``.
        normalize (bool, optional): min-max normalise each map first; with False
            the map is used as given (it should lie in :math:`[0, 1]`).
            Default: True.
        probability (str, optional): ``"softmax"``, ``"sigmoid"`` or
            ``"logits"`` (drop is meaningful only for positive scores).
            Default: ``"softmax"``.

    Returns:
        ConfidenceChange: per-sample scores, drop and increase, with
        ``average_drop`` and ``increase_in_confidence``.

    Examples::

        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
        >>> images = torch.rand(2, 3, 4, 4)
        >>> out = average_drop_increase(model, images, torch.ones(2, 1, 2, 2), target=1,
        ...                             normalize=False)
        >>> out.drop.tolist(), out.increase.tolist()   # map of ones: nothing changes
        ([0.0, 0.0], [False, False])
    """
    images = check_images(images)
    batch, _, height, width = images.shape
    maps = check_maps(maps, batch)
    probability = check_probability(probability)
    device = model_device(model, images.device)
    images, maps = images.to(device), maps.to(device)
    target = check_target(target, batch, device)
    if normalize:
        low = maps.amin(dim=(2, 3), keepdim=True)
        maps = (maps - low) / ((maps - low).amax(dim=(2, 3), keepdim=True) + 1e-8)
    explanation = upsample(maps, (height, width))
    score = class_scores(model, images, target, probability)
    masked = class_scores(model, images * explanation, target, probability)
    drop = (score - masked).clamp(min=0) / score
    return ConfidenceChange(score=score, masked_score=masked, drop=drop, increase=score < masked)
