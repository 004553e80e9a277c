"""Layer presets: found from the structure, shallow to deep, each module run once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_shallow import ShallowCAM
from captum_shallow.models import (
    LayerPreset,
    build_model,
    layer_choice_table,
    layer_preset,
    load_model,
    resolve_layers,
)
from captum_shallow.models._loading import construct_on_meta

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
        ("relu", "layer1", "layer2", "layer3", "layer4"),
        (2, 4, 8, 16, 32),
        (64, 256, 512, 1024, 2048),
    ),
    # The in-place ReLU before each max-pool (the last module at its resolution),
    # then the last pool; the adaptive average pool is a resampler, never a stage.
    "vgg16": (
        "VGG",
        ("features.3", "features.8", "features.15", "features.22", "features.29", "features.30"),
        (1, 2, 4, 8, 16, 32),
        (64, 128, 256, 512, 512, 512),
    ),
    "densenet121": (
        "DenseNet",
        (
            "features.relu0",
            "features.denseblock1",
            "features.denseblock2",
            "features.denseblock3",
            "features.norm5",
        ),
        (2, 4, 8, 16, 32),
        (64, 256, 512, 1024, 1024),
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
    # A ViT's resolution never changes: blocks at four depths, each by its first
    # LayerNorm, since the class token reads the patch tokens through attention.
    "vit_b_16": (
        "VisionTransformer",
        tuple(f"encoder.layers.encoder_layer_{i}.ln_1" for i in (2, 5, 8, 11)),
        (16, 16, 16, 16),
        (768, 768, 768, 768),
    ),
    "swin_t": (
        "SwinTransformer",
        ("features.1", "features.3", "features.5", "permute"),
        (4, 8, 16, 32),
        (96, 192, 384, 768),
    ),
    "maxvit_t": (
        "MaxVit",
        ("stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3"),
        (2, 4, 8, 16, 32),
        (64, 64, 128, 256, 512),
    ),
    # RegNet computes its widths with tensors: built with only its weights on meta.
    "regnet_y_400mf": (
        "RegNet",
        ("stem", *(f"trunk_output.block{i}" for i in range(1, 5))),
        (2, 4, 8, 16, 32),
        (32, 48, 104, 208, 440),
    ),
}

LAYOUTS = {
    "vit_b_16": ("tokens",) * 4,
    "swin_t": ("NHWC", "NHWC", "NHWC", "NCHW"),
}


def _meta_model(arch: str) -> nn.Module:
    return construct_on_meta(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(EXPECTED))
def test_preset_lists_stage_outputs_shallow_to_deep(arch: str) -> None:
    preset = layer_preset(_meta_model(arch), 224)
    family, layers, strides, channels = EXPECTED[arch]
    assert (preset.architecture, preset.layers) == (family, layers)
    assert (preset.strides, preset.channels) == (strides, channels)
    assert preset.input_size == (224, 224)
    assert preset.layouts == LAYOUTS.get(arch, ("NCHW",) * len(layers))
    assert preset.reshape == ("auto" if arch in LAYOUTS else None)
    assert preset.map_sizes == tuple((224 // s, 224 // s) for s in strides)


@pytest.mark.slow
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
    assert preset.strides == (2, 4, 8, 16, 32)
    assert preset.map_size("layer2") == (16, 12)
    assert model.training


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
        "| resnet50 | `relu` (112), `layer1` (56), `layer2` (28), `layer3` (14), `layer4` (7) "
        "| `layer1` | `layer1`, `layer2`, `layer3`, `layer4` | `layer4` |"
    )
    assert lines[3].startswith("| efficientnet-lite0 | `_blocks.0` (112), `_blocks.2` (56)")


def test_table_words_transformer_layouts() -> None:
    vit, swin = layer_choice_table(["vit_b_16", "swin_t"]).splitlines()[2:]
    assert vit.startswith("| vit_b_16 | `encoder.layers.encoder_layer_2.ln_1` (14, tokens), ")
    assert swin.startswith("| swin_t | `features.1` (56, channels-last), ")
    assert swin.split(" | ")[1].endswith("`permute` (7)")


# --- any model: layers found by structure ----------------------------------------------


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


def _plain_cnn(channels: int = 3) -> nn.Sequential:
    """A custom CNN: plain nn.Sequential stages, pooled into a linear head."""
    return nn.Sequential(
        _stage(channels, 8, 1),
        _stage(8, 16, 2),
        _stage(16, 32, 2),
        _stage(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def test_structure_finds_the_stages_of_a_plain_sequential_cnn() -> None:
    preset = layer_preset(_plain_cnn(), 64)
    assert preset.architecture == "Sequential"
    assert preset.layers == ("0", "1", "2", "3")  # the stages, not their last ReLUs
    assert (preset.strides, preset.channels) == ((1, 2, 4, 8), (8, 16, 32, 64))
    assert preset.map_sizes == ((64, 64), (32, 32), (16, 16), (8, 8))
    assert (preset.shallow, preset.fusion) == ("2", ("2", "3"))


def test_structure_reads_the_image_channels_from_the_first_convolution() -> None:
    assert layer_preset(_plain_cnn(channels=1), 32).layers == ("0", "1", "2", "3")


class _Fork(nn.Module):
    """Two arms at one resolution, concatenated inside the block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.left = nn.Conv2d(channels, channels, 3, padding=1)
        self.right = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


