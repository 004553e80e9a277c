"""Every torchvision classifier gets layers and a ShallowCAM.

Each architecture of ``torchvision.models.list_models(module=torchvision.models)``
(the list docs/layers.rst's table is generated from) is built with random
weights and explained once at a small input with :meth:`ShallowCAM.from_model`,
which fuses the layers that the table's row names.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from captum_shallow import ShallowCAM
from captum_shallow.models import architectures, layer_choice_table, layer_preset

ARCHITECTURES = torchvision.models.list_models(module=torchvision.models)

#: One small architecture of each family runs in the default development run; every
#: other one is marked slow (seconds each on two CPU cores, the two over 600M
#: parameters, regnet_y_128gf and vit_h_14, 8 to 10 s and 3.4 GB at peak) and runs
#: with ``-m ""`` (the README's test command, .ci/run).
FAST = {
    "alexnet",
    "convnext_tiny",
    "efficientnet_b0",
    "googlenet",
    "inception_v3",
    "mobilenet_v3_small",
    "regnet_y_400mf",
    "resnet18",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "swin_t",
}

#: 64 px unless the architecture needs another size to have the same layers as at
#: 224 px (the docs' table): MaxViT's 7 x 7 partitions need 224, AlexNet's and
#: Inception's valid convolutions leave no stride-32 map below 96 and 107 px;
#: ViT-H/14's patches need a multiple of 14.
INPUT_SIZES = {"maxvit_t": 224, "alexnet": 96, "inception_v3": 107, "vit_h_14": 56}


def test_the_lists_name_real_architectures() -> None:
    assert FAST | set(INPUT_SIZES) <= set(ARCHITECTURES)
    assert set(ARCHITECTURES) <= set(architectures())  # the docs' table covers them all
    assert len(ARCHITECTURES) >= 80


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=[] if a in FAST else [pytest.mark.slow]) for a in ARCHITECTURES]
)
def test_every_torchvision_classifier_gets_layers_and_a_map(arch: str) -> None:
    size = INPUT_SIZES.get(arch, 64)
    # A ViT's size is fixed at construction; torchvision builds it for 224 by default.
    kwargs = {"image_size": size} if arch.startswith("vit_") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=10, **kwargs)
    head = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    nn.init.normal_(head.weight, std=0.05)  # ViTs start their head at zero: no gradient
    model.eval()

    cam = ShallowCAM.from_model(model, size)
    preset = layer_preset(model, size)
    names = {id(module): name for name, module in model.named_modules()}
    assert [names[id(layer)] for layer in cam.layers] == list(preset.fusion)
    # The docs' table (built at 224 px on meta) names the layers this model fuses.
    fused_column = layer_choice_table([arch]).splitlines()[-1].split(" | ")[3]
    assert fused_column == ", ".join(f"`{name}`" for name in preset.fusion)
    assert cam.reshape == preset.reshape
    inputs = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    fused, maps = cam.attribute(inputs, target=3, return_layer_maps=True)

    # Each layer's map has the size the preset measured, so its strides are right.
    assert [tuple(m.shape[-2:]) for m in maps] == [preset.map_size(n) for n in preset.fusion]
    assert all(bool(m.isfinite().all()) and float(m.min()) >= 0 for m in maps)
    assert any(float(m.max()) > 0 for m in maps)  # the gradient reaches the layers
    assert fused.shape == (1, 1, *preset.map_size(preset.shallow))
    assert bool(fused.isfinite().all())
    assert 0 <= float(fused.min()) <= float(fused.max()) <= 1
