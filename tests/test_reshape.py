"""reshape=: transformer tokens and channels-last maps back to (N, C, H, W) grids."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_shallow import LayerCAM, LayerGradCam, LayerHiResCam, ShallowCAM
from captum_shallow._layout import GridLayout, infer_layout
from captum_shallow.attribution._reshape import to_grid


@pytest.fixture(autouse=True)
def _neutral_task_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check the mechanism, not the measured defaults: ShallowCAM's tasks
    default here to product fusion with no truncation and no propagation."""
    from captum_shallow.attribution import _defaults

    neutral = _defaults.TaskDefaults("product", None, None, "layers", 0.15)
    monkeypatch.setattr(
        _defaults, "TASK_DEFAULTS", {"localisation": neutral, "segmentation": neutral}
    )


class _TokenNet(nn.Module):
    """A tiny ViT-like model: 4 x 4 patch tokens after a class token, a token-wise
    layer, and a head that reads the class token and the mean patch token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        tokens = torch.tanh(self.mix(tokens))
        return self.head(tokens[:, 0] * tokens[:, 1:].mean(dim=1))


class _ChannelsLastNet(nn.Module):
    """A Swin-like model: its stage works on (N, H, W, C) maps."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, 4)
        self.stage = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        maps = torch.tanh(self.stage(self.embed(x).permute(0, 2, 3, 1)))
        return self.head(maps.square().mean(dim=(1, 2)))


def _manual_maps(
    model: nn.Module, layer: nn.Module, inputs: Tensor, target: list[int], prefix: int = 1
) -> tuple:
    """The layer's output and gradient by plain autograd, as (N, C, h, w) grids (tokens
    without their ``prefix`` first ones, channels-last maps permuted)."""
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.update(out=o))
    output = model(inputs)
    handle.remove()
    score = output[torch.arange(len(target)), target].sum()
    (gradient,) = torch.autograd.grad(score, saved["out"])
    activation = saved["out"].detach()
    if activation.dim() == 3:  # tokens: drop the class token (and registers)
        activation, gradient = activation[:, prefix:], gradient[:, prefix:]
        side = int(activation.shape[1] ** 0.5)
        activation, gradient = (t.unflatten(1, (side, side)) for t in (activation, gradient))
    return activation.permute(0, 3, 1, 2), gradient.permute(0, 3, 1, 2)


@pytest.mark.parametrize("net", [_TokenNet, _ChannelsLastNet])
def test_auto_reshape_gives_the_cams_of_the_grid(net: type) -> None:
    torch.manual_seed(0)
    model = net().eval()
    layer = model.mix if net is _TokenNet else model.stage
    inputs, target = torch.randn(2, 3, 16, 16), [1, 4]
    activation, gradient = _manual_maps(model, layer, inputs, target)
    assert activation.shape == (2, 8, 4, 4)
    expected = {
        LayerCAM: (gradient.clamp(min=0) * activation).sum(1, keepdim=True).clamp(min=0),
        LayerHiResCam: (gradient * activation).sum(1, keepdim=True).clamp(min=0),
        LayerGradCam: (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True),
    }
    for cls, map_ in expected.items():
        ours = cls(model, layer, reshape="auto").attribute(inputs, target=target)
        assert float(map_.abs().max()) > 0
        torch.testing.assert_close(ours, map_, rtol=1e-5, atol=1e-7)


def test_reshape_callable_gets_gradient_and_activation_alike() -> None:
    torch.manual_seed(0)
    model = _ChannelsLastNet().eval()
    seen: list[tuple[int, ...]] = []

    def to_channels_first(tensor: Tensor) -> Tensor:
        seen.append(tuple(tensor.shape))
        return tensor.permute(0, 3, 1, 2)

    inputs = torch.randn(2, 3, 16, 16)
    ours = LayerCAM(model, model.stage, reshape=to_channels_first).attribute(inputs, target=0)
    assert seen == [(2, 4, 4, 8), (2, 4, 4, 8)]  # once for the gradient, once for the activation
    auto = LayerCAM(model, model.stage, reshape="auto").attribute(inputs, target=0)
    torch.testing.assert_close(ours, auto, rtol=0, atol=0)


def test_auto_leaves_channels_first_maps_as_they_are() -> None:
    from torchvision.models import resnet18

    model = resnet18(num_classes=4).eval()
    inputs = torch.randn(2, 3, 64, 48)
    plain = LayerCAM(model, model.layer2).attribute(inputs, target=[0, 3])
    auto = LayerCAM(model, model.layer2, reshape="auto").attribute(inputs, target=[0, 3])
    assert auto.shape == (2, 1, 8, 6)
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


def test_shallowcam_fuses_token_layers_with_auto_reshape_and_says_so_without() -> None:
    torch.manual_seed(0)
    model = _TokenNet().eval()
    inputs = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"layer 'mix' gives \[\(2, 17, 8\)\] .*reshape='auto'"):
        ShallowCAM(model, [model.embed, model.mix]).attribute(inputs, target=0)
    cam = ShallowCAM(model, [model.embed, model.mix], fusion="max", reshape="auto")
    fused, maps = cam.attribute(inputs, target=0, return_layer_maps=True)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 4, 4), (2, 1, 4, 4)]
    expected = LayerCAM(model, model.mix, reshape="auto").attribute(inputs, target=0)
    torch.testing.assert_close(maps[1], expected)
    torch.testing.assert_close(fused.amax(dim=(2, 3)), torch.ones(2, 1))


