"""The `lifecycle-es` command line: one module per subcommand, errors as one line on stderr.

`demo` trains the demo model (and `_launch` starts its ranks), `spec` shows the built-in
specs, `tail` follows a run, `replay` rebuilds a registry as of a point, `tables` prints an
analysis table as text, JSON or CSV, `what_if` re-runs a run's controllers with changed
settings and diffs their decisions, `verify` checks a Redis log against its JSONL mirror,
`export_decisions` writes a run's decisions as JSONL, `metrics` prints, serves or writes a
run's metrics for Prometheus, `report` writes a run's HTML page of plots and decisions. Each
module offers `add_parser` and `run`; `main` is the console script's entry point. `_logging`
is the one place that configures logging: stderr only, at `--log-level`, as `--log-format`
console text or JSON lines; `_colour` decides colour (`--color`, NO_COLOR); `_rows` prints
rows as a table, JSON or CSV.
"""

from replay.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
