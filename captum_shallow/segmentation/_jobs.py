"""Pseudo-mask jobs: which images to mask, under which names, with which labels.

A job is an image, its name (the output path without suffix) and its
image-level labels. Two sources:

- ``voc``: ``<root>/VOCdevkit/VOC2012`` (or ``<root>`` itself when it holds
  ``JPEGImages/``), the ids of ``ImageSets/Segmentation/<split>.txt``, images
  ``JPEGImages/<id>.jpg``; labels from a labels file when given, else read off
  ``SegmentationClass/<id>.png`` (the classes present, 0 and 255 excluded).
  The classes are VOC's 20.
- ``folder``: images under ``<root>`` listed by a labels file.

The labels file is CSV (UTF-8, with or without a byte-order mark) with a
header ``image,classes``: ``image`` is a path relative to the root (for VOC, an
image id), ``classes`` the image's class names separated by spaces, or by
semicolons (empty: background only); a class name may itself contain spaces
("traffic light"): it is matched whole, the longest known name first. A
folder's class names are one per line in a classes file
(``<root>/classes.txt`` by default), in the classifier's output order: class
``c`` is mask label ``c + 1``.

The masks are VOC label PNGs (:mod:`captum_shallow.io`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import one_line
from ..datasets._voc import VOC_CLASSES
from ..io._paths import check_plain_name, read_text

__all__ = [
    "IMAGE_SUFFIXES",
    "MaskJob",
    "folder_jobs",
    "read_class_names",
    "read_labels_file",
    "voc_jobs",
]

#: File suffixes a folder dataset's images may have.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class MaskJob:
    """One image to make a pseudo-mask for.

    Args:
        name (str): Output name relative to the output folder, without suffix
            (``"2007_000032"``, ``"street/0001"``).
        image (str): Path of the image file.
        labels (tuple[int, ...], optional): Present classes, 0-based classifier
            indices; ``None`` when they are read off ``mask`` at load time.
        mask (str, optional): Ground-truth mask to read the labels from.
    """

    name: str
    image: str
    labels: tuple[int, ...] | None
    mask: str | None = None


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names, one per line (blank lines and ``#`` comments skipped).

    Args:
        path (str or os.PathLike): The classes file.

    Returns:
        tuple[str, ...]: The names in classifier output order.

    Raises:
        ValueError: For an unreadable or empty file, or a repeated name.
    """
    try:
        lines = read_text(path, "classes file").splitlines()
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    # Runs of spaces inside a name are one space, as in a labels file's cell.
    names = tuple(
        " ".join(line.split()) for line in lines if line.strip() and not line.startswith("#")
    )
    if not names:
        raise ValueError(f"classes file {path} names no class")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"classes file {path} repeats {repeated[0]!r}")
    return names


