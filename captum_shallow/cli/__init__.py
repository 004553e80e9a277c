"""The ``captum-shallow`` command line.

Each subcommand is a module with ``NAME``, ``add_parser(subparsers)`` and
``run(args) -> int``, listed once in ``SUBCOMMANDS``. A subcommand raises
:class:`CLIError` for anything the user can fix; :func:`main` prints it as one
``captum-shallow: error: ...`` line and returns 2. Shared pieces for new
subcommands: ``_options`` (model, layer, method, truncation and target options)
and ``_files`` (output folders, figures and arrays, written through the one atomic
writer, :func:`captum_shallow.io.atomic_write`). The pseudo-mask job runner
(manifest, resume, lock, disk reserve) is :mod:`captum_shallow.segmentation._runner`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from captum_shallow import __version__
from captum_shallow._errors import one_line, signal_name
from captum_shallow._signals import stop_signals_interrupt

from . import _demo, _evaluate_masks, _explain, _pseudo_masks
from ._errors import CLIError
from ._files import atomic_write, make_folder, write_arrays, write_figure

__all__ = [
    "SUBCOMMANDS",
    "CLIError",
    "atomic_write",
    "build_parser",
    "main",
    "make_folder",
    "write_arrays",
    "write_figure",
]

PROG = "captum-shallow"

#: The subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[ModuleType, ...] = (_demo, _explain, _pseudo_masks, _evaluate_masks)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered.

    Returns:
        argparse.ArgumentParser: The parser; each subcommand's namespace carries
        its ``run`` function as ``handler``.

    Examples::

        >>> from captum_shallow.cli import build_parser
        >>> args = build_parser().parse_args(["demo", "--photo", "coffee"])
        >>> args.photo, args.handler.__module__
        ('coffee', 'captum_shallow.cli._demo')
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="High-resolution CAMs from shallow CNN layers, denoised by "
        "truncating the positive gradient, as Captum layer attributions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers).set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``captum-shallow`` with ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv (Sequence[str], optional): The arguments after the program name.
            Default: None

    Returns:
        int: The exit code: 0 on success, 2 for a usage or user error (one line on
        stderr, no traceback), ``128 + n`` when signal ``n`` stopped it (130 on
        Ctrl-C; a scheduler's SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 or SIGXCPU
        stops it the same way, files complete and the manifest true).

    Examples::

        >>> from captum_shallow.cli import main
        >>> main(["--version"])
        captum-shallow ...
        0
    """
    _printable_output()
    parser = build_parser()
    try:
        with stop_signals_interrupt():
            args = parser.parse_args(argv)
            code: int = args.handler(args)
        return code
    except SystemExit as exit_:  # argparse's own usage errors, --help, --version
        return exit_.code if isinstance(exit_.code, int) else 2
    except CLIError as error:
        _say(f"{PROG}: error: {one_line(error)}")
        return CLIError.exit_code
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        by = "" if signum == signal.SIGINT else f" by {signal_name(signum)}"
        _say(f"{PROG}: interrupted{by}")
        return 128 + signum


def _say(line: str) -> None:
    """Write one line to stderr in one write: ranks of a torchrun share the stream, and
    ``print`` writes the text and its newline apart, so two ranks' lines could merge."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _printable_output() -> None:
    """Print a file name that is not valid UTF-8 (Python holds its bytes as
    surrogates) as backslash escapes, instead of failing on it."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")