def test_from_model_sets_auto_reshape_for_a_vision_transformer() -> None:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(32, 8, num_layers=4, num_heads=2, hidden_dim=16, mlp_dim=32)
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision's head starts at zero
    cam = ShallowCAM.from_model(vit.eval(), fusion="max")  # probed at vit.image_size (32)
    assert cam.reshape == "auto"
    names = {id(m): n for n, m in vit.named_modules()}
    assert [names[id(layer)] for layer in cam.layers] == [
        f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(4)
    ]
    fused = cam.attribute(torch.randn(2, 3, 32, 32), target=[1, 2])
    assert fused.shape == (2, 1, 4, 4)
    torch.testing.assert_close(fused.amax(dim=(2, 3)), torch.ones(2, 1))


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((2, 197, 768), (224, 224), GridLayout("tokens", (14, 14), 768, 1)),  # class token
        ((2, 201, 768), (224, 224), GridLayout("tokens", (14, 14), 768, 5)),  # + 4 registers
        ((2, 196, 768), (224, 224), GridLayout("tokens", (14, 14), 768, 0)),
        ((2, 141, 64), (224, 160), GridLayout("tokens", (14, 10), 64, 1)),
        ((2, 56, 56, 96), (224, 224), GridLayout("NHWC", (56, 56), 96)),
        ((2, 7, 5, 64), (224, 160), GridLayout("NHWC", (7, 5), 64)),
        ((2, 96, 56, 56), (224, 224), GridLayout("NCHW", (56, 56), 96)),
        ((2, 64, 55, 55), (224, 224), GridLayout("NCHW", (55, 55), 64)),  # valid convolution
        ((2, 7, 7, 7), (224, 224), GridLayout("NCHW", (7, 7), 7)),  # ambiguous: channels first
        ((2, 3, 7), (224, 224), None),  # too few tokens for a prefix and a grid
        ((2, 5, 8, 3), (224, 224), None),
        ((2, 10), (224, 224), None),
    ],
)
def test_infer_layout(
    shape: tuple[int, ...], size: tuple[int, int], expected: GridLayout | None
) -> None:
    assert infer_layout(shape, size) == expected


def test_to_grid_drops_the_prefix_and_keeps_row_major_order() -> None:
    rows, cols, channels = torch.meshgrid(
        torch.arange(3), torch.arange(2), torch.arange(4), indexing="ij"
    )
    grid = (100 * rows + 10 * cols + channels).float()  # (3, 2, 4): value says where
    tokens = torch.cat([torch.full((2, 4), -1.0), grid.reshape(6, 4)]).unsqueeze(0)
    result = to_grid(tokens, GridLayout("tokens", (3, 2), 4, prefix=2))
    torch.testing.assert_close(result[0], grid.permute(2, 0, 1), rtol=0, atol=0)
    nhwc = to_grid(grid.unsqueeze(0), GridLayout("NHWC", (3, 2), 4))
    torch.testing.assert_close(nhwc[0], grid.permute(2, 0, 1), rtol=0, atol=0)


def test_reshape_errors_name_the_problem() -> None:
    model = _TokenNet().eval()
    for bad in (5, "tokens"):
        with pytest.raises(TypeError, match="reshape must be None, 'auto' or a callable"):
            LayerCAM(model, model.mix, reshape=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reshape must be None"):
        ShallowCAM(model, [model.mix], reshape=3)  # type: ignore[arg-type]
    inputs = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"layer 'mix' of shape \(1, 17, 8\) it returned list"):
        LayerCAM(model, model.mix, reshape=lambda t: [t]).attribute(inputs, target=0)
    # A flattened channels-first map (N, C, H*W) is no token sequence: "auto" says what it reads.
    flat = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.Flatten(2), nn.Flatten(1), nn.Linear(128, 2))
    with pytest.raises(ValueError, match="finds no grid") as caught:
        LayerCAM(flat, flat[1], reshape="auto").attribute(inputs, target=0)
    assert str(caught.value) == (
        "reshape='auto' finds no grid in layer '1''s output of shape (1, 8, 16) for a "
        "16x16 input (it reads (N, C, H, W), (N, H, W, C) and (N, prefix + H*W, C)); pass "
        "a callable that returns (N, C, H, W)"
    )


def test_auto_reshape_needs_an_image_input() -> None:
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 2))
    with pytest.raises(ValueError, match=r"the input has shape \(3, 6\); pass a callable"):
        LayerGradCam(model, model[0], reshape="auto").attribute(torch.randn(3, 6), target=0)


