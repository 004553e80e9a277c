"""ImageNet's class names and normalisation, from torchvision without a download."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ._errors import unknown_name

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the order of the model outputs.

    They ship with torchvision as weight metadata; nothing is downloaded.

    Returns:
        tuple[str, ...]: 1000 names, e.g. index 285 is ``"Egyptian cat"``.

    Examples::

        >>> from captum_shallow.models import imagenet_classes
        >>> imagenet_classes()[285]
        'Egyptian cat'
    """
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def class_index(target: int | str, classes: Sequence[str] | None = None) -> int:
    """The output index of a class given by its index or its name.

    Args:
        target (int or str): An index, a string of digits, or a class name
            (matched without regard to case).
        classes (Sequence[str], optional): The class names in output order.
            Default: ``imagenet_classes()``

    Returns:
        int: The index, checked to lie in ``[0, len(classes))``.

    Raises:
        ValueError: For an index out of range or an unknown name; close names are
            suggested.

    Examples::

        >>> from captum_shallow.models import class_index
        >>> class_index("espresso"), class_index("285")
        (967, 285)
    """
    classes = imagenet_classes() if classes is None else classes
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, int):
        if not 0 <= target < len(classes):
            raise ValueError(f"class index {target} is out of range [0, {len(classes)})")
        return target
    by_name = {name.lower(): position for position, name in enumerate(classes)}
    found = by_name.get(target.strip().lower())
    if found is None:
        raise unknown_name("class", target, classes)
    return found
