"""Layer presets: found from the structure, shallow to deep, each module run once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_shallow.models import (
    LayerPreset,
    build_model,
    layer_choice_table,
    layer_preset,
    load_model,
    resolve_layers,
)
from captum_shallow.models._loading import _construct

# Architecture -> (family, layers shallow to deep, strides at 224 px, channels).
EXPECTED = {
    "efficientnet-lite0": (
        "EfficientNet-Lite",
        ("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15"),
        (2, 4, 8, 16, 32),
        (16, 24, 40, 112, 320),
    ),
    "resnet50": (
        "ResNet",
        ("layer1", "layer2", "layer3", "layer4"),
        (4, 8, 16, 32),
        (256, 512, 1024, 2048),
    ),
    "vgg16": (
        "VGG",
        ("features.4", "features.9", "features.16", "features.23", "features.30"),
        (2, 4, 8, 16, 32),
        (64, 128, 256, 512, 512),
    ),
    "densenet121": (
        "DenseNet",
        (
            "features.denseblock1",
            "features.denseblock2",
            "features.denseblock3",
            "features.norm5",
        ),
        (4, 8, 16, 32),
        (256, 512, 1024, 1024),
    ),
    "mobilenet_v2": (
        "MobileNetV2",
        ("features.1", "features.3", "features.6", "features.13", "features.18"),
        (2, 4, 8, 16, 32),
        (16, 24, 32, 96, 1280),
    ),
    "mobilenet_v3_large": (
        "MobileNetV3",
        ("features.1", "features.3", "features.6", "features.12", "features.16"),
        (2, 4, 8, 16, 32),
        (16, 24, 40, 112, 960),
    ),
    "efficientnet_b0": (
        "EfficientNet",
        ("features.1", "features.2", "features.3", "features.5", "features.8"),
        (2, 4, 8, 16, 32),
        (16, 24, 40, 112, 1280),
    ),
    "convnext_tiny": (
        "ConvNeXt",
        ("features.1", "features.3", "features.5", "features.7"),
        (4, 8, 16, 32),
        (96, 192, 384, 768),
    ),
}


def _meta_model(arch: str) -> nn.Module:
    with torch.device("meta"):
        return _construct(arch, 1000)


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_preset_lists_stage_outputs_shallow_to_deep(arch: str) -> None:
    preset = layer_preset(_meta_model(arch), 224)
    family, layers, strides, channels = EXPECTED[arch]
    assert (preset.architecture, preset.layers) == (family, layers)
    assert (preset.strides, preset.channels) == (strides, channels)
    assert preset.input_size == (224, 224)


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_preset_modules_run_exactly_once_per_forward(arch: str) -> None:
    model = _meta_model(arch)
    modules = resolve_layers(model, layer_preset(model, 224).layers)
    calls = {id(module): 0 for module in modules}

    def count(module: nn.Module, args: object, output: object) -> None:
        calls[id(module)] += 1

    handles = [module.register_forward_hook(count) for module in modules]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224, device="meta"))
    for handle in handles:
        handle.remove()
    assert set(calls.values()) == {1}
    assert not any(
        isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish)) for m in modules
    )  # shared activations are never hooked


def test_preset_choices_on_the_embedded_model() -> None:
    model = load_model("efficientnet-lite0")
    preset = layer_preset(model)
    assert preset.layers == EXPECTED["efficientnet-lite0"][1]
    assert (preset.shallow, preset.last) == ("_blocks.2", "_blocks.15")
    assert preset.fusion == ("_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15")
    assert preset.map_size("_blocks.2") == (56, 56)
    assert resolve_layers(model, ["_blocks.4"]) == [model._blocks[4]]


def test_preset_derived_choices_follow_the_strides() -> None:
    preset = LayerPreset("X", ("a", "b", "c"), (2, 32, 64), (1, 1, 1), (64, 64))
    assert (preset.shallow, preset.last) == ("b", "c")
    assert preset.fusion == ("b", "c")  # from the shallow layer (stride >= 4) to the last
    resnet = layer_preset(_meta_model("resnet50"), 224)
    assert (resnet.shallow, resnet.fusion) == ("layer1", ("layer1", "layer2", "layer3", "layer4"))


def test_preset_follows_the_input_size_and_restores_training_mode() -> None:
    model = build_model("resnet18").train()
    preset = layer_preset(model, (128, 96))
    assert preset.strides == (4, 8, 16, 32)
    assert preset.map_size("layer2") == (16, 12)
    assert model.training


def test_preset_refuses_an_unknown_architecture() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="no layer preset for Sequential; name the layers"):
        layer_preset(model)


def test_resolve_layers_suggests_close_names() -> None:
    model = _meta_model("resnet50")
    assert resolve_layers(model, ["layer3", "layer1"]) == [model.layer3, model.layer1]
    with pytest.raises(ValueError, match="unknown layer for ResNet 'layer5'; did you mean 'layer"):
        resolve_layers(model, ["layer1", "layer5"])
    with pytest.raises(ValueError, match="no layer given"):
        resolve_layers(model, [])


def test_layer_choice_table_has_one_row_per_architecture() -> None:
    table = layer_choice_table(["resnet50", "efficientnet-lite0"])
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2] == (
        "| resnet50 | `layer1` (56), `layer2` (28), `layer3` (14), `layer4` (7) | `layer1` "
        "| `layer1`, `layer2`, `layer3`, `layer4` | `layer4` |"
    )
    assert lines[3].startswith("| efficientnet-lite0 | `_blocks.0` (112), `_blocks.2` (56)")
