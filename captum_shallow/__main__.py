"""``python -m captum_shallow``: the ``captum-shallow`` command line."""

from captum_shallow.cli import main

raise SystemExit(main())
