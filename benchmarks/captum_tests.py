"""Run Captum's own tests against ours, outside the repository.

Captum's test files are not part of this repository. Point this script at a
checkout of pytorch/captum (its version should match the installed captum's;
the script says when it does not) and name test files under its ``tests/``
folder; it copies each into a temporary folder, swaps Captum's
``LayerGradCam`` for ``captum_shallow``'s, changes nothing else, and runs
pytest on the copies (Captum's helpers come from the installed captum,
``captum.testing``). Exit status: pytest's.

Two kinds of file are swapped:

- a file that imports ``LayerGradCam`` itself (``attr/layer/test_grad_cam.py``):
  that one import line becomes ours;
- a file generated from Captum's shared test configuration
  (``attr/test_hook_removal.py``, ``attr/test_targets.py``): its import of
  ``config`` is replaced by the same configuration in which every
  ``LayerGradCam`` is ours and, where that entry's layer returns a map with
  spatial dimensions (the other CAMs refuse a layer without, as documented),
  our other CAM classes are added to its list of algorithms.

    python benchmarks/captum_tests.py /path/to/captum   # the three files below
    python benchmarks/captum_tests.py /path/to/captum attr/test_targets.py
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

DEFAULT_FILES = ("attr/test_hook_removal.py", "attr/test_targets.py", "attr/layer/test_grad_cam.py")
THEIR_IMPORT = "from captum.attr._core.layer.grad_cam import LayerGradCam"
OUR_IMPORT = "from captum_shallow import LayerGradCam"
THEIR_CONFIG = "from captum.testing.attr.helpers.test_config import config"
OUR_CONFIG = "from _captum_shallow_config import config"
REPO = Path(__file__).resolve().parents[1]

# Captum's shared configuration with our classes in place of and beside its
# LayerGradCam; written next to the copied test files.
CONFIG_MODULE = '''
"""Captum's test configuration with captum_shallow's CAMs (written by captum_tests.py)."""

import torch
from captum.attr._core.layer.grad_cam import LayerGradCam as _TheirGradCam
from captum.testing.attr.helpers.gen_test_utils import get_target_layer, parse_test_config
from captum.testing.attr.helpers.test_config import config as _their_config

import captum_shallow

_OTHERS = [
    captum_shallow.LayerHiResCam,
    captum_shallow.LayerCAM,
    captum_shallow.LayerGradCamPlusPlus,
    captum_shallow.LayerXGradCam,
]


def _spatial(entry):
    """Whether the entry's layer returns tensors with spatial dimensions (N, C, H, ...)."""
    _, model, args, layer, _, _ = parse_test_config(entry)
    if layer is None or isinstance(layer, list):
        return False
    shapes = []
    handle = get_target_layer(model, layer).register_forward_hook(
        lambda module, inputs, output: shapes.extend(
            t.dim() for t in (output if isinstance(output, tuple) else (output,))
        )
    )
    inputs = args["inputs"] if isinstance(args["inputs"], tuple) else (args["inputs"],)
    extra = args.get("additional_forward_args", ())
    extra = extra if isinstance(extra, tuple) else (extra,)
    try:
        with torch.no_grad():
            model(*inputs, *extra)
    except Exception:
        return False
    finally:
        handle.remove()
    return bool(shapes) and min(shapes) >= 3


def _swapped(entry):
    algorithms = entry["algorithms"]
    if _TheirGradCam not in algorithms:
        return entry
    ours = [captum_shallow.LayerGradCam if a is _TheirGradCam else a for a in algorithms]
    if _spatial(entry):
        ours += _OTHERS
    return {**entry, "algorithms": ours}


config = [_swapped(entry) for entry in _their_config]
'''


def checkout_version(checkout: Path) -> str | None:
    """The ``__version__`` written in the checkout's ``captum/__init__.py``, if any."""
    found = re.search(
        r'__version__\s*=\s*"([^"]+)"', (checkout / "captum/__init__.py").read_text("utf-8")
    )
    return found.group(1) if found else None


def swapped_text(text: str) -> str | None:
    """``text`` with ours swapped in, or None when it holds neither import exactly once."""
    if text.count(THEIR_IMPORT) == 1:
        return text.replace(THEIR_IMPORT, OUR_IMPORT)
    if text.count(THEIR_CONFIG) == 1:
        return text.replace(THEIR_CONFIG, OUR_CONFIG)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of pytorch/captum")
    parser.add_argument(
        "files",
        nargs="*",
        default=list(DEFAULT_FILES),
        help=f"test files under the checkout's tests/ (default: {' '.join(DEFAULT_FILES)})",
    )
    parser.add_argument("--pytest-args", default="", help="more arguments for pytest, quoted")
    args = parser.parse_args(argv)
    version = checkout_version(args.checkout)
    if version != captum.__version__:
        print(f"note: the checkout says captum {version}, installed is {captum.__version__}")
    with tempfile.TemporaryDirectory(prefix="captum-shallow-captum-tests-") as folder:
        copies = []
        for name in args.files:
            source = args.checkout / "tests" / name
            if not source.is_file():
                parser.error(
                    f"{source} not found: is {args.checkout} a checkout of pytorch/captum?"
                )
            text = swapped_text(source.read_text("utf-8"))
            if text is None:
                parser.error(
                    f"{source} holds neither {THEIR_IMPORT!r} nor {THEIR_CONFIG!r} exactly once"
                )
            copy = Path(folder) / f"{Path(name).stem}_captum_shallow.py"
            copy.write_text(text, "utf-8")
            copies.append(str(copy))
        (Path(folder) / "_captum_shallow_config.py").write_text(CONFIG_MODULE, "utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [folder, str(REPO), env.get("PYTHONPATH")])
        )
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += args.pytest_args.split() + copies
        return subprocess.run(command, cwd=folder, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
