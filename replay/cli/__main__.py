"""`python -m replay.cli` (and torchrun's `-m replay.cli`) runs the command line."""

from replay.cli import main

raise SystemExit(main())
