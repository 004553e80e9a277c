"""Every example in the package's docstrings and in the documentation pages runs.

One test per module of ``captum_shallow`` (collected with :mod:`pkgutil`) runs
the ``>>>`` examples of all its docstrings, and one test per page of ``docs/``
that holds examples runs that page, with ``ELLIPSIS | NORMALIZE_WHITESPACE``.
A test passes only when every example gives the output written next to it.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import captum_shallow

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
DOCS = Path(__file__).resolve().parent.parent / "docs"
# Importing ``__main__`` runs the command line.
SKIPPED_MODULES = {"captum_shallow.__main__"}


def _modules() -> list[str]:
    names = [captum_shallow.__name__]
    for info in pkgutil.walk_packages(captum_shallow.__path__, prefix="captum_shallow."):
        if info.name not in SKIPPED_MODULES:
            names.append(info.name)
    return sorted(names)


def _pages() -> list[str]:
    return sorted(
        str(path.relative_to(DOCS))
        for path in DOCS.rglob("*.rst")
        if "_build" not in path.parts
        and "_generated" not in path.parts
        and ">>>" in path.read_text(encoding="utf-8")
    )


def _run(tests: list[doctest.DocTest]) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [test for test in finder.find(module, name) if test.examples]
    result = _run(tests)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.parametrize("page", _pages())
def test_documentation_page_examples_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(
        str(DOCS / page), module_relative=False, optionflags=OPTIONS, report=True
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page}"


def test_every_module_is_collected() -> None:
    names = _modules()
    assert "captum_shallow.attribution._truncation" in names
    assert "captum_shallow.segmentation._irn" in names
    assert "captum_shallow.visualization" in names
