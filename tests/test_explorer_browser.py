"""The HTML explorer in a real browser: headless Chromium driven by Selenium.

The page is loaded from ``file://`` with the network off; every slider is moved,
the class switched and layers toggled, and what the canvases hold is read back
and checked against the Python side (``fuse_maps``, the colour map, IRN's rule).
Needs the ``browser`` extra (Selenium) and Debian's ``chromium`` and
``chromium-driver``, which ``.ci/run`` installs; skipped, saying so, without them.
"""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from captum_shallow import ShallowCAM, fuse_maps
from captum_shallow.attribution._fusion import _FUSIONS
from captum_shallow.datasets import sample_photo
from captum_shallow.io import preprocess
from captum_shallow.segmentation import irn_normalise, pseudo_masks
from captum_shallow.visualization import Explorer, display_scaling, explore, map_to_numpy
from captum_shallow.visualization._explorer import explorer_for

webdriver = pytest.importorskip(
    "selenium.webdriver",
    reason="browser tests need the `browser` extra: pip install 'captum-shallow[browser]'",
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        BROWSER is None or DRIVER is None,
        reason="browser tests need Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver; .ci/run installs them)",
    ),
]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    # No name resolves: the page must not need the network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
)
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    profile = tempfile.mkdtemp(prefix="captum-shallow-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(small_explorer: Explorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_explorer.save(tmp_path_factory.mktemp("page") / "report.html")


class Page:
    """One loaded explorer page and what a test reads from it."""

    def __init__(self, driver: Any, root: str = "csx-report") -> None:
        self.driver = driver
        self.root = root
        WebDriverWait(driver, 20).until(
            lambda d: (
                d.execute_script(
                    "var r = document.getElementById(arguments[0]); return r && r.dataset.ready;",
                    root,
                )
                in ("true", "error")
            )
        )
        assert self.js("return root.dataset.ready") == "true"

    def js(self, script: str, *args: Any) -> Any:
        prefix = (
            f"var root = document.getElementById('{self.root}');"
            f"var app = window.captumShallowExplorer.instances['{self.root}'];"
        )
        return self.driver.execute_script(prefix + script, *args)

    def find(self, image: int, css: str) -> Any:
        section = self.driver.find_element(By.ID, f"{self.root}-image-{image}")
        return section.find_element(By.CSS_SELECTOR, css)

    def state(self, image: int = 0) -> dict[str, Any]:
        state: dict[str, Any] = self.js("return app.state(arguments[0])", image)
        return state

    def fused(self, image: int = 0) -> np.ndarray | None:
        fused = self.js("return app.fusedMap(arguments[0])", image)
        if fused is None:
            return None
        return np.array(fused["values"]).reshape(fused["height"], fused["width"])

    def pixels(self, image: int, css: str) -> np.ndarray:
        url = self.driver.execute_script(
            "return arguments[0].toDataURL('image/png')", self.find(image, css)
        )
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as png:
            return np.asarray(png.convert("RGB")).astype(np.int64)

    def slide(self, image: int, css: str, *keys: str) -> None:
        self.find(image, css).send_keys(*keys)

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def loaded(driver: Any, page: Path) -> Page:
    driver.get(page.as_uri())
    return Page(driver)


def python_fused(
    explorer: Explorer,
    image: int,
    pos: int,
    layers: list[int],
    fusion: str,
    gated: bool = False,
) -> Any:
    """``fuse_maps`` on the maps the page embeds (16-bit, over their maximum): the same
    formula on the same numbers. The geometric mean's root amplifies the quantisation
    near zero (up to 2e-3 against the float maps), which is not a formula difference.
    ``gated``: with the embedded gate map as ``fuse_maps``' ``gate``."""
    maps = [_embedded(explorer.images[image].layer_maps[pos][k])[None, None] for k in layers]
    gate = None
    if gated:
        gate_maps = explorer.images[image].gate_maps
        assert gate_maps is not None
        gate = _embedded(gate_maps[pos])[None, None]
    fused = fuse_maps(maps, fusion=fusion, gamma=explorer.gamma, gate=gate)
    return fused[0, 0].double().detach().numpy()


def _embedded(layer_map: torch.Tensor) -> torch.Tensor:
    values = layer_map.detach().double().clamp(min=0)
    peak = float(values.max())
    return (values / peak * 65535).round() / 65535 if peak > 0 else values


def upsampled(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map as the page draws it: bilinear to the photo, clamped, over its maximum."""
    drawn = map_to_numpy(torch.from_numpy(values), size)[..., 0].clip(0, None)
    return np.asarray(drawn / drawn.max(), dtype=np.float64)


def lut(explorer: Explorer) -> np.ndarray:
    table = base64.b64decode(explorer.data()["colormap"]["lut"])
    return np.frombuffer(table, dtype=np.uint8).reshape(256, 3).astype(np.int64)


def colour_indices(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The colour map index of each pixel (-1 where a pixel is not a colour map entry)."""
    codes = {tuple(rgb): i for i, rgb in enumerate(table.tolist())}
    assert len(codes) == 256
    return np.array([codes.get(tuple(p), -1) for p in pixels.reshape(-1, 3).tolist()]).reshape(
        pixels.shape[:2]
    )


def test_the_page_loads_offline_draws_and_logs_no_error(loaded: Page, tmp_path: Path) -> None:
    resources = loaded.js(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert all(name.startswith(("data:", "file:")) for name in resources), resources
    shot = tmp_path / "page.png"
    assert loaded.driver.save_screenshot(str(shot))
    with Image.open(shot) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 30
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5000  # photos and maps, not a blank
    photo = loaded.pixels(0, "canvas.csx-photo")
    assert photo.shape == (300, 451, 3)
    assert photo.std() > 30
    names = loaded.driver.find_elements(By.CSS_SELECTOR, ".csx-name")
    assert [n.text for n in names] == ["chelsea", "coffee"]
    settings = loaded.driver.find_element(By.CSS_SELECTOR, ".csx-settings").text
    for text in ("model", "net", "method", "LayerCAM", "truncation", "propagation", "fusion"):
        assert text in settings
    assert loaded.errors() == []


def test_the_opacity_slider_blends_the_grey_photo_with_the_colour_map(
    loaded: Page, small_explorer: Explorer
) -> None:
    table = lut(small_explorer)
    assert loaded.state()["opacity"] == pytest.approx(0.6)
    blended = loaded.pixels(0, "canvas.csx-overlay")
    loaded.slide(0, "input.csx-opacity", Keys.HOME)
    assert loaded.state()["opacity"] == 0
    grey = loaded.pixels(0, "canvas.csx-overlay")
    assert (grey[..., 0] == grey[..., 1]).all()
    assert (grey[..., 1] == grey[..., 2]).all()
    loaded.slide(0, "input.csx-opacity", Keys.END)
    assert loaded.state()["opacity"] == 1
    coloured = loaded.pixels(0, "canvas.csx-overlay")
    # Opacity 1: the fused map's colours, value^(1/3) for a product of 3 layers.
    fused = python_fused(small_explorer, 0, 0, [0, 1, 2], "product")
    drawn = upsampled(fused, (300, 451)) ** display_scaling("product", 3).exponent
    expected = np.minimum(255, np.floor(drawn * 256)).astype(np.int64)
    indices = colour_indices(coloured, table)
    assert (indices >= 0).all()
    assert np.abs(indices - expected).max() <= 1
    assert (indices != expected).mean() < 0.01
    peak = np.unravel_index(drawn.argmax(), drawn.shape)
    assert coloured[peak].tolist() == table[255].tolist()
    np.testing.assert_allclose(blended, 0.4 * grey + 0.6 * coloured, atol=1.01)
    loaded.slide(0, "input.csx-opacity", Keys.ARROW_LEFT)
    assert loaded.state()["opacity"] == pytest.approx(0.95)
    assert loaded.errors() == []


def test_the_threshold_slider_shows_irns_pseudo_mask(
    loaded: Page, small_explorer: Explorer
) -> None:
    fused = upsampled(python_fused(small_explorer, 0, 0, [0, 1, 2], "product"), (300, 451))
    assert loaded.state()["threshold"] == pytest.approx(0.25)  # the localisation task's
    shares = []
    for keys, threshold in (
        ((Keys.HOME,), 0.0),
        ((Keys.ARROW_RIGHT,) * 5, 0.05),
        ((Keys.ARROW_RIGHT,) * 25, 0.3),
        ((Keys.END,), 1.0),
    ):
        loaded.slide(0, "input.csx-threshold", *keys)
        state = loaded.state()
        assert state["threshold"] == pytest.approx(threshold)
        # IRN: background where the normalised map <= t.
        assert state["foreground"] == pytest.approx((fused > threshold).mean(), abs=2e-3)
        shares.append(state["foreground"])
        assert f"t = {threshold:.2f}" in loaded.find(0, ".csx-mask + figcaption").text
    assert shares == sorted(shares, reverse=True)
    assert shares[0] > 0.9
    assert shares[-1] == 0
    mask = loaded.pixels(0, "canvas.csx-mask")
    photo = loaded.pixels(0, "canvas.csx-photo")
    # All background at t = 1: the photo dimmed to 30 % grey.
    np.testing.assert_allclose(mask[..., 0], np.round(0.3 * photo.mean(axis=2)), atol=1.01)
    loaded.slide(0, "input.csx-threshold", Keys.HOME)
    mask = loaded.pixels(0, "canvas.csx-mask")
    inside = fused > 0
    inside[[0, -1], :] = inside[:, [0, -1]] = False  # away from the border
    assert (mask[inside & (fused > 0.01)] == photo[inside & (fused > 0.01)]).all(
        axis=1
    ).mean() > 0.9
    assert loaded.errors() == []


def test_switching_class_redraws_that_class_fused_in_the_page(
    loaded: Page, small_explorer: Explorer
) -> None:
    before = loaded.pixels(0, "canvas.csx-overlay")
    buttons = loaded.driver.find_elements(By.CSS_SELECTOR, "#csx-report-image-0 .csx-class")
    assert len(buttons) == 5
    assert [b.get_attribute("aria-pressed") for b in buttons] == ["true"] + ["false"] * 4
    buttons[2].click()
    state = loaded.state()
    assert state["classPos"] == 2
    assert state["classIndex"] == small_explorer.images[0].classes[2]
    assert [b.get_attribute("aria-pressed") for b in buttons] == ["false"] * 2 + ["true"] + [
        "false"
    ] * 2
    after = loaded.pixels(0, "canvas.csx-overlay")
    assert np.abs(after - before).max() > 50
    expected = python_fused(small_explorer, 0, 2, [0, 1, 2], "product")
    fused = loaded.fused()
    assert fused is not None
    assert fused.shape == (30, 30)
    assert np.abs(fused - expected).max() < TOLERANCE
    assert loaded.state(1)["classPos"] == 0  # the other image keeps its class
    # No class ticked present by hand: the pseudo-mask follows the class shown.
    assert loaded.state()["present"] == [False, False, True, False, False]
    name = small_explorer.images[0].class_names[2]
    assert f"Pseudo-mask of {name} at t = " in loaded.find(0, ".csx-mask + figcaption").text
    assert loaded.errors() == []


@pytest.mark.parametrize("fusion", _FUSIONS)
def test_the_page_fuses_as_fuse_maps_does(
    loaded: Page, small_explorer: Explorer, fusion: str
) -> None:
    Select(loaded.find(1, "select.csx-fusion")).select_by_value(fusion)
    assert loaded.state(1)["fusion"] == fusion
    for pos in range(5):
        loaded.find(1, f'.csx-class[data-class-pos="{pos}"]').click()
        fused = loaded.fused(1)
        assert fused is not None
        expected = python_fused(small_explorer, 1, pos, [0, 1, 2], fusion)
        assert np.abs(fused - expected).max() < TOLERANCE, (fusion, pos)
    assert fusion in loaded.find(1, ".csx-overlay ~ figcaption").text
    assert loaded.errors() == []


def test_layer_toggles_refuse_the_ticked_layers(loaded: Page, small_explorer: Explorer) -> None:
    toggles = loaded.driver.find_elements(By.CSS_SELECTOR, "#csx-report-image-0 .csx-toggle")
    assert len(toggles) == 3
    before = loaded.pixels(0, "canvas.csx-overlay")
    toggles[0].click()  # drop the 30 x 30 layer: the product of two is fused at 15 x 15
    state = loaded.state()
    assert state["enabled"] == [False, True, True]
    assert state["exponent"] == pytest.approx(0.5)
    fused = loaded.fused()
    assert fused is not None
    assert fused.shape == (15, 15)
    expected = python_fused(small_explorer, 0, 0, [1, 2], "product")
    assert np.abs(fused - expected).max() < TOLERANCE
    assert np.abs(loaded.pixels(0, "canvas.csx-overlay") - before).max() > 50
    thumbs = loaded.driver.find_elements(By.CSS_SELECTOR, "#csx-report-image-0 .csx-thumb")
    assert ["csx-off" in t.get_attribute("class") for t in thumbs] == [False, True, False, False]
    assert "product of 2/3 layers" in loaded.find(0, ".csx-overlay ~ figcaption").text
    for toggle in toggles[1:]:
        toggle.click()
    assert loaded.fused() is None
    grey = loaded.pixels(0, "canvas.csx-overlay")
    assert (grey[..., 0] == grey[..., 2]).all()  # nothing fused: the grey photo alone
    assert loaded.state()["foreground"] == 0
    assert "no layer ticked" in loaded.find(0, ".csx-overlay ~ figcaption").text
    toggles[2].click()
    expected = python_fused(small_explorer, 0, 0, [2], "product")
    fused = loaded.fused()
    assert fused is not None
    assert np.abs(fused - expected).max() < TOLERANCE
    assert loaded.errors() == []


def test_a_layer_view_shows_that_layer_linearly(loaded: Page, small_explorer: Explorer) -> None:
    loaded.find(0, '.csx-thumb[data-view="1"] canvas').click()
    state = loaded.state()
    assert (state["view"], state["exponent"]) == ("1", 1)
    assert "stage2 · 15×15" in loaded.find(0, ".csx-overlay ~ figcaption").text
    loaded.slide(0, "input.csx-opacity", Keys.END)
    layer = small_explorer.images[0].layer_maps[0][1].double().detach().numpy()
    drawn = upsampled(layer, (300, 451))
    expected = np.minimum(255, np.floor(drawn * 256)).astype(np.int64)
    indices = colour_indices(loaded.pixels(0, "canvas.csx-overlay"), lut(small_explorer))
    assert np.abs(indices - expected).max() <= 1
    Select(loaded.find(0, "select.csx-scaling")).select_by_value("linear")
    loaded.find(0, '.csx-thumb[data-view="fused"] canvas').click()
    assert loaded.state()["exponent"] == 1
    assert loaded.errors() == []


def page_fuse(
    page: Page,
    maps: list[torch.Tensor],
    sample: int,
    fusion: str,
    gamma: float | None,
    gate: torch.Tensor | None = None,
) -> np.ndarray:
    """The page's own ``fuse`` of one sample's ``(N, 1, h, w)`` maps (and gate)."""

    def argument(m: torch.Tensor) -> dict[str, Any]:
        values = m[sample, 0].flatten().tolist()
        return {"height": m.shape[-2], "width": m.shape[-1], "values": values}

    result = page.js(
        "var f = window.captumShallowExplorer.fuse("
        "arguments[0], arguments[1], arguments[2], null, arguments[3]);"
        "return [f.height, f.width, Array.from(f.values)];",
        [argument(m) for m in maps],
        fusion,
        gamma,
        None if gate is None else argument(gate),
    )
    return np.array(result[2]).reshape(result[0], result[1])


def test_the_pages_fusion_and_scaling_equal_pythons_on_awkward_maps(loaded: Page) -> None:
    generator = torch.Generator().manual_seed(0)
    maps = [
        torch.randn(3, 1, 5, 7, generator=generator),
        torch.randn(3, 1, 3, 2, generator=generator),
        torch.rand(3, 1, 9, 4, generator=generator),
    ]
    maps[1][1] = -1  # a sample whose layer has no positive value
    for fusion in dict.fromkeys((*_FUSIONS, "geometric")):
        for gamma in (None, 2.0):
            for sample in range(3):
                fused = page_fuse(loaded, maps, sample, fusion, gamma)
                if fusion == "geometric" and "geometric" not in _FUSIONS:
                    # Until fuse_maps has it: the L-th root of the normalised product.
                    product = fuse_maps(maps, fusion="product", gamma=gamma)
                    expected = (product[sample, 0].double() ** (1 / 3)).numpy()
                else:
                    expected = (
                        fuse_maps(maps, fusion=fusion, gamma=gamma)[sample, 0]
                        .double()
                        .detach()
                        .numpy()
                    )
                assert fused.shape == (9, 4)
                assert np.abs(fused - expected).max() < 1e-5, (fusion, gamma, sample)
    for fusion in dict.fromkeys((*_FUSIONS, "geometric")):
        for layers in range(1, 6):
            page = loaded.js(
                "return window.captumShallowExplorer.displayScaling(arguments[0], arguments[1])",
                fusion,
                layers,
            )
            python = display_scaling(fusion, layers)
            assert (page["exponent"], page["label"]) == pytest.approx(
                (python.exponent, python.label)
            )


def test_two_notebook_outputs_work_independently(
    driver: Any, small_explorer: Explorer, tmp_path: Path
) -> None:
    notebook = tmp_path / "notebook.html"
    notebook.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        "</head><body><div class='output'></div><div class='output'></div></body></html>"
    )
    driver.get(notebook.as_uri())
    # As JupyterLab renders a trusted text/html output: set innerHTML, then replace
    # each script by a fresh copy so that the browser runs it.
    driver.execute_script(
        """
        var outputs = [arguments[0], arguments[1]];
        document.querySelectorAll("div.output").forEach(function (host, i) {
          host.innerHTML = outputs[i];
          host.querySelectorAll("script").forEach(function (old) {
            var script = document.createElement("script");
            Array.from(old.attributes).forEach(function (a) {
              script.setAttribute(a.name, a.value);
            });
            script.textContent = old.textContent;
            old.parentNode.replaceChild(script, old);
          });
        });
        """,
        small_explorer._repr_html_(),
        small_explorer._repr_html_(),
    )
    roots = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "div.csx")]
    assert len(roots) == 2
    assert roots[0] != roots[1]
    pages = [Page(driver, root) for root in roots]
    pages[0].find(1, '.csx-class[data-class-pos="3"]').click()
    pages[0].slide(1, "input.csx-opacity", Keys.HOME)
    assert (pages[0].state(1)["classPos"], pages[0].state(1)["opacity"]) == (3, 0)
    assert (pages[1].state(1)["classPos"], pages[1].state(1)["opacity"]) == (0, 0.6)
    assert len(driver.find_elements(By.CSS_SELECTOR, ".csx-image")) == 4
    ids = driver.execute_script("return [...document.querySelectorAll('[id]')].map(e => e.id)")
    assert len(ids) == len(set(ids)) == 2 * (1 + 2 * 2)  # root, and per image its section and help
    assert pages[1].pixels(1, "canvas.csx-overlay").std() > 10
    assert pages[0].errors() == []


