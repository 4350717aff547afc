"""The HTML report of a run: one self-contained page of plots and a table of decisions.

`write_report(log, path)` folds the run with `replay()` and the tables of `replay.analysis`, and
writes one HTML file: the state timeline of every entity, the live population per layer over
steps with a marker at every decision, the loss and the run's other own metrics over steps,
gate pass rates, time in state, and the decisions table, each row anchored at `#seq-N` (the
plots' decision markers link there). The page loads nothing: no script, no stylesheet, no
font, no image from anywhere; it opens offline from a file, mail or an artifact store.

Why matplotlib (the optional `report` extra): it is the long-kept standard of scientific
plotting in Python, and its SVG backend writes static vector drawings with text as paths, so
the figures go inline into the page with no JavaScript and no font to fetch. The interactive
libraries (Plotly, Bokeh, Altair) need a JavaScript runtime of several megabytes inlined into
every report or fetched from a CDN, and the light SVG ones (pygal) script their tooltips.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import Log
from lifecycle_es.errors import MissingExtraError
from lifecycle_es.registry import holds_slot
from lifecycle_es.spec import Spec
from lifecycle_es.specs import BUILTIN_SPECS
from replay._replay import replay
from replay.analysis import (
    decisions,
    gate_pass_rates,
    population_over_steps,
    run_metrics,
    state_intervals,
    time_in_state,
)

__all__ = ["ReportSummary", "write_report"]

Row = dict[str, Any]

INSTALL_HINT = "pip install 'lifecycle-es[report]'"
"""What a user runs to get the plotting library the report needs."""

_PALETTE = (
    *("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"),
    *("#9c755f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"),
)
_RETIRED = ("#bdbdbd", "#9e9e9e", "#d9d9d9", "#7f7f7f")
"""States out of the live set (terminal, failed) are drawn grey: the entity no longer acts."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportSummary:
    """What `write_report` wrote."""

    path: Path
    run_id: str
    bytes: int
    """Size of the HTML file."""
    last_seq: int
    """The last seq of the log the report covers."""
    steps: int
    """The run's last step."""
    entities: int
    decisions: int
    plots: tuple[str, ...]
    """The sections drawn as plots, by anchor (`timeline`, `population`, `metrics`, ...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Run:
    """Every table the report shows, read from the log."""

    run_id: str
    started: Row | None
    last_seq: int
    end: int
    intervals: list[Row]
    population: list[Row]
    decisions: list[Row]
    metrics: list[Row]
    gates: list[Row]
    time_in_state: list[Row]


def write_report(log: Log, path: str | Path, *, specs: Mapping[str, Spec] = BUILTIN_SPECS) -> ReportSummary:
    """Write the HTML report of the run on `log` to `path` and say what it holds.

    Raises `MissingExtraError` when matplotlib is not installed, and `OSError` when `path`
    cannot be written.
    """
    _require_matplotlib()
    run = _read(log, specs)
    colors = _state_colors(run, specs)
    sections = _figures(run, colors, specs)
    page = _page(run, sections)
    target = Path(path)
    target.write_text(page, encoding="utf-8")
    return ReportSummary(
        path=target,
        run_id=run.run_id,
        bytes=len(page.encode()),
        last_seq=run.last_seq,
        steps=run.end,
        entities=len({s["entity"] for s in run.intervals}),
        decisions=len(run.decisions),
        plots=tuple(anchor for anchor, _, body in sections if body.startswith("<svg")),
    )


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401  (the `report` extra)
    except ImportError as e:
        raise MissingExtraError(f"the report needs matplotlib, which is not installed: {INSTALL_HINT}") from e


def _read(log: Log, specs: Mapping[str, Spec]) -> _Run:
    result = replay(log, specs=specs, tensors=False)
    first = log.read(after=0, limit=1)
    return _Run(
        run_id=log.run_id,
        started=first[0] if first and first[0].get("kind") == "RunStarted" else None,
        last_seq=result.seq,
        end=result.step,
        intervals=state_intervals(log),
        population=population_over_steps(log, specs=specs),
        decisions=decisions(log),
        metrics=run_metrics(log),
        gates=gate_pass_rates(result),
        time_in_state=time_in_state(result),
    )


def _state_colors(run: _Run, specs: Mapping[str, Spec]) -> dict[tuple[str, str], str]:
    keys = {(s["spec"], s["state"]) for s in run.intervals} | {
        (r["spec"], r["state"]) for r in run.time_in_state
    }
    colors: dict[tuple[str, str], str] = {}
    live = retired = 0
    for key in sorted(keys):
        if _retired(specs, key):
            colors[key] = _RETIRED[retired % len(_RETIRED)]
            retired += 1
        else:
            colors[key] = _PALETTE[live % len(_PALETTE)]
            live += 1
    return colors


def _retired(specs: Mapping[str, Spec], key: tuple[str, str]) -> bool:
    """Tell whether entities in the state are out of the live set (terminal or failed)."""
    spec = specs.get(key[0])
    return spec is not None and spec.has_state(key[1]) and not holds_slot(spec, key[1])


def _figures(
    run: _Run, colors: dict[tuple[str, str], str], specs: Mapping[str, Spec]
) -> list[tuple[str, str, str]]:
    """Return (anchor, heading, body) per section: an `<svg>`, or a paragraph saying why none."""
    from replay import _plots as plots  # matplotlib loads only when a report is drawn

    live = frozenset(k for k in colors if not _retired(specs, k))
    spec_of = {s["entity"]: s["spec"] for s in run.intervals}
    none = "<p class='none'>{}</p>".format
    return [
        (
            "timeline",
            "State timeline per entity",
            plots.state_timeline(run.intervals, run.decisions, run.end, colors)
            if run.intervals
            else none("The log registers no entity."),
        ),
        (
            "population",
            "Live population per layer over steps, with the decisions",
            plots.population(run.population, run.decisions, run.end, colors, live, spec_of)
            if run.population
            else none("The log registers no entity."),
        ),
        (
            "metrics",
            "Loss and the run's own metrics over steps",
            plots.metrics(run.metrics, run.decisions, run.end)
            if run.metrics
            else none(
                "The log holds no run-level metrics (MetricsObserved of neither an entity nor a "
                "layer); a training loop records its loss with Lifecycle.observe({'loss': ...})."
            ),
        ),
        (
            "gates",
            "Gate pass rates",
            plots.gate_pass_rates(run.gates) if run.gates else none("The log records no gate check."),
        ),
        (
            "time-in-state",
            "Time in state (all entities together)",
            plots.time_in_state(run.time_in_state, colors)
            if run.time_in_state
            else none("The log registers no entity."),
        ),
    ]


# -- the page -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1120px; color: #222; }
nav a { margin-right: 1rem; }
section { margin-top: 2rem; }
svg { max-width: 100%; height: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.9rem; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
tr:target { background: #fff3b0; }
.none { color: #666; font-style: italic; }
pre { background: #f6f6f6; padding: 0.5rem; overflow-x: auto; }
"""


