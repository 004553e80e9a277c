"""Bad inputs, each handled: a clear error (API: ValueError/TypeError; CLI: one line on
stderr, exit 2), nothing lost, no hidden NaN, no half-written output.

Small models (a random ResNet-18 at a 32 to 64 px input) keep every case fast; the
CLI's pseudo-masks run on a three-image folder dataset written by the test.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet18

import captum_shallow.io._atomic as atomic_module
import captum_shallow.segmentation._mask_pipeline as pipeline_module
from captum_shallow import GradientTruncation, LayerCAM, LayerGradCam, ShallowCAM, fuse_maps
from captum_shallow.cli import CLIError, atomic_write, main
from captum_shallow.datasets import class_index, imagenet_classes
from captum_shallow.io import read_image
from captum_shallow.io._atomic import TEMPORARY_PREFIX, open_temporary
from captum_shallow.io._label_png import write_label_png
from captum_shallow.models import build_model
from captum_shallow.segmentation._jobs import MaskJob, read_class_names, read_labels_file
from captum_shallow.segmentation._mask_pipeline import mask_path


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect exit 2 with one ``captum-shallow: error:`` line; return it."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("captum-shallow: error: ")
    return lines[0].removeprefix("captum-shallow: error: ")


# --- a tiny folder dataset for pseudo-masks ---------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three images, three classes, and a 3-output ResNet-18 state dict beside them."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    (root / "classes.txt").write_text("cat\ndog\ncar\n")
    (root / "labels.csv").write_text("image,classes\na.png,cat car\nb.png,dog\nc.png,cat\n")
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=3).state_dict(), tmp_path / "r3.pt")
    return root


def _masks_argv(root: Path, out: Path, *extra: str, weights: Path | None = None) -> list[str]:
    weights = weights or root.parent / "r3.pt"
    return [
        "pseudo-masks", "--dataset", "folder", "--root", str(root), "--arch", "resnet18",
        "--weights", str(weights), "--input-size", "32", "--workers", "0",
        "--batch-size", "2", "--out", str(out), *extra,
    ]  # fmt: skip


def _mask_names(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("*.png"))


# --- 1. temporary files: only the package's own, only where it writes ----------------------


def test_pseudo_masks_removes_only_its_own_stale_temporaries(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    mine = [out / ".draft.x.tmp", out / "notes" / ".todo.tmp", out / ".a.png.1234.tmp"]
    for path in mine:
        path.write_text("the user's own")
    handle, stale = open_temporary(out / "a.png")  # what a killed run leaves behind
    os.close(handle)
    assert Path(stale).name.startswith(TEMPORARY_PREFIX)
    assert main(_masks_argv(dataset, out)) == 0
    assert [path.read_text() for path in mine] == ["the user's own"] * len(mine)
    assert not Path(stale).exists()
    assert _mask_names(out) == ["a.png", "b.png", "c.png"]


# --- 2. no hidden NaN ---------------------------------------------------------------


def test_fuse_maps_refuses_non_finite_maps() -> None:
    good = torch.rand(2, 1, 4, 4)
    bad = good.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"map 1 contains NaN or inf"):
        fuse_maps([good, bad])
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"map 0 contains NaN or inf"):
        fuse_maps([bad, good])


def test_fuse_maps_given_one_tensor_instead_of_a_list_is_a_type_error() -> None:
    maps = torch.rand(2, 1, 4, 4)
    with pytest.raises(TypeError, match=r"one Tensor of shape \(2, 1, 4, 4\); pass \[maps\]"):
        fuse_maps(maps)  # type: ignore[arg-type]
    assert torch.equal(fuse_maps([maps]), maps / maps.amax(dim=(1, 2, 3), keepdim=True))


def test_shallowcam_names_the_layer_whose_map_is_not_finite() -> None:
    model = resnet18(num_classes=5).eval()
    inputs = torch.rand(2, 3, 32, 32)
    inputs[1, 0, 5, 5] = float("nan")
    cam = ShallowCAM(model, [model.layer1, model.layer3], fusion="max")
    with pytest.raises(ValueError, match=r"layer 'layer1'.*NaN or inf"):
        cam.attribute(inputs, target=1)
    truncated = ShallowCAM(model, [model.layer1, model.layer3], truncation=GradientTruncation(
        "soft", quantile=0.9))  # fmt: skip
    with pytest.raises(ValueError, match=r"layer 'layer1'.*NaN or inf"):
        truncated.attribute(inputs, target=1)


def test_truncated_layercam_on_a_nan_input_raises_the_documented_error() -> None:
    model = resnet18(num_classes=5).eval()
    inputs = torch.rand(1, 3, 32, 32)
    inputs[0, 0, 0, 0] = float("nan")
    cam = LayerCAM(model, model.layer2, truncation=GradientTruncation("soft", quantile=0.9))
    with pytest.raises(ValueError, match="NaN or inf"):
        cam.attribute(inputs, target=0)
    # Without truncation the class is Captum's drop-in: NaN in, NaN out, as Captum does.
    assert torch.isnan(LayerCAM(model, model.layer2).attribute(inputs, target=0)).any()


def test_pseudo_masks_counts_images_with_non_finite_maps_as_failed(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = build_model("resnet18", num_classes=3).state_dict()
    weights["fc.weight"][1, 0] = float("nan")  # NaN x 0 in the backward: every gradient is NaN
    torch.save(weights, tmp_path / "nan.pt")
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out, weights=tmp_path / "nan.pt")) == 1
    assert "0 written, 0 already done, 3 failed" in capsys.readouterr().err
    assert _mask_names(out) == []  # no all-background mask posing as a result
    failures = (out / "failures.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failures] == [
        str(dataset / f"{name}.png") for name in "abc"
    ]
    assert all("NaN or inf" in line for line in failures)
    assert json.loads((out / "manifest.json").read_text())["failed"] == 3


def _pipeline_images(tmp_path: Path, values: list[int]) -> list[MaskJob]:
    jobs = []
    for i, value in enumerate(values):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((6, 8, 3), value, dtype=np.uint8)).save(path)
        jobs.append(MaskJob(str(i), str(path), (1,)))
    return jobs


def _pipeline_run(
    tmp_path: Path, cam_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> pipeline_module.MaskRun:
    return pipeline_module.MaskRun(
        cam_fn=cam_fn, num_classes=2, input_size=16, out=tmp_path / "out",
        device=torch.device("cpu"), workers=0, batch_size=2, mean=(0, 0, 0), std=(1, 1, 1),
    )  # fmt: skip


def test_pipeline_fails_only_the_image_whose_map_is_refused(tmp_path: Path) -> None:
    """A pass that raises is redone image by image: the others keep their exact maps."""

    def cam_fn(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((images > 0.9).any()):  # the white image
            raise ValueError("layer 'x': the map contains NaN or inf")
        return images[:, :1, :4, :4] + target.view(-1, 1, 1, 1)

    jobs = _pipeline_images(tmp_path, [40, 255, 90])
    counts = pipeline_module.run_masks(_pipeline_run(tmp_path, cam_fn), jobs)
    assert counts.written == 2
    assert counts.failures == [(jobs[1].image, "layer 'x': the map contains NaN or inf")]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["0.png", "2.png"]


def test_pipeline_fails_an_image_whose_cam_fn_returns_nan(tmp_path: Path) -> None:
    """A user's own cam_fn that returns NaN without raising is caught too."""

    def cam_fn(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        maps = images[:, :1, :4, :4].clone()
        return maps.masked_fill(maps > 0.9, float("nan"))

    jobs = _pipeline_images(tmp_path, [40, 255])
    counts = pipeline_module.run_masks(_pipeline_run(tmp_path, cam_fn), jobs)
    assert counts.written == 1
    assert [path for path, _ in counts.failures] == [jobs[1].image]
    assert "NaN or inf" in counts.failures[0][1]
    assert not mask_path(tmp_path / "out", jobs[1]).exists()


# --- 3. 16-bit greyscale ------------------------------------------------------------


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_read_image_scales_16_bit_greyscale_to_8_bit(tmp_path: Path, name: str) -> None:
    values = np.array([[0, 128, 129, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / name
    # PNG keeps 16 bits as Pillow's mode I;16; TIFF as 32-bit integers, mode I.
    Image.fromarray(values if name.endswith(".png") else values.astype(np.int32)).save(path)
    with Image.open(path) as opened:
        assert opened.mode == ("I;16" if name.endswith(".png") else "I")
    image = read_image(path)
    assert image.dtype == torch.uint8
    assert image.shape == (3, 1, 5)
    assert image[0].tolist() == [[0, 0, 1, 100, 255]]  # round(255 v / 65535)
    assert torch.equal(image[0], image[2])


def test_read_image_refuses_integer_pixels_beyond_16_bits(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide\.tif: I pixels in 0\.\.70000; expected 16-bit"):
        read_image(tmp_path / "wide.tif")


def test_read_image_refuses_floating_point_pixels_instead_of_reading_black(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((16, 16), 0.8, dtype=np.float32)).save(path)  # Pillow gave 0
    with pytest.raises(ValueError, match=r"float\.tif: floating-point pixels \(Pillow mode F\)"):
        read_image(path)
    message = _one_line_error(capsys, _explain_argv(resnet5, str(path), "--out", str(tmp_path)))
    assert message.startswith(f"cannot read image {path}: floating-point pixels")


# --- 4. full disk -------------------------------------------------------------------


class _FillingDisk:
    """A disk that fills up at the second mask: from then on no new file fits, except
    in the room that a reserve the run held when it filled leaves once removed."""

    def __init__(self, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.out = out
        self.full = False
        self.reserved = False
        self.masks = 0
        self.real_writer = pipeline_module.atomic_write
        self.real_open = atomic_module.open_temporary
        monkeypatch.setattr(pipeline_module, "atomic_write", self.writer)
        monkeypatch.setattr(atomic_module, "open_temporary", self.open_temporary)

    def reserves(self) -> list[Path]:
        return list(self.out.glob(f"{TEMPORARY_PREFIX}reserve.*"))

    @contextmanager
    def writer(self, path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
        self.masks += 1
        if self.masks == 2:
            self.full, self.reserved = True, bool(self.reserves())
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        with self.real_writer(path) as stream:
            yield stream

    def open_temporary(self, path: str | os.PathLike[str]) -> tuple[int, str]:
        if self.full and not (self.reserved and not self.reserves()):
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real_open(path)


def test_full_disk_stops_with_one_line_and_keeps_the_manifest_true(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    disk = _FillingDisk(out, monkeypatch)
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert disk.reserved  # the run held room for its report when the disk filled
    assert message.startswith(f"No space left on device writing {out / 'b.png'}")
    assert message.endswith("free space, then rerun the same command to resume")
    assert _mask_names(out) == ["a.png"]
    assert (out / "failures.txt").read_text().startswith(f"{dataset / 'b.png'}\tNo space left")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    assert (manifest["written"], manifest["failed"]) == (1, 1)
    assert "No space left on device" in manifest["error"]
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temporary, no lock

    monkeypatch.undo()  # disk freed: resume
    assert main(_masks_argv(dataset, out)) == 0
    assert _mask_names(out) == ["a.png", "b.png", "c.png"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert (out / "failures.txt").read_text() == ""


def _no_space_for(name: str, module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``module.open_temporary`` finds the disk full for files called ``name``."""
    real = module.open_temporary

    def full(path: str | os.PathLike[str]) -> tuple[int, str]:
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(module, "open_temporary", full)


def test_ctrl_c_leaves_a_true_manifest_and_the_run_resumes(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import captum_shallow.segmentation._runner as command

    real = command.run_masks

    def interrupted_after_one(run: Any, jobs: Any, **kwargs: Any) -> Any:
        real(run, jobs[:1], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run_masks", interrupted_after_one)
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out)) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "captum-shallow: interrupted"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["error"]) == ("interrupted", command.INTERRUPTED)
    assert _mask_names(out) == ["a.png"]
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temporary, no lock

    monkeypatch.undo()
    assert main(_masks_argv(dataset, out)) == 0
    assert _mask_names(out) == ["a.png", "b.png", "c.png"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_disk_without_room_for_the_report_is_refused_before_any_work(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_space_for("reserve", atomic_module, monkeypatch)
    out = tmp_path / "out"
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == (
        f"cannot set aside 64 KiB in {out} for the run's report (No space left on device); "
        "free space on that disk, then rerun"
    )
    assert list(out.iterdir()) == []  # no manifest, no mask, no lock


def test_a_report_that_does_not_fit_still_updates_the_manifest(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "failures.txt").write_text("an earlier run's list\n")
    _no_space_for("failures.txt", atomic_module, monkeypatch)
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == f"cannot write {out / 'failures.txt'}: No space left on device"
    assert not (out / "failures.txt").exists()  # the earlier list would now be false
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["written"], manifest["failed"]) == ("complete", 3, 0)


def test_cli_atomic_write_turns_a_full_disk_into_one_line(tmp_path: Path) -> None:
    def write_until_the_disk_is_full() -> None:
        with atomic_write(tmp_path / "out.json") as stream:
            stream.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CLIError, match=r"cannot write .*out\.json: No space left on device"):
        write_until_the_disk_is_full()
    assert list(tmp_path.iterdir()) == []


# --- 5. --out inside --root ---------------------------------------------------------


@pytest.mark.parametrize("where", [".", "masks"])
def test_out_equal_to_or_inside_root_is_refused(
    dataset: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    before = sorted(path.name for path in dataset.rglob("*"))
    out = dataset / where
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message.startswith(f"--out {out} is inside --root {dataset}")
    assert sorted(path.name for path in dataset.rglob("*")) == before


@pytest.mark.parametrize("labels", ["image,classes\n", "image,classes\n\n , \n"])
def test_a_labels_file_without_images_is_one_line_not_an_empty_success(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: str
) -> None:
    (dataset / "labels.csv").write_text(labels)
    message = _one_line_error(capsys, _masks_argv(dataset, tmp_path / "out"))
    assert message == f"labels file {dataset / 'labels.csv'} lists no image (only its header)"
    assert not (tmp_path / "out").exists()


def test_an_empty_voc_split_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    argv = ["pseudo-masks", "--dataset", "voc", "--root", str(voc), "--out", str(tmp_path / "o")]
    message = _one_line_error(capsys, argv)
    assert message == f"split file {voc / 'ImageSets/Segmentation/train.txt'} lists no image id"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("second", "why"), [("a.jpg", ""), ("A.png", " (on a disk that ignores case)")]
)
def test_two_images_that_would_write_one_mask_are_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], second: str, why: str
) -> None:
    Image.open(dataset / "b.png").save(dataset / second)
    (dataset / "labels.csv").write_text(f"image,classes\na.png,cat\n{second},dog\n")
    message = _one_line_error(capsys, _masks_argv(dataset, tmp_path / "out"))
    name = Path(second).stem
    assert message == (
        f"labels file {dataset / 'labels.csv'}: a.png and {second} would both write {name}.png{why}"
    )
    assert not (tmp_path / "out").exists()


# --- 6. resume after the labels changed ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content", "changed"),
    [
        ("labels.csv", "image,classes\na.png,dog\nb.png,dog\nc.png,cat\n", "labels"),
        ("classes.txt", "dog\ncat\ncar\n", "classes"),  # the same names, another order
    ],
)
def test_resume_after_the_labels_or_classes_changed_is_refused(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    changed: str,
) -> None:
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out)) == 0
    capsys.readouterr()
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    (dataset / name).write_text(content)
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert f"(changed: {changed})" in message
    assert "choose another --out" in message
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_resume_after_the_voc_masks_the_labels_are_read_off_changed_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    voc = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for name, label in (("x", 8), ("y", 12)):  # cat, dog
        Image.fromarray(np.full((20, 24, 3), 9 * label, dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        with open(voc / "SegmentationClass" / f"{name}.png", "wb") as stream:
            write_label_png(stream, np.full((20, 24), label, dtype=np.uint8))
    (voc / "ImageSets/Segmentation/train.txt").write_text("x\ny\n")
    torch.save(build_model("resnet18", num_classes=20).state_dict(), tmp_path / "r20.pt")
    argv = ["pseudo-masks", "--dataset", "voc", "--root", str(voc), "--arch", "resnet18",
            "--weights", str(tmp_path / "r20.pt"), "--input-size", "32", "--workers", "0",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 0  # unchanged: resumes, all done
    assert "0 written, 2 already done" in capsys.readouterr().err
    with open(voc / "SegmentationClass" / "y.png", "wb") as stream:  # y is a horse now
        write_label_png(stream, np.full((20, 24), 13, dtype=np.uint8))
    message = _one_line_error(capsys, argv)
    assert "(changed: labels)" in message


# --- 7. two runs on one --out --------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_locked_out_is_refused_and_a_stale_lock_taken_over(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys\nfrom captum_shallow.io._atomic import folder_lock\n"
            f"with folder_lock({str(out)!r}):\n    print('locked', flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        message = _one_line_error(capsys, _masks_argv(dataset, out))
        assert f"another run (process {holder.pid}" in message
        assert _mask_names(out) == []
    finally:
        holder.kill()  # as if killed: its lock file stays behind, naming a dead process
        holder.wait()
    assert [path.name for path in out.iterdir() if path.name.startswith(".")]
    assert main(_masks_argv(dataset, out)) == 0
    assert _mask_names(out) == ["a.png", "b.png", "c.png"]
    assert not [path for path in out.rglob(".*") if path.is_file()]


# --- 8. --target names: exact match first, ambiguity listed ---------------------------


def test_class_name_exact_match_wins_and_ambiguity_lists_candidates() -> None:
    classes = imagenet_classes()
    assert classes[264] == "Cardigan"
    assert classes[474] == "cardigan"
    assert class_index("Cardigan") == 264
    assert class_index("cardigan") == 474
    assert class_index("egyptian CAT") == 285  # one case-insensitive match is fine
    with pytest.raises(ValueError, match=r"ambiguous class 'CARDIGAN': 'Cardigan' \(264\) or "
                       r"'cardigan' \(474\)"):  # fmt: skip
        class_index("CARDIGAN")


# --- 9. explain: one output per image, never overwritten --------------------------------


@pytest.fixture
def resnet5(tmp_path: Path) -> Path:
    path = tmp_path / "resnet18-5.pt"
    torch.save(build_model("resnet18", num_classes=5).state_dict(), path)
    return path


def _explain_argv(weights: Path, *extra: str) -> list[str]:
    return ["explain", "--arch", "resnet18", "--weights", str(weights), "--input-size", "32",
            "--layers", "layer2,layer3", "--target", "1", *extra]  # fmt: skip


def test_explain_gives_every_image_its_own_output_names(tmp_path: Path, resnet5: Path) -> None:
    images = []
    for name, value in (("a.jpg", 10), ("a.png", 120), ("a-1.png", 240), ("A.png", 60)):
        images.append(str(tmp_path / name))
        Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(images[-1])
    out = tmp_path / "out"
    assert main(_explain_argv(resnet5, *images, "--save-maps", "--out", str(out))) == 0
    figures = sorted(path.name for path in out.glob("*.cam.png"))
    assert len(figures) == 4
    assert len({name.casefold() for name in figures}) == 4  # also on case-blind disks
    maps = [np.load(path)["fused"] for path in sorted(out.glob("*.maps.npz"))]
    assert len(maps) == 4


# --- 10. one line instead of a traceback -----------------------------------------------


def test_decompression_bomb_is_one_line_in_explain_and_evaluate_masks(
    tmp_path: Path,
    resnet5: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(big)
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((30, 30), dtype=np.uint8), "L").save(tmp_path / folder / "m.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 900 px > 2 x 100: a "bomb"
    argv = _explain_argv(resnet5, str(big), "--out", str(tmp_path / "out"))
    assert "decompression bomb" in _one_line_error(capsys, argv)
    assert not (tmp_path / "out").exists()
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert "decompression bomb" in _one_line_error(capsys, argv)


def test_input_size_too_large_is_one_line_before_loading_the_model(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    argv = _explain_argv(resnet5, str(image), "--out", str(tmp_path / "out"))
    argv[argv.index("--input-size") + 1] = "100000"
    message = _one_line_error(capsys, argv)
    assert message.startswith("--input-size 100000 is too large (at most 4096 px")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", ["1", "8", "16"])
def test_input_size_too_small_for_the_model_names_the_smallest_that_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    argv = ["explain", str(image), "--input-size", size, "--out", str(tmp_path / "out")]
    message = _one_line_error(capsys, argv)
    assert message.startswith(f"--input-size {size} is too small for efficientnet-lite0 (")
    assert message.endswith("; the smallest size that runs is 32")
    assert not (tmp_path / "out").exists()


def test_meta_device_is_one_line(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    argv = _explain_argv(resnet5, str(image), "--device", "meta", "--out", str(tmp_path / "o"))
    assert _one_line_error(capsys, argv).startswith("--device meta holds no data")
    argv = ["demo", "--device", "meta", "--out", str(tmp_path / "o")]
    assert _one_line_error(capsys, argv).startswith("--device meta holds no data")
    assert not (tmp_path / "o").exists()


def _void_masks(tmp_path: Path) -> list[str]:
    for folder, value in (("pred", 0), ("gt", 255)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((4, 4), value, dtype=np.uint8), "L").save(
            tmp_path / folder / "m.png"
        )
    return ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]


def test_evaluate_masks_json_pointing_at_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _void_masks(tmp_path)
    (tmp_path / "table").mkdir()
    message = _one_line_error(capsys, [*argv, "--json", str(tmp_path / "table")])
    assert message == f"--json {tmp_path / 'table'} is a folder; give a file name"
    assert list((tmp_path / "table").iterdir()) == []


@pytest.mark.parametrize("content", ["[]", '{"config": 3}', "null"])
def test_a_manifest_that_is_not_an_object_is_one_line(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message.startswith(f"{out / 'manifest.json'} is not a pseudo-masks manifest")
    assert (out / "manifest.json").read_text() == content
    assert _mask_names(out) == []


# --- 11. JSON without NaN -----------------------------------------------------------


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_masks_writes_null_when_every_pixel_is_void(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _void_masks(tmp_path)
    assert main([*argv, "--json", str(tmp_path / "table.json")]) == 0
    table = _strict_json((tmp_path / "table.json").read_text())
    assert isinstance(table, dict)
    assert table["miou"] is None
    assert set(table["classes"].values()) == {None}
    assert capsys.readouterr().out.splitlines()[-1].split()[:2] == ["mIoU", "-"]


# --- 12. the Python API --------------------------------------------------------------


def _small_model() -> nn.Module:
    return resnet18(num_classes=5).eval()


@pytest.mark.parametrize("method", [LayerCAM, LayerGradCam])
def test_an_empty_batch_is_a_clear_value_error(method: type[LayerCAM]) -> None:
    model = _small_model()
    with pytest.raises(ValueError, match=r"inputs hold 0 samples"):
        method(model, model.layer2).attribute(torch.rand(0, 3, 32, 32), target=1)
    with pytest.raises(ValueError, match=r"inputs hold 0 samples"):
        ShallowCAM(model, [model.layer1, model.layer2]).attribute(
            torch.rand(0, 3, 32, 32), target=[]
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_given_float32_inputs_says_which_dtype_to_pass(
    dtype: torch.dtype,
) -> None:
    model = _small_model().to(dtype)
    inputs = torch.rand(2, 3, 32, 32)
    name = str(dtype).removeprefix("torch.")
    expected = (
        rf"^the inputs are float32 but the model's parameters are {name}: pass "
        rf"inputs\.to\(torch\.{name}\) \(or convert the model back with model\.float\(\)\) \("
    )
    with pytest.raises(TypeError, match=expected):
        ShallowCAM.from_model(model, 32).attribute(inputs, target=1)
    with pytest.raises(TypeError, match=expected):
        LayerGradCam(model, model.layer2).attribute(inputs, target=1)
    if dtype is torch.bfloat16:  # what the message says works (CPU convolutions in bfloat16)
        fused = ShallowCAM.from_model(model, 32).attribute(inputs.to(dtype), target=1)
        assert fused.dtype is dtype
        assert bool(fused.isfinite().all())
        assert float(fused.amax()) == 1.0


@pytest.mark.parametrize(
    "target",
    [np.int64(3), np.array(3), np.array([3, 0]), [np.int64(3), np.int32(0)], np.int32(3)],
    ids=["int64", "0d-array", "array", "list-of-numpy", "int32"],
)
def test_numpy_targets_work_like_ints_and_lists(target: object) -> None:
    model = _small_model()
    inputs = torch.rand(2, 3, 32, 32)
    plain = np.asarray(target).tolist()
    expected = LayerCAM(model, model.layer2).attribute(inputs, target=plain)
    got = LayerCAM(model, model.layer2).attribute(inputs, target=target)  # type: ignore[arg-type]
    assert torch.equal(got, expected)
    fused = ShallowCAM(model, [model.layer1, model.layer2]).attribute(inputs, target=target)  # type: ignore[arg-type]
    assert torch.equal(fused, ShallowCAM(model, [model.layer1, model.layer2]).attribute(
        inputs, target=plain))  # fmt: skip


def test_a_compiled_model_is_explained_through_its_original_module() -> None:
    model = _small_model()
    compiled = torch.compile(model, backend="eager")
    inputs = torch.rand(2, 3, 32, 32)
    expected = LayerCAM(model, model.layer2).attribute(inputs, target=[1, 4])
    for layer in (compiled._orig_mod.layer2, model.layer2):  # type: ignore[union-attr]
        got = LayerCAM(compiled, layer).attribute(inputs, target=[1, 4])
        assert torch.equal(got, expected)
    fused = ShallowCAM(compiled, [model.layer1, model.layer2]).attribute(inputs, target=1)
    assert torch.equal(fused, ShallowCAM(model, [model.layer1, model.layer2]).attribute(
        inputs, target=1))  # fmt: skip


def test_a_layer_silenced_by_a_compiled_forward_says_what_to_do() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()  # fmt: skip
    compiled = torch.compile(model, backend="eager")
    inputs = torch.rand(1, 3, 8, 8)
    compiled(inputs)  # compiled before the hooks exist: its graph runs without them

    def forward(x: torch.Tensor) -> torch.Tensor:
        return compiled(x)

    with pytest.raises(ValueError, match=r"did not run .* torch\.compile .* uncompiled model"):
        LayerCAM(forward, model[0]).attribute(inputs, target=0)


def test_a_models_own_assertion_is_not_reported_as_a_layer_that_did_not_run() -> None:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
    layer = vit.encoder.layers.encoder_layer_1.ln_1
    # Its position embeddings fix the input size: torch._assert raises AssertionError.
    with pytest.raises(AssertionError, match="Wrong image height! Expected 32 but got 64!"):
        LayerCAM(vit, layer, reshape="auto").attribute(torch.rand(1, 3, 64, 64), target=0)
    with pytest.raises(AssertionError, match="Wrong image height"):
        ShallowCAM.from_model(vit).attribute(torch.rand(1, 3, 64, 64), target=0)


# --- 13. a labels CSV with a byte-order mark --------------------------------------------


def test_labels_and_classes_files_with_a_utf8_bom_are_read(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_bytes("\ufeffcat\ndog\n".encode())
    (tmp_path / "labels.csv").write_bytes("\ufeffimage,classes\r\na.png,cat dog\r\n".encode())
    classes = read_class_names(tmp_path / "classes.txt")
    assert classes == ("cat", "dog")
    assert read_labels_file(tmp_path / "labels.csv", classes) == {"a.png": (0, 1)}


def test_pseudo_masks_reads_a_spreadsheet_labels_file(dataset: Path, tmp_path: Path) -> None:
    text = (dataset / "labels.csv").read_text()
    (dataset / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert main(_masks_argv(dataset, tmp_path / "out")) == 0
    assert _mask_names(tmp_path / "out") == ["a.png", "b.png", "c.png"]
