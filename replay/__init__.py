"""Reading runs back: replay to a point, analysis tables, decision export, and the CLI.

`replay(log, Until(step=500))` folds a run's log, as of a seq, a step or a wall time, into
its registry, metrics and (optionally) state tensors, returned as a `Replay` (a log's own
`pages()` reads it in bounded pages). The analysis functions (`decisions`, `gate_pass_rates`,
`population_over_steps`, `run_metrics`, `state_intervals`, `time_in_state`) turn a log into
tables; `write_decisions` exports a run's decisions as ChronoMoE `lifecycle_decisions.jsonl`
lines; `write_report` writes a self-contained HTML page of plots and decisions (a
`ReportSummary`; matplotlib, the `report` extra, draws it). `what_if(log, changes)` re-runs
the run's controllers with changed settings over its recorded observations and diffs their
decisions against the recorded ones (a `WhatIf`). `replay.cli` is the
`lifecycle-es` command line and `replay.demo` the demo training run, written to be copied.
"""

from replay._replay import Replay, Until, replay
from replay.analysis import (
    decisions,
    gate_pass_rates,
    population_over_steps,
    run_metrics,
    state_intervals,
    time_in_state,
)
from replay.export import decision_line, decision_lines, write_decisions
from replay.report import ReportSummary, write_report
from replay.whatif import DecisionChange, Setting, WhatIf, what_if

__all__ = [
    "DecisionChange",
    "Replay",
    "ReportSummary",
    "Setting",
    "Until",
    "WhatIf",
    "decision_line",
    "decision_lines",
    "decisions",
    "gate_pass_rates",
    "population_over_steps",
    "replay",
    "run_metrics",
    "state_intervals",
    "time_in_state",
    "what_if",
    "write_decisions",
    "write_report",
]
