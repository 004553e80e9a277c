"""Every example in the package's docstrings and in the documentation pages runs.

One test per module of ``captum_shallow`` (collected with :mod:`pkgutil`) runs
the ``>>>`` examples of all its docstrings, and one test per page of ``docs/``
that holds examples runs that page, with ``ELLIPSIS | NORMALIZE_WHITESPACE``.
A test passes only when it ran at least one example and every example gave the
output written next to it; the modules without an example are listed, each
with the reason, so none passes by running nothing.
A docstring whose examples need an optional extra runs in a test of its own,
skipped without the extra; each docstring runs in exactly one test.
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
# Docstrings whose examples need an optional extra (tests/conftest.py): name -> extra.
NEEDS_EXTRA = {"captum_shallow.segmentation._irn.dense_crf": "crf"}
# Modules whose docstrings hold no example: packages that only re-export names whose
# own modules show them, the command line's internals (tests/test_cli.py runs every
# subcommand) and private plumbing that the public examples run through.
WITHOUT_EXAMPLES = {
    # packages: their names are shown in the modules that define them
    "captum_shallow",
    "captum_shallow.attribution",
    "captum_shallow.datasets",
    "captum_shallow.evaluation",
    "captum_shallow.io",
    "captum_shallow.models",
    "captum_shallow.segmentation",
    # the command line, run end to end by tests/test_cli.py and tests/test_pseudo_masks.py
    "captum_shallow.cli._demo",
    "captum_shallow.cli._errors",
    "captum_shallow.cli._evaluate_masks",
    "captum_shallow.cli._explain",
    "captum_shallow.cli._options",
    "captum_shallow.cli._pseudo_masks",
    "captum_shallow.segmentation._runner",
    # private plumbing under the public classes' examples
    "captum_shallow._checks",
    "captum_shallow._modules",
    "captum_shallow.attribution._hooks",
    "captum_shallow.attribution._propagation",
    "captum_shallow.attribution._reshape",
    "captum_shallow.models._efficientnet_lite",
    "captum_shallow.models._structure",
    "captum_shallow.segmentation._jobs",
}


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


def _docstrings(name: str) -> list[doctest.DocTest]:
    """The docstrings of module ``name`` (its own objects only) that hold examples."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(importlib.import_module(name), name) if test.examples]


def _run(tests: list[doctest.DocTest]) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", [name for name in _modules() if name not in WITHOUT_EXAMPLES])
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    tests = [test for test in _docstrings(name) if test.name not in NEEDS_EXTRA]
    result = _run(tests)
    assert result.attempted > 0, f"{name} runs no example: give it one (or list it)"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_modules_without_an_example_are_the_listed_ones() -> None:
    # A new module gets an example or a line in WITHOUT_EXAMPLES; a listed module
    # that gains an example leaves the list, so that its test runs it.
    without = {
        name
        for name in _modules()
        if not any(test.name not in NEEDS_EXTRA for test in _docstrings(name))
    }
    assert without == WITHOUT_EXAMPLES


@pytest.mark.parametrize(
    "qualified",
    [pytest.param(name, marks=pytest.mark.needs_extra(NEEDS_EXTRA[name])) for name in NEEDS_EXTRA],
)
def test_docstring_examples_needing_an_extra_run(
    qualified: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = qualified.rsplit(".", 1)[0]
    (test,) = [test for test in _docstrings(module) if test.name == qualified]
    result = _run([test])
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} failed in {qualified}"


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


def test_each_docstring_runs_in_exactly_one_test() -> None:
    # A re-exported object is found only in the module that defines it, so no
    # docstring (the dense_crf one included) is run twice.
    found = [test.name for name in _modules() for test in _docstrings(name)]
    assert len(found) == len(set(found)), sorted({n for n in found if found.count(n) > 1})
    assert "captum_shallow.attribution._cams.LayerCAM" in found
    for qualified in NEEDS_EXTRA:
        assert found.count(qualified) == 1