def test_auto_reshape_reads_each_tensor_of_a_tuple_output_by_its_own_shape() -> None:
    class TwoLayouts(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            grid = x.permute(0, 2, 3, 1)  # (N, 4, 4, 8) channels last
            return torch.cat([grid.mean(dim=(1, 2))[:, None], grid.flatten(1, 2)], 1), grid

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, 4)
            self.split = TwoLayouts()
            self.head = nn.Linear(8, 3)

        def forward(self, x: Tensor) -> Tensor:
            tokens, grid = self.split(self.embed(x))
            return self.head(torch.tanh(tokens).mean(1) * torch.tanh(grid).mean(dim=(1, 2)))

    torch.manual_seed(0)
    model = Net().eval()
    inputs = torch.randn(2, 3, 16, 16)
    from_tokens, from_grid = LayerCAM(model, model.split, reshape="auto").attribute(
        inputs, target=1
    )
    assert from_tokens.shape == from_grid.shape == (2, 1, 4, 4)
    # Both outputs hold the same activations; their gradients differ by the paths.
    assert float(from_tokens.max()) > 0
    assert float(from_grid.max()) > 0
    assert not torch.equal(from_tokens, from_grid)


class _Block(nn.Module):
    """A pre-norm transformer block, as timm writes it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _RegisterViT(nn.Module):
    """A timm-like ViT with a class token and 4 register tokens: blocks return
    (N, 1 + 4 + 16, C) for a 32 x 32 input in 8-pixel patches."""

    def __init__(self, registers: int = 4, depth: int = 4, dim: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.reg_token = nn.Parameter(torch.randn(1, registers, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 16, dim) * 0.1)
        self.blocks = nn.Sequential(*[_Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        prefix = [self.cls_token.expand(len(x), -1, -1), self.reg_token.expand(len(x), -1, -1)]
        tokens = self.norm(self.blocks(torch.cat([*prefix, tokens], dim=1)))
        return self.head(tokens[:, 0])


def test_a_vit_with_register_tokens_gets_its_blocks_and_drops_class_and_registers() -> None:
    from captum_shallow.models import layer_preset

    torch.manual_seed(0)
    model = _RegisterViT().eval()
    preset = layer_preset(model, 32)
    assert preset.layers == tuple(f"blocks.{i}.norm1" for i in range(4))
    assert (preset.layouts, preset.strides) == (("tokens",) * 4, (8, 8, 8, 8))
    assert preset.map_sizes == ((4, 4),) * 4
    assert preset.reshape == "auto"
    inputs, target = torch.randn(2, 3, 32, 32), [1, 4]
    layer = model.blocks[2].norm1
    # The 5 prefix tokens dropped, the 16 patch tokens row-major on a 4 x 4 grid.
    activation, gradient = _manual_maps(model, layer, inputs, target, prefix=5)
    assert activation.shape == (2, 16, 4, 4)
    expected = (gradient.clamp(min=0) * activation).sum(1, keepdim=True).clamp(min=0)
    assert float(expected.max()) > 0
    ours = LayerCAM(model, layer, reshape="auto").attribute(inputs, target=target)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    fused, maps = ShallowCAM.from_model(model, 32).attribute(
        inputs, target=target, return_layer_maps=True
    )
    torch.testing.assert_close(maps[2], ours)
    assert fused.shape == (2, 1, 4, 4)


class _ChannelsLastConvNeXt(nn.Module):
    """A ConvNeXt whose whole trunk is channels last, downsampled by
    LayerNorm-then-convolution modules inside the next stage."""

    class Block(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: Tensor) -> Tensor:
            y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return x + self.mlp(self.norm(y))

    class Down(nn.Module):
        def __init__(self, dim: int, out: int) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.conv = nn.Conv2d(dim, out, 2, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def __init__(self) -> None:
        super().__init__()
        block, down = self.Block, self.Down
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.stages = nn.Sequential(
            nn.Sequential(block(8), block(8)),
            nn.Sequential(down(8, 16), block(16)),
            nn.Sequential(down(16, 32), block(32)),
        )
        self.head = nn.Linear(32, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def test_a_channels_last_convnext_gets_its_stages_as_nhwc_maps() -> None:
    from captum_shallow.models import layer_preset

    torch.manual_seed(0)
    model = _ChannelsLastConvNeXt().eval()
    preset = layer_preset(model, 64)
    # Each stage's output; the downsamplers belong to the next stage.
    assert preset.layers == ("stages.0", "stages.1", "stages.2")
    assert (preset.layouts, preset.strides) == (("NHWC",) * 3, (4, 8, 16))
    assert (preset.channels, preset.map_sizes) == ((8, 16, 32), ((16, 16), (8, 8), (4, 4)))
    inputs = torch.randn(2, 3, 64, 64)
    _, maps = ShallowCAM.from_model(model, 64).attribute(
        inputs, target=[0, 3], return_layer_maps=True
    )
    for layer, layer_map in zip(model.stages, maps, strict=True):
        activation, gradient = _manual_maps(model, layer, inputs, [0, 3])
        expected = (gradient.clamp(min=0) * activation).sum(1, keepdim=True).clamp(min=0)
        assert float(expected.max()) > 0
        torch.testing.assert_close(layer_map, expected, rtol=1e-5, atol=1e-7)
