"""Execute the tutorial notebooks and fail on any cell error.

Each notebook runs top to bottom in a fresh ``python3`` kernel (nbclient), in a
temporary working folder, with a time limit per cell; the notebooks in the
repository stay without outputs. CI runs::

    python tutorials/run.py

Options: name notebooks to run only those; ``--output-dir DIR`` keeps the
executed copies (with outputs) there; ``--timeout`` is the limit per cell in
seconds. A notebook that was saved with outputs also fails: the repository keeps
them stripped (clear them with ``jupyter nbconvert --clear-output --inplace``).
Exit status: 0 when every notebook ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def saved_outputs(path: Path) -> int:
    """The number of code cells of the notebook file that hold outputs or an execution count."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return sum(
        1
        for cell in notebook.cells
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    )


def run_notebook(path: Path, timeout: int, output_dir: Path | None) -> float:
    """Execute one notebook; return its wall time in seconds (raises on a cell error)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="captum-shallow-tutorial-") as folder:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": folder}},
        )
        client.execute()
    seconds = time.perf_counter() - start
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, output_dir / path.name)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every tutorials/*.ipynb, in order"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (600)")
    parser.add_argument("--output-dir", type=Path, help="keep the executed notebooks here")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(HERE.glob("*.ipynb"))
    if not notebooks:
        print("no notebook found", file=sys.stderr)
        return 1
    failed = []
    total = time.perf_counter()
    for path in notebooks:
        print(f"{path.name} ...", end=" ", flush=True)
        dirty = saved_outputs(path)
        if dirty:
            failed.append(path.name)
            print(f"FAILED: {dirty} code cells saved with outputs; clear them before committing")
            continue
        try:
            seconds = run_notebook(path, args.timeout, args.output_dir)
        except Exception as error:  # nbclient's CellExecutionError, timeouts, a dead kernel
            failed.append(path.name)
            print(f"FAILED\n{error}", flush=True)
            continue
        print(f"ok ({seconds:.0f} s)", flush=True)
    print(
        f"{len(notebooks) - len(failed)}/{len(notebooks)} notebooks ran in "
        f"{time.perf_counter() - total:.0f} s"
    )
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
