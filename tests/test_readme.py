"""The README's Python quickstart runs as written and gives the shapes it claims."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert text.startswith("```bash\n")
    assert blocks[0].strip() == 'pip install -e ".[demo]" && captum-shallow demo'
    assert blocks[1].strip() == 'pip install -e ".[test]" && python -m pytest'
    ci = (README.parent / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci.splitlines()


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