def _page(run: _Run, sections: Sequence[tuple[str, str, str]]) -> str:
    title = f"lifecycle-es report: run {run.run_id}"
    anchors = [(a, h) for a, h, _ in sections] + [("decisions", "Decisions")]
    nav = "".join(f"<a href='#{a}'>{html.escape(h.split(',')[0])}</a>" for a, h in anchors)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<nav>{nav}</nav>",
        _overview(run),
        *(f"<section id='{a}'><h2>{html.escape(h)}</h2>{body}</section>" for a, h, body in sections),
        _decisions_table(run.decisions),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _overview(run: _Run) -> str:
    actions = Counter(str(d["action"]) for d in run.decisions)
    items: list[tuple[str, str]] = [
        ("run", run.run_id),
        ("events", f"{run.last_seq} (last seq)"),
        ("steps", str(run.end)),
        ("entities", str(len({s["entity"] for s in run.intervals}))),
        ("decisions", ", ".join(f"{a} {n}" for a, n in sorted(actions.items())) or "none"),
    ]
    config = ""
    if run.started is not None:
        started = datetime.fromtimestamp(run.started["ts"], UTC).isoformat(timespec="seconds")
        items += [
            ("started", started),
            ("seed", str(run.started.get("seed"))),
            ("world size", str(run.started.get("world_size"))),
            ("torch", str(run.started.get("torch_version") or "-")),
        ]
        dumped = json.dumps(run.started.get("config", {}), indent=2, sort_keys=True)
        config = f"<details><summary>configuration</summary><pre>{html.escape(dumped)}</pre></details>"
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    return f"<section id='overview'><dl>{rows}</dl>{config}</section>"


_COLUMNS = ("seq", "step", "apply_at_step", "action", "entity", "layer", "parent", "children", "reason")


def _decisions_table(rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in _COLUMNS)
    body = "".join(_decision_row(d) for d in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if rows else ""
    empty = "" if rows else "<p class='none'>The log records no decision.</p>"
    return f"<section id='decisions'><h2>Decisions</h2>{table}{empty}</section>"


def _decision_row(d: Row) -> str:
    seq = int(d["seq"])
    cells = [f"<a href='#seq-{seq}'>{seq}</a>"]
    for column in _COLUMNS[1:]:
        value = d.get(column)
        text = ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
        cells.append(html.escape(text))
    return f"<tr id='seq-{seq}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
