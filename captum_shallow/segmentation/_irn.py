r"""Weakly-supervised semantic segmentation (WSSS) from CAMs, IRN's protocol.

Ahn, Cho and Kwak (CVPR 2019), "Weakly Supervised Learning of Instance
Segmentation with Inter-pixel Relations" (IRN), ``step/eval_cam.py``:

1. for each image and each class present in its image-level labels, the CAM is
   upsampled to the image size, its negative part dropped and divided by its own
   maximum: :math:`\hat M_c = \max(M_c, 0) / (\max_p M_c + 10^{-5})`;
2. the background gets the constant score :math:`t` and each pixel takes the
   argmax over :math:`\{t\} \cup \{\hat M_c : c \text{ present}\}` (ties go to
   the background, as :func:`numpy.argmax`);
3. a confusion matrix :math:`C` (rows: ground truth, columns: prediction) over
   background + classes, label 255 ignored;
   :math:`IoU_c = C_{cc} / (\sum_j C_{cj} + \sum_i C_{ic} - C_{cc})`,
   mIoU = nanmean over classes;
4. mIoU at :math:`t = 0.15` and the best over :math:`t \in \{0.00, 0.01, ..,
   0.95\}` (SEAM's curve stops at 0.60; deep layers' maps peak higher),
   optionally after dense-CRF refinement.

Labels: 0 is the background and class :math:`c` of the classifier (0-based) is
segmentation label :math:`c + 1`, as in VOC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..evaluation._common import THRESHOLD_SWEEP, check_images, check_positive_int, upsample
from ..evaluation._miou import check_segmentation, confusion_matrix, iou_from_confusion

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IRN_THRESHOLD",
    "SweepResult",
    "ThresholdSweep",
    "class_cams",
    "dense_crf",
    "evaluate_cams",
    "irn_normalise",
    "present_class_maps",
    "pseudo_masks",
]

#: IRN's background threshold ``cam_eval_thres``.
IRN_THRESHOLD = 0.15
#: The sweep of the background threshold, 0.00 to 0.95 by 0.01: SEAM's 0.00..0.60
#: extended, because maps of deep layers and fused maps can peak above 0.60.
DEFAULT_THRESHOLDS: tuple[float, ...] = THRESHOLD_SWEEP

CamFn = Callable[[Tensor, Tensor], Tensor]


def _check_labels(labels: Tensor, batch: int, classes: int | None = None) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.shape[0] != batch:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"labels must be a multi-hot (N, classes) tensor with N={batch}, got {shape}"
        )
    if classes is not None and labels.shape[1] != classes:
        raise ValueError(f"labels has {labels.shape[1]} classes but the CAMs have {classes}")
    return labels.bool()


def class_cams(
    cam_fn: CamFn,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 16,
) -> Tensor:
    r"""CAMs of every present class of every image, normalised as IRN does.

    The pairs (image :math:`i`, present class :math:`c`) are expanded into a
    batch (the image repeated once per present class) and ``cam_fn`` is called
    on chunks of ``batch_size`` pairs. Each map is upsampled bilinearly to the
    image size and normalised:

    .. math::

        \hat M_{i,c} = \frac{\max(M_{i,c}, 0)}{\max_p M_{i,c}(p) + 10^{-5}}.

    Absent classes get zeros. ``cam_fn`` may need gradients (Captum), so this
    function does not disable them; the maps are returned detached.

    Args:
        cam_fn (Callable): ``cam_fn(images (B, C, H, W), target (B,)) -> (B, 1, h, w)``,
            any CAM method (ours, Captum's, pytorch-grad-cam's wrapped).
        images (Tensor): ``(N, C, H, W)`` model inputs.
        labels (Tensor): ``(N, K)`` multi-hot image-level labels.
        batch_size (int, optional): pairs per ``cam_fn`` call. Default: 16.

    Returns:
        Tensor: ``(N, K, H, W)`` normalised CAMs in :math:`[0, 1)`.

    Examples::

        >>> images = torch.rand(2, 3, 4, 4)
        >>> labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
        >>> cam_fn = lambda x, t: x[:, :1] * (t[:, None, None, None] + 1)
        >>> cams = class_cams(cam_fn, images, labels)
        >>> cams.shape, cams[0, 1].abs().sum().item()
        (torch.Size([2, 3, 4, 4]), 0.0)
    """
    batch, _, height, width = check_images(images).shape
    pairs, maps = present_class_maps(cam_fn, images, labels, batch_size=batch_size)
    out = images.new_zeros(batch, labels.shape[1], height, width)
    if pairs.shape[0]:
        maps = irn_normalise(upsample(maps[:, None], (height, width)))[:, 0]
        out[pairs[:, 0], pairs[:, 1]] = maps.to(out)
    return out


def present_class_maps(
    cam_fn: CamFn,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """The raw CAM of every present class of every image, at the map's own size.

    The (image, present class) pairs are expanded into a batch and ``cam_fn`` is
    called on chunks of ``batch_size`` pairs. :func:`class_cams` upsamples and
    normalises these to the input size; the pseudo-mask pipeline upsamples them
    once, straight to each image's own size.

    Args:
        cam_fn (Callable): ``cam_fn(images (B, C, H, W), target (B,)) -> (B, 1, h, w)``.
        images (Tensor): ``(N, C, H, W)`` model inputs.
        labels (Tensor): ``(N, K)`` multi-hot image-level labels.
        batch_size (int, optional): pairs per ``cam_fn`` call. Default: 16.

    Returns:
        tuple[Tensor, Tensor]: ``pairs`` ``(P, 2)`` (image index, class index),
        in row-major order, and their detached float ``maps`` ``(P, h, w)``.

    Examples::

        >>> images = torch.rand(2, 3, 4, 4)
        >>> labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
        >>> pairs, maps = present_class_maps(lambda x, t: x[:, :1, :2, :2], images, labels)
        >>> pairs.tolist(), tuple(maps.shape)
        ([[0, 0], [0, 2], [1, 1]], (3, 2, 2))
    """
    images = check_images(images)
    labels = _check_labels(labels, images.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    pairs = labels.nonzero().to(images.device)
    chunks = []
    for start in range(0, pairs.shape[0], batch_size):
        image_idx, class_idx = pairs[start : start + batch_size].unbind(1)
        maps = cam_fn(images[image_idx], class_idx)
        if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[:2] != (len(image_idx), 1):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(
                f"cam_fn must return (B, 1, h, w) maps with B={len(image_idx)}, got {shape}"
            )
        chunks.append(maps.detach().float()[:, 0])
    if not chunks:
        return pairs, images.new_zeros((0, *images.shape[-2:]))
    return pairs, torch.cat(chunks)


def irn_normalise(maps: Tensor) -> Tensor:
    r"""IRN's per-map normalisation over the last two dimensions:
    :math:`\max(M, 0) / (\max_p M(p) + 10^{-5})`.

    Examples::

        >>> irn_normalise(torch.tensor([[[-1.0, 1.0], [2.0, 4.0]]])).round(decimals=4).tolist()
        [[[0.0, 0.25], [0.5, 1.0]]]
    """
    maps = maps.clamp(min=0)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-5)


@torch.no_grad()
def pseudo_masks(cams: Tensor, labels: Tensor, threshold: float = IRN_THRESHOLD) -> Tensor:
    r"""IRN pseudo-masks: argmax over a constant background score and the
    present classes' normalised CAMs.

    .. math::

        y(p) = \begin{cases} 0 & \text{if } \max_{c \in L} \hat M_c(p) \le t \\
        1 + \arg\max_{c \in L} \hat M_c(p) & \text{otherwise} \end{cases}

    with :math:`L` the image's present classes (absent classes never win; an
    image without labels is all background).

    Args:
        cams (Tensor): ``(N, K, H, W)`` normalised CAMs (see :func:`class_cams`).
        labels (Tensor): ``(N, K)`` multi-hot image-level labels.
        threshold (float, optional): background score :math:`t`. Default: 0.15.

    Returns:
        Tensor: ``(N, H, W)`` long labels in ``0..K``.

    Examples::

        >>> cams = torch.tensor([[[[0.1, 0.9]], [[0.5, 0.2]]]])
        >>> pseudo_masks(cams, torch.tensor([[1, 1]])).tolist()
        [[[2, 1]]]
        >>> pseudo_masks(cams, torch.tensor([[1, 0]]), threshold=0.5).tolist()
        [[[0, 1]]]
    """
    if not isinstance(cams, Tensor) or cams.dim() != 4:
        raise ValueError("cams must be a (N, K, H, W) tensor")
    labels = _check_labels(labels, cams.shape[0], cams.shape[1]).to(cams.device)
    scores = cams.masked_fill(~labels[:, :, None, None], float("-inf"))
    background = torch.full_like(scores[:, :1], float(threshold))
    return torch.cat([background, scores], dim=1).argmax(dim=1)


@dataclass(frozen=True)
class SweepResult:
    """mIoU over the background thresholds.

    Attributes:
        thresholds (Tensor): ``(T,)`` background thresholds.
        iou (Tensor): ``(T, K)`` per-class IoU (background first).
        miou (Tensor): ``(T,)`` mIoU at each threshold.
        confusion (Tensor): ``(T, K, K)`` confusion matrices.
        crf_miou (float or None): mIoU after dense-CRF refinement at
            ``crf_threshold``, when it was computed.
        crf_threshold (float or None): threshold of the CRF pass.

    Examples::

        >>> sweep = ThresholdSweep(2, thresholds=[0.1, 0.15, 0.5])
        >>> cams = torch.tensor([[[[0.3, 0.9]]]])
        >>> sweep.update(cams, torch.tensor([[1]]), torch.tensor([[[0, 1]]]))
        >>> result = sweep.result()
        >>> result.miou.tolist(), result.best_threshold, result.miou_at(0.15)
        ([0.25, 0.25, 1.0], 0.5, 0.25)
    """

    thresholds: Tensor
    iou: Tensor
    miou: Tensor
    confusion: Tensor
    crf_miou: float | None = None
    crf_threshold: float | None = None

    @property
    def best_threshold(self) -> float:
        """Threshold of the highest mIoU (the lowest one when several tie)."""
        return float(self.thresholds[int(self.miou.argmax())])

    @property
    def best_miou(self) -> float:
        """Highest mIoU over the sweep."""
        return float(self.miou.max())

    def miou_at(self, threshold: float = IRN_THRESHOLD) -> float:
        """mIoU at a threshold of the sweep (IRN's 0.15 by default)."""
        hit = (self.thresholds - threshold).abs() < 1e-6
        if not hit.any():
            raise ValueError(f"threshold {threshold} is not in the sweep")
        return float(self.miou[int(hit.nonzero()[0])])


class ThresholdSweep:
    r"""Accumulates confusion matrices for every background threshold at once.

    For a pixel, the pseudo-label at threshold :math:`t` is its best present
    class when :math:`m = \max_{c \in L} \hat M_c > t`, else background. So
    with :math:`k` = the number of thresholds below :math:`m`, the pixel votes
    for its class at the first :math:`k` thresholds and for the background at
    the others: one histogram over (k, ground truth, class) and two cumulative
    sums give all :math:`T` confusion matrices, identical to calling
    :func:`pseudo_masks` and :func:`confusion_matrix` per threshold.

    Args:
        num_classes (int): labels including the background (``K + 1``).
        thresholds (Sequence[float], optional): increasing background
            thresholds. Default: 0.00, 0.01, ..., 0.95.
        ignore_index (int, optional): ground-truth label to skip. Default: 255.

    Examples::

        >>> sweep = ThresholdSweep(3, thresholds=[0.0, 0.5])
        >>> cams = torch.tensor([[[[0.2, 0.9]], [[0.0, 0.0]]]])
        >>> sweep.update(cams, torch.tensor([[1, 0]]), torch.tensor([[[0, 1]]]))
        >>> sweep.result().miou.tolist()
        [0.25, 1.0]
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
        ignore_index: int = 255,
    ) -> None:
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
        if self.thresholds.numel() == 0 or (self.thresholds.diff() <= 0).any():
            raise ValueError("thresholds must be a non-empty, strictly increasing sequence")
        self.ignore_index = ignore_index
        self._hist = torch.zeros(
            self.thresholds.numel() + 1, num_classes, num_classes, dtype=torch.long
        )

    @torch.no_grad()
    def update(self, cams: Tensor, labels: Tensor, masks: Tensor) -> None:
        """Add a batch.

        Args:
            cams (Tensor): ``(N, K, H, W)`` normalised CAMs (:func:`class_cams`).
            labels (Tensor): ``(N, K)`` multi-hot image-level labels.
            masks (Tensor): ``(N, H, W)`` ground truth in ``0..K`` or ``ignore_index``.
        """
        if not isinstance(cams, Tensor) or cams.dim() != 4:
            raise ValueError("cams must be a (N, K, H, W) tensor")
        if cams.shape[1] + 1 != self.num_classes:
            raise ValueError(
                f"cams has {cams.shape[1]} classes but num_classes={self.num_classes} "
                "expects num_classes - 1 (the background is added)"
            )
        labels = _check_labels(labels, cams.shape[0], cams.shape[1]).to(cams.device)
        masks = masks.to(cams.device)
        scores = cams.masked_fill(~labels[:, :, None, None], float("-inf"))
        top, best = scores.max(dim=1)
        best = (best + 1).masked_fill(~labels.any(dim=1)[:, None, None], 0)
        valid = check_segmentation(best, masks, self.num_classes, self.ignore_index)
        thresholds = self.thresholds.to(device=cams.device, dtype=top.dtype)
        below = torch.searchsorted(thresholds, top[valid].contiguous(), right=False)
        k = self.num_classes
        index = (below * k + masks[valid].long()) * k + best[valid]
        self._hist += torch.bincount(index, minlength=self._hist.numel()).view_as(self._hist).cpu()

    def confusion(self) -> Tensor:
        """``(T, K, K)`` confusion matrices, one per threshold."""
        # Pixels with k > j keep their class at threshold j, the others are background.
        keep = self._hist.flip(0).cumsum(0).flip(0)[1:]
        dropped = self._hist.cumsum(0)[:-1].sum(-1)
        confusion = keep.clone()
        confusion[:, :, 0] += dropped
        return confusion

    def result(
        self, crf_miou: float | None = None, crf_threshold: float | None = None
    ) -> SweepResult:
        """mIoU at every threshold (see :class:`SweepResult`)."""
        confusion = self.confusion()
        iou, miou = iou_from_confusion(confusion)
        return SweepResult(
            thresholds=self.thresholds.clone(),
            iou=iou,
            miou=miou,
            confusion=confusion,
            crf_miou=crf_miou,
            crf_threshold=crf_threshold,
        )


def dense_crf(
    image: Tensor,
    labels: Tensor,
    *,
    iterations: int = 10,
    gt_prob: float = 0.7,
) -> Tensor:
    r"""Refine a label map with a fully connected CRF (Krähenbühl and Koltun,
    2011), IRN's ``crf_inference_label``.

    The unary term trusts each pixel's label with probability ``gt_prob``; the
    pairwise terms are a Gaussian kernel (:math:`\sigma_{xy} = 3`, compatibility
    3) and a bilateral kernel (:math:`\sigma_{xy} = 50`, :math:`\sigma_{rgb} = 5`,
    compatibility 10). Only labels present in ``labels`` take part. Runs on the
    CPU with ``pydensecrf`` (PyPI ``pydensecrf2``, the ``crf`` extra).

    Args:
        image (Tensor): ``(3, H, W)`` uint8 RGB image (or float in [0, 1]).
        labels (Tensor): ``(H, W)`` integer label map.
        iterations (int, optional): mean-field iterations. Default: 10.
        gt_prob (float, optional): confidence of the given labels. Default: 0.7.

    Returns:
        Tensor: ``(H, W)`` long refined labels, on ``labels``' device.

    Raises:
        ImportError: when ``pydensecrf`` is missing: ``pip install "captum-shallow[crf]"``.

    Examples::

        >>> image = torch.zeros(3, 8, 8, dtype=torch.uint8)
        >>> image[:, :, 4:] = 255
        >>> labels = torch.zeros(8, 8, dtype=torch.long)
        >>> labels[:, 3:] = 2
        >>> dense_crf(image, labels)[0].tolist()   # the edge moves to the image's edge
        [0, 0, 0, 0, 2, 2, 2, 2]
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError as error:
        raise ImportError(
            'dense-CRF refinement needs pydensecrf: pip install "captum-shallow[crf]" '
            "(PyPI package pydensecrf2)"
        ) from error
    if image.dim() != 3 or image.shape[0] != 3 or labels.shape != image.shape[1:]:
        raise ValueError(
            f"image must be (3, H, W) and labels (H, W) of the same size, got "
            f"{tuple(image.shape)} and {tuple(labels.shape)}"
        )
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round()
    rgb = np.ascontiguousarray(image.detach().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    present, compact = torch.unique(labels.detach().cpu(), return_inverse=True)
    height, width = compact.shape
    n_labels = max(int(present.numel()), 2)  # pydensecrf needs two labels
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    unary = unary_from_labels(
        compact.numpy().astype(np.int32), n_labels, gt_prob=gt_prob, zero_unsure=False
    )
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=rgb, compat=10)
    q = np.asarray(crf.inference(iterations)).reshape(n_labels, height, width)
    refined = torch.from_numpy(q.argmax(axis=0)).clamp(max=present.numel() - 1)
    return present[refined].to(labels.device)


def _default_rgb(images: Tensor) -> Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def evaluate_cams(
    cam_fn: CamFn,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    num_classes: int,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    batch_size: int = 16,
    ignore_index: int = 255,
    crf: bool = False,
    crf_threshold: float = IRN_THRESHOLD,
    to_rgb: Callable[[Tensor], Tensor] = _default_rgb,
    device: torch.device | str | None = None,
) -> SweepResult:
    r"""The whole IRN evaluation of a CAM method on a dataset.

    For each batch ``(images, labels, masks)``: :func:`class_cams` of every
    present class, then the threshold sweep (:class:`ThresholdSweep`) and,
    with ``crf=True``, the pseudo-masks at ``crf_threshold`` refined by
    :func:`dense_crf` (IRN's CRF; on the CPU, one image at a time).

    Args:
        cam_fn (Callable): ``cam_fn(images, target) -> (B, 1, h, w)``.
        batches (Iterable): ``(images (N, C, H, W), labels (N, K) multi-hot,
            masks (N, H, W) in 0..K or ignore_index)``, e.g. a DataLoader.
        num_classes (int): labels including the background, ``K + 1``.
        thresholds (Sequence[float], optional): background thresholds.
            Default: 0.00 .. 0.95 by 0.01.
        batch_size (int, optional): (image, class) pairs per ``cam_fn`` call.
            Default: 16.
        ignore_index (int, optional): ground truth to skip. Default: 255.
        crf (bool, optional): also report the mIoU after dense CRF. Default: False.
        crf_threshold (float, optional): threshold of the CRF pass. Default: 0.15.
        to_rgb (Callable, optional): model input -> ``(N, 3, H, W)`` uint8 RGB
            for the CRF. Default: inputs in [0, 1] scaled by 255.
        device (torch.device or str, optional): where to move each batch before
            ``cam_fn`` (the model's device). Default: None (leave it).

    Returns:
        SweepResult: mIoU per threshold, best threshold, IRN's value and the
        CRF mIoU when asked.

    Examples::

        >>> images = torch.zeros(1, 3, 4, 4)
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.long)
        >>> masks[0, :, 2:] = 1
        >>> cam_fn = lambda x, t: (masks[:1, None] == 1).float().expand(len(x), 1, 4, 4)
        >>> result = evaluate_cams(cam_fn, [(images, torch.tensor([[1]]), masks)], 2)
        >>> result.miou_at(0.15), result.best_miou
        (1.0, 1.0)
    """
    sweep = ThresholdSweep(num_classes, thresholds, ignore_index)
    crf_confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for images, labels, masks in batches:
        if device is not None:
            images, labels, masks = images.to(device), labels.to(device), masks.to(device)
        cams = class_cams(cam_fn, images, labels, batch_size=batch_size)
        sweep.update(cams, labels, masks)
        if crf:
            pred = pseudo_masks(cams, labels, crf_threshold).cpu()
            rgb = to_rgb(images)
            refined = torch.stack([dense_crf(rgb[i], pred[i]) for i in range(len(pred))])
            crf_confusion += confusion_matrix(refined, masks.cpu(), num_classes, ignore_index)
    crf_miou = float(iou_from_confusion(crf_confusion)[1]) if crf else None
    return sweep.result(crf_miou, crf_threshold if crf else None)