@pytest.fixture
def default_loaded(
    driver: Any, default_explorer: Explorer, tmp_path_factory: pytest.TempPathFactory
) -> Page:
    path = default_explorer.save(tmp_path_factory.mktemp("default") / "report.html")
    driver.get(path.as_uri())
    return Page(driver)


def test_with_the_task_defaults_the_page_fuses_as_shallowcam_does(
    default_loaded: Page, default_explorer: Explorer, explorer_net: torch.nn.Module
) -> None:
    # Propagation through the ReLUs below the deepest layer shapes every layer map; with
    # every layer ticked the page's fusion of the embedded maps, gated by the embedded
    # Grad-CAM at the deepest layer, is ShallowCAM's own output.
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3])
    assert cam.propagation is not None
    assert (cam.gates, cam.fusion) == ("relu-below", "mean")
    assert cam.class_gate is True
    assert default_loaded.state()["gated"] is True
    inputs = torch.stack([preprocess(sample_photo(n), 60) for n in ("chelsea", "coffee")])
    worst = 0.0
    for image in range(2):
        for pos, index in enumerate(default_explorer.images[image].classes):
            default_loaded.find(image, f'.csx-class[data-class-pos="{pos}"]').click()
            fused = default_loaded.fused(image)
            assert fused is not None
            expected = (
                cam.attribute(inputs[image : image + 1], target=index)[0, 0].double().detach()
            )
            worst = max(worst, float(np.abs(fused - expected.double().numpy()).max()))
    assert worst < TOLERANCE
    # What unticking a layer means is said by the toggles: not ShallowCAM without it.
    note = default_loaded.find(0, ".csx-toggling").text
    assert note == default_explorer.toggling
    assert "ShallowCAM without that layer differs" in note
    assert "gates='relu-below'" in note
    assert default_loaded.errors() == []