class _Branched(nn.Module):
    """A gate branch merged in the model's own forward, and a fork inside a block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _stage(3, 8, 2)
        self.body = _stage(8, 8, 1)
        self.gate = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sigmoid())  # runs last at stride 2
        self.down = _stage(8, 16, 2)
        self.fork = _Fork(16)
        self.aux = nn.Conv2d(32, 4, 1)  # an auxiliary output the model does not return
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.body(x) * self.gate(x)
        x = self.fork(self.down(x))
        self.last_aux = self.aux(x)
        return self.head(x)


def test_structure_skips_side_branches_and_picks_what_every_path_passes() -> None:
    preset = layer_preset(_Branched().eval(), 64)
    # Stride 2: body and gate are arms of a product, so the stem stands for it;
    # stride 4: the fork block, not one of its arms, and never the unused aux.
    assert preset.layers == ("stem", "fork")
    assert preset.strides == (2, 4)
    assert preset.channels == (8, 32)


def test_structure_never_picks_a_reused_activation() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 2, 1)
            self.conv2 = nn.Conv2d(8, 8, 3, 1, 1)
            self.act = nn.ReLU()  # applied after both convolutions
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.act(self.conv2(self.act(self.conv1(x))))
            return self.fc(x.mean(dim=(2, 3)))

    assert layer_preset(Shared().eval(), 32).layers == ("conv2",)


def test_structure_refuses_a_model_without_spatial_layers() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(
        ValueError,
        match=r"no layer of Sequential runs once per forward pass "
        r"and returns a spatial map .* name the layers yourself",
    ):
        layer_preset(mlp, 8)


class _ReadsValues(nn.Module):
    """A CNN whose forward reads a value: the probe runs it for real, not on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _plain_cnn()[:3]
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if float(x.abs().max()) > 1e6:  # a value a meta tensor does not have
            x = x.clamp(max=1e6)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("model_class", [_plain_cnn, _ReadsValues])
def test_the_probe_keeps_every_modules_mode_and_the_batch_norm_statistics(
    model_class: type,
) -> None:
    torch.manual_seed(0)
    model = model_class().train()
    frozen = model.features[0][1] if isinstance(model, _ReadsValues) else model[0][1]
    frozen.eval()  # a frozen batch norm inside a training model
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # statistics away from their initial values
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [
        (n.running_mean.clone(), n.running_var.clone(), int(n.num_batches_tracked)) for n in norms
    ]
    modes = [m.training for m in model.modules()]
    assert modes.count(False) == 1

    layer_preset(model, 32)

    assert [m.training for m in model.modules()] == modes
    for norm, (mean, var, count) in zip(norms, before, strict=True):
        assert torch.equal(norm.running_mean, mean)
        assert torch.equal(norm.running_var, var)
        assert int(norm.num_batches_tracked) == count


def test_structure_falls_back_to_a_real_pass_where_meta_cannot_run() -> None:
    # A meta pass cannot run it.
    with pytest.raises(RuntimeError, match="meta tensors"), torch.device("meta"), torch.no_grad():
        _ReadsValues()(torch.zeros(1, 3, 8, 8))
    model = _ReadsValues().eval()
    assert layer_preset(model, 32).layers == ("features.0", "features.1", "features.2")


