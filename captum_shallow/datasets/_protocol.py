"""The one interface every data set of the package has: a sized, indexable
collection of ``(image, labels, mask)`` items, as
:class:`torch.utils.data.Dataset` gives it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["SegmentationSet"]


@runtime_checkable
class SegmentationSet(Protocol):
    r"""Images with image-level labels and pixel masks, for CAMs and pseudo-masks.

    Item ``i`` is ``(image, labels, mask)``:

    - ``image``: ``(3, H, W)`` float RGB in :math:`[0, 1]`;
    - ``labels``: ``(K,)`` float multi-hot over ``classes`` (the classes present);
    - ``mask``: ``(H, W)`` long, 0 the background, ``c + 1`` class ``c``, 255 ignored.

    A new set needs nothing else: the metrics, the pipeline and the benchmarks
    read any object with ``classes``, ``__len__`` and ``__getitem__``.

    Examples::

        >>> from captum_shallow.datasets import (SegmentationSet, SyntheticConfig,
        ...     make_synthetic_split)
        >>> split = make_synthetic_split(SyntheticConfig(image_size=32, num_test=2,
        ...     min_object_size=8, max_object_size=14), "test")
        >>> isinstance(split, SegmentationSet), [t.shape for t in split[0]]
        (True, [torch.Size([3, 32, 32]), torch.Size([5]), torch.Size([32, 32])])
    """

    @property
    def classes(self) -> tuple[str, ...]:
        """The object classes in label order (class ``c`` is mask label ``c + 1``)."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]: ...