def python_irn_labels(
    explorer: Explorer,
    image: int,
    present: list[int],
    threshold: float,
    size: tuple[int, int],
    gated: bool = False,
) -> np.ndarray:
    """IRN's rule in Python on the maps the page embeds: each present class's fused map
    (``gated``: times its embedded gate) upsampled to the photo, normalised
    (irn_normalise), argmax against t (pseudo_masks). Labels as the page gives them:
    0 background, 1 + the class's position."""
    fusion = explorer.fusion
    fused = [python_fused(explorer, image, pos, [0, 1, 2], fusion, gated) for pos in present]
    maps = [map_to_numpy(torch.from_numpy(values), size) for values in fused]
    cams = irn_normalise(torch.from_numpy(np.stack([m[..., 0] for m in maps])).double())
    labels = pseudo_masks(cams[None], torch.ones(1, len(present)), threshold)[0].numpy()
    positions = np.array([0, *(pos + 1 for pos in present)])
    return positions[labels]


def test_the_pseudo_mask_is_irns_argmax_over_the_classes_ticked_present(
    default_loaded: Page, default_explorer: Explorer
) -> None:
    page = default_loaded
    size = (300, 451)
    # The task defaults gate each class's map by its Grad-CAM at stage3; the classes
    # ticked below have positive evidence there (class 6, at position 2, has none).
    assert page.state()["gated"] is default_explorer.class_gate is True
    boxes = page.driver.find_elements(By.CSS_SELECTOR, "#csx-report-image-0 .csx-present")
    assert [b.is_selected() for b in boxes] == [True] + [False] * 4
    assert page.state()["present"] == [True] + [False] * 4
    boxes[1].click()
    boxes[3].click()
    assert page.state()["present"] == [True, True, False, True, False]
    page.find(0, '.csx-class[data-class-pos="2"]').click()  # ticked by hand: they stay
    assert page.state()["present"] == [True, True, False, True, False]
    page.find(0, '.csx-class[data-class-pos="0"]').click()
    page.slide(0, "input.csx-threshold", Keys.HOME, *[Keys.ARROW_RIGHT] * 30)
    for threshold in (0.3, 0.5, 0.7):
        if threshold != 0.3:
            page.slide(0, "input.csx-threshold", *[Keys.ARROW_RIGHT] * 20)
        assert page.state()["threshold"] == pytest.approx(threshold)
        mask = page.js("return app.mask(0)")
        labels = np.array(mask["labels"]).reshape(mask["height"], mask["width"])
        expected = python_irn_labels(default_explorer, 0, [0, 1, 3], threshold, size, True)
        # Only pixels within float error of a tie may differ (IRN's +1e-5, float32).
        assert (labels != expected).mean() < 1e-3, threshold
        assert set(np.unique(labels)) == {0, 1, 2, 4}
        assert page.state()["foreground"] == pytest.approx((labels > 0).mean())
        caption = page.find(0, ".csx-mask + figcaption").text
        assert f"t = {threshold:.2f}" in caption
        for pos in (0, 1, 3):  # each present class's share
            assert f"{default_explorer.images[0].class_names[pos]} " in caption
    # The canvas: background dimmed to 30 % grey, each class outlined in its colour.
    pixels = page.pixels(0, "canvas.csx-mask")
    photo = page.pixels(0, "canvas.csx-photo")
    background = labels == 0
    dimmed = np.round(0.3 * photo.mean(axis=2))
    assert np.abs(pixels[background][:, 0] - dimmed[background]).max() <= 1.01
    for pos, colour in ((0, [0, 229, 255]), (1, [255, 64, 160]), (3, [80, 220, 100])):
        region = labels == pos + 1
        assert (pixels[region] == colour).all(axis=1).any(), pos  # its outline
    # Nothing ticked: no mask, and the caption says what to do.
    for box in (boxes[0], boxes[1], boxes[3]):
        box.click()
    assert page.state()["foreground"] == 0
    assert "tick a class present" in page.find(0, ".csx-mask + figcaption").text
    assert page.errors() == []


