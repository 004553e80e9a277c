"""``captum-shallow pseudo-masks`` on a tiny VOC-format folder written by the test.

The model is a randomly initialised ResNet-18 with 20 outputs saved as a state
dict (``--arch resnet18 --weights``) at a 32 px input: the masks mean nothing,
but every code path (sharding, resume, failures, determinism) is exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_shallow import ShallowCAM, task_defaults
from captum_shallow.cli import main
from captum_shallow.io._label_png import voc_palette
from captum_shallow.models import build_model, layer_preset, resolve_layers
from captum_shallow.segmentation._jobs import MaskJob
from captum_shallow.segmentation._mask_pipeline import CRASH_AFTER_ENV, fixed_shape_cam, shard

IMAGES = 7


def _write_voc(root: Path) -> dict[str, np.ndarray]:
    """Seven JPEGs of different sizes with VOC masks (one or two classes each)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array(voc_palette(), dtype=np.float64).reshape(-1, 3)
    masks = {}
    for i in range(IMAGES):
        height, width = 30 + 4 * (i % 3), 36 + 2 * (i % 4)
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[4:16, 4:20] = 1 + (3 * i) % 20
        if i % 2:
            mask[18:28, 16:34] = 1 + (7 * i + 5) % 20
        mask[3, 4:20] = 255
        rgb = rng.random((height, width, 3)) * 60 + colours[mask] * 0.7
        name = f"2007_{i:06d}"
        Image.fromarray(rgb.astype(np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{name}.png")
        masks[name] = mask
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(masks) + "\n")
    return masks


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    _write_voc(root)
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=20).state_dict(), root / "resnet18-20.pt")
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pseudo-masks",
        "--dataset",
        "voc",
        "--root",
        str(root),
        "--arch",
        "resnet18",
        "--weights",
        str(root / "resnet18-20.pt"),
        "--input-size",
        "32",
        "--method",
        "layercam",
        "--truncation",
        "soft:quantile=0.99",
        "--fusion",
        "max",
        "--batch-size",
        "3",
        "--workers",
        "0",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-process run, with the maps saved."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_args(voc, out, "--save-cams", "--workers", "1")) == 0
    return out


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".png", ".npz")
    }


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, timeout=300
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_masks_are_voc_palette_pngs_of_each_image_size(voc: Path, reference: Path) -> None:
    outputs = _outputs(reference)
    assert sorted(name for name in outputs if name.endswith(".png")) == [
        f"2007_{i:06d}.png" for i in range(IMAGES)
    ]
    for i in range(IMAGES):
        name = f"2007_{i:06d}"
        truth = np.array(Image.open(voc / "VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png"))
        with Image.open(reference / f"{name}.png") as mask:
            assert mask.mode == "P"
            assert mask.getpalette() == voc_palette()
            labels = np.array(mask)
        assert labels.shape == truth.shape
        present = set(np.unique(truth).tolist()) - {255}
        assert set(np.unique(labels).tolist()) <= present  # background + the image's classes
        with np.load(reference / "cams" / f"{name}.npz") as cams:
            assert cams["cams"].dtype == np.float16
            assert cams["cams"].shape == (len(present) - 1, *truth.shape)
            assert cams["classes"].tolist() == sorted(c - 1 for c in present if c)
            assert float(cams["cams"].min()) >= 0.0
            assert float(cams["cams"].max()) <= 1.0
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["written"] == IMAGES
    assert manifest["config"]["layers"] == ["layer1", "layer2", "layer3", "layer4"]
    assert manifest["config"]["batch_size"] == 3
    # What the masks were computed with: the ShallowCAM's settings, as it describes them.
    cam = manifest["config"]["cam"]
    assert (cam["layers"], cam["method"], cam["task"]) == (
        "layer1, layer2, layer3, layer4",
        "LayerCAM",
        "segmentation",
    )
    assert "torch" in manifest["versions"]


