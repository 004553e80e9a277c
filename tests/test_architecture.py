"""The package's import graph: no cycle, and no import from a lower layer to a
higher one, so the data flow images -> model -> maps -> masks -> scores reads
down the folders without going back up."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import captum_shallow

PACKAGE = Path(captum_shallow.__file__).parent

#: Layers from the bottom up; a module may import only from its own layer or below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_errors", "_signals", "_modules", "_layout", "_checks", "_moved"),
    ("io",),
    ("models",),
    ("attribution",),
    ("__init__",),  # the public API: the attribution classes and the version
    ("datasets",),
    ("segmentation",),
    ("evaluation",),
    ("visualization",),
    ("cli", "__main__", "quantus"),
)
_LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``captum_shallow`` module ``path`` imports, at any depth of its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # ``from . import _demo`` imports a submodule, not a name of the package
            submodules = {f"{module}.{alias.name}" for alias in node.names}
            submodules = {m for m in submodules if _resolve(m) is not None}
            found.update(submodules or {module})
    return {m for m in found if m.split(".")[0] == "captum_shallow" and m != name}


def _resolve(module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    for path in (PACKAGE / relative / "__init__.py", (PACKAGE / relative).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in _LAYER_OF, f"{module} belongs to no layer: add its folder to LAYERS"
    return _LAYER_OF[top]


MODULES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {_module_name(path): _imports(path) for path in MODULES}


def test_every_module_of_the_package_is_in_a_layer_and_imports_exist() -> None:
    for module, imported in GRAPH.items():
        _layer(module)
        for target in imported:
            assert _resolve(target) is not None, f"{module} imports {target}, which is no module"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_from_a_higher_layer(module: str) -> None:
    upward = sorted(t for t in GRAPH[module] if _layer(t) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports higher layers: {upward}"


def test_the_import_graph_has_no_cycle() -> None:
    # A package's __init__ re-exports its modules: the edge from a module to its own
    # package's __init__ would close a loop that Python resolves by import order, so
    # modules import siblings directly and never their own package.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_a_self_check_finds_a_cycle_and_an_upward_import() -> None:
    # The walkers above must be able to fail: an ``io`` module importing
    # ``attribution`` is upward, and two modules importing each other are a cycle.
    assert _layer("captum_shallow.attribution._cams") > _layer("captum_shallow.io._images")
    fake = {"a": {"b"}, "b": {"a"}}
    seen: list[str] = []

    def visit(module: str, path: list[str]) -> bool:
        if module in path:
            seen.extend(path[path.index(module) :])
            return True
        return any(visit(t, [*path, module]) for t in fake[module])

    assert visit("a", [])
    assert seen == ["a", "b"]


@pytest.mark.parametrize(
    "package", ["io", "models", "attribution", "datasets", "segmentation", "evaluation"]
)
def test_each_folder_says_its_one_job(package: str) -> None:
    module = importlib.import_module(f"captum_shallow.{package}")
    assert module.__doc__
    assert len(module.__doc__.split()) >= 15


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("captum_shallow.models", "read_image", "captum_shallow.io"),
        ("captum_shallow.models", "sample_photo", "captum_shallow.datasets"),
        ("captum_shallow.segmentation", "SyntheticConfig", "captum_shallow.datasets"),
        ("captum_shallow.segmentation", "evaluate_cams", "captum_shallow.evaluation"),
    ],
)
def test_a_moved_name_still_imports_from_its_old_home_with_a_warning(
    old: str, name: str, new: str
) -> None:
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        getattr(importlib.import_module(old), "nothing_here")  # noqa: B009