def test_every_control_has_an_accessible_name(default_loaded: Page) -> None:
    section = default_loaded.driver.find_element(By.ID, "csx-report-image-0")
    controls = section.find_elements(By.CSS_SELECTOR, "input, select, button")
    names = {(c.aria_role, c.accessible_name) for c in controls}
    assert all(name for _, name in names), names
    assert {("slider", "Overlay opacity"), ("slider", "Background threshold t")} <= names
    assert ("combobox", "Fusion of ticked layers") in names
    assert ("checkbox", "Fuse layer stage2 · 15×15") in names
    assert ("checkbox", "dog is present") in names
    assert ("button", "Show the fused map") in names
    threshold = section.find_element(By.CSS_SELECTOR, "input.csx-threshold")
    help_id = threshold.get_attribute("aria-describedby")
    assert "IRN" in default_loaded.driver.find_element(By.ID, help_id).text
    for css in ("canvas.csx-photo", "canvas.csx-overlay", "canvas.csx-mask"):
        canvas = section.find_element(By.CSS_SELECTOR, css)
        assert canvas.aria_role == "image"  # Chromium's name for role="img"
        assert canvas.accessible_name
    views = section.find_elements(By.CSS_SELECTOR, "button.csx-view")
    assert [v.get_attribute("aria-pressed") for v in views] == ["true"] + ["false"] * 3
    views[2].send_keys(Keys.ENTER)  # the keyboard selects a view
    assert default_loaded.state()["view"] == "1"
    assert [v.get_attribute("aria-pressed") for v in views] == ["false", "false", "true", "false"]


