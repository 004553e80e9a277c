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
