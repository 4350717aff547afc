"""Decisions compared: a counterfactual run's against the recorded ones, as `DecisionChange` rows.

Two decisions are the same decision when they agree on (step, action, layer, entity,
children); paired in log order, they differ if anything else they record does (the config
snapshot aside). The first step with a difference is where the runs part: a row after it rests
on signals recorded under the original decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lifecycle_es.events import Action, DecisionMade

__all__ = ["Change", "Coverage", "DecisionChange", "diff"]

Change = Literal["added", "removed", "changed"]

_COMPARED = ("parent", "reason", "apply_at_step", "seed")
"""Fields of two decisions with the same key that must agree; `metrics_at_decision` is compared
key by key. The config snapshot is not: it differs by construction."""
_FROM_THE_LOOP = frozenset({"direction"})
"""Keys of `metrics_at_decision` the training loop adds after the coordinator decided, from the
model's inputs (a SPLIT's push direction, `ExpertLifecycle`): a what-if, which has no model,
cannot recompute them, so one its decision lacks is not a difference."""


@dataclass(frozen=True, slots=True)
class DecisionChange:
    """A decision the what-if added, removed or made differently, against the recorded run.

    Two decisions are the same decision when they agree on (step, action, layer, entity,
    children); `changed` names what else differs between them.
    """

    step: int
    change: Change
    action: Action
    layer: int | None
    entity: str | None
    children: tuple[str, ...]
    recorded: DecisionMade | None
    """The recorded decision (None for an added one)."""
    what_if: DecisionMade | None
    """The counterfactual's decision (None for a removed one)."""
    changed: tuple[str, ...]
    """For a changed decision, the fields that differ (`reason`, `parent`, `metrics_at_decision.share`)."""
    on_recorded_signals: bool
    """True past the first parting step: the observations behind it were recorded under the
    original decisions, so the row is an estimate, not what the run would have done."""
    unobserved: tuple[str, ...]
    """Entities the what-if decision names that the recording has no observation of at or
    after its step: the counterfactual had no signals of them."""
    stand_ins: tuple[str, ...]
    """Entities the what-if decision names whose recorded namesake is another entity (born at
    another step or of another parent): the counterfactual read that one's signals."""


_Key = tuple[int, str, int | None, str | None, tuple[str, ...]]


def _key(d: DecisionMade) -> _Key:
    return d.step, d.action.value, d.layer, d.entity, tuple(d.children)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which entities the recorded observations speak for, as the counterfactual has them."""

    last_observed: Mapping[str, int]
    """The step of each entity's last recorded observation."""
    recorded_births: Mapping[str, tuple[int, str | None]]
    """The recorded (born step, parent) of every entity the recording registered."""
    births: Mapping[str, tuple[int, str | None]]
    """The counterfactual's (born step, parent) of every entity it registered."""

    def unobserved(self, names: Sequence[str], step: int) -> tuple[str, ...]:
        """Those of `names` the recording never observes at or after `step`."""
        return tuple(n for n in names if self.last_observed.get(n, -1) < step)

    def stand_ins(self, names: Sequence[str], step: int) -> tuple[str, ...]:
        """Those of `names` observed from `step` on as another entity of the same name."""
        return tuple(
            n
            for n in names
            if n in self.recorded_births
            and self.births.get(n) != self.recorded_births[n]
            and self.last_observed.get(n, -1) >= step
        )


def diff(
    recorded: Sequence[DecisionMade], counterfactual: Sequence[DecisionMade], coverage: Coverage
) -> tuple[tuple[DecisionChange, ...], int | None]:
    """Pair decisions by key, in order; return the rows that differ and the first parting step."""
    pending: dict[_Key, list[DecisionMade]] = {}
    for d in recorded:
        pending.setdefault(_key(d), []).append(d)
    found: list[tuple[Change, DecisionMade | None, DecisionMade | None, tuple[str, ...]]] = []
    for d in counterfactual:
        matches = pending.get(_key(d))
        if not matches:
            found.append(("added", None, d, ()))
            continue
        was = matches.pop(0)
        changed = _changed(was, d)
        if changed:
            found.append(("changed", was, d, changed))
    found += [("removed", d, None, ()) for left in pending.values() for d in left]
    parting = min((_either(was, now).step for _, was, now, _ in found), default=None)
    rows = [_row(change, was, now, changed, parting, coverage) for change, was, now, changed in found]
    rows.sort(key=lambda r: (r.step, r.action.value, r.layer or 0, r.entity or "", r.change))
    return tuple(rows), parting


def _either(was: DecisionMade | None, now: DecisionMade | None) -> DecisionMade:
    either = now or was
    assert either is not None  # every row has a recorded or a counterfactual decision
    return either


def _changed(was: DecisionMade, now: DecisionMade) -> tuple[str, ...]:
    names = [name for name in _COMPARED if getattr(was, name) != getattr(now, name)]
    before, after = was.metrics_at_decision, now.metrics_at_decision
    keys = set(before) | set(after)
    names += [
        f"metrics_at_decision.{k}"
        for k in sorted(keys - (_FROM_THE_LOOP - set(after)))
        if before.get(k) != after.get(k)
    ]
    return tuple(names)


def _row(
    change: Change,
    was: DecisionMade | None,
    now: DecisionMade | None,
    changed: tuple[str, ...],
    parting: int | None,
    coverage: Coverage,
) -> DecisionChange:
    d = _either(was, now)
    assert parting is not None  # a row exists, so the decisions part somewhere
    named = (
        [] if now is None else list(dict.fromkeys(n for n in (now.entity, now.parent, *now.children) if n))
    )
    return DecisionChange(
        step=d.step,
        change=change,
        action=d.action,
        layer=d.layer,
        entity=d.entity,
        children=tuple(d.children),
        recorded=was,
        what_if=now,
        changed=changed,
        on_recorded_signals=d.step > parting,
        unobserved=coverage.unobserved(named, d.step),
        stand_ins=coverage.stand_ins(named, d.step),
    )