def test_wide_tall_and_grey_photos_get_readable_panels(
    driver: Any, explorer_net: torch.nn.Module, tmp_path: Path
) -> None:
    net = explorer_net
    cam = ShallowCAM(net, [net.stage1, net.stage2, net.stage3])
    coffee = sample_photo("coffee")
    strip = torch.nn.functional.interpolate(
        coffee[None, :, 150:250].float(), size=(150, 1800), mode="bilinear"
    )[0].to(torch.uint8)
    grey = sample_photo("camera")[:1]  # (1, H, W)
    path = explore(
        cam, [strip, strip.transpose(1, 2), grey], names=["wide", "tall", "grey"], input_size=60
    ).save(tmp_path / "report.html")
    driver.get(path.as_uri())
    page = Page(driver)

    def box(image: int, css: str) -> dict[str, float]:
        rect: dict[str, float] = page.js(
            "return arguments[0].getBoundingClientRect().toJSON()", page.find(image, css)
        )
        return rect

    sections = driver.find_elements(By.CSS_SELECTOR, ".csx-image")
    assert ["csx-wide" in s.get_attribute("class") for s in sections] == [True, False, False]
    assert ["csx-tall" in s.get_attribute("class") for s in sections] == [False, True, False]
    wide = box(0, "canvas.csx-overlay")
    assert wide["width"] > 1000
    assert wide["height"] > 80  # one panel per row, not a third of the row
    assert box(0, "canvas.csx-mask")["top"] > wide["bottom"]
    tall = box(1, "canvas.csx-overlay")
    assert tall["height"] <= 720.5
    assert tall["width"] == pytest.approx(tall["height"] * 107 / 1280, abs=1.5)
    grey_overlay = page.pixels(2, "canvas.csx-overlay")
    assert grey_overlay.shape == (512, 512, 3)
    assert grey_overlay.std() > 10
    assert page.state(2)["foreground"] > 0
    assert page.errors() == []