def read_labels_file(
    path: str | os.PathLike[str], classes: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Image-level labels from a CSV file with a header ``image,classes``.

    Args:
        path (str or os.PathLike): The labels file.
        classes (Sequence[str]): The class names in output order.

    Returns:
        dict[str, tuple[int, ...]]: Per image (as written), the sorted class indices.

    Raises:
        ValueError: For an unreadable file, a wrong header, an unknown class name
            or a repeated image, with the line number.
    """
    index = {name: i for i, name in enumerate(classes)}
    labels: dict[str, tuple[int, ...]] = {}
    try:
        rows = list(csv.reader(io.StringIO(read_text(path, "labels file"), newline="")))
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    except csv.Error as error:
        raise ValueError(f"cannot read labels file {path}: {_reason(error)}") from None
    if not rows or [cell.strip() for cell in rows[0]] != ["image", "classes"]:
        raise ValueError(f"labels file {path} must start with the header line 'image,classes'")
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip():
            raise ValueError(f"{path}, line {line}: expected 'image,class class ...'")
        image = row[0].strip()
        names, unknown = _split_class_names(row[1], index)
        if unknown is not None:
            raise ValueError(
                f"{path}, line {line}: unknown class {unknown!r} "
                f"(the classes are {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
            )
        if image in labels:
            raise ValueError(f"{path}, line {line}: image {image!r} is listed twice")
        labels[image] = tuple(sorted({index[name] for name in names}))
    return labels


def _split_class_names(cell: str, index: dict[str, int]) -> tuple[list[str], str | None]:
    """The class names of a labels cell, and the first unknown one (or None).

    Names are separated by semicolons when the cell holds one, else by spaces;
    a name that itself contains spaces ("traffic light") is matched whole, the
    longest known name first.
    """
    if ";" in cell:
        names = [" ".join(name.split()) for name in cell.split(";") if name.strip()]
        unknown = next((name for name in names if name not in index), None)
        return names, unknown
    words, names, start = cell.split(), [], 0
    while start < len(words):
        for end in range(len(words), start, -1):
            name = " ".join(words[start:end])
            if name in index:
                names.append(name)
                start = end
                break
        else:
            return names, words[start]
    return names, None


def voc_jobs(
    root: str | os.PathLike[str], split: str, labels_file: str | None = None
) -> tuple[list[MaskJob], tuple[str, ...]]:
    """The jobs of a VOC 2012 split, sorted by image id.

    Args:
        root (str or os.PathLike): Folder holding ``VOCdevkit/``, or ``VOC2012``.
        split (str): Name of ``ImageSets/Segmentation/<split>.txt``.
        labels_file (str, optional): Labels CSV; ``None`` reads the labels off
            ``SegmentationClass``.

    Returns:
        tuple[list[MaskJob], tuple[str, ...]]: The jobs and VOC's 20 class names.

    Raises:
        FileNotFoundError: When the folders, the split or a labels entry are missing.
        ValueError: For an unreadable or empty split, an unreadable labels file,
            or an image id that is not a plain name (an absolute path, ``..``):
            every name must stay inside the output folder.
    """
    voc = Path(root)
    if not (voc / "JPEGImages").is_dir():
        voc = voc / "VOCdevkit" / "VOC2012"
    split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    for needed in (voc / "JPEGImages", split_file):
        if not needed.exists():
            raise FileNotFoundError(
                f"PASCAL VOC not found: missing {needed} (expected <root>/VOCdevkit/VOC2012/ "
                "with JPEGImages/ and ImageSets/Segmentation/<split>.txt)"
            )
    lines = read_text(split_file, "split file").splitlines()
    ids = sorted({line.strip() for line in lines if line.strip()})
    if not ids:
        raise ValueError(f"split file {split_file} lists no image id")
    classes = VOC_CLASSES[1:]
    given = None if labels_file is None else read_labels_file(labels_file, classes)
    for image_id in given or ():
        check_plain_name(image_id, f"labels file {labels_file}")
    jobs = []
    for image_id in ids:
        check_plain_name(image_id, f"split file {split_file}")
        image = str(voc / "JPEGImages" / f"{image_id}.jpg")
        if given is not None:
            if image_id not in given:
                raise FileNotFoundError(f"labels file {labels_file} has no line for {image_id}")
            jobs.append(MaskJob(image_id, image, given[image_id]))
        else:
            mask = voc / "SegmentationClass" / f"{image_id}.png"
            jobs.append(MaskJob(image_id, image, None, str(mask)))
    return jobs, classes


def folder_jobs(
    root: str | os.PathLike[str], labels_file: str | None = None, classes_file: str | None = None
) -> tuple[list[MaskJob], tuple[str, ...]]:
    """The jobs of a folder dataset, sorted by name.

    Args:
        root (str or os.PathLike): The images' folder.
        labels_file (str, optional): Labels CSV. Default: ``<root>/labels.csv``.
        classes_file (str, optional): Class names. Default: ``<root>/classes.txt``.

    Returns:
        tuple[list[MaskJob], tuple[str, ...]]: The jobs and the class names.

    Raises:
        FileNotFoundError: For a missing root, classes or labels file.
        ValueError: For unreadable files, unknown classes, a labels file that
            lists no image, a path that is not a plain name inside the root
            (absolute, ``..``), or two images with the same name (ignoring case)
            once their suffix is dropped.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    classes_path = Path(classes_file) if classes_file else folder / "classes.txt"
    labels_path = Path(labels_file) if labels_file else folder / "labels.csv"
    for needed, what in ((classes_path, "classes"), (labels_path, "labels")):
        if not needed.exists():  # a FIFO or a folder is refused when read
            raise FileNotFoundError(f"{what} file {needed} does not exist")
    classes = read_class_names(classes_path)
    labels = read_labels_file(labels_path, classes)
    if not labels:
        raise ValueError(f"labels file {labels_path} lists no image (only its header)")
    jobs: dict[str, MaskJob] = {}
    for image, present in labels.items():
        relative = Path(check_plain_name(image, f"labels file {labels_path}"))
        if relative.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"labels file {labels_path}: {image!r} does not end in an image suffix "
                f"({' '.join(IMAGE_SUFFIXES)})"
            )
        name = relative.with_suffix("").as_posix()
        # Case folded: on a disk that ignores case, A.png and a.png are one file.
        other = jobs.get(name.casefold())
        if other is not None:
            raise ValueError(
                f"labels file {labels_path}: {Path(other.image).relative_to(folder)} and "
                f"{image} would both write {name}.png"
                f"{'' if other.name == name else ' (on a disk that ignores case)'}"
            )
        jobs[name.casefold()] = MaskJob(name, str(folder / relative), present)
    return sorted(jobs.values(), key=lambda job: job.name), classes


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return one_line(error)
