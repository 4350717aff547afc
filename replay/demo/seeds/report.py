"""What `lifecycle-es demo seeds` shows: a progress bar and the summary tables.

The bar is the MoE demo's (`replay.demo.report.ProgressBar`) with the seeds by state where it
shows experts. The summary: seeds by state over time, decisions by action (with the requests
refused and the registrations an embargo refused), the moves by target state, and the losses of
the run and its baselines side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

from lifecycle_es.specs import KasminaState, ModuleState
from replay.demo.report import ProgressBar, _duration, _table
from replay.demo.seeds.run import SeedsRun, Snapshot
from replay.demo.train import Tick

__all__ = ["SeedsBar", "SeedsOutcome", "seeds_summary"]

_ORDER = tuple(
    dict.fromkeys(s.value for pair in zip_longest(KasminaState, ModuleState) for s in pair if s is not None)
)
"""Every seed state, the two specs' lifecycles interleaved: the tables' column order."""


def _short(states: Counter[str]) -> str:
    return " ".join(f"{s.lower()[:5]}:{n}" for s, n in sorted(states.items(), key=lambda i: _rank(i[0])))


def _rank(state: str) -> int:
    return _ORDER.index(state) if state in _ORDER else len(_ORDER)


class SeedsBar(ProgressBar):
    """The MoE demo's progress bar, showing the seeds by state instead of experts per layer."""

    def _fields(self, tick: Tick) -> list[tuple[int, str]]:
        fields = super()._fields(tick)
        return [
            (r, f"seeds {tick.phase}" if text.startswith("experts") else text) for r, text in fields if r != 3
        ]

    def show(self, step: int, steps: int, loss: float, states: Counter[str]) -> None:
        """Draw the progress after `step` of `steps` steps."""
        self(Tick(step=step, steps=steps, loss=loss, experts={}, phase=_short(states) or "-"))


@dataclass(frozen=True, slots=True)
class SeedsOutcome:
    """One finished run (the lifecycle's or a baseline's), as the loss table shows it."""

    label: str
    params: int
    final_loss: float
    """Held-out loss at the end."""
    train_loss: float
    """Mean training loss over the last tenth of the steps."""
    seconds: float

    @classmethod
    def of(cls, label: str, run: SeedsRun, seconds: float) -> SeedsOutcome:
        """Return the outcome of a finished run."""
        tail = run.train_losses[-max(1, len(run.train_losses) // 10) :]
        params = sum(p.numel() for p in run.model.parameters())
        return cls(label, params, run.final_loss, sum(tail) / len(tail), seconds)


def seeds_summary(run: SeedsRun, outcomes: Sequence[SeedsOutcome], rows: int = 8) -> str:
    """Return the summary tables of a finished run and its baselines."""
    parts = [
        _timeline(run.timeline, rows),
        _counts("decision", run.tally.decisions, extra=_refusals(run)),
        _counts("moved to", run.tally.moves),
        _losses(outcomes),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _timeline(timeline: Sequence[Snapshot], rows: int) -> str:
    if not timeline:
        return ""
    picked = [timeline[round(k * (len(timeline) - 1) / (rows - 1))] for k in range(rows)] if rows > 1 else []
    unique = list({id(s): s for s in picked}.values())
    states = sorted({s for snap in timeline for s in snap.states}, key=_rank)
    body = [[str(snap.step), *(str(snap.states.get(s, 0)) for s in states)] for snap in unique]
    return "seeds by state (each slot's latest seed)\n" + _table(["step", *states], body)


def _refusals(run: SeedsRun) -> list[list[str]]:
    return [
        ["(requests refused)", str(run.tally.refused)],
        ["(registrations refused: slot embargoed)", str(run.tally.embargoed)],
    ]


def _counts(title: str, counts: Counter[str], extra: Sequence[list[str]] = ()) -> str:
    if not counts and not extra:
        return ""
    body = [[k, str(n)] for k, n in sorted(counts.items(), key=lambda i: (_rank(i[0]), i[0]))]
    return _table([title, "count"], [*body, *extra])


def _losses(outcomes: Sequence[SeedsOutcome]) -> str:
    first = outcomes[0].final_loss if outcomes else 0.0
    body = [
        [
            o.label,
            str(o.params),
            f"{o.final_loss:.4f}",
            f"{o.final_loss / first:.2f}x" if first else "-",
            f"{o.train_loss:.4f}",
            _duration(o.seconds),
        ]
        for o in outcomes
    ]
    return _table(["run", "params", "held-out loss", "vs lifecycle", "train loss (last 10%)", "time"], body)
