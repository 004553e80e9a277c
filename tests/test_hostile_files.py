"""A hostile file system: links, special files, odd names, broken outputs and
signals. Nothing is written outside ``--out``, no input is lost, no half-written
or broken mask is accepted, and every refusal is one line (exit 2 on the CLI).

The pseudo-mask runs use the three-image folder dataset of ``test_bad_inputs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_bad_inputs import _mask_names, _masks_argv, _one_line_error, dataset

from captum_shallow.io._atomic import LOCK_NAME

__all__ = ["dataset"]  # the fixture, imported


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