# --- the class gate ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gated_explorer(gating_cam: ShallowCAM) -> Explorer:
    """The task defaults (mean fusion, propagation with gates="relu-below", the class gate)."""
    photos = [sample_photo("chelsea"), sample_photo("coffee")]
    classes = ["cat", "dog", "cup", "spoon", "saucer", "table", "wall"]
    return explore(
        gating_cam,
        photos,
        names=["chelsea", "coffee"],
        classes=classes,
        input_size=60,
        model_name="net",
    )


def _load(driver: Any, explorer: Explorer, folder: Path) -> Page:
    driver.get(explorer.save(folder / "report.html").as_uri())
    return Page(driver)


def test_a_gated_page_shows_shallowcams_fused_map_and_unticking_ungates_it(
    driver: Any,
    gated_explorer: Explorer,
    gating_cam: ShallowCAM,
    tmp_path: Path,
) -> None:
    explorer = gated_explorer
    page = _load(driver, explorer, tmp_path)
    box = page.find(0, "input.csx-gate")
    assert box.is_selected()
    assert (box.aria_role, box.accessible_name) == (
        "checkbox",
        "Gate by Grad-CAM at the deepest layer",
    )
    assert page.state()["gated"] is True
    assert "Grad-CAM at stage3 (8×8)" in page.find(0, ".csx-gate-control").text
    gate_maps = explorer.images[0].gate_maps
    assert gate_maps is not None
    stored = page.js("return app.gateMap(0, 1)")
    assert (stored["height"], stored["width"]) == (8, 8)
    np.testing.assert_array_equal(stored["values"], _embedded(gate_maps[1]).flatten().numpy())
    help_text = driver.find_element(By.CSS_SELECTOR, ".csx-about").get_attribute("textContent")
    assert "ShallowCAM(class_gate=True) and fuse_maps(..., gate=...)" in help_text
    inputs = torch.stack([preprocess(sample_photo(n), 60) for n in ("chelsea", "coffee")])
    worst = 0.0
    empty = 0
    for image in range(2):
        for pos, index in enumerate(explorer.images[image].classes):
            page.find(image, f'.csx-class[data-class-pos="{pos}"]').click()
            fused = page.fused(image)
            assert fused is not None
            expected = python_fused(explorer, image, pos, [0, 1, 2], "mean", gated=True)
            assert np.abs(fused - expected).max() < TOLERANCE, (image, pos)
            # The package's own map: ShallowCAM(class_gate=True).attribute.
            package = gating_cam.attribute(inputs[image : image + 1], target=index)
            package_map = package[0, 0].detach().double().numpy()
            worst = max(worst, float(np.abs(fused - package_map).max()))
            caption = page.find(image, ".csx-overlay ~ figcaption").text
            assert "mean of 3/3 layers · gated by Grad-CAM at stage3 · 30×30" in caption
            if fused.max() == 0:  # no positive Grad-CAM at stage3: nothing to show
                empty += 1
                assert caption.endswith("no positive evidence")
                assert page.state(image)["foreground"] == 0
    assert worst < TOLERANCE
    assert empty == 2  # class 6 on both photos: covered
    # The pseudo-mask thresholds the gated map; unticking the box shows the ungated one.
    page.find(0, '.csx-class[data-class-pos="0"]').click()
    gated = python_fused(explorer, 0, 0, [0, 1, 2], "mean", gated=True)
    ungated = python_fused(explorer, 0, 0, [0, 1, 2], "mean")
    assert np.abs(gated - ungated).max() > 0.1
    threshold = page.state()["threshold"]
    drawn = upsampled(gated, (300, 451))
    assert page.state()["foreground"] == pytest.approx((drawn > threshold).mean(), abs=2e-3)
    thumb = page.find(0, '.csx-thumb[data-view="fused"] figcaption').text
    assert thumb == "Fused map · mean of 3 · gated"
    before = page.pixels(0, "canvas.csx-overlay")
    box.click()
    assert not box.is_selected()
    assert page.state()["gated"] is False
    fused = page.fused()
    assert fused is not None
    assert np.abs(fused - ungated).max() < TOLERANCE
    drawn = upsampled(ungated, (300, 451))
    assert page.state()["foreground"] == pytest.approx((drawn > threshold).mean(), abs=2e-3)
    assert "gated" not in page.find(0, ".csx-overlay ~ figcaption").text
    assert page.find(0, '.csx-thumb[data-view="fused"] figcaption').text == "Fused map · mean of 3"
    assert np.abs(page.pixels(0, "canvas.csx-overlay") - before).max() > 50
    assert page.state(1)["gated"] is True  # the other image keeps its gate
    box.click()
    fused = page.fused()
    assert fused is not None
    assert np.abs(fused - gated).max() < TOLERANCE
    assert page.errors() == []


