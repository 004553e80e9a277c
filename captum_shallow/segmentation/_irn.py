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

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._checks import check_images, check_positive_int, upsample

__all__ = [
    "IRN_THRESHOLD",
    "class_cams",
    "dense_crf",
    "irn_normalise",
    "present_class_maps",
    "pseudo_masks",
]

#: IRN's background threshold ``cam_eval_thres``.
IRN_THRESHOLD = 0.15

CamFn = Callable[[Tensor, Tensor], Tensor]


def check_labels(labels: Tensor, batch: int, classes: int | None = None) -> Tensor:
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
    labels = check_labels(labels, images.shape[0])
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
    labels = check_labels(labels, cams.shape[0], cams.shape[1]).to(cams.device)
    scores = cams.masked_fill(~labels[:, :, None, None], float("-inf"))
    background = torch.full_like(scores[:, :1], float(threshold))
    return torch.cat([background, scores], dim=1).argmax(dim=1)


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
