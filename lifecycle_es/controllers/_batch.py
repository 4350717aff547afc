"""The events of one coordinator evaluation, folded into a scratch registry as they are made.

Decisions within one evaluation must see each other's effects: a spawn takes a slot the next
spawn cannot have, a merge uses up the cycle's merge budget, a pruned expert no longer counts
toward the floor. So every event is folded, the moment it is made, into a copy of the registry
under a provisional seq (one past the copy's last). The events themselves keep seq 0: the
caller appends them with `Lifecycle.append`, which gives them their real seqs and folds them
into the real registry in the same order, reaching the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import JsonValue

from lifecycle_es import commands
from lifecycle_es.commands import GatePolicy, Stamp
from lifecycle_es.controllers._basin_math import decision_seed
from lifecycle_es.controllers._precision import GATE_DIGITS, rounded_all
from lifecycle_es.errors import InconsistentEventError
from lifecycle_es.events import (
    Action,
    DecisionMade,
    EventBase,
    GateCategory,
    GateMode,
    GateOutcome,
    GatesChecked,
)
from lifecycle_es.gates import GateLibrary
from lifecycle_es.registry import Registry, fold_record
from lifecycle_es.specs.expert import (
    EXPERT_SPEC,
    BasinGoneMetrics,
    ExpertState,
    FailedSplitMetrics,
    MergeMetrics,
    PruneMetrics,
    ReviveMetrics,
    SpawnMetrics,
    SplitMetrics,
)

__all__ = ["Batch", "Check"]

_NO_GATES = GateLibrary()
"""The expert spec's edges name no gates: the coordinator's own checks are its gates."""
_STRICT = GatePolicy(mode=GateMode.STRICT)


@dataclass(frozen=True, slots=True)
class Check:
    """One evaluated gate of a candidate action, before it becomes a `GateChecked` event."""

    gate: str
    """Stable name, `<action>.<what>` (e.g. `split.overload_patience`): gate statistics key on it."""
    category: GateCategory
    """What kind of check it is; the compact `GatesChecked` record leaves it out (the gate's
    name says which check it was), so only the code and old single-form logs carry it."""
    passed: bool
    reason: str
    """One sentence: what was observed against what was required."""
    observed: Mapping[str, float]
    thresholds: Mapping[str, float]


class Batch:
    """The events of one `ExpertCoordinator.decide` call and the scratch registry they shape."""

    def __init__(self, registry: Registry, stamp: Stamp, config: Mapping[str, JsonValue]) -> None:
        self.registry = registry.copy()
        """The caller's registry plus every event made so far; the caller's is never touched."""
        self.stamp = stamp
        self.config = dict(config)
        self.events: list[EventBase] = []

    def add(self, event: EventBase) -> None:
        """Keep an event and fold it into the scratch registry under a provisional seq."""
        fold_record(self.registry, {**event.__dict__, "seq": self.registry.seq + 1})
        self.events.append(event)

    def checks(self, entity: str, from_state: str, to_state: str, checks: Iterable[Check]) -> bool:
        """Record every check of one attempt as one `GatesChecked` on `entity`; return whether
        all passed.

        A passed check keeps its name, verdict and observed values; its thresholds are the
        run's settings and its reason restates them, so only a failed check writes both.
        """
        outcomes = [
            GateOutcome(
                check.gate,
                check.passed,
                rounded_all(check.observed, GATE_DIGITS),
                {} if check.passed else rounded_all(check.thresholds, GATE_DIGITS),
                "" if check.passed else check.reason,
            )
            for check in checks
        ]
        self.add(
            GatesChecked.trusted(
                **self.attempt(entity, from_state, to_state), gates=[o.stored() for o in outcomes]
            )
        )
        return all(outcome.passed for outcome in outcomes)

    def attempt(self, entity: str, from_state: str, to_state: str) -> dict[str, Any]:
        """The fields every gate check of one attempt carries: the stamp, the entity and the edge."""
        stamp = self.stamp
        return {
            "run_id": stamp.run_id,
            "step": stamp.step,
            "rank": stamp.rank,
            "entity": entity,
            "from_state": str(from_state),
            "to_state": str(to_state),
        }

    def move(self, entity: str, to: ExpertState, reason: str, metadata: dict[str, Any] | None = None) -> None:
        """Move an expert along its spec's edge to `to`, through the transition command."""
        outcome = commands.request_transition(
            self.registry,
            _NO_GATES,
            _STRICT,
            self.stamp,
            entity=entity,
            to=to.value,
            reason=reason,
            metadata=metadata,
        )
        if not outcome.accepted:  # the coordinator only asks for edges the spec has
            raise InconsistentEventError(
                f"coordinator: {entity} -> {to.value} refused: " + "; ".join(outcome.reasons)
            )
        for event in outcome.events:
            self.add(event)

    def register(
        self,
        entity: str,
        *,
        layer: int,
        slot: int,
        parent: str | None,
        attrs: Mapping[str, JsonValue] | None = None,
    ) -> None:
        """Register a new expert in `pending_spawn` in `slot` of `layer`, with `attrs` if any."""
        self.add(
            commands.register(
                self.registry,
                self.stamp,
                entity=entity,
                spec=EXPERT_SPEC.name,
                state=ExpertState.PENDING_SPAWN.value,
                slot=slot,
                layer=layer,
                parent=parent,
                attrs=attrs,
            )
        )

    def decide(
        self,
        action: Action,
        *,
        layer: int,
        entity: str,
        target: str,
        reason: str,
        metrics: SpawnMetrics
        | SplitMetrics
        | PruneMetrics
        | MergeMetrics
        | FailedSplitMetrics
        | ReviveMetrics
        | BasinGoneMetrics,
        parent: str | None = None,
        children: Sequence[str] = (),
    ) -> None:
        """Record a `DecisionMade`, applied at the next step, seeded from (run, step, action, target)."""
        step = self.stamp.step
        self.add(
            DecisionMade(
                run_id=self.stamp.run_id,
                step=step,
                rank=self.stamp.rank,
                entity=entity,
                action=action,
                layer=layer,
                parent=parent,
                children=list(children),
                reason=reason,
                metrics_at_decision=cast(dict[str, JsonValue], dict(metrics)),
                config_snapshot=dict(self.config),
                apply_at_step=step + 1,
                seed=decision_seed(self.registry.run_seed, step, action.value, target),
            )
        )
