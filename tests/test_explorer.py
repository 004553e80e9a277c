"""The HTML explorer without a browser: what the page embeds, its size, that it
references nothing outside itself, and ``explain --html`` end to end.

The page's behaviour in a real browser is tested in test_explorer_browser.py.
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from captum_shallow import GradientTruncation, ShallowCAM, fuse_maps, task_defaults
from captum_shallow.attribution._fusion import _FUSIONS
from captum_shallow.cli import main
from captum_shallow.datasets import sample_photo
from captum_shallow.io import preprocess, read_image
from captum_shallow.models import load_model
from captum_shallow.visualization import Explorer, explain_images, explore
from captum_shallow.visualization._explorer import (
    EXPLORER_FUSIONS,
    PHOTO_PIXELS,
    PHOTO_SIDE,
    ExplainedImage,
    explorer_for,
    toggle_meaning,
)

#: The issue's budget: at most 2 MB of page per image at the defaults.
BYTES_PER_IMAGE = 2_000_000
#: The former localisation default's truncations (gates="layers").
_SOFT_MEDIAN = GradientTruncation("soft", quantile=0.5)
_SOFT_90 = GradientTruncation("soft", quantile=0.9)


def page_data(page: str) -> dict[str, Any]:
    """The JSON object a page (or fragment) embeds."""
    match = re.search(r'<script type="application/json" class="csx-data">(.*?)</script>', page)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def decode_map(encoded: str, height: int, width: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(encoded), dtype="<u2")
    return values.reshape(height, width).astype(np.float64) / 65535


class _References(html.parser.HTMLParser):
    """Every URL-valued attribute and every CSS url() of a page."""

    ATTRIBUTES = ("src", "href", "srcset", "action", "poster", "data", "xlink:href", "formaction")

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.tags.append((tag, named))
        self.urls += [v for k, v in named.items() if k in self.ATTRIBUTES and v is not None]
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]*)", named.get("style") or "")

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]*)", data)
        self.urls += re.findall(r"@import\s+['\"]([^'\"]*)", data)


def test_the_page_references_no_http_resource(small_explorer: Explorer) -> None:
    page = small_explorer.to_html()
    parser = _References()
    parser.feed(page)
    assert parser.urls, "the page has its photos and icon as data: URIs"
    assert all(url.startswith(("data:", "#")) for url in parser.urls), parser.urls
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.IGNORECASE)
    tags = parser.tags
    assert not [t for t, a in tags if t == "script" and "src" in a]
    assert not [t for t, a in tags if t == "link" and a.get("rel") != "icon"]
    for call in ("fetch(", "XMLHttpRequest", "import(", "WebSocket", "EventSource"):
        assert call not in page


def test_the_page_embeds_each_images_top_classes_and_their_maps(
    small_explorer: Explorer, explorer_net: torch.nn.Module
) -> None:
    data = page_data(small_explorer.to_html())
    assert [layer["name"] for layer in data["layers"]] == ["stage1", "stage2", "stage3"]
    assert [(layer["height"], layer["width"]) for layer in data["layers"]] == [
        (30, 30),
        (15, 15),
        (8, 8),
    ]
    # The model and the input size, then the explainer's own settings().
    assert data["settings"] == [
        ["model", "net"],
        ["input", "60×60 px"],
        ["layers", "stage1, stage2, stage3"],
        ["method", "LayerCAM"],
        ["truncation", "none"],
        ["fusion", "product"],
        ["gamma", "none"],
        ["class_gate", "none"],
        ["propagation", "none"],
        ["gates", "none"],
        ["task", "localisation"],
    ]
    # The threshold starts at the task's (localisation), as pseudo-masks --task uses it.
    assert (data["fusion"], data["gamma"], data["threshold"]) == ("product", None, 0.25)
    assert data["toggling"] == toggle_meaning(
        ShallowCAM(explorer_net, [explorer_net.stage1], propagation=None, class_gate=False)
    )
    assert "the same as ShallowCAM without that layer" in data["toggling"]
    assert data["colormap"]["name"] == "inferno"
    assert len(base64.b64decode(data["colormap"]["lut"])) == 768
    inputs = torch.stack([preprocess(sample_photo(n), 60) for n in ("chelsea", "coffee")])
    with torch.no_grad():
        probabilities = explorer_net(inputs).softmax(dim=1)
    cam = ShallowCAM(
        explorer_net,
        [explorer_net.stage1, explorer_net.stage2, explorer_net.stage3],
        fusion="product",
        truncation=None,
        propagation=None,
    )
    for i, image in enumerate(data["images"]):
        top = probabilities[i].topk(5)
        assert [c["index"] for c in image["classes"]] == top.indices.tolist()
        np.testing.assert_allclose(
            [c["probability"] for c in image["classes"]], top.values.numpy(), atol=1e-6
        )
        assert image["initial"] == 0
        assert image["photo"].startswith("data:image/jpeg;base64,")
        assert (image["width"], image["height"]) == ((451, 300) if i == 0 else (600, 400))
        for cls in image["classes"]:
            _, maps = cam.attribute(inputs[i : i + 1], target=cls["index"], return_layer_maps=True)
            for encoded, layer, expected in zip(cls["maps"], data["layers"], maps, strict=True):
                stored = decode_map(encoded, layer["height"], layer["width"])
                reference = expected[0, 0].detach().double().clamp(min=0).numpy()
                # 16 bits of the map over its maximum: error at most 1/131070 of the peak
                # (8e-6), plus float error between a batch of two and a batch of one.
                np.testing.assert_allclose(stored, reference / reference.max(), atol=3e-5)
                assert stored.max() == 1.0


def test_a_requested_target_outside_the_top_classes_is_added_and_shown_first(
    explorer_net: torch.nn.Module,
) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2])
    photo = sample_photo("coffee")
    inputs = preprocess(photo, 60).unsqueeze(0)
    with torch.no_grad():
        order = net(inputs)[0].argsort(descending=True).tolist()
    last, second = order[-1], order[1]
    (outside,) = explain_images(cam, inputs, [photo], ["coffee"], top=3, target=last)
    assert outside.classes == (*order[:3], last)
    assert outside.initial == 3
    (inside,) = explain_images(cam, inputs, [photo], ["coffee"], top=3, target=second)
    assert (inside.classes, inside.initial) == (tuple(order[:3]), 1)
    _, expected = cam.attribute(inputs, target=last, return_layer_maps=True)
    torch.testing.assert_close(outside.layer_maps[3][1], expected[1][0, 0])


def test_settings_show_what_the_explainer_has(explorer_net: torch.nn.Module) -> None:
    net = explorer_net
    from captum_shallow import LayerGradCam

    soft = GradientTruncation("soft", quantile=0.9)
    cam = ShallowCAM(
        net,
        [net.stage1, net.stage3],
        method=LayerGradCam,
        truncation=[soft, None],
        fusion="product",
        gamma=2.0,
        propagation=None,
        class_gate=False,
    )
    assert cam.settings() == {
        "layers": "stage1, stage3",
        "method": "LayerGradCam",
        "truncation": "stage1: soft:quantile=0.9; stage3: none",
        "fusion": "product",
        "gamma": "2",
        "class_gate": "none",
        "propagation": "none",
        "gates": "none",
        "task": "localisation",
    }
    assert repr(cam) == (
        "ShallowCAM(layers='stage1, stage3', method='LayerGradCam', "
        "truncation='stage1: soft:quantile=0.9; stage3: none', fusion='product', gamma='2', "
        "class_gate='none', propagation='none', gates='none', task='localisation')"
    )
    cam = ShallowCAM(
        net,
        [net.stage1, net.stage3],
        propagation="positive",
        gates=[net.stage3],
        task="segmentation",
    )
    settings = cam.settings()
    assert (settings["propagation"], settings["gates"], settings["task"]) == (
        "positive",
        "stage3",
        "segmentation",
    )


def test_the_page_can_recompute_every_fusion_fuse_maps_offers() -> None:
    # The page's JavaScript must implement each fusion the Python side has.
    assert set(_FUSIONS) <= set(EXPLORER_FUSIONS)
    script = (Path(__file__).parents[1] / "captum_shallow/visualization/explorer.js").read_text()
    assert f"var FUSIONS = {json.dumps(list(EXPLORER_FUSIONS))};" in script


def test_a_large_noisy_photo_is_downscaled_and_the_page_stays_small(
    explorer_net: torch.nn.Module, tmp_path: Path
) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3])
    noise = torch.randint(0, 256, (3, 2000, 3000), dtype=torch.uint8)  # the worst case for JPEG
    path = explore(cam, noise, input_size=60).save(tmp_path / "page.html")
    image = page_data(path.read_text())["images"][0]
    # At most PHOTO_PIXELS**2 pixels: 784 * 523 = 410_032, 640**2 = 409_600 (rounding).
    assert (image["width"], image["height"]) == (784, 523)
    with Image.open(_data_uri_bytes(image["photo"])) as photo:
        assert (photo.format, photo.size) == ("JPEG", (784, 523))
    assert path.stat().st_size < BYTES_PER_IMAGE


def test_a_very_wide_or_tall_photo_keeps_its_pixels_along_its_long_side(
    explorer_net: torch.nn.Module,
) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2])
    wide = torch.randint(0, 256, (3, 150, 1800), dtype=torch.uint8)
    small = torch.randint(0, 256, (1, 40, 900), dtype=torch.uint8)  # grey, fits as it is
    data = explore(cam, [wide, wide.transpose(1, 2), small], input_size=60).data()
    sizes = [(image["width"], image["height"]) for image in data["images"]]
    assert sizes == [(PHOTO_SIDE, 107), (107, PHOTO_SIDE), (900, 40)]
    assert PHOTO_SIDE * 107 < PHOTO_PIXELS**2


def test_explore_starts_the_threshold_at_the_tasks_and_says_what_toggling_means(
    explorer_net: torch.nn.Module,
) -> None:
    net = explorer_net
    photo = sample_photo("coffee")
    layers = [net.stage1, net.stage2, net.stage3]
    for task, threshold in (("localisation", 0.25), ("segmentation", 0.25)):
        cam = ShallowCAM(net, layers, task=task)
        explorer = explore(cam, photo, input_size=60, top=1)
        assert explorer.threshold == threshold == task_defaults(task).threshold
        assert explorer.toggling == toggle_meaning(cam)
    explorer = explore(ShallowCAM(net, layers), photo, input_size=60, top=1, threshold=0.2)
    assert explorer.threshold == 0.2


@pytest.mark.parametrize(
    ("options", "same"),
    [
        ({}, False),  # the localisation default: gates="relu-below"
        ({"task": "segmentation"}, False),  # the same: gates="relu-below"
        ({"truncation": _SOFT_MEDIAN, "propagation": _SOFT_90, "gates": "layers"}, False),
        ({"propagation": "positive", "gates": "relu"}, True),
        ({"propagation": None}, True),
    ],
)
def test_toggling_a_layer_off_equals_shallowcam_without_it_only_where_the_page_says_so(
    explorer_net: torch.nn.Module, options: dict[str, Any], same: bool
) -> None:
    net = explorer_net
    layers = [net.stage1, net.stage2, net.stage3]
    inputs = preprocess(sample_photo("chelsea"), 60).unsqueeze(0)
    # Without the class gate: this is about the propagation (for the gate, unticking adds
    # a sentence: test_the_gate_can_start_off_and_explorer_for_follows_the_cam).
    cam = ShallowCAM(net, layers, class_gate=False, **options)
    _, maps = cam.attribute(inputs, target=2, return_layer_maps=True)
    # Untick the deepest layer: the page fuses the first two maps as computed.
    refused = fuse_maps(maps[:2], fusion=cam.fusion, gamma=cam.gamma)
    rerun = ShallowCAM(net, layers[:2], class_gate=False, **options).attribute(inputs, target=2)
    difference = float((refused - rerun).abs().max())
    meaning = toggle_meaning(cam)
    if same:
        assert difference < 1e-6
        assert "the same as ShallowCAM without that layer" in meaning
    else:
        assert difference > 0.01
        assert "ShallowCAM without that layer differs" in meaning
        assert f"gates={cam.gates!r}" in meaning


def _data_uri_bytes(uri: str) -> io.BytesIO:
    return io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))


def test_every_notebook_display_gets_its_own_ids(small_explorer: Explorer) -> None:
    first, second = small_explorer._repr_html_(), small_explorer._repr_html_()
    ids = [re.search(r'<div class="csx" id="(csx-[0-9a-f]{12})"', f) for f in (first, second)]
    assert ids[0] is not None
    assert ids[1] is not None
    assert ids[0].group(1) != ids[1].group(1)
    assert f'mount("{ids[0].group(1)}")' in first
    assert page_data(first) == page_data(second)


def test_text_in_the_data_cannot_close_the_script(explorer_net: torch.nn.Module) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1])
    name = "</script><script>alert(1)</script>"
    fragment = explore(cam, sample_photo("coffee"), names=[name], input_size=60).fragment("x1")
    assert fragment.count("</script>") == 2  # the data's and the script's own
    assert page_data(fragment)["images"][0]["name"] == name


def test_bad_arguments_are_clear_errors(
    small_explorer: Explorer, explorer_net: torch.nn.Module
) -> None:
    images = small_explorer.images
    with pytest.raises(TypeError, match="needs a ShallowCAM"):
        explore(object(), sample_photo("coffee"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fusion must be one of"):
        Explorer(images, ["a", "b", "c"], {}, fusion="median")
    with pytest.raises(ValueError, match=r"opacity must be in \[0, 1\]"):
        Explorer(images, ["a", "b", "c"], {}, opacity=1.5)
    with pytest.raises(ValueError, match="got 3 layer maps for 2 layer names"):
        Explorer(images, ["a", "b"], {})
    with pytest.raises(ValueError, match="at least one image"):
        Explorer([], ["a"], {})
    with pytest.raises(ValueError, match="got 1 names for 2 photos"):
        explore(
            ShallowCAM(explorer_net, [explorer_net.stage1]),
            [sample_photo("coffee")] * 2,
            names=["one"],
        )
    with pytest.raises(ValueError, match="plain HTML id"):
        small_explorer.fragment('x" onload="alert(1)')


@pytest.mark.slow
def test_explain_html_writes_one_page_of_every_image(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    from captum_shallow.models import build_model

    torch.save(build_model("resnet18", num_classes=6).state_dict(), weights)
    paths = []
    for name in ("coffee", "chelsea"):
        paths.append(folder / f"{name}.png")
        Image.fromarray(sample_photo(name).permute(1, 2, 0).numpy()).save(paths[-1])
    out = tmp_path / "out"
    code = main(
        [
            "explain", *map(str, paths), "--arch", "resnet18", "--weights", str(weights),
            "--input-size", "64", "--layers", "layer1,layer2", "--target", "5",
            "--batch-size", "1", "--html", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea.cam.png",
        "coffee.cam.png",
        "report.html",
    ]
    page = (out / "report.html").read_text()
    data = page_data(page)
    assert [image["name"] for image in data["images"]] == ["coffee.png", "chelsea.png"]
    assert dict(data["settings"])["model"] == "resnet18"
    assert dict(data["settings"])["layers"] == "layer1, layer2"
    for image in data["images"]:
        indices = [c["index"] for c in image["classes"]]
        assert image["classes"][image["initial"]]["index"] == 5
        assert len(indices) == (5 if 5 in indices[:5] else 6)
    assert (out / "report.html").stat().st_size < 2 * BYTES_PER_IMAGE


def test_an_explorer_built_by_hand_starts_at_the_localisation_tasks_defaults(
    small_explorer: Explorer,
) -> None:
    explorer = Explorer(small_explorer.images, ["a", "b", "c"], {})
    assert (explorer.fusion, explorer.threshold) == ("mean", 0.25)
    defaults = task_defaults("localisation")
    assert (explorer.fusion, explorer.threshold) == (defaults.fusion, defaults.threshold)


def test_explain_without_html_writes_no_page(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    from captum_shallow.models import build_model

    torch.save(build_model("resnet18", num_classes=3).state_dict(), weights)
    photo = tmp_path / "coffee.png"
    Image.fromarray(sample_photo("coffee").permute(1, 2, 0).numpy()).save(photo)
    argv = [str(photo), "--arch", "resnet18", "--weights", str(weights), "--input-size", "32"]
    assert main(["explain", *argv, "--layers", "layer1", "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["coffee.cam.png"]


@pytest.mark.slow
def test_explain_html_on_the_real_model_fits_the_size_budget(tmp_path: Path) -> None:
    # A colour photo, a grey one (an L-mode file) and a 12:1 strip; 5 classes each.
    paths = [tmp_path / "chelsea.png", tmp_path / "camera.png", tmp_path / "strip.png"]
    Image.fromarray(sample_photo("chelsea").permute(1, 2, 0).numpy()).save(paths[0])
    Image.fromarray(sample_photo("camera")[0].numpy(), mode="L").save(paths[1])
    coffee = Image.fromarray(sample_photo("coffee").permute(1, 2, 0).numpy())
    coffee.crop((0, 150, 600, 250)).resize((1800, 150)).save(paths[2])
    for count in (1, 3):
        out = tmp_path / f"out{count}"
        assert main(["explain", *map(str, paths[:count]), "--html", "--out", str(out)]) == 0
        page = out / "report.html"
        # Measured: 0.14 MB for chelsea alone, 0.35 MB for the three (0.12 MB per image).
        assert page.stat().st_size <= count * BYTES_PER_IMAGE / 4
    data = page_data(page.read_text())
    assert [len(image["classes"]) for image in data["images"]] == [5, 5, 5]
    sizes = [(image["width"], image["height"]) for image in data["images"]]
    assert sizes == [(451, 300), (512, 512), (PHOTO_SIDE, 107)]
    assert [layer["name"] for layer in data["layers"]] == [
        "_blocks.2",
        "_blocks.4",
        "_blocks.10",
        "_blocks.15",
    ]
    model = load_model("efficientnet-lite0")
    cam = ShallowCAM.from_model(model)
    chelsea = data["images"][0]
    assert [c["index"] for c in chelsea["classes"]] == [285, 281, 282, 287, 728]
    inputs = preprocess(read_image(paths[0]), 224).unsqueeze(0)
    _, maps = cam.attribute(inputs, target=281, return_layer_maps=True)
    for encoded, layer, expected in zip(
        chelsea["classes"][1]["maps"], data["layers"], maps, strict=True
    ):
        stored = decode_map(encoded, layer["height"], layer["width"])
        reference = expected[0, 0].detach().double().clamp(min=0).numpy()
        np.testing.assert_allclose(stored, reference / reference.max(), atol=1e-5)


# --- the class gate (ShallowCAM(..., class_gate=True)) -----------------------------


@pytest.fixture(scope="module")
def gated_explorer(gating_cam: ShallowCAM) -> Explorer:
    photos = [sample_photo("chelsea"), sample_photo("coffee")]
    return explore(gating_cam, photos, names=["chelsea", "coffee"], input_size=60, top=3)


@pytest.mark.parametrize(
    "options",
    [
        {},  # localisation: gates="relu-below"
        {"task": "segmentation"},  # the same
        {"truncation": _SOFT_MEDIAN, "propagation": _SOFT_90, "gates": "layers"},
        {"propagation": None, "fusion": "product", "gamma": 2.0},
    ],
)
def test_pass_maps_give_the_gate_shallowcam_fuses_with(
    explorer_net: torch.nn.Module, options: dict[str, Any]
) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3], class_gate=True, **options)
    inputs = torch.stack([preprocess(sample_photo(n), 60) for n in ("chelsea", "coffee")])
    fused, maps = cam.attribute(inputs, target=[1, 4], return_layer_maps=True)
    pass_maps, gate = cam.pass_maps(inputs, target=[1, 4])
    for own, returned in zip(pass_maps, maps, strict=True):
        torch.testing.assert_close(own, returned, rtol=0, atol=0)
    assert gate.shape == (2, 1, 8, 8)
    assert float(gate.min()) >= 0  # Grad-CAM with its ReLU
    refused = fuse_maps(maps, fusion=cam.fusion, gamma=cam.gamma, gate=gate)
    torch.testing.assert_close(refused, fused, rtol=0, atol=1e-6)
    ungated = fuse_maps(maps, fusion=cam.fusion, gamma=cam.gamma)
    assert float((ungated - fused).abs().max()) > 0.05  # the gate changes the map


def test_pass_maps_of_a_multiscale_cam_are_those_of_its_first_pass(
    explorer_net: torch.nn.Module,
) -> None:
    # The layer maps of a multi-scale cam are its first scale's unmirrored pass: the
    # gate is that pass's too. With one scale of 0.5 the fused map is that pass's.
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3], class_gate=True, scales=(0.5,))
    inputs = preprocess(sample_photo("coffee"), 60).unsqueeze(0)
    fused, maps = cam.attribute(inputs, target=2, return_layer_maps=True)
    pass_maps, gate = cam.pass_maps(inputs, target=2)
    for own, returned in zip(pass_maps, maps, strict=True):
        torch.testing.assert_close(own, returned, rtol=0, atol=0)
    assert tuple(gate.shape[-2:]) == tuple(maps[-1].shape[-2:]) == (4, 4)
    refused = fuse_maps(maps, fusion=cam.fusion, gamma=cam.gamma, gate=gate)
    torch.testing.assert_close(refused, fused, rtol=0, atol=1e-6)
    flipping = ShallowCAM(
        net, [net.stage1, net.stage2, net.stage3], class_gate=True, scales=(0.5, 1.0), flips=True
    )
    torch.testing.assert_close(flipping.pass_maps(inputs, target=2)[1], gate, rtol=0, atol=0)


def test_an_explorer_of_a_gating_shallowcam_carries_its_gate_and_starts_gated(
    gated_explorer: Explorer, gating_cam: ShallowCAM
) -> None:
    explorer = gated_explorer
    assert explorer.class_gate is True
    assert explorer.gate_shape == (8, 8)
    assert repr(explorer) == (
        "Explorer(2 images, layers=['stage1', 'stage2', 'stage3'], fusion='mean', class_gate=True)"
    )
    data = page_data(explorer.to_html())
    assert data["version"] == 3
    assert data["gate"] == {"layer": "stage3", "height": 8, "width": 8}
    assert data["classGate"] is True
    assert dict(data["settings"])["class_gate"] == "Grad-CAM at stage3"
    assert "The gate stays Grad-CAM at stage3 when stage3 is unticked" in data["toggling"]
    inputs = torch.stack([preprocess(sample_photo(n), 60) for n in ("chelsea", "coffee")])
    zero_gates = 0
    for i, (image, stored) in enumerate(zip(explorer.images, data["images"], strict=True)):
        assert image.gate_maps is not None
        assert len(image.gate_maps) == len(image.classes) == 3
        for pos, (index, cls) in enumerate(zip(image.classes, stored["classes"], strict=True)):
            # The raw gate, as pass_maps gives it, stored as the layer maps are.
            expected = gating_cam.pass_maps(inputs[i : i + 1], target=index)[1][0, 0].detach()
            torch.testing.assert_close(image.gate_maps[pos], expected, rtol=0, atol=2e-5)
            gate = decode_map(cls["gate"], 8, 8)
            reference = expected.double().numpy()
            peak = reference.max()
            # A class with no positive Grad-CAM at stage3 (class 6 here) stores zeros.
            np.testing.assert_allclose(gate, reference / peak if peak > 0 else 0, atol=3e-5)
            assert gate.max() == (1.0 if peak > 0 else 0.0)
            zero_gates += peak == 0
            # The page's formula on the stored maps is the package's fused map.
            maps = [
                torch.from_numpy(decode_map(m, layer["height"], layer["width"]))[None, None]
                for m, layer in zip(cls["maps"], data["layers"], strict=True)
            ]
            page = fuse_maps(maps, fusion="mean", gate=torch.from_numpy(gate)[None, None])
            package = gating_cam.attribute(inputs[i : i + 1], target=index).detach()
            assert float((page - package.double()).abs().max()) < 1e-3
    assert zero_gates == 2  # the edge case is covered: a gated map of zeros


def test_an_explorer_without_a_gate_embeds_none(small_explorer: Explorer) -> None:
    assert small_explorer.class_gate is False
    assert small_explorer.gate_shape is None
    assert all(image.gate_maps is None for image in small_explorer.images)
    data = page_data(small_explorer.to_html())
    assert (data["gate"], data["classGate"]) == (None, False)
    assert all("gate" not in cls for image in data["images"] for cls in image["classes"])
    assert dict(data["settings"])["class_gate"] == "none"
    assert "class_gate" not in repr(small_explorer)


def test_the_gate_can_start_off_and_explorer_for_follows_the_cam(
    gated_explorer: Explorer, gating_cam: ShallowCAM, explorer_net: torch.nn.Module
) -> None:
    images = gated_explorer.images
    off = Explorer(images, ["a", "b", "c"], {}, class_gate=False)
    data = off.data()
    assert (off.class_gate, data["classGate"]) == (False, False)
    assert data["gate"] == {"layer": "c", "height": 8, "width": 8}  # the tick box is there
    assert all("gate" in cls for image in data["images"] for cls in image["classes"])
    assert Explorer(images, ["a", "b", "c"], {}).class_gate is True  # gated where it can be
    assert explorer_for(gating_cam, images).class_gate is True
    assert explorer_for(gating_cam, images, class_gate=False).class_gate is False
    net = explorer_net
    plain = ShallowCAM(net, [net.stage1, net.stage2, net.stage3], class_gate=False)
    assert toggle_meaning(plain) + (
        " The gate stays Grad-CAM at stage3 when stage3 is unticked; ShallowCAM without it "
        "would gate by the deepest layer left."
    ) == toggle_meaning(gating_cam)
    inputs = preprocess(sample_photo("coffee"), 60).unsqueeze(0)
    ungated = explain_images(plain, inputs, [sample_photo("coffee")], ["coffee"], top=2)
    assert ungated[0].gate_maps is None
    with pytest.raises(ValueError, match=r"class_gate=True needs gate maps"):
        explorer_for(gating_cam, ungated)


def _with_gates(image: ExplainedImage, gates: Any) -> ExplainedImage:
    return dataclasses.replace(image, gate_maps=gates)


def test_bad_gate_maps_are_clear_errors(gated_explorer: Explorer) -> None:
    first, second = gated_explorer.images
    assert first.gate_maps is not None
    layers = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"class_gate=True needs gate maps"):
        Explorer([_with_gates(first, None)], layers, {}, class_gate=True)
    with pytest.raises(
        ValueError, match="image 'coffee' has no gate maps and others have: give every image"
    ):
        Explorer([first, _with_gates(second, None)], layers, {})
    with pytest.raises(ValueError, match="image 'chelsea' has 2 gate maps for 3 classes"):
        Explorer([_with_gates(first, first.gate_maps[:2])], layers, {})
    wrong = (first.gate_maps[0], torch.zeros(4, 4), first.gate_maps[2])
    with pytest.raises(
        ValueError, match=r"a gate map of shape \(8, 8\), got \(4, 4\) \(image 'chelsea'\)"
    ):
        Explorer([_with_gates(first, wrong)], layers, {})
    flat = (torch.zeros(1, 8, 8), *first.gate_maps[1:])
    with pytest.raises(TypeError, match=r"a gate map must be a \(h, w\) Tensor, got \(1, 8, 8\)"):
        Explorer([_with_gates(first, flat)], layers, {})
    with pytest.raises(TypeError, match=r"a gate map must be a \(h, w\) Tensor, got list"):
        Explorer([_with_gates(first, ([0.0],) * 3)], layers, {})
    nan = (torch.full((8, 8), float("nan")), *first.gate_maps[1:])
    with pytest.raises(ValueError, match="a gate map of image 'chelsea' contains NaN or inf"):
        Explorer([_with_gates(first, nan)], layers, {})
    with pytest.raises(TypeError, match="class_gate must be a bool or None, got 'yes'"):
        Explorer([first], layers, {}, class_gate="yes")  # type: ignore[arg-type]