@pytest.mark.parametrize("fusion", _FUSIONS)
def test_the_gated_page_gates_every_fusion_and_every_layer_subset_as_fuse_maps(
    driver: Any, gated_explorer: Explorer, tmp_path: Path, fusion: str
) -> None:
    page = _load(driver, gated_explorer, tmp_path)
    Select(page.find(1, "select.csx-fusion")).select_by_value(fusion)
    for pos in range(5):
        page.find(1, f'.csx-class[data-class-pos="{pos}"]').click()
        fused = page.fused(1)
        assert fused is not None
        expected = python_fused(gated_explorer, 1, pos, [0, 1, 2], fusion, gated=True)
        assert np.abs(fused - expected).max() < TOLERANCE, (fusion, pos)
    # Unticking the deepest layer keeps its gate: the 15 x 15 fusion of two, gated.
    page.find(1, '.csx-class[data-class-pos="1"]').click()
    page.driver.find_elements(By.CSS_SELECTOR, "#csx-report-image-1 .csx-toggle")[0].click()
    fused = page.fused(1)
    assert fused is not None
    assert fused.shape == (15, 15)
    expected = python_fused(gated_explorer, 1, 1, [1, 2], fusion, gated=True)
    assert np.abs(fused - expected).max() < TOLERANCE
    assert page.errors() == []


