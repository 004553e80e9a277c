"""A hostile file system: links, special files, odd names, broken outputs and
signals. Nothing is written outside ``--out``, no input is lost, no half-written
or broken mask is accepted, and every refusal is one line (exit 2 on the CLI).

The pseudo-mask runs use the three-image folder dataset of ``test_bad_inputs``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_bad_inputs import (
    _explain_argv,
    _mask_names,
    _masks_argv,
    _one_line_error,
    dataset,
    resnet5,
)
from torchvision.models import resnet18

from captum_shallow import LayerCAM, ShallowCAM
from captum_shallow.cli import main
from captum_shallow.io import atomic_write, preprocess, read_image
from captum_shallow.io._atomic import LOCK_NAME
from captum_shallow.io._label_png import read_label_png, write_label_png
from captum_shallow.segmentation._jobs import read_class_names, read_labels_file

__all__ = ["dataset", "resnet5"]  # the fixtures, imported


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A call that blocks (opening a FIFO without a writer) fails after 20 s instead."""

    def hung(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("blocked for 20 s (opened a FIFO?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- the lock file ------------------------------------------------------------------


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_linked_lock_file_is_refused_and_its_target_untouched(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (os.symlink if link == "symbolic" else os.link)(victim, out / LOCK_NAME)
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    kind = "a symbolic link" if link == "symbolic" else "a hard link to another file"
    assert message.startswith(f"{out / LOCK_NAME} is {kind}; the lock file is never followed")
    assert victim.read_text() == "precious\n"
    assert _mask_names(out) == []
    assert (out / LOCK_NAME).exists()  # not the package's: left where it is


# --- every name stays inside --out (and its image inside --root) ----------------------


def _voc(root: Path, ids: str) -> Path:
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text(ids)
    return voc


def _voc_argv(voc: Path, out: Path, *extra: str) -> list[str]:
    return ["pseudo-masks", "--dataset", "voc", "--root", str(voc), "--out", str(out), *extra]


@pytest.mark.parametrize("bad", ["../../../../victim/evil", "/victim/evil", "a/../../evil", "a//b"])
def test_a_voc_split_id_outside_out_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    voc = _voc(tmp_path, f"2007_000032\n{bad}\n")
    out = tmp_path / "deep" / "er" / "out"
    message = _one_line_error(capsys, _voc_argv(voc, out))
    assert message == (
        f"split file {voc / 'ImageSets/Segmentation/train.txt'}: {bad!r} is not a plain name "
        "inside the folder (no absolute path, no '..', '.' or empty part, no backslash)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOC2012"]  # no --out, no victim/


def test_a_voc_labels_file_id_outside_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    voc = _voc(tmp_path, "x\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,classes\nx,cat\n../evil,dog\n")
    message = _one_line_error(capsys, _voc_argv(voc, tmp_path / "out", "--labels", str(labels)))
    assert message.startswith(f"labels file {labels}: '../evil' is not a plain name")
    assert not (tmp_path / "out").exists()


def test_a_folder_labels_path_outside_root_is_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (dataset / "labels.csv").write_text("image,classes\na.png,cat\n../photos/b.png,dog\n")
    message = _one_line_error(capsys, _masks_argv(dataset, tmp_path / "out"))
    assert message.startswith(f"labels file {dataset / 'labels.csv'}: '../photos/b.png' is not")
    assert not (tmp_path / "out").exists()


def test_a_symlinked_folder_inside_out_that_leads_into_the_dataset_is_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (dataset / "sub").mkdir()
    (dataset / "a.png").rename(dataset / "sub" / "a.png")
    (dataset / "labels.csv").write_text("image,classes\nsub/a.png,cat\nb.png,dog\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(dataset / "sub")  # out/sub -> the dataset's own folder
    before = sorted(p.name for p in dataset.rglob("*"))
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == (
        f"the mask of 'sub/a', {out / 'sub/a.png'} resolves to {dataset / 'sub/a.png'}, "
        f"outside {out} (through a symbolic link or '..'); refusing to use it"
    )
    assert sorted(p.name for p in dataset.rglob("*")) == before  # nothing written there
    assert sorted(p.name for p in out.iterdir()) == ["sub"]  # no manifest, no lock


# --- special files: refused at once, never opened in a way that blocks -------------------


def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_is_not_an_image_for_the_api_or_explain(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    fifo = _fifo(tmp_path / "photo.png")
    expected = f"cannot read image {fifo}: it is a FIFO (named pipe), not a regular file"
    with pytest.raises(ValueError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        read_image(fifo)
    with pytest.raises(ValueError, match=r"label image .*: it is a FIFO \(named pipe\)"):
        read_label_png(fifo)
    argv = _explain_argv(resnet5, str(fifo), "--out", str(tmp_path / "out"))
    assert _one_line_error(capsys, argv) == expected
    assert not (tmp_path / "out").exists()


def test_pseudo_masks_counts_a_fifo_image_as_failed_and_refuses_fifo_lists(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    _fifo(dataset / "b.png")
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out)) == 1
    assert _mask_names(out) == ["a.png", "c.png"]
    assert (out / "failures.txt").read_text() == (
        f"{dataset / 'b.png'}\tcannot read image {dataset / 'b.png'}: it is a FIFO "
        "(named pipe), not a regular file\n"
    )
    capsys.readouterr()
    for name in ("classes.txt", "labels.csv"):
        kept = (dataset / name).read_bytes()
        _fifo(dataset / name)
        message = _one_line_error(capsys, _masks_argv(dataset, tmp_path / "other"))
        kind = name.split(".")[0]
        assert message == (
            f"cannot read {kind} file {dataset / name}: it is a FIFO (named pipe), not a "
            "regular file"
        )
        (dataset / name).unlink()
        (dataset / name).write_bytes(kept)
    _fifo(out / "manifest.json")
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == (
        f"cannot read manifest {out / 'manifest.json'}: it is a FIFO (named pipe), not a "
        "regular file"
    )


def test_a_fifo_voc_split_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    voc = _voc(tmp_path, "")
    split = _fifo(voc / "ImageSets/Segmentation/train.txt")
    message = _one_line_error(capsys, _voc_argv(voc, tmp_path / "out"))
    assert (
        message == f"cannot read split file {split}: it is a FIFO (named pipe), not a regular file"
    )


def test_evaluate_masks_refuses_fifos_and_never_replaces_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_hang: None
) -> None:
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        with open(tmp_path / folder / "m.png", "wb") as stream:
            write_label_png(stream, np.ones((4, 4), dtype=np.uint8))
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    json_fifo = _fifo(tmp_path / "table.json")
    message = _one_line_error(capsys, [*argv, "--json", str(json_fifo)])
    assert message == (
        f"cannot write {json_fifo}: it is a FIFO (named pipe), not a regular file (only regular "
        "files are replaced)"
    )
    assert json_fifo.is_fifo()  # still the user's FIFO
    classes = _fifo(tmp_path / "classes.txt")
    message = _one_line_error(capsys, [*argv, "--classes", str(classes)])
    assert message.startswith(f"cannot read classes file {classes}: it is a FIFO")
    _fifo(tmp_path / "pred" / "m.png")
    message = _one_line_error(capsys, argv)
    assert message.startswith(
        f"cannot read label image {tmp_path / 'pred' / 'm.png'}: it is a FIFO"
    )


# --- durable writes ---------------------------------------------------------------------


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "fsync file")
        real_fsync(handle)

    def replace(source: str, target: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_write(tmp_path / "mask.png") as stream:
        stream.write(b"data")
    assert events == ["fsync file", "rename", "fsync folder"]
    assert (tmp_path / "mask.png").read_bytes() == b"data"


# --- names near the length limit, names that are not UTF-8 --------------------------------


def test_a_name_near_the_length_limit_is_written_under_its_own_name(tmp_path: Path) -> None:
    name = "é" * 100 + "x" * 46 + ".png"  # 250 bytes of UTF-8, 5 under the limit
    assert len(os.fsencode(name)) == 250
    with atomic_write(tmp_path / name) as stream:
        stream.write(b"whole")
    assert [path.name for path in tmp_path.iterdir()] == [name]


def test_pseudo_masks_and_explain_take_names_near_the_length_limit(
    dataset: Path, tmp_path: Path, resnet5: Path
) -> None:
    long = "n" * 240
    (dataset / "a.png").rename(dataset / f"{long}.png")
    (dataset / "labels.csv").write_text(f"image,classes\n{long}.png,cat\nb.png,dog\n")
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out, "--save-cams")) == 0
    assert _mask_names(out) == ["b.png", f"{long}.png"]
    assert (out / "cams" / f"{long}.npz").is_file()
    figures = tmp_path / "figures"
    argv = _explain_argv(
        resnet5, str(dataset / f"{long}.png"), "--save-maps", "--out", str(figures)
    )
    assert main(argv) == 0
    assert sorted(path.name for path in figures.iterdir()) == [
        f"{long}.cam.png",
        f"{long}.maps.npz",
    ]


def test_names_that_are_not_utf8_are_read_written_and_printed(
    dataset: Path, tmp_path: Path, resnet5: Path
) -> None:
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/donn\xe9es"))
    with pytest.raises(UnicodeEncodeError):
        str(odd).encode()  # a Latin-1 folder name: not UTF-8
    dataset.rename(odd)
    (odd / "c.png").write_bytes(b"not a png")  # fails: failures.txt names a non-UTF-8 path
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/sortie-\xff"))
    assert main(_masks_argv(odd, out, weights=tmp_path / "r3.pt")) == 1
    assert _mask_names(out) == ["a.png", "b.png"]
    assert (out / "failures.txt").read_bytes().startswith(os.fsencode(odd / "c.png") + b"\t")
    assert json.loads((out / "manifest.json").read_text())["config"]["root"] == str(odd)
    # explain prints each image's line on stdout: a child process, as from a terminal
    child = subprocess.run(
        [sys.executable, "-m", "captum_shallow", *_explain_argv(resnet5, str(odd / "a.png"),
         "--html", "--out", str(out / "figures"))],
        capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr.decode(errors="replace")[-2000:]
    assert b"donn\\udce9es" in child.stdout  # escaped, not a UnicodeEncodeError
    assert sorted(os.listdir(os.fsencode(out / "figures"))) == [b"a.cam.png", b"report.html"]


# --- resume: a broken mask is made again, a foreign file never taken ----------------------


def test_resume_makes_broken_masks_again_and_says_so(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out)) == 0
    good = {name: (out / name).read_bytes() for name in ("a.png", "b.png", "c.png")}
    (out / "a.png").write_bytes(good["a.png"][: len(good["a.png"]) // 2])  # truncated
    with open(out / "b.png", "wb") as stream:  # decodes, but 5x5: not the image's 24x20
        write_label_png(stream, np.zeros((5, 5), dtype=np.uint8))
    with open(out / "c.png", "wb") as stream:  # c is a cat (label 1): 3 (car) is not its own
        write_label_png(stream, np.full((20, 24), 3, dtype=np.uint8))
    capsys.readouterr()
    assert main(_masks_argv(dataset, out)) == 0
    err = capsys.readouterr().err
    assert f"recomputing {out / 'a.png'}: it does not decode (cannot read label image" in err
    assert f"recomputing {out / 'b.png'}: it is 5x5, the image 24x20" in err
    assert (
        f"recomputing {out / 'c.png'}: it holds label 3, which is not one of the image's ([0, 1])"
    ) in err
    assert "3 written (3 of them broken, made again), 0 already done" in err
    assert {name: (out / name).read_bytes() for name in good} == good
    assert json.loads((out / "manifest.json").read_text())["recomputed_broken"] == 3


def test_a_file_at_a_mask_name_in_a_new_out_is_refused_and_kept(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"the user's own b.png")
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == (
        f"{out} already holds {out / 'b.png'} but no manifest.json, so this command did not "
        "write it; refusing to take it for a finished mask or replace it: choose another --out"
    )
    assert (out / "b.png").read_bytes() == b"the user's own b.png"
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]


# --- EXIF orientation ------------------------------------------------------------------


def test_exif_orientation_is_honoured_by_the_reader_and_the_masks(
    dataset: Path, tmp_path: Path
) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned a quarter turn clockwise
    Image.fromarray(pixels).save(dataset / "a.png", exif=exif)
    turned = read_image(dataset / "a.png")
    expected = torch.from_numpy(np.rot90(pixels, k=-1).copy()).permute(2, 0, 1)
    assert torch.equal(turned, expected)  # (3, 24, 20): as every viewer shows it
    out = tmp_path / "out"
    assert main(_masks_argv(dataset, out)) == 0
    assert read_label_png(out / "a.png").shape == (24, 20)
    assert main(_masks_argv(dataset, out)) == 0  # and the resume takes it as whole
    assert json.loads((out / "manifest.json").read_text())["skipped_done"] == 3


# --- explain never writes over an input, nor over a file it did not write -----------------


def test_explain_never_overwrites_its_own_inputs(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for name, value in (("a.png", 10), ("a.cam.png", 200)):  # a.cam.png: the user's photo
        Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(folder / name)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    argv = _explain_argv(resnet5, str(folder / "a.png"), str(folder / "a.cam.png"))
    message = _one_line_error(capsys, [*argv, "--out", str(folder)])
    assert message == (
        f"{folder / 'a.cam.png'} is an input of this run; refusing to overwrite it: "
        "choose another --out"
    )
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_explain_overwrites_only_the_files_it_wrote(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = [*_explain_argv(resnet5, str(tmp_path / "a.png"), "--save-maps", "--html"),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 0  # its own outputs: replaced
    assert sorted(p.name for p in out.iterdir()) == ["a.cam.png", "a.maps.npz", "report.html"]
    capsys.readouterr()
    for name in ("a.cam.png", "a.maps.npz", "report.html"):
        kept = (out / name).read_bytes()
        (out / name).write_bytes(b"the user's own file")
        message = _one_line_error(capsys, argv)
        assert message == (
            f"{out / name} exists and was not written by captum-shallow; refusing to "
            "overwrite it: move it away or choose another --out"
        )
        assert (out / name).read_bytes() == b"the user's own file"
        (out / name).write_bytes(kept)


# --- signals a scheduler sends ------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_a_scheduler_signal_leaves_a_true_manifest_and_the_run_resumes(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:
    import captum_shallow.segmentation._runner as runner

    real = runner.run_masks

    def signalled_after_one(run: Any, jobs: Any, **kwargs: Any) -> Any:
        real(run, jobs[:1], **kwargs)
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(runner, "run_masks", signalled_after_one)
    out = tmp_path / "out"
    name = signal.Signals(signum).name
    before = signal.getsignal(signum)  # SIG_IGN for SIGHUP under nohup
    assert main(_masks_argv(dataset, out)) == 128 + signum
    assert capsys.readouterr().err.splitlines()[-1] == f"captum-shallow: interrupted by {name}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["error"]) == (
        "interrupted",
        f"interrupted ({name}); rerun the same command to resume",
    )
    assert _mask_names(out) == ["a.png"]
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temporary, no lock
    assert signal.getsignal(signum) == before  # main() put the handlers back

    monkeypatch.undo()
    assert main(_masks_argv(dataset, out)) == 0
    assert _mask_names(out) == ["a.png", "b.png", "c.png"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


# --- torchrun: every rank stops with the same one line ----------------------------------------


def test_torchrun_ranks_agree_on_one_line_before_any_collective_call(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys\nfrom captum_shallow.io._atomic import folder_lock\n"
            f"with folder_lock({str(out)!r}):\n    print('locked', flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node=2",
                    "--master_addr=127.0.0.1", f"--master_port={port}"]  # fmt: skip
        result = subprocess.run(
            [sys.executable, *launcher, "-m", "captum_shallow", *_masks_argv(dataset, out)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in result.stderr.splitlines() if "captum-shallow: error:" in line]
    assert result.returncode != 0
    assert len(errors) == 2, result.stderr
    assert errors[0] == errors[1]
    assert f"is in use by another run (process {holder.pid}" in errors[0]
    for symptom in ("Connection closed", "DistBackendError", "gloo", "RuntimeError"):
        assert symptom not in result.stderr


# --- class names with spaces ------------------------------------------------------------


def test_class_names_with_spaces_in_classes_and_labels_files(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("traffic light\nperson\nfire  hydrant\ntraffic\n")
    assert read_class_names(tmp_path / "classes.txt") == (
        "traffic light", "person", "fire hydrant", "traffic",
    )  # fmt: skip
    classes = read_class_names(tmp_path / "classes.txt")
    (tmp_path / "labels.csv").write_text(
        "image,classes\na.png,traffic light person\nb.png,fire hydrant; traffic\n"
        "c.png,traffic person\nd.png,\n"
    )
    assert read_labels_file(tmp_path / "labels.csv", classes) == {
        "a.png": (0, 1), "b.png": (2, 3), "c.png": (1, 3), "d.png": (),
    }  # fmt: skip
    (tmp_path / "labels.csv").write_text("image,classes\na.png,traffic lights\n")
    with pytest.raises(ValueError, match=r"line 2: unknown class 'lights'"):
        read_labels_file(tmp_path / "labels.csv", classes)


def test_evaluate_masks_prints_class_names_with_spaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        with open(tmp_path / folder / "m.png", "wb") as stream:
            write_label_png(stream, np.array([[0, 1], [1, 1]], dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("traffic light\n")
    argv = ["evaluate-masks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
            "--classes", str(tmp_path / "classes.txt")]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[2] == "traffic light   100.00"


# --- tensors of another dtype or range, a model left in train mode --------------------------


def test_preprocess_refuses_floats_outside_0_1_and_reads_uint8() -> None:
    photo = (torch.arange(192) * 4 % 256).to(torch.uint8).view(3, 8, 8)  # 0 to 252
    assert torch.equal(preprocess(photo, 8), preprocess(photo.float() / 255, 8))
    with pytest.raises(ValueError, match=r"^a floating-point image with values in \[0, 255\]"):
        preprocess(torch.full((3, 8, 8), 255.0).index_fill_(1, torch.tensor([0]), 0.0), 8)
    with pytest.raises(ValueError, match=r"values in \[-2\.118, 2\.588\]"):
        preprocess(preprocess(photo, 8))  # normalised twice
    assert preprocess(torch.full((3, 8, 8), 1.04), 8).shape == (3, 8, 8)  # overshoot is fine


def test_attribute_refuses_an_integer_image_with_the_fix() -> None:
    model = resnet18(num_classes=5).eval()
    cam = LayerCAM(model, model.layer2)
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"^inputs\[0\] is a \(2, 3, 32, 32\) torch\.uint8 image; "):
        cam.attribute(images, target=1)
    with pytest.raises(TypeError, match=r"pass preprocess\(image\)"):
        ShallowCAM(model, [model.layer1, model.layer2]).attribute(images, target=1)


def test_attribute_on_a_model_in_train_mode_leaves_its_statistics_and_mode_alone() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=5)
    images = torch.rand(2, 3, 32, 32)
    expected = LayerCAM(model.eval(), model.layer2).attribute(images, target=1)
    model.train()
    model.layer1.eval()  # a mixed state, put back exactly
    before = {name: value.clone() for name, value in model.state_dict().items()}
    maps = LayerCAM(model, model.layer2).attribute(images, target=1)
    torch.testing.assert_close(maps, expected)  # eval-mode maps: running statistics
    fused = ShallowCAM(model, [model.layer1, model.layer2]).attribute(images, target=1)
    assert fused.shape == (2, 1, 8, 8)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # num_batches too
    assert [model.training, model.layer1.training, model.layer2.training] == [True, False, True]


def test_explain_refuses_an_output_name_over_the_limit_before_any_work(
    tmp_path: Path, resnet5: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / ("n" * 247 + ".png")  # fits; "<stem>.cam.png" (255 bytes) fits too
    Image.fromarray(np.full((16, 16, 3), 30, dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    message = _one_line_error(capsys, [*_explain_argv(resnet5, str(image), "--save-maps"),
                                       "--out", str(out)])  # fmt: skip
    assert message == (
        f"the output name {'n' * 247}.maps.npz is 256 bytes, over the file system's limit of "
        "255; give the image a shorter name (its stem names the outputs)"
    )
    assert not out.exists()


def test_a_fifo_given_as_weights_is_refused_in_one_line_without_waiting(tmp_path: Path) -> None:
    from captum_shallow.models import build_model

    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"weights file .*weights\.pt: it is a FIFO"):
        build_model("resnet18", weights=fifo)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        build_model("resnet18", weights=tmp_path / "missing.pt")


def test_pseudo_masks_refuses_a_mask_name_over_the_out_disks_limit_before_any_work(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The images' disk takes the name; --out sits on one with a shorter limit (eCryptfs
    # takes 143 bytes): the run stops before any work, not job by job.
    from captum_shallow.segmentation import _runner

    long = "n" * 150
    (dataset / "a.png").rename(dataset / f"{long}.png")
    (dataset / "labels.csv").write_text(f"image,classes\n{long}.png,cat\nb.png,dog\n")
    monkeypatch.setattr(_runner, "name_limit", lambda folder: 143)
    out = tmp_path / "out"
    message = _one_line_error(capsys, _masks_argv(dataset, out))
    assert message == (
        f"the output of {long!r}, {long}.png, has a name of 154 bytes, over the file "
        "system's limit of 143; give the image a shorter name (its id names the outputs)"
    )
    assert _mask_names(out) == []


def test_torch_errors_about_dead_workers_read_as_what_they_mean() -> None:
    from captum_shallow._errors import Interrupted, UserError
    from captum_shallow._signals import stop_signals_interrupt, stopped_worker

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals_interrupt():  # the handlers are put back after
        ended = stopped_worker(
            RuntimeError("DataLoader worker (pid 12) is killed by signal: Terminated. ")
        )
        assert isinstance(ended, Interrupted)
        assert ended.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the cleanup runs on
    assert signal.getsignal(signal.SIGTERM) == before
    killed = stopped_worker(
        RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. ")
    )
    assert isinstance(killed, UserError)
    assert str(killed) == (
        "a data-loading worker (process 12) was killed by signal 'Killed' (out of memory?); "
        "rerun with fewer --workers (0 loads in the main process): the same command resumes"
    )
    gone = stopped_worker(RuntimeError("DataLoader worker (pid(s) 12, 13) exited unexpectedly"))
    assert isinstance(gone, UserError)
    assert "process 12, 13) exited unexpectedly" in str(gone)
    assert stopped_worker(RuntimeError("CUDA out of memory")) is None
    assert (
        stopped_worker(ValueError("DataLoader worker (pid 12) is killed by signal: Killed."))
        is None
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_to_the_process_group_with_loader_workers_stops_cleanly(
    tmp_path: Path, workers: int
) -> None:
    # A scheduler signals the whole group: the DataLoader's workers die of the same
    # SIGTERM, before or after the main process sees its own.
    from captum_shallow.models import build_model

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,classes"]
    for i in range(300):
        pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"i{i:03d}.png")
        lines.append(f"i{i:03d}.png,cat")
    (root / "classes.txt").write_text("cat\ndog\ncar\n")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=3).state_dict(), tmp_path / "r3.pt")
    out = tmp_path / "out"
    argv = [sys.executable, "-W", "ignore", "-c",
            "import sys; from captum_shallow.cli import main; sys.exit(main())",
            *_masks_argv(root, out)[:-4], "--workers", str(workers), "--out", str(out)]  # fmt: skip
    child = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        while not (out.is_dir() and any(out.glob("*.png"))):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 128 + signal.SIGTERM, err
    assert [line for line in err.splitlines() if line.strip()] == [
        "captum-shallow: interrupted by SIGTERM"
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert 0 < len(_mask_names(out)) < 300
    assert not [path for path in out.rglob(".*") if path.is_file()]  # no temporary, no lock
    assert main([*_masks_argv(root, out)[:-4], "--workers", "0", "--out", str(out)]) == 0
    assert len(_mask_names(out)) == 300
