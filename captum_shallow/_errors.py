"""Errors of the model zoo, worded for a user who typed a name or lacks a package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ValueError:
    """A :class:`ValueError` for an unknown name, suggesting the close known names.

    Args:
        kind (str): What the name is meant to name, e.g. ``"model"``.
        name (str): The name that was not found.
        choices (Iterable[str]): The known names.

    Returns:
        ValueError: ``unknown <kind> '<name>'`` followed by up to three close names
        (by :func:`difflib.get_close_matches`), or by every choice when there are
        at most eight and none is close.
    """
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if not close:
        # Case and separators are the usual slips: "ResNet_50" for "resnet50".
        folded = {_fold(choice): choice for choice in choices}
        close = [folded[key] for key in difflib.get_close_matches(_fold(name), folded, n=3)]
    if close:
        hint = "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif len(choices) <= 8:
        hint = "; choose from " + ", ".join(repr(c) for c in choices)
    else:
        hint = ""
    return ValueError(f"unknown {kind} {name!r}{hint}")


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
