"""Short capacity or hard data: whether a layer's need spawns paid off (`need_payoff_fraction`).

A need metric such as the type loss gap stays high on data where some kinds of token are simply
harder, whatever the number of experts; only trying tells that apart from short capacity. So a
spawn made for need records the need's *level* (the metric's mean over the spawn's patience
window) in the child's registration attributes, and `need_payoff_window` checkpoints later the
layer's metric window shows whether the need fell by `need_payoff_fraction` of it. The
`need_floor_failures`-th need spawn in a row that did not pay off sets a *floor* at its level
(each child records the failures before it), and the next need spawn waits until the need's mean
exceeds it by `need_floor_margin`; no need spawn is made while the last one's window is open.

Everything here is read from the registry (the children's attributes, the layer's windows), so a
registry folded from the log, and a what-if that re-decides the registrations, decide the same.
A verdict is read while the spawn's checkpoint is still in the layer's window; every later need
spawn carries the floor in force at its birth in its own attributes, so a floor outlives the
window as long as the layer keeps spawning for need.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._precision import METRIC_DIGITS, rounded
from lifecycle_es.controllers._signals import mean, need_series
from lifecycle_es.events import GateCategory
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, SpawnMetrics

__all__ = ["NEED_FLOOR", "NEED_FLOOR_FROM", "NEED_LEVEL", "NeedPayoff", "need_payoff"]

NEED_LEVEL = "need_level"
"""Attribute of a need spawn's child, and key of its decision's metrics: the need it was made for."""
NEED_FLOOR = "need_floor"
"""Attribute and decision metric: the floor in force when the spawn was made (absent: none)."""
NEED_FLOOR_FROM = "need_floor_from"
"""Attribute and decision metric: the failed need spawn (its child's id) that set that floor."""
NEED_FAILURES = "need_failures"
"""Attribute and decision metric: the need spawns in a row before this one that did not pay off."""


@dataclass(frozen=True, slots=True)
class NeedPayoff:
    """What a layer's need spawns showed so far, and the need now: the spawn gate's evidence."""

    layer: int
    level: float
    """The need metric's mean over the last `spawn_patience` checkpoints."""
    floor: float | None
    """The highest level a need spawn of the layer failed to reduce (or carried), None if none."""
    floor_from: str | None
    """The child of the failed spawn that set `floor`."""
    pending: str | None
    """The child of a need spawn whose payoff window is still open, None if none."""
    checkpoints_left: int
    """Checkpoints until `pending`'s window ends (0 without one)."""
    failures: int
    """The layer's latest need spawns in a row that did not pay off (0 after one that did)."""

    def check(self, config: ExpertCoordinatorConfig) -> Check:
        """Return the `spawn.need_payoff` gate: no verdict pending, and the need above any floor."""
        margin = config.need_floor_margin
        bar = None if self.floor is None else self.floor * (1.0 + margin)
        observed = {NEED_LEVEL: self.level, NEED_FAILURES: float(self.failures)}
        if self.floor is not None:
            observed[NEED_FLOOR] = self.floor
        thresholds = {"need_payoff_window": float(config.need_payoff_window), "need_floor_margin": margin}
        if self.pending is not None:
            reason = (
                f"layer {self.layer}: the need spawn of {self.pending} is judged in "
                f"{checks.count(self.checkpoints_left, 'checkpoint')}"
            )
            observed["checkpoints_to_verdict"] = float(self.checkpoints_left)
            return Check("spawn.need_payoff", GateCategory.PERFORMANCE, False, reason, observed, thresholds)
        if bar is None:
            reason = f"layer {self.layer}: no need spawn failed to reduce the need (now {self.level:.3g})"
        else:
            reason = (
                f"layer {self.layer}: need {self.level:.3g} against the floor {self.floor:.3g} that "
                f"{self.floor_from}'s spawn did not reduce, plus {margin:g} of it"
            )
        passed = bar is None or self.level >= bar
        return Check("spawn.need_payoff", GateCategory.PERFORMANCE, passed, reason, observed, thresholds)

    def attrs(self) -> dict[str, JsonValue]:
        """Return the registration attributes of the child a need spawn makes now."""
        found: dict[str, JsonValue] = {NEED_LEVEL: self.level, NEED_FAILURES: self.failures}
        if self.floor is not None and self.floor_from is not None:
            found[NEED_FLOOR], found[NEED_FLOOR_FROM] = self.floor, self.floor_from
        return found

    def record(self, metrics: SpawnMetrics) -> None:
        """Add the need's evidence to a spawn decision's metrics: its level and the floor it beat."""
        metrics["need_level"], metrics["need_failures"] = self.level, self.failures
        if self.floor is not None and self.floor_from is not None:
            metrics["need_floor"], metrics["need_floor_from"] = self.floor, self.floor_from


def need_payoff(registry: Registry, layer: int, config: ExpertCoordinatorConfig) -> NeedPayoff | None:
    """Return what the layer's need spawns showed, or None when the payoff test does not apply:
    `need_payoff_fraction` or the need metric unset, or the metric missing at any of the last
    `spawn_patience` checkpoints (the spawn would not be one for need)."""
    name, n = config.starvation_need_metric, config.spawn_patience
    if config.need_payoff_fraction is None or name is None:
        return None
    series = need_series(registry, layer, name)
    recent = [v for _, v in series[-n:]]
    if len(recent) < n or any(v is None for v in recent):
        return None
    floor: tuple[float, str] | None = None
    pending: tuple[str, int] | None = None
    failures = 0
    for child in _need_children(registry, layer):
        after = [v for step, v in series if step > child.born_step]
        if len(after) < config.need_payoff_window:
            seen = any(step <= child.born_step for step, _ in series)  # else out of the window
            if seen and pending is None:
                pending = (child.entity, config.need_payoff_window - len(after))
            continue
        verdict = _failed(config, series, child, n)
        failures = 0 if verdict is None else int(child.attrs.get(NEED_FAILURES, 0)) + 1
        failed = verdict if failures >= config.need_floor_failures else None
        for found in (_carried(child), failed):
            if found is not None and (floor is None or found[0] > floor[0]):
                floor = found
    return NeedPayoff(
        layer=layer,
        level=rounded(mean([v for v in recent if v is not None]), METRIC_DIGITS),  # as recorded
        floor=None if floor is None else floor[0],
        floor_from=None if floor is None else floor[1],
        pending=None if pending is None else pending[0],
        checkpoints_left=0 if pending is None else pending[1],
        failures=failures,
    )


def _need_children(registry: Registry, layer: int) -> list[EntityState]:
    """Return the layer's experts made by a need spawn, oldest first."""
    found = [e for e in registry if e.spec == EXPERT_SPEC.name and e.layer == layer and NEED_LEVEL in e.attrs]
    return sorted(found, key=lambda e: (e.born_step, e.entity))


def _carried(child: EntityState) -> tuple[float, str] | None:
    floor, source = child.attrs.get(NEED_FLOOR), child.attrs.get(NEED_FLOOR_FROM)
    return None if floor is None or source is None else (float(floor), str(source))


def _failed(
    config: ExpertCoordinatorConfig,
    series: tuple[tuple[float, float | None], ...],
    child: EntityState,
    n: int,
) -> tuple[float, str] | None:
    """Return the child's level and id when its spawn did not pay off, judged on the last `n`
    checkpoints of its payoff window; None when it paid off or that part left the window."""
    if not any(step <= child.born_step for step, _ in series):
        return None  # its first checkpoints left the window: the verdict is no longer known
    window = [v for step, v in series if step > child.born_step][: config.need_payoff_window]
    tail = [v for v in window[-n:] if v is not None]
    level = float(child.attrs[NEED_LEVEL])
    fraction = config.need_payoff_fraction
    if not tail or fraction is None or mean(tail) <= level * (1.0 - fraction):
        return None
    return level, child.entity
