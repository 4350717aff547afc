"""The fold: how each event kind changes a `Registry`, and the loop that applies records in order.

The rules (see `lifecycle_es.registry`) are kept here as one handler per kind: a handler checks
the record against the registry, then changes it only through the registry's writing interface
(`Registry._add`, `_move`, `_observe`, `_decide`, `_seal`) and its public run fields, so the
registry keeps its own tables consistent. `lifecycle_es.registry` re-exports `fold`,
`fold_record` and `fold_records`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from bus import Record
from lifecycle_es._entity import HISTORY_LIMIT, EntityState
from lifecycle_es.errors import InconsistentEventError, SchemaError, SequenceGapError
from lifecycle_es.events import EventBase
from lifecycle_es.specs.run import RUN_SPEC

if TYPE_CHECKING:
    from lifecycle_es.registry import Registry

__all__ = ["fold", "fold_record", "fold_records"]


def fold(registry: Registry, event: EventBase) -> Registry:
    """Apply one appended event to the registry and return it."""
    return fold_record(registry, event.__dict__)


def fold_record(registry: Registry, record: Record) -> Registry:
    """Apply one event given as a field mapping (a record read back from the log)."""
    return fold_records(registry, (record,))


def fold_records(registry: Registry, records: Iterable[Record]) -> Registry:
    """Apply events given as field mappings, in order; one call folds a whole replay batch.

    A record that is refused raises with the registry at the record before it.
    """
    handlers, stateless = _HANDLERS, _STATELESS
    last, top = registry.seq, registry.step
    try:
        for record in records:
            seq, kind = record.get("seq"), record.get("kind")
            if seq != last + 1 or type(seq) is not int or kind is None:
                _refuse(last, seq, kind)
            step = record["step"]
            if kind not in stateless:
                handler = handlers.get(kind)
                if handler is None:
                    raise SchemaError(f"record seq {seq}: unknown kind {kind!r}")
                try:  # inlined: a call per record costs a tenth of a transition's fold
                    handler(registry, record)  # handlers read the record, not the clock
                except KeyError as e:  # handlers read every field before they change anything
                    raise SchemaError(f"record seq {seq} ({kind}) lacks the field {e}") from None
            last = seq
            if step > top:
                top = step
    finally:
        registry.seq, registry.step = last, top
    return registry


def _refuse(last: int, seq: object, kind: object) -> NoReturn:
    if kind is None or not isinstance(seq, int):
        raise SchemaError(f"record {seq!r} lacks its kind or an integer seq")
    raise SequenceGapError(f"event seq {seq} does not follow the registry's last seq {last}")


def _on_run_started(r: Registry, ev: Record) -> None:
    r.run_id = ev["run_id"]
    r.run_config = dict(ev["config"])
    r.run_seed = ev["seed"]
    if RUN_SPEC.name in r.specs:
        r.run_state = r.specs[RUN_SPEC.name].initial[0]


def _on_run_state_changed(r: Registry, ev: Record) -> None:
    if r.run_state is not None and ev["from_state"] != r.run_state:
        raise InconsistentEventError(
            f"seq {ev['seq']}: run moves from {ev['from_state']!r} but is in {r.run_state!r}"
        )
    r.run_state = ev["to_state"]


def _on_entity_registered(r: Registry, ev: Record) -> None:
    name, spec = ev["entity"], r.specs.get(ev["spec"])
    if name in r.entities or spec is None or not spec.has_state(ev["state"]):
        raise InconsistentEventError(
            f"seq {ev['seq']}: cannot register {name!r} as {ev['spec']}/{ev['state']}"
        )
    r._add(
        EntityState(
            entity=name,
            spec=ev["spec"],
            state=ev["state"],
            slot=ev["slot"],
            layer=ev["layer"],
            parent=ev["parent"],
            born_step=ev["step"],
            entered_step=ev["step"],
            attrs=dict(ev["attrs"]),
            entered_ts=ev.get("ts"),
        )
    )


def _on_transition_applied(r: Registry, ev: Record) -> None:
    e = r.entities.get(ev["entity"])
    if e is None or e.state != ev["from_state"] or r.specs[e.spec].edge(e.state, ev["to_state"]) is None:
        raise InconsistentEventError(
            f"seq {ev['seq']}: {ev['entity']!r} cannot move {ev['from_state']}->{ev['to_state']}"
        )
    step, target = ev["step"], ev["to_state"]
    # One new tuple, the oldest move dropped at the limit (a slice covering the whole tuple
    # is the tuple itself, no copy).
    history = (*e.history[1 - HISTORY_LIMIT :], (step, e.state, target))
    # Positional, as in _on_transition_rejected: keywords cost a tenth of the fold here.
    moved = EntityState(
        e.entity,
        e.spec,
        target,
        e.slot,
        e.layer,
        e.parent,
        e.born_step,
        step,
        e.transitions + 1,
        e.rejections,
        history,
        e.attrs,
        _last_transition(ev),
        ev.get("ts"),
    )
    r._move(e, moved, step)


def _last_transition(ev: Record) -> dict[str, Any]:
    """The facts of an applied move an entity keeps; .get: records written before
    `triggered_by` and `metadata` existed lack them."""
    metadata = ev.get("metadata")
    return {
        "from_state": ev["from_state"],
        "to_state": ev["to_state"],
        "step": ev["step"],
        "reason": ev.get("reason", ""),
        "triggered_by": ev.get("triggered_by"),
        "metadata": dict(metadata) if metadata and isinstance(metadata, Mapping) else {},
    }


def _on_transition_rejected(r: Registry, ev: Record) -> None:
    e = r.entities.get(ev["entity"])
    if e is None:
        raise InconsistentEventError(f"seq {ev['seq']}: rejection for unknown entity {ev['entity']!r}")
    # Built directly: dataclasses.replace costs more than the rest of the fold together.
    r.entities[e.entity] = EntityState(
        e.entity,
        e.spec,
        e.state,
        e.slot,
        e.layer,
        e.parent,
        e.born_step,
        e.entered_step,
        e.transitions,
        e.rejections + 1,
        e.history,
        e.attrs,
        e.last_transition,
        e.entered_ts,
    )


def _on_metrics_observed(r: Registry, ev: Record) -> None:
    r._observe(ev["entity"], ev["layer"], ev["metrics"])


def _on_decision_made(r: Registry, ev: Record) -> None:
    r._decide(ev["action"], ev["step"], (None, ev["layer"], ev["entity"], ev["parent"]))


def _on_step_sealed(r: Registry, ev: Record) -> None:
    r._seal(ev["step"])


def _on_actions_verified(r: Registry, ev: Record) -> None:
    r.verified_step = ev["step"]


def _on_checkpoint(r: Registry, ev: Record) -> None:
    r.last_checkpoint = {k: ev[k] for k in ("checkpoint_id", "path", "sha256", "upto_seq")}


_CHECKPOINT_PLACE = {"save": "active", "archive": "archive", "corrupt": "corrupt"}


def _on_checkpoint_recorded(r: Registry, ev: Record) -> None:
    action, checkpoint_id = ev["action"], ev["checkpoint_id"]
    if action == "delete":
        r.checkpoints.pop(checkpoint_id, None)
    elif action in _CHECKPOINT_PLACE:
        r.checkpoints[checkpoint_id] = _CHECKPOINT_PLACE[action]
    # a restore leaves the checkpoint where it is


_HANDLERS: dict[str, Callable[[Registry, Record], None]] = {
    "RunStarted": _on_run_started,
    "RunStateChanged": _on_run_state_changed,
    "EntityRegistered": _on_entity_registered,
    "GateChecked": lambda r, ev: None,  # gate statistics are a projection (projections.metrics)
    "GatesChecked": lambda r, ev: None,
    "TransitionApplied": _on_transition_applied,
    "TransitionRejected": _on_transition_rejected,
    "MetricsObserved": _on_metrics_observed,
    "DecisionMade": _on_decision_made,
    "StepSealed": _on_step_sealed,
    "ActionsVerified": _on_actions_verified,
    "DivergenceDetected": lambda r, ev: None,  # an incident for the audit trail; state is unchanged
    "CheckpointSaved": _on_checkpoint,
    "CheckpointRestored": _on_checkpoint,
    "CheckpointRecorded": _on_checkpoint_recorded,
    "RewardRecorded": lambda r, ev: None,  # training data for a policy; the run's state is unchanged
}
_STATELESS = frozenset({"GateChecked", "GatesChecked", "DivergenceDetected", "RewardRecorded"})
"""The kinds whose handler does nothing: the batched fold skips the call (half a replay's records)."""
