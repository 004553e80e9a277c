"""Real photographs with human object masks, in the ``index.csv`` format.

A folder holds ``images/``, ``masks/`` (8-bit grey, 0 background, 255 object),
optionally ``ignore/`` (255 marks uncertain pixels, left out of every score) and
``index.csv``, one row per photo with at least the columns ``name``, ``image``,
``mask``, ``imagenet_indices`` (space-separated ImageNet-1k indices, torchvision
order) and optionally ``ignore_mask``, ``match`` (``exact``, ``group`` or
``approx``) and ``dataset`` (the source: COCO, DAVIS, ...). Paths are relative to
the folder. The photos' object classes are ImageNet classes, so an ImageNet model
classifies them with its real weights; the target of a photo is the highest-scoring
of its listed classes (:func:`listed_target`).

As a :class:`~captum_shallow.datasets.SegmentationSet` the set has one class,
``"object"``: item ``i`` is the photo in [0, 1], the label ``[1.0]`` and the mask (0
background, 1 object, 255 ignored); :meth:`RealPhotoSet.photo` gives the photo with
its ImageNet indices, match and source.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import read_image, read_label_png

__all__ = ["MATCHES", "RealPhoto", "RealPhotoSet", "listed_target"]

#: How a row's ImageNet classes match its object: one class, a group of classes
#: (the target is the best-scoring), or the nearest classes only.
MATCHES: tuple[str, ...] = ("exact", "group", "approx")
_REQUIRED = ("name", "image", "mask", "imagenet_indices")


@dataclass(frozen=True)
class RealPhoto:
    """One photo and its human mask.

    Attributes:
        name (str): The row's name.
        image (Tensor): ``uint8`` RGB ``(3, H, W)``.
        mask (Tensor): ``bool`` ``(H, W)``, True on the object.
        ignore (Tensor): ``bool`` ``(H, W)``, True on pixels left out of every
            score (all False when the row has no ignore mask).
        imagenet_indices (tuple[int, ...]): The listed ImageNet-1k indices.
        match (str): ``"exact"``, ``"group"`` or ``"approx"``.
        dataset (str): The source data set.
    """

    name: str
    image: Tensor
    mask: Tensor
    ignore: Tensor
    imagenet_indices: tuple[int, ...]
    match: str
    dataset: str


@dataclass(frozen=True)
class _Row:
    name: str
    image: Path
    mask: Path
    ignore: Path | None
    classes: tuple[int, ...]
    match: str
    dataset: str


class RealPhotoSet:
    r"""The photos of a folder in the ``index.csv`` format, read on access.

    Args:
        root (str or os.PathLike): The folder holding ``index.csv``.
        matches (sequence of str, optional): Keep only the rows of these
            ``match`` values. Default: None (every row).
        datasets (sequence of str, optional): Keep only the rows of these source
            data sets. Default: None (every row).

    Raises:
        FileNotFoundError: When ``index.csv`` is missing.
        ValueError: For a row without a required column, a file outside the
            folder, no or out-of-range ImageNet index, or an unknown ``match``
            (the message names the row).

    Examples::

        >>> import os, tempfile
        >>> from PIL import Image
        >>> from captum_shallow.datasets._real_photos import RealPhotoSet
        >>> root = tempfile.mkdtemp()
        >>> for folder in ("images", "masks"):
        ...     os.mkdir(os.path.join(root, folder))
        >>> Image.new("RGB", (6, 4)).save(os.path.join(root, "images", "a.jpg"))
        >>> Image.new("L", (6, 4), 255).save(os.path.join(root, "masks", "a.png"))
        >>> with open(os.path.join(root, "index.csv"), "w") as f:
        ...     _ = f.write("name,image,mask,imagenet_indices,match,dataset\n"
        ...                 "a,images/a.jpg,masks/a.png,281 285,group,Pet\n")
        >>> photos = RealPhotoSet(root)
        >>> len(photos), photos.photo(0).imagenet_indices, photos.photo(0).mask.shape
        (1, (281, 285), torch.Size([4, 6]))
        >>> image, labels, mask = photos[0]
        >>> image.dtype, labels.tolist(), mask.unique().tolist()
        (torch.float32, [1.0], [1])
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        matches: Sequence[str] | None = None,
        datasets: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        index = self.root / "index.csv"
        if not index.is_file():
            raise FileNotFoundError(f"no index.csv in {self.root}")
        with index.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{index}: missing columns {missing}")
            rows = [self._row(record, line) for line, record in enumerate(reader, start=2)]
        self._rows = [
            row
            for row in rows
            if (matches is None or row.match in matches)
            and (datasets is None or row.dataset in datasets)
        ]

    def _row(self, record: dict[str, str], line: int) -> _Row:
        where = f"{self.root / 'index.csv'} line {line}"
        name = (record.get("name") or "").strip()
        if not name:
            raise ValueError(f"{where}: empty name")
        try:
            classes = tuple(int(v) for v in (record.get("imagenet_indices") or "").split())
        except ValueError:
            raise ValueError(
                f"{where} ({name}): imagenet_indices must be integers, got "
                f"{record.get('imagenet_indices')!r}"
            ) from None
        if not classes or any(not 0 <= c < 1000 for c in classes):
            raise ValueError(f"{where} ({name}): needs ImageNet indices in 0..999, got {classes}")
        match = (record.get("match") or "exact").strip()
        if match not in MATCHES:
            raise ValueError(f"{where} ({name}): match must be one of {MATCHES}, got {match!r}")
        ignore = (record.get("ignore_mask") or "").strip()
        return _Row(
            name=name,
            image=self._path(record["image"], where),
            mask=self._path(record["mask"], where),
            ignore=self._path(ignore, where) if ignore else None,
            classes=classes,
            match=match,
            dataset=(record.get("dataset") or "").strip() or "-",
        )

    def _path(self, relative: str, where: str) -> Path:
        path = (self.root / relative.strip()).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{where}: {relative!r} lies outside {self.root}")
        return path

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def classes(self) -> tuple[str, ...]:
        """The one class of the masks: ``("object",)``."""
        return ("object",)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(image (3, H, W) float in [0, 1], labels [1.0], mask (H, W) long)``: the
        mask holds 0 on the background, 1 on the object, 255 on the ignore band."""
        photo = self.photo(index)
        mask = photo.mask.long().masked_fill(photo.ignore, 255)
        return photo.image.float() / 255, torch.ones(1), mask

    def photo(self, index: int) -> RealPhoto:
        """Photo ``index`` with its mask, ignore band, ImageNet indices and source."""
        row = self._rows[index]
        image = read_image(row.image)
        mask = _binary(row.mask)
        ignore = _binary(row.ignore) if row.ignore else torch.zeros_like(mask)
        size = tuple(image.shape[1:])
        for what, array in (("mask", mask), ("ignore mask", ignore)):
            if tuple(array.shape) != size:
                raise ValueError(
                    f"{row.name}: the {what} is {tuple(array.shape)} but the image {size}"
                )
        return RealPhoto(row.name, image, mask, ignore, row.classes, row.match, row.dataset)

    def subset(self, indices: Iterable[int]) -> RealPhotoSet:
        """The same set restricted to some rows, in the given order."""
        out = object.__new__(RealPhotoSet)
        out.root = self.root
        out._rows = [self._rows[i] for i in indices]
        return out

    def photos(self) -> Iterator[RealPhoto]:
        """Every photo, in order (:meth:`photo`)."""
        return (self.photo(i) for i in range(len(self)))

    @property
    def names(self) -> tuple[str, ...]:
        """Each photo's name, in order."""
        return tuple(row.name for row in self._rows)

    @property
    def imagenet_indices(self) -> tuple[tuple[int, ...], ...]:
        """Each photo's listed ImageNet indices."""
        return tuple(row.classes for row in self._rows)

    @property
    def matches(self) -> tuple[str, ...]:
        """Each photo's ``match``."""
        return tuple(row.match for row in self._rows)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Each photo's source data set."""
        return tuple(row.dataset for row in self._rows)

    def __repr__(self) -> str:
        return f"RealPhotoSet({str(self.root)!r}, {len(self)} photos)"


def _binary(path: Path) -> Tensor:
    """A grey mask as bool: values above 127 are True."""
    return torch.from_numpy(np.asarray(read_label_png(path)) > 127)


def listed_target(logits: Tensor, classes: Sequence[Sequence[int]]) -> Tensor:
    r"""The highest-scoring listed class of each sample:
    :math:`c^* = \arg\max_{c \in L} y_c`.

    Args:
        logits (Tensor): ``(N, C)`` model outputs.
        classes (sequence of sequence of int): Each sample's listed classes.

    Returns:
        Tensor: ``(N,)`` long class indices, on the logits' device.

    Examples::

        >>> listed_target(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), [[0, 2, 3]]).tolist()
        [3]
    """
    if logits.dim() != 2 or logits.shape[0] != len(classes):
        raise ValueError(
            f"logits must be (N, C) with N = {len(classes)} samples, got {tuple(logits.shape)}"
        )
    allowed = torch.zeros_like(logits, dtype=torch.bool)
    for row, listed in enumerate(classes):
        allowed[row, list(listed)] = True
    return logits.masked_fill(~allowed, float("-inf")).argmax(dim=1)
