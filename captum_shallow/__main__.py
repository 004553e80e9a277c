"""``python -m captum_shallow``: the ``captum-shallow`` command line."""

from captum_shallow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