def test_rerun_skips_finished_images(
    voc: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {path: path.stat().st_mtime_ns for path in out.glob("*.png")}
    assert main(_args(voc, out, "--save-cams")) == 0
    assert f"0 written, {IMAGES} already done, 0 failed" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.png")} == before


def test_fixed_shape_passes_make_a_map_independent_of_its_neighbours() -> None:
    model = build_model("resnet18", num_classes=20)
    cam = ShallowCAM(model, resolve_layers(model, list(layer_preset(model).fusion)))
    padded = fixed_shape_cam(lambda x, t: cam.attribute(x, target=t), slots=5)
    images, targets = torch.randn(5, 3, 32, 32), torch.tensor([3, 1, 4, 1, 5])
    alone = torch.cat([padded(images[i : i + 1], targets[i : i + 1]) for i in range(5)])
    together = padded(images, targets)
    reordered = padded(images[[4, 2, 0]], targets[[4, 2, 0]])
    assert torch.equal(alone, together)
    assert torch.equal(reordered, together[[4, 2, 0]])


def test_shards_are_disjoint_and_cover_every_image() -> None:
    jobs = [MaskJob(f"{i:03d}", "", ()) for i in range(11)]
    for world_size in (1, 2, 3, 4):
        names = [job.name for rank in range(world_size) for job in shard(jobs, rank, world_size)]
        assert sorted(names) == [job.name for job in jobs]  # each exactly once


@pytest.mark.slow
def test_two_torchrun_processes_write_byte_identical_outputs(
    voc: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    launcher = [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
    ]
    result = _run_cli(*launcher, "-m", "captum_shallow", *_args(voc, out, "--save-cams"))
    assert result.returncode == 0, result.stderr
    assert f"{IMAGES} written, 0 already done, 0 failed" in result.stderr
    assert "on 2 processes" in result.stderr
    assert _outputs(out) == _outputs(reference)
    assert json.loads((out / "manifest.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_killed_run_restarts_and_completes_with_the_same_outputs(
    voc: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "killed"
    crashed = _run_cli(
        "-m", "captum_shallow", *_args(voc, out, "--save-cams"), env={CRASH_AFTER_ENV: "2"}
    )
    assert crashed.returncode == 3  # exited abruptly, as if killed
    assert len(list(out.glob("*.png"))) == 2
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert main(_args(voc, out, "--save-cams")) == 0
    assert f"{IMAGES - 2} written, 2 already done, 0 failed" in capsys.readouterr().err
    assert _outputs(out) == _outputs(reference)
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temporary left


def test_corrupt_image_is_reported_skipped_and_counted(
    voc: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(voc, root)
    broken = root / "VOCdevkit/VOC2012/JPEGImages/2007_000003.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated JPEG
    out = tmp_path / "out"
    assert main(_args(root, out)) == 1
    err = capsys.readouterr().err
    assert f"{IMAGES - 1} written, 0 already done, 1 failed" in err
    assert f"failed: {broken}:" in err
    assert (out / "failures.txt").read_text().startswith(f"{broken}\t")
    assert json.loads((out / "manifest.json").read_text())["failed"] == 1
    written = {name: data for name, data in _outputs(out).items()}
    expected = {k: v for k, v in _outputs(reference).items() if k.endswith(".png")}
    del expected["2007_000003.png"]
    assert written == expected  # a failure changes nothing for the others


def test_folder_dataset_with_labels_and_classes_files(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "street").mkdir(parents=True)
    rng = np.random.default_rng(1)
    sizes = {"a.png": (20, 24), "street/b.jpg": (26, 18), "c.png": (10, 12)}
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / name)
    (root / "classes.txt").write_text("cat\ndog\n# a comment\ncar\n")
    (root / "labels.csv").write_text(
        "image,classes\na.png,cat car\nstreet/b.jpg,dog\nc.png,\n"  # c: background only
    )
    torch.save(build_model("resnet18", num_classes=3).state_dict(), tmp_path / "r3.pt")
    out = tmp_path / "out"
    args = ["pseudo-masks", "--dataset", "folder", "--root", str(root), "--arch", "resnet18"]
    args += ["--weights", str(tmp_path / "r3.pt"), "--input-size", "32", "--out", str(out)]
    # Untrained: Grad-CAM at the deepest layer may have no positive value for a class,
    # which the class gate turns into an empty map; the test is about the folder.
    assert main([*args, "--workers", "0", "--threshold", "0", "--no-class-gate"]) == 0
    a, b = np.array(Image.open(out / "a.png")), np.array(Image.open(out / "street/b.png"))
    assert a.shape == (20, 24)
    assert b.shape == (26, 18)
    assert set(np.unique(a).tolist()) <= {0, 1, 3}
    assert set(np.unique(b).tolist()) <= {0, 2}
    assert (b == 2).any()  # at threshold 0 the only class wins wherever its map is positive
    c = np.array(Image.open(out / "c.png"))
    assert c.shape == (10, 12)
    assert not c.any()  # no class present: all background, and the run went on


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--root": "{tmp}/missing"}, "dataset folder {tmp}/missing does not exist"),
        ({"labels": b"\xff\xfe\x00bad"}, "cannot read labels file"),
        ({"labels": b"image,classes\na.png,cat unicorn\n"}, "line 2: unknown class 'unicorn'"),
        ({"labels": b"name,labels\n"}, "must start with the header line 'image,classes'"),
        ({"classes": b"cat\ndog\n"}, "the model has 3 outputs but the dataset has 2 classes"),
        ({"--layers": "nonexistent"}, "nonexistent"),
        (
            {
                "classes": "".join(f"c{i}\n" for i in range(255)).encode(),
                "labels": b"image,classes\na.png,c0\n",
            },
            "255 classes do not fit VOC's one-byte label PNGs",
        ),
    ],
)
def test_user_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "classes.txt").write_bytes(change.get("classes", b"cat\ndog\ncar\n"))  # type: ignore[arg-type]
    (root / "labels.csv").write_bytes(change.get("labels", b"image,classes\na.png,cat\n"))  # type: ignore[arg-type]
    torch.save(build_model("resnet18", num_classes=3).state_dict(), tmp_path / "r3.pt")
    options = {
        "--root": str(root),
        "--weights": str(tmp_path / "r3.pt"),
        "--layers": "fusion",
        **{k: str(v).format(tmp=tmp_path) for k, v in change.items() if k.startswith("--")},
    }
    argv = ["pseudo-masks", "--dataset", "folder", "--arch", "resnet18", "--input-size", "32"]
    argv += ["--out", str(tmp_path / "out"), "--workers", "0"]
    argv += [item for pair in options.items() for item in pair]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("captum-shallow: error: ")
    assert err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_resume_with_other_options_is_refused(
    voc: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    argv = _args(voc, out, "--save-cams")
    argv[argv.index("--batch-size") + 1] = "4"
    assert main(argv) == 2
    assert "other options or inputs (changed: batch_size)" in capsys.readouterr().err


@pytest.mark.needs_extra("crf")
def test_crf_refined_masks_keep_each_image_classes(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "crf"
    assert main(_args(voc, out, "--crf", "--threshold", "0")) == 0
    for i in range(IMAGES):
        name = f"2007_{i:06d}.png"
        truth = np.array(Image.open(voc / "VOCdevkit/VOC2012/SegmentationClass" / name))
        labels = np.array(Image.open(out / name))
        assert labels.shape == truth.shape
        assert set(np.unique(labels).tolist()) <= set(np.unique(truth).tolist()) - {255}
    assert json.loads((out / "manifest.json").read_text())["config"]["crf"] is True


def test_scales_and_flips_are_options_recorded_in_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "classes.txt").write_text("cat\ndog\ncar\n")
    (root / "labels.csv").write_text("image,classes\na.png,dog\n")
    torch.save(build_model("resnet18", num_classes=3).state_dict(), tmp_path / "r3.pt")
    argv = ["pseudo-masks", "--dataset", "folder", "--root", str(root), "--arch", "resnet18"]
    argv += ["--weights", str(tmp_path / "r3.pt"), "--input-size", "32", "--workers", "0"]
    argv += ["--threshold", "0.3"]
    outputs = {}
    for name, extra in {
        "default": [],
        "one": ["--scales", "1", "--no-flips"],
        "irn": ["--scales", "1,0.5,1.5,2", "--flips"],
    }.items():
        assert main([*argv, "--out", str(tmp_path / name), *extra]) == 0
        config = json.loads((tmp_path / name / "manifest.json").read_text())["config"]
        outputs[name] = (
            config["scales"],
            config["flips"],
            (tmp_path / name / "a.png").read_bytes(),
        )
    assert outputs["one"][:2] == ([1.0], False)
    assert outputs["irn"][:2] == ([1.0, 0.5, 1.5, 2.0], True)
    segmentation = task_defaults("segmentation")
    assert outputs["default"][:2] == (list(segmentation.scales), segmentation.flips)
    if segmentation.scales == (1.0,) and not segmentation.flips:
        assert outputs["default"][2] == outputs["one"][2]
    assert outputs["irn"][2] != outputs["one"][2]
    assert main([*argv, "--out", str(tmp_path / "bad"), "--scales", "1,-2"]) == 2
    assert "expected positive numbers separated by commas" in capsys.readouterr().err
