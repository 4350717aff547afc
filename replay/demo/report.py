"""What `lifecycle-es demo` shows: a progress bar on stderr and the summary tables at the end.

No dependency: the bar is plain text. On a terminal it redraws one line with `\\r`, fitted to
the terminal's width so it never wraps; otherwise (a file, a CI log) it writes a line every
tenth of the run, so logs stay readable. tqdm was weighed and left out: its redraws go to
files too, as `\\r`-joined lines, which reads badly in a CI log, so the line-per-tenth mode
would stay hand-written beside it.
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TextIO

from replay.demo.train import PhaseLoss, Tick

__all__ = ["Outcome", "ProgressBar", "Sample", "sample", "summary"]

_ACTIONS = ("SPAWN", "PRUNE", "SPLIT", "MERGE")

_WIDTH = 24
"""Cells of the bar when there is room."""
_MIN_WIDTH = 5
"""Fewer cells than this are no bar: it is left out."""


class ProgressBar:
    """Draws training progress to a text stream: redrawn in place on a tty, a line per 10% else.

    On a tty the line fits the terminal's width (`shutil.get_terminal_size`, read at every
    redraw so a resize is followed; `columns` fixes it): the bar narrows, then the least
    useful fields go (wall time, phase, experts, loss), and it never reaches the last column,
    where a terminal would wrap. Every line shows an ETA. Used as a context manager, it ends
    a line left open on the way out, so Ctrl-C leaves the prompt on a line of its own.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        label: str,
        tty: bool | None = None,
        columns: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.columns = columns
        self._clock = clock
        self._started = clock()
        self._next_tenth = 1
        self._open = 0
        """Characters of the line drawn and not ended yet (tty only)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the line if one is open (training ended early, Ctrl-C); nothing otherwise."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = 0

    def __call__(self, tick: Tick) -> None:
        """Show one tick of progress."""
        done = tick.step / tick.steps
        fields = self._fields(tick)
        if self.tty:
            limit = (self.columns or shutil.get_terminal_size().columns) - 1
            line = self._fit(done, fields, limit)
            last = tick.step == tick.steps
            # Spaces over what the previous, longer line left; the last column stays empty.
            self.stream.write("\r" + line.ljust(min(self._open, limit)) + ("\n" if last else ""))
            self.stream.flush()
            self._open = 0 if last else max(len(line), min(self._open, limit))
        elif done * 10 >= self._next_tenth or tick.step == tick.steps:
            self._next_tenth = int(done * 10) + 1
            self.stream.write(self._render(done, fields, _WIDTH, _DROPPED_LAST) + "\n")
            self.stream.flush()

    def _fields(self, tick: Tick) -> list[tuple[int, str]]:
        """The fields after the bar in reading order, each with its rank: the higher, the sooner
        it is left out for want of room (0: never)."""
        elapsed = self._clock() - self._started
        left = elapsed / tick.step * (tick.steps - tick.step) if tick.step else math.inf
        experts = " ".join(f"L{layer}:{n}" for layer, n in sorted(tick.experts.items()))
        return [
            (0, f"{tick.step / tick.steps:4.0%} step {tick.step}/{tick.steps}"),
            (3, f"{tick.phase:<11}"),
            (1, f"loss {tick.loss:.4f}"),
            (2, f"experts {experts}"),
            (4, f"{elapsed:5.1f}s"),
            (0, f"eta {_duration(left)}"),
        ]

    def _fit(self, done: float, fields: list[tuple[int, str]], limit: int) -> str:
        """The fullest line within `limit` characters: a narrower bar first, then fewer fields."""
        for rank in range(_DROPPED_LAST, -1, -1):
            room = limit - len(self._render(done, fields, 0, rank))
            if room >= _MIN_WIDTH + 3:  # the cells, two brackets and a space
                return self._render(done, fields, min(_WIDTH, room - 3), rank)
        return self._render(done, fields, 0, 0)[:limit]

    def _render(self, done: float, fields: list[tuple[int, str]], width: int, rank: int) -> str:
        """The line with a bar of `width` cells (none if 0) and the fields ranked up to `rank`."""
        filled = round(done * width)
        bar = f"[{'#' * filled}{'-' * (width - filled)}] " if width else ""
        return f"{self.label} {bar}" + " ".join(text for r, text in fields if r <= rank)


_DROPPED_LAST = 4
"""The highest rank of a field: every field is shown at it."""


def _duration(seconds: float) -> str:
    """A short duration: 42s, 3m05s, 1h02m; ? before there is a rate to go by."""
    if not math.isfinite(seconds):
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished run, as the summary reports it."""

    label: str
    phase_losses: Sequence[PhaseLoss]
    mean_loss: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of the experts-over-time table."""

    step: int
    phase: str
    experts: Mapping[int, int]
    """Routing experts per layer after the checkpoint at `step`."""
    actions: Mapping[str, int]
    """Decisions by action since the previous row."""


def sample(
    experts: Sequence[tuple[int, Mapping[int, int]]],
    decisions: Sequence[tuple[int, str]],
    phase_of: Callable[[int], str],
    rows: int = 10,
) -> list[Sample]:
    """Pick about `rows` evenly spaced checkpoints, each with the decisions since the last one.

    `experts` is (step, routing experts per layer) at every checkpoint; `decisions` is (step,
    action) of every decision.
    """
    if not experts:
        return []
    last = experts[-1][0]
    marks = sorted({max(1, round(last * k / rows)) for k in range(rows + 1)})
    picked, previous = [], -1
    for step, counts in experts:
        if marks and step >= marks[0]:
            while marks and step >= marks[0]:
                marks.pop(0)
            actions = Counter(a for at, a in decisions if previous < at <= step)
            picked.append(Sample(step, phase_of(step), counts, actions))
            previous = step
    return picked


def summary(*, samples: Sequence[Sample], decisions: Counter[str], runs: Sequence[Outcome]) -> str:
    """Return the summary: experts per layer over time, decisions by action, losses per run."""
    parts = [_experts_table(samples), _decisions_table(decisions), _loss_table(runs)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _experts_table(rows: Sequence[Sample]) -> str:
    if not rows:
        return ""
    layers = sorted({layer for row in rows for layer in row.experts})
    header = ["step", "phase", *(f"layer {layer}" for layer in layers), "decisions since the row above"]
    cells = [
        [
            str(row.step),
            row.phase,
            *(str(row.experts.get(layer, 0)) for layer in layers),
            ", ".join(f"{n} {a}" for a, n in sorted(row.actions.items(), key=_action_order)),
        ]
        for row in rows
    ]
    return "experts routing per layer over time\n" + _table(header, cells)


def _action_order(item: tuple[str, int]) -> int:
    return _ACTIONS.index(item[0]) if item[0] in _ACTIONS else len(_ACTIONS)


def _decisions_table(decisions: Counter[str]) -> str:
    actions = [*_ACTIONS, *sorted(a for a in decisions if a not in _ACTIONS)]
    cells = [[a, str(decisions.get(a, 0))] for a in actions]
    cells.append(["total", str(sum(decisions.values()))])
    return "lifecycle decisions by action\n" + _table(["action", "count"], cells)


def _loss_table(runs: Sequence[Outcome]) -> str:
    if not runs:
        return ""
    if len(runs) == 1:
        return "loss\n" + _table(["held-out loss at the end of", runs[0].label], _loss_rows(runs))
    header = ["held-out loss at the end of", *(r.label for r in runs), "lowest"]
    rows = _loss_rows(runs)
    losses = [
        [r.phase_losses[i].loss if i < len(r.phase_losses) else math.inf for r in runs]
        for i in range(len(runs[0].phase_losses))
    ]
    losses.append([r.mean_loss for r in runs])
    for row, values in zip(rows, losses, strict=False):
        row.append(runs[values.index(min(values))].label)
    rows[-1].append("")
    wins = sum(1 for values in losses[:-1] if values.index(min(values)) == 0)
    verdict = (
        f"the {runs[0].label} has the lowest held-out loss in {wins} of {len(losses) - 1} phases"
        f"{' and over all steps' if losses[-1].index(min(losses[-1])) == 0 else ''}"
    )
    title = "loss: the lifecycle against static models of fixed size (the lifecycle off)"
    return f"{title}\n{_table(header, rows)}\n  {verdict}"


def _loss_rows(runs: Sequence[Outcome]) -> list[list[str]]:
    first = runs[0].phase_losses
    cells = [
        [
            f"{p.phase} (step {p.step})",
            *(_fmt(r.phase_losses[i].loss) if i < len(r.phase_losses) else "-" for r in runs),
        ]
        for i, p in enumerate(first)
    ]
    cells.append(["mean training loss, all steps", *(_fmt(r.mean_loss) for r in runs)])
    cells.append(["wall time", *(f"{r.seconds:.1f}s" for r in runs)])
    return cells


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, ["-" * w for w in widths], *rows)
    ]
    return "\n".join("  " + line for line in lines)
