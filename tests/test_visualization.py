"""Figures: Captum's visualize_image_attr on one grid of axes, headless, sized as documented."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import visualization as captum_viz
from matplotlib.collections import QuadMesh
from PIL import Image

from captum_shallow import fuse_maps
from captum_shallow.cli import main
from captum_shallow.visualization import (
    CAPTION_INCHES,
    COLORBAR_LABEL,
    MAX_COLUMNS,
    PANEL_INCHES,
    SUPTITLE_INCHES,
    TALL_INCHES,
    WIDE_ASPECT,
    attribution_figure,
    display_scaling,
    grid_shape,
    image_to_numpy,
    map_to_numpy,
    panel_inches,
)


def test_image_to_numpy_gives_hwc_uint8() -> None:
    image = torch.arange(2 * 3, dtype=torch.uint8).view(1, 2, 3).expand(3, -1, -1)
    array = image_to_numpy(image)
    assert (array.shape, array.dtype) == ((2, 3, 3), np.uint8)
    assert array[1, 2].tolist() == [5, 5, 5]
    assert image_to_numpy(torch.ones(3, 2, 2) * 0.5)[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(ValueError, match=r"expected an image of shape \(3, H, W\)"):
        image_to_numpy(torch.zeros(2, 2))


def test_map_to_numpy_upsamples_bilinearly_to_the_photo() -> None:
    grid = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    array = map_to_numpy(grid.view(1, 1, 2, 2), (3, 4))
    assert (array.shape, array.dtype) == ((3, 4, 1), np.float32)
    np.testing.assert_allclose(array[0, :, 0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(map_to_numpy(torch.full((5, 5), 0.3), (7, 9)), 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="expected one 2-D map"):
        map_to_numpy(torch.zeros(2, 1, 4, 4), (8, 8))


def test_every_panel_is_drawn_by_captum_on_the_figures_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    original = captum_viz.visualize_image_attr

    def spy(attr: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        calls.append({"shape": attr.shape, "attr": attr, **kwargs})
        return original(attr, *args, **kwargs)

    monkeypatch.setattr(captum_viz, "visualize_image_attr", spy)
    photo = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    maps = [torch.rand(1, 5, 5), torch.rand(1, 1, 10, 15)]
    figure = attribution_figure(photo, [("photo", None), ("a", maps[0]), ("b", maps[1])])
    methods = [c["method"] for c in calls]
    assert methods == ["original_image", "blended_heat_map", "blended_heat_map"]
    assert all(c["use_pyplot"] is False and c["shape"] == (40, 60, 1) for c in calls)
    # Each map over its own maximum, and Captum's outlier rescaling off: colour = value.
    assert all(c["outlier_perc"] == 0 and c["cmap"] == "inferno" for c in calls)
    assert [c["alpha_overlay"] for c in calls] == [0.6] * 3
    assert [float(c["attr"].max()) for c in calls[1:]] == [1.0, 1.0]
    expected = map_to_numpy(maps[1], (40, 60)) / map_to_numpy(maps[1], (40, 60)).max()
    np.testing.assert_allclose(calls[2]["attr"], expected, rtol=1e-6)
    axes = figure.get_axes()[:3]
    assert [c["plt_fig_axis"] for c in calls] == [(figure, axis) for axis in axes]
    assert [axis.get_title() for axis in axes] == ["photo", "a", "b"]


def test_figure_size_follows_panels_rows_and_photo_aspect() -> None:
    photo = torch.zeros(3, 50, 100, dtype=torch.uint8)
    panels = [(str(i), torch.rand(4, 4)) for i in range(5)]
    figure = attribution_figure(photo, panels, title="t", ncols=3)
    # 3 columns of 3 in; 2 rows of (3 * 50 / 100 + 0.45) in; 0.4 in for the title,
    # 0.6 in for the colour bar.
    assert figure.get_size_inches().round(3).tolist() == [9.0, 4.9]
    assert len(figure.get_axes()) == 7  # six cells and the colour bar
    assert not figure.get_axes()[5].axison  # the unused sixth cell is blank
    assert figure.get_suptitle() == "t"
    wide = attribution_figure(photo, panels, ncols=5)
    assert wide.get_size_inches().round(3).tolist() == [15.0, 2.55]


def test_the_grid_has_balanced_rows_of_at_most_four_panels() -> None:
    shapes = {n: grid_shape(n) for n in range(1, 11)}
    assert shapes == {
        1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (1, 4), 5: (2, 3),
        6: (2, 3), 7: (2, 4), 8: (2, 4), 9: (3, 3), 10: (3, 4),
    }  # fmt: skip
    assert grid_shape(3, ncols=8) == (1, 3)
    assert grid_shape(5, ncols=2) == (3, 2)
    assert grid_shape(6, max_columns=2) == (3, 2)
    assert grid_shape(6, max_columns=0) == (6, 1)
    with pytest.raises(ValueError, match="no panel"):
        grid_shape(0)


def test_one_colour_bar_says_what_the_colours_mean() -> None:
    photo = torch.zeros(3, 20, 20, dtype=torch.uint8)
    figure = attribution_figure(photo, [("photo", None), ("m", torch.rand(3, 3))])
    colorbar = figure.get_axes()[-1]
    assert colorbar.get_xlabel() == COLORBAR_LABEL == "map value ÷ the map's maximum"
    assert colorbar.get_xlim() == (0.0, 1.0)
    assert [t.get_text() for t in colorbar.get_xticklabels()] == [
        "0.00", "0.25", "0.50", "0.75", "1.00"
    ]  # fmt: skip
    (solids,) = [c for c in colorbar.collections if isinstance(c, QuadMesh)]
    assert solids.get_cmap().name == "inferno"
    assert figure.get_axes()[1].images[-1].get_cmap().name == "inferno"
    # No colour bar where no colour map is drawn: the photo alone, or masked images.
    assert len(attribution_figure(photo, [("photo", None)]).get_axes()) == 1
    masked = attribution_figure(photo, [("m", torch.rand(3, 3))], method="masked_image")
    assert len(masked.get_axes()) == 1


def test_a_product_is_shown_as_the_geometric_mean_of_its_layers() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = [torch.rand(2, 1, 6, 6, generator=generator) for _ in range(3)]
    scaling = display_scaling("product", 3)
    assert scaling.exponent == pytest.approx(1 / 3)
    assert scaling.label == "shown as value^(1/3) (geometric mean)"
    shown = scaling(fuse_maps(maps, fusion="product"))
    geometric = torch.stack(maps).prod(dim=0) ** (1 / 3)
    geometric = geometric / geometric.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(shown, geometric)
    for fusion, layers in (("max", 3), ("mean", 3), ("product", 1), ("geometric", 4)):
        linear = display_scaling(fusion, layers)
        assert (linear.exponent, linear.label) == (1.0, "shown linearly")
        torch.testing.assert_close(linear(torch.tensor([-0.5, 0.25])), torch.tensor([0.0, 0.25]))


def test_figure_renders_headless_to_png_of_the_documented_size() -> None:
    photo = torch.randint(0, 256, (3, 30, 60), dtype=torch.uint8)
    figure = attribution_figure(photo, [("photo", None), ("map", torch.rand(7, 7))])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=50)
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        assert png.format == "PNG"
        assert png.size == (300, 127)  # (6 in, 1.5 + 0.45 + 0.6 = 2.55 in) at 50 dpi


def test_a_map_without_positive_evidence_shows_the_photo() -> None:
    photo = torch.zeros(3, 20, 20, dtype=torch.uint8)
    figure = attribution_figure(photo, [("empty", torch.zeros(1, 4, 4))])
    assert figure.get_axes()[0].get_title() == "empty\n(no positive evidence)"


def test_no_panel_is_an_error() -> None:
    with pytest.raises(ValueError, match="no panel"):
        attribution_figure(torch.zeros(3, 4, 4), [])


def test_a_wide_photo_gets_wide_panels_in_fewer_columns_and_a_tall_one_a_height_cap() -> None:
    assert panel_inches(1.5) == (PANEL_INCHES, 2.0)
    assert panel_inches(WIDE_ASPECT) == (PANEL_INCHES, PANEL_INCHES / WIDE_ASPECT)
    assert panel_inches(12.0) == (MAX_COLUMNS * PANEL_INCHES, 1.0)
    assert panel_inches(0.1) == (PANEL_INCHES, TALL_INCHES)
    panels = [(str(i), torch.rand(4, 4)) for i in range(6)]
    strip = torch.zeros(3, 100, 1200, dtype=torch.uint8)  # 12:1
    figure = attribution_figure(strip, panels)
    # One 12 in panel per row: 6 rows of (1 + 0.45) in, 0.6 in of colour bar.
    assert figure.get_size_inches().round(3).tolist() == [12.0, 9.3]
    assert len(figure.get_axes()) == 7
    banner = attribution_figure(torch.zeros(3, 100, 400, dtype=torch.uint8), panels)
    # 4:1: 6 in panels, two per row.
    assert banner.get_size_inches().round(3).tolist() == [12.0, 6.45]  # 3 * 1.95 + 0.6
    tower = attribution_figure(torch.zeros(3, 1200, 100, dtype=torch.uint8), panels[:2])
    assert tower.get_size_inches().round(3).tolist() == [6.0, 7.05]  # 6 + 0.45 + 0.6
    assert TALL_INCHES == 6.0


def test_title_and_caption_lines_are_wrapped_to_the_figure_and_make_room() -> None:
    photo = torch.zeros(3, 60, 60, dtype=torch.uint8)
    panels = [("photo", None), ("map", torch.rand(4, 4))]
    plain = attribution_figure(photo, panels).get_size_inches()[1]
    long = "settings " * 30  # 269 characters: 4 lines of at most 84 (6 in) in the caption
    figure = attribution_figure(photo, panels, title="one\ntwo", caption=long)
    assert figure.get_suptitle() == "one\ntwo"
    caption = figure.get_supxlabel()
    assert caption.count("\n") == 3
    assert max(len(line) for line in caption.split("\n")) <= 84
    assert caption.replace("\n", " ").split() == long.split()
    extra = 2 * SUPTITLE_INCHES + 4 * CAPTION_INCHES
    assert figure.get_size_inches()[1] == pytest.approx(plain + extra)


@pytest.mark.slow
def test_the_fused_panel_of_astronaut_shows_an_extent_not_a_spot(tmp_path: Path) -> None:
    # The case: with product fusion the panel showed one red spot. The task
    # default (mean) shown as display_scaling says shows a region: a third of the
    # photo above a quarter of the peak (8 % for the product; 2 % above half of it).
    import skimage.data

    path = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--save-maps", "--out", str(out)]) == 0
    with np.load(out / "astronaut.maps.npz") as saved:
        fused = torch.from_numpy(saved["fused"])
    shown = display_scaling("mean", 4)(fused)
    assert float((shown > 0.25).float().mean()) > 0.25
    assert float((shown > 0.1).float().mean()) > 0.5
