"""The README: its title and two fresh-machine commands (which CI runs), its extras
table, its quickstart."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_its_title_and_the_two_fresh_machine_commands() -> None:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    # The title, then at once the two commands.
    assert text.startswith("# captum_shallow\n\n```bash\n")
    assert blocks[0].strip() == 'pip install -e ".[demo]" && captum-shallow demo'
    # -m "": every test, the slow and browser ones that a plain run deselects included.
    assert blocks[1].strip() == 'pip install -e ".[test]" && python -m pytest -m ""'
    # CI runs both verbatim, in order, each failing the run when it fails.
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    lines = [ci.index(f"{block.strip()} || exit") for block in blocks[:2]]
    assert lines == sorted(lines)
    assert any(line.startswith("python3 -m venv ") for line in ci[: lines[0]])


def test_readme_table_names_every_extra_that_skips_tests() -> None:
    from conftest import OPTIONAL_EXTRAS

    pyproject = (README.parent / "pyproject.toml").read_text()
    table = re.findall(r"^\| `([^`|]+)` \|", README.read_text(), flags=re.M)
    for extra in OPTIONAL_EXTRAS:
        assert re.search(rf"^{extra} = \[", pyproject, flags=re.M), f"no extra {extra!r}"
        assert extra in table, f"README's extras table lacks {extra!r}"


def test_readme_quickstart_runs() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert tuple(namespace["attr"].shape) == (1, 1, 56, 56)  # type: ignore[attr-defined]
    assert tuple(namespace["upsampled"].shape) == (1, 1, 224, 224)  # type: ignore[attr-defined]
    fused = namespace["fused"]
    assert tuple(fused.shape) == (1, 1, 56, 56)  # type: ignore[attr-defined]
    assert float(fused.max()) == 1.0  # type: ignore[attr-defined]
    assert tuple(namespace["smooth"].shape) == (1, 1, 56, 56)  # type: ignore[attr-defined]
