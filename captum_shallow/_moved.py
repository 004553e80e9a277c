"""Names that moved to another subpackage, and aliases of the task defaults, still
importable with a :class:`DeprecationWarning` (see CHANGELOG.md, 0.2.0)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_attribute(old: str, name: str, moved: dict[str, str]) -> Any:
    """``name`` from its new module when it moved away from module ``old``."""
    if name not in moved:
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    new = moved[name]
    warnings.warn(
        f"{old}.{name} moved to {new}.{name}; the old name will be removed in 0.3",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(new), name)


def deprecated_alias(
    module: str, name: str, aliases: Mapping[str, tuple[str, Callable[[], Any]]]
) -> Any:
    """The value of ``name``, a deprecated alias in module ``module``.

    ``aliases`` maps each alias to what to write instead and a function that gives
    its value, so the value is read from its one source when the alias is used.

    Examples::

        >>> import warnings
        >>> aliases = {"OLD": ("NEW", lambda: 42)}
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     deprecated_alias("package", "OLD", aliases)
        42
        >>> print(caught[0].message)
        package.OLD is deprecated and will be removed in 0.3; write NEW
        >>> deprecated_alias("package", "OTHER", aliases)
        Traceback (most recent call last):
        ...
        AttributeError: module 'package' has no attribute 'OTHER'
    """
    if name not in aliases:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    instead, value = aliases[name]
    warnings.warn(
        f"{module}.{name} is deprecated and will be removed in 0.3; write {instead}",
        DeprecationWarning,
        stacklevel=3,
    )
    return value()
