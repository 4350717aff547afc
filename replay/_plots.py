"""The report's figures, drawn by matplotlib and returned as inline SVG text.

Each function takes the plain rows of `replay.analysis` and returns one `<svg>` element. Text is
drawn as paths (`svg.fonttype: path`), so the page needs no font; ids are prefixed with the
figure's name, so several figures share one HTML document without clashing; the hash salt is
fixed, so the same log gives the same bytes. Decision markers link to `#seq-N`, the row of the
decisions table. Only `replay.report` imports this module, and only once matplotlib is known to
be installed.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["gate_pass_rates", "metrics", "population", "state_timeline", "time_in_state"]

Row = Mapping[str, Any]
StateKey = tuple[str, str]
"""(spec, state)."""

_NO_METADATA: dict[str, Any] = {"Creator": None, "Date": None, "Format": None, "Type": None}
_MARKERS = {"SPAWN": "^", "PRUNE": "v", "SPLIT": "D", "MERGE": "s"}
_ID = re.compile(r'(id="|href="#|url\(#)(?!seq-)')
_WIDTH = 10.0
"""Figure width in inches (720 pt)."""


def state_timeline(
    intervals: Sequence[Row], decisions: Sequence[Row], end: int, colors: Mapping[StateKey, str]
) -> str:
    """One row per entity, a bar per stay in a state, and a marker at each decision naming it."""
    entities = _entity_order(intervals)
    fig = Figure(figsize=(_WIDTH, 1.2 + 0.28 * len(entities)), layout="constrained")
    ax = fig.add_subplot()
    row = {entity: i for i, entity in enumerate(entities)}
    least = max(end, 1) * 0.003  # a stay that began and ended at one step still shows
    for stay in intervals:
        stop = end if stay["end"] is None else stay["end"]
        color = colors[(stay["spec"], stay["state"])]
        width = max(stop - stay["start"], least)
        ax.broken_barh([(stay["start"], width)], (row[stay["entity"]] - 0.4, 0.8), facecolors=color)
    marked = [d for d in decisions if d["entity"] in row]
    _decision_markers(ax, marked, [row[d["entity"]] for d in marked])
    ax.set_yticks(range(len(entities)), entities)
    ax.set_ylim(len(entities) - 0.5, -0.5)
    ax.set_xlim(0, max(end, 1))
    ax.set_xlabel("step")
    seen = {(s["spec"], s["state"]) for s in intervals}
    _state_legend(fig, {k: c for k, c in colors.items() if k in seen})
    return _svg(fig, "timeline")


def population(
    rows: Sequence[Row],
    decisions: Sequence[Row],
    end: int,
    colors: Mapping[StateKey, str],
    live: frozenset[StateKey],
    spec_of: Mapping[str, str],
) -> str:
    """Live entities per state over steps, one panel per (spec, layer), with decision markers."""
    panels = sorted({(r["spec"], r["layer"]) for r in rows}, key=lambda p: (p[0], _layer(p[1])))
    fig = Figure(figsize=(_WIDTH, 0.6 + 2.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (spec, layer) in zip(axes, panels, strict=True):
        mine = [r for r in rows if r["spec"] == spec and r["layer"] == layer and (spec, r["state"]) in live]
        steps, series = _stacked(mine, end)
        if series:
            ax.stackplot(
                steps,
                *series.values(),
                labels=list(series),
                colors=[colors[(spec, s)] for s in series],
                step="post",
            )
        here = [d for d in decisions if d["layer"] == layer and spec_of.get(d["entity"]) == spec]
        top = max((sum(v) for v in zip(*series.values(), strict=True)), default=1)
        _decision_markers(ax, here, [top * 1.08] * len(here))
        ax.set_ylim(0, top * 1.35 + 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small", ncols=8)
        ax.set_ylabel(f"{spec}, layer {'-' if layer is None else layer}")
    axes[-1].set_xlim(0, max(end, 1))
    axes[-1].set_xlabel("step")
    return _svg(fig, "population")


def gate_pass_rates(rows: Sequence[Row]) -> str:
    """A bar per gate: the share of its checks that passed, labelled passed/checked."""
    fig = Figure(figsize=(_WIDTH, 1.0 + 0.26 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    names = [r["gate"] for r in rows]
    rates = [r["rate"] for r in rows]
    cmap = matplotlib.colormaps["RdYlGn"]
    ax.barh(range(len(rows)), rates, color=[cmap(0.15 + 0.7 * r) for r in rates])
    for i, r in enumerate(rows):
        ax.text(1.01, i, f"{r['passed']}/{r['checked']}", va="center", fontsize="small")
    ax.set_yticks(range(len(rows)), names)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("pass rate")
    return _svg(fig, "gates")


def time_in_state(rows: Sequence[Row], colors: Mapping[StateKey, str]) -> str:
    """A bar per (spec, state): the steps all entities together spent in it."""
    fig = Figure(figsize=(_WIDTH, 1.0 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(
        range(len(rows)),
        [r["steps"] for r in rows],
        color=[colors.get((r["spec"], r["state"]), "#888888") for r in rows],
    )
    ax.set_yticks(range(len(rows)), [f"{r['spec']}: {r['state']}" for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("entity-steps")
    return _svg(fig, "time-in-state")


def metrics(rows: Sequence[Row], decisions: Sequence[Row], end: int) -> str:
    """One panel per run-level metric over steps (the loss first), decision steps as faint lines."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        series[r["name"]].append((r["step"], r["value"]))
    names = sorted(series, key=lambda n: (n != "loss", n))
    fig = Figure(figsize=(_WIDTH, 0.6 + 2.4 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        steps, values = zip(*series[name], strict=True)
        for d in decisions:
            ax.axvline(d["step"], color="#bbbbbb", linewidth=0.6, zorder=0)
        ax.plot(steps, values, color="#1f4e79", linewidth=1.2)
        if min(values) > 0 and max(values) > 20 * min(values):
            ax.set_yscale("log")
        ax.set_ylabel(name)
    axes[-1].set_xlim(0, max(end, 1))
    axes[-1].set_xlabel("step")
    return _svg(fig, "metrics")


# -- helpers ------------------------------------------------------------------------------------


def _entity_order(intervals: Sequence[Row]) -> list[str]:
    first: dict[str, tuple[str, int, int]] = {}
    for stay in intervals:
        first.setdefault(stay["entity"], (stay["spec"], _layer(stay["layer"]), stay["start"]))
    return sorted(first, key=lambda e: (*first[e], e))


def _layer(layer: int | None) -> int:
    return -1 if layer is None else layer


def _stacked(rows: Sequence[Row], end: int) -> tuple[list[int], dict[str, list[int]]]:
    """Turn population rows (each sampled step's non-zero counts) into one series per state."""
    steps = sorted({r["step"] for r in rows})
    index = {step: i for i, step in enumerate(steps)}
    series: dict[str, list[int]] = {}
    for r in rows:
        series.setdefault(r["state"], [0] * len(steps))[index[r["step"]]] = r["count"]
    if steps and steps[-1] < end:  # hold the last counts to the end of the run
        steps.append(end)
        for counts in series.values():
            counts.append(counts[-1])
    return steps, dict(sorted(series.items()))


def _decision_markers(ax: Axes, decisions: Sequence[Row], ys: Sequence[float]) -> None:
    """A marker per decision, shaped and coloured by action, each a link to its table row."""
    by_action: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(decisions):
        by_action[str(d["action"])].append(i)
    for n, (action, picked) in enumerate(sorted(by_action.items())):
        marks = ax.scatter(
            [decisions[i]["step"] for i in picked],
            [ys[i] for i in picked],
            marker=_MARKERS.get(action, "o"),
            color=f"C{n}",
            edgecolors="black",
            linewidths=0.5,
            s=36,
            zorder=3,
            label=action,
        )
        marks.set_urls([f"#seq-{decisions[i]['seq']}" for i in picked])


def _state_legend(fig: Figure, colors: Mapping[StateKey, str]) -> None:
    """One legend above the plot: a swatch per state, then the decision markers."""
    handles: list[Artist] = [
        Patch(color=c, label=f"{spec}: {state}") for (spec, state), c in sorted(colors.items())
    ]
    handles += fig.axes[0].get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 5), fontsize="small")


def _svg(fig: Figure, name: str) -> str:
    """Render `fig` as one `<svg>` element: no XML prolog, no metadata, ids prefixed with `name`."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"lifecycle-es-{name}"}):
        fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    return _ID.sub(lambda m: f"{m.group(1)}{name}-", text)