class _TwoInputs(nn.Module):
    """A CNN whose forward takes a mask after the image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _plain_cnn()[:3]
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x * mask).mean(dim=(2, 3)))


def test_structure_says_what_to_do_when_the_model_cannot_run_a_blank_image() -> None:
    with pytest.raises(ValueError, match="cannot find the layers") as caught:
        layer_preset(_TwoInputs(), 16)
    message = str(caught.value)
    assert message.startswith(
        "cannot find the layers of _TwoInputs: its forward pass on a blank 1x3x16x16 "
        "float32 image on cpu failed ("
    )
    assert "'mask'" in message
    assert message.endswith(
        "pass input_size= the model's input size, additional_forward_args= the arguments "
        "it takes after the image, or name the layers yourself (see model.named_modules())"
    )
    assert "\n" not in message


def test_structure_passes_additional_forward_args_to_the_probe() -> None:
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    mask = torch.ones(1, 1, 32, 32)
    preset = layer_preset(model, 32, additional_forward_args=mask)
    assert preset.layers == ("features.0", "features.1", "features.2")
    assert preset.strides == (1, 2, 4)
    inputs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(32) < 16).float().expand(2, 1, 32, 32)  # the right half masked out
    # No class gate: on this untrained model Grad-CAM may have no positive value, and the
    # test is about the probe.
    cam = ShallowCAM.from_model(
        model, 32, additional_forward_args=(mask,), fusion="max", class_gate=False
    )
    assert [n for n, m in model.named_modules() if any(m is c for c in cam.layers)] == [
        "features.2"
    ]
    fused = cam.attribute(inputs, target=[0, 1], additional_forward_args=(mask,))
    explicit = ShallowCAM(model, [model.features[2]], fusion="max", class_gate=False)
    expected = explicit.attribute(inputs, target=[0, 1], additional_forward_args=(mask,))
    torch.testing.assert_close(fused, expected, rtol=0, atol=0)
    unmasked = explicit.attribute(inputs, target=[0, 1], additional_forward_args=torch.ones(1))
    assert float((fused - unmasked).abs().max()) > 0.1  # the mask reached the forward pass


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_presets_and_from_model_work_for_half_precision_models(
    dtype: torch.dtype, threads: int
) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=4)
    expected = layer_preset(model, 64)
    half = build_model("resnet18", num_classes=4)
    half.load_state_dict(model.state_dict())
    half = half.to(dtype)
    assert layer_preset(half, 64) == expected  # probed on meta in the model's dtype
    cam = ShallowCAM.from_model(half, 64)
    assert [n for n, m in half.named_modules() if any(m is c for c in cam.layers)] == list(
        expected.fusion
    )
    if dtype is torch.bfloat16:  # CPU convolutions run in bfloat16, with gradients
        inputs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        fused = cam.attribute(inputs.to(dtype), target=[1, 2])
        reference = ShallowCAM.from_model(model, 64).attribute(inputs, target=[1, 2])
        assert fused.dtype is dtype
        assert bool(fused.isfinite().all())
        # The truncation's quantile makes the map discontinuous in its inputs, so one
        # element may jump with the kernels' rounding: compare each map as a whole.
        # (Measured: mean |difference| 0.003, correlation 0.9995, at 1 and 2 threads.)
        difference = (fused.detach().float() - reference.detach()).abs().flatten(1)
        assert difference.mean(dim=1).max().item() < 0.03
        for ours, theirs in zip(fused.detach().float().flatten(1), reference.detach().flatten(1)):
            assert torch.corrcoef(torch.stack([ours, theirs]))[0, 1].item() > 0.98


def test_a_compiled_model_is_probed_uncompiled_and_its_layers_keep_their_prefix() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=4).eval()
    graphs: list[object] = []

    def backend(graph: torch.fx.GraphModule, example_inputs: object) -> object:
        graphs.append(graph)
        return graph.forward

    compiled = torch.compile(model, backend=backend)
    preset = layer_preset(compiled, 64)
    assert graphs == []  # nothing was compiled for the probe
    eager = layer_preset(model, 64)
    assert preset.layers == tuple(f"_orig_mod.{name}" for name in eager.layers)
    assert (preset.strides, preset.map_sizes) == (eager.strides, eager.map_sizes)
    assert resolve_layers(compiled, [preset.last]) == [model.layer4]
    inputs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    expected = ShallowCAM.from_model(model, 64).attribute(inputs, target=[1, 3])
    cam = ShallowCAM.from_model(compiled, 64)
    assert list(cam.layers) == list(ShallowCAM.from_model(model, 64).layers)
    got = cam.attribute(inputs, target=[1, 3])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert graphs == []  # the attribution ran the module it wraps, too
