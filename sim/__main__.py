"""``python -m sim``: the model's command-line tools (see :mod:`sim.cli`)."""

from sim.cli import main

raise SystemExit(main())
