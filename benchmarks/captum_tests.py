"""Run Captum's own ``LayerGradCam`` tests against ours, outside the repository.

Captum's test file is not part of this repository. Point this script at a
checkout of pytorch/captum (its version should match the installed captum's;
the script says when it does not); it copies
``tests/attr/layer/test_grad_cam.py`` into a temporary folder, swaps its one
import of Captum's ``LayerGradCam`` for ``captum_shallow``'s, changes nothing
else, and runs pytest on the copy (Captum's helpers come from the installed
captum, ``captum.testing.helpers``). Exit status: pytest's.

    python benchmarks/captum_tests.py /path/to/captum   # pytorch/captum on GitHub
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import captum

TEST_FILE = Path("tests/attr/layer/test_grad_cam.py")
THEIR_IMPORT = "from captum.attr._core.layer.grad_cam import LayerGradCam"
OUR_IMPORT = "from captum_shallow import LayerGradCam"
REPO = Path(__file__).resolve().parents[1]


def checkout_version(checkout: Path) -> str | None:
    """The ``__version__`` written in the checkout's ``captum/__init__.py``, if any."""
    found = re.search(
        r'__version__\s*=\s*"([^"]+)"', (checkout / "captum/__init__.py").read_text("utf-8")
    )
    return found.group(1) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of pytorch/captum")
    args = parser.parse_args(argv)
    source = args.checkout / TEST_FILE
    if not source.is_file():
        parser.error(f"{source} not found: is {args.checkout} a checkout of pytorch/captum?")
    text = source.read_text("utf-8")
    if text.count(THEIR_IMPORT) != 1:
        parser.error(f"{source} does not hold the line {THEIR_IMPORT!r} exactly once")
    version = checkout_version(args.checkout)
    if version != captum.__version__:
        print(f"note: the checkout says captum {version}, installed is {captum.__version__}")
    with tempfile.TemporaryDirectory(prefix="captum-shallow-captum-tests-") as folder:
        copy = Path(folder) / "test_grad_cam_captum_shallow.py"
        copy.write_text(text.replace(THEIR_IMPORT, OUR_IMPORT), "utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(copy)]
        return subprocess.run(command, cwd=folder, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
