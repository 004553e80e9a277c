"""Names that moved to another subpackage, still importable from the old one
with a :class:`DeprecationWarning` (see CHANGELOG.md, 0.2.0)."""

from __future__ import annotations

import importlib
import warnings
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