def test_a_page_can_start_ungated_and_one_without_gate_maps_has_no_gate_box(
    driver: Any,
    gated_explorer: Explorer,
    gating_cam: ShallowCAM,
    loaded: Page,
    tmp_path: Path,
) -> None:
    # small_explorer's ShallowCAM has class_gate=False: its page has no gate maps.
    assert loaded.driver.find_elements(By.CSS_SELECTOR, "input.csx-gate") == []
    assert loaded.state()["gated"] is False
    assert loaded.js("return app.gateMap(0, 0)") is None
    assert "gated" not in loaded.find(0, ".csx-overlay ~ figcaption").text
    off = explorer_for(gating_cam, gated_explorer.images, "net", 60, class_gate=False)
    page = _load(driver, off, tmp_path)
    box = page.find(0, "input.csx-gate")
    assert not box.is_selected()
    assert page.state()["gated"] is False
    fused = page.fused()
    assert fused is not None
    assert np.abs(fused - python_fused(off, 0, 0, [0, 1, 2], "mean")).max() < TOLERANCE
    box.click()
    fused = page.fused()
    assert fused is not None
    expected = python_fused(off, 0, 0, [0, 1, 2], "mean", gated=True)
    assert np.abs(fused - expected).max() < TOLERANCE
    assert page.errors() == []


def test_the_pages_gate_equals_fuse_maps_gate_on_awkward_maps(loaded: Page) -> None:
    generator = torch.Generator().manual_seed(1)
    maps = [
        torch.randn(3, 1, 5, 7, generator=generator),
        torch.rand(3, 1, 9, 4, generator=generator),
    ]
    for gate_size in ((2, 3), (9, 4), (13, 6)):  # upsampled, as it is, downsampled
        gate = torch.randn(3, 1, *gate_size, generator=generator)
        gate[2] = -1  # a sample whose gate has no positive value: all zeros
        for fusion in _FUSIONS:
            for gamma in (None, 2.0):
                expected = fuse_maps(maps, fusion=fusion, gamma=gamma, gate=gate)
                for sample in range(3):
                    fused = page_fuse(loaded, maps, sample, fusion, gamma, gate)
                    assert fused.shape == (9, 4)
                    reference = expected[sample, 0].double().numpy()
                    assert np.abs(fused - reference).max() < 1e-5, (gate_size, fusion, gamma)
                    if sample == 2:
                        assert not fused.any()
