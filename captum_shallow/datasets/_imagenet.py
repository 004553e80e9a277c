"""ImageNet's class names, from torchvision without a download."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .._errors import unknown_name


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the model outputs.

    They ship with torchvision as weight metadata; nothing is downloaded.

    Returns:
        tuple[str, ...]: 1000 names, e.g. index 285 is ``"Egyptian cat"``.

    Examples::

        >>> from captum_shallow.datasets import imagenet_classes
        >>> imagenet_classes()[285]
        'Egyptian cat'
    """
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def class_index(target: int | str, classes: Sequence[str] | None = None) -> int:
    """The output index of a class given by its index or its name.

    Args:
        target (int or str): An index, a string of digits, or a class name:
            an exact match first (ImageNet has both ``Cardigan``, 264, the corgi,
            and ``cardigan``, 474), else the one match without regard to case.
        classes (Sequence[str], optional): The class names in output order.
            Default: ``imagenet_classes()``

    Returns:
        int: The index, checked to lie in ``[0, len(classes))``.

    Raises:
        ValueError: For an index out of range, an unknown name (close names are
            suggested), or a name that several classes match (they are listed).

    Examples::

        >>> from captum_shallow.datasets import class_index
        >>> class_index("espresso"), class_index("285"), class_index("Cardigan")
        (967, 285, 264)
    """
    classes = imagenet_classes() if classes is None else classes
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, int):
        if not 0 <= target < len(classes):
            raise ValueError(f"class index {target} is out of range [0, {len(classes)})")
        return target
    name = target.strip()
    found = [position for position, known in enumerate(classes) if known == name]
    if not found:
        folded = name.casefold()
        found = [position for position, known in enumerate(classes) if known.casefold() == folded]
    if not found:
        raise unknown_name("class", target, classes)
    if len(found) > 1:
        candidates = " or ".join(f"{classes[position]!r} ({position})" for position in found)
        raise ValueError(
            f"ambiguous class {target!r}: {candidates}; give the exact name or the index"
        )
    return found[0]


def output_class_names(outputs: int) -> tuple[str, ...]:
    """Names for a classifier's ``outputs``: ImageNet's for 1000 outputs, else the indices.

    Args:
        outputs (int): The number of the classifier's outputs.

    Returns:
        tuple[str, ...]: One name per output.

    Examples::

        >>> from captum_shallow.datasets import output_class_names
        >>> output_class_names(1000)[285], output_class_names(3)
        ('Egyptian cat', ('0', '1', '2'))
    """
    if outputs == 1000:
        return imagenet_classes()
    return tuple(str(index) for index in range(outputs))
