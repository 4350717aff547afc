"""The fold: how each event kind changes a `Registry`, and the loop that applies records in order.

The rules (see `lifecycle_es.registry`) are kept here as one handler per kind: a handler checks
the record against the registry, then changes it only through the registry's writing interface
(`Registry._add`, `_move`, `_reject`, `_observe`, `_decide`, `_seal`) and its public run fields, so the
registry keeps its own tables consistent. `lifecycle_es.registry` re-exports `fold`,
`fold_record`, `fold_records` and `fold_lines`.

A handler takes the fields it reads as arguments, named in `_HANDLERS` next to it, so one
handler serves both forms a record comes in: a mapping (read with `itemgetter`) and a typed
line struct of the trusted JSONL replay (read with `attrgetter`, no dict built for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, NoReturn

from bus import Record
from lifecycle_es._entity import HISTORY_LIMIT, EntityState
from lifecycle_es._typed_lines import TypedLines
from lifecycle_es.errors import InconsistentEventError, SchemaError, SequenceGapError
from lifecycle_es.events import EventBase
from lifecycle_es.specs.run import RUN_SPEC

if TYPE_CHECKING:
    from lifecycle_es.registry import Registry

__all__ = ["fold", "fold_lines", "fold_record", "fold_records"]


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
    readers, stateless = _READERS, _STATELESS
    last, top = registry.seq, registry.step
    try:
        for record in records:
            seq, kind = record.get("seq"), record.get("kind")
            if seq != last + 1 or type(seq) is not int or kind is None:
                _refuse(last, seq, kind)
            step = record.get("step")
            if type(step) is not int:
                raise SchemaError(f"record seq {seq} ({kind}) lacks an integer step")
            if kind not in stateless:
                reader = readers.get(kind)
                if reader is None:
                    raise SchemaError(f"record seq {seq}: unknown kind {kind!r}")
                handler, fields = reader
                try:  # the fields, read in C; a record may lack an optional one
                    values = fields(record)
                except KeyError:
                    values = read_fields(fields, record, _OPTIONAL, kind)
                handler(registry, *values)  # handlers read the record, not the clock
            last = seq
            if step > top:
                top = step
    finally:
        registry.seq, registry.step = last, top
        if registry._unsettled:
            registry._settle()
    return registry


def fold_lines(registry: Registry, lines: TypedLines) -> Registry:
    """Apply a page of typed lines (`Codec.decode_typed_lines`), in order: what `fold_records`
    does with the page's records, reading the structs' fields without building the records.

    The decoder checked that the page's seqs run up by one, so only its first is checked
    here. A line that is refused raises with the registry at the line before it.
    """
    first = registry.seq
    if lines.first_seq != first + 1:
        raise SequenceGapError(f"event seq {lines.first_seq} does not follow the registry's last seq {first}")
    table = {struct: _LINE_READERS.get(kind, _UNKNOWN) for struct, kind in lines.kinds.items()}
    structs, done = lines.structs, 0
    try:
        for line in structs:
            reader = table[type(line)]
            if reader is not None:
                reader[0](registry, *reader[1](line))
            done += 1
    finally:
        folded = structs if done == len(structs) else structs[:done]
        registry.seq = first + done
        registry.step = max(registry.step, max(map(_step_of, folded), default=registry.step))
        if registry._unsettled:
            registry._settle()
    return registry


def _refuse(last: int, seq: object, kind: object) -> NoReturn:
    if kind is None or not isinstance(seq, int):
        raise SchemaError(f"record {seq!r} lacks its kind or an integer seq")
    raise SequenceGapError(f"event seq {seq} does not follow the registry's last seq {last}")


def read_fields(
    fields: Callable[[Record], Any], record: Record, optional: Mapping[str, Any], kind: str
) -> tuple[Any, ...]:
    """`fields(record)` for a record lacking some of them: the `optional` ones take their
    defaults (records written before they existed lack them); a required one is refused.

    The slow path of every fold that reads a record's fields with an `itemgetter`."""
    try:
        return fields({**optional, **record})  # type: ignore[no-any-return]
    except KeyError as e:
        raise SchemaError(f"record seq {record.get('seq')!r} ({kind}) lacks the field {e}") from None


_OPTIONAL: dict[str, Any] = {"ts": None, "reason": "", "triggered_by": None, "metadata": None}
"""The fields a handler reads that a record may lack, with the value it reads then."""


def _on_run_started(r: Registry, seq: int, run_id: str, config: Mapping[str, Any], seed: int) -> None:
    r.run_id = run_id
    r.run_config = dict(config)
    r.run_seed = seed
    if RUN_SPEC.name in r.specs:
        r.run_state = r.specs[RUN_SPEC.name].initial[0]


def _on_run_state_changed(r: Registry, seq: int, from_state: str, to_state: str) -> None:
    if r.run_state is not None and from_state != r.run_state:
        raise InconsistentEventError(f"seq {seq}: run moves from {from_state!r} but is in {r.run_state!r}")
    r.run_state = to_state


def _on_entity_registered(
    r: Registry,
    seq: int,
    name: str,
    spec_name: str,
    state: str,
    slot: int | None,
    layer: int | None,
    parent: str | None,
    step: int,
    attrs: Mapping[str, Any],
    ts: float | None,
) -> None:
    spec = r.specs.get(spec_name)
    if name in r.entities or spec is None or not spec.has_state(state):
        raise InconsistentEventError(f"seq {seq}: cannot register {name!r} as {spec_name}/{state}")
    r._add(
        EntityState(
            entity=name,
            spec=spec_name,
            state=state,
            slot=slot,
            layer=layer,
            parent=parent,
            born_step=step,
            entered_step=step,
            attrs=dict(attrs),
            entered_ts=ts,
        )
    )


def _on_transition_applied(
    r: Registry,
    seq: int,
    entity: str,
    source: str,
    target: str,
    step: int,
    reason: str,
    triggered_by: str | None,
    metadata: Any,
    ts: float | None,
) -> None:
    e = r.entities.get(entity)
    if e is None or e.state != source or r.specs[e.spec].edge(e.state, target) is None:
        raise InconsistentEventError(f"seq {seq}: {entity!r} cannot move {source}->{target}")
    # One new tuple, the oldest move dropped at the limit (a slice covering the whole tuple
    # is the tuple itself, no copy).
    history = (*e.history[1 - HISTORY_LIMIT :], (step, e.state, target))
    last = {  # the facts of the move an entity keeps
        "from_state": source,
        "to_state": target,
        "step": step,
        "reason": reason,
        "triggered_by": triggered_by,
        "metadata": dict(metadata) if metadata and isinstance(metadata, Mapping) else {},
    }
    # Positional: keywords cost a tenth of the fold here.
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
        e.rejections + r._unsettled.pop(entity, 0),  # the refusals this fold counted (`_reject`)
        history,
        e.attrs,
        last,
        ts,
    )
    r._move(e, moved, step)


def _on_transition_rejected(r: Registry, seq: int, entity: str) -> None:
    if entity not in r.entities:
        raise InconsistentEventError(f"seq {seq}: rejection for unknown entity {entity!r}")
    r._reject(entity)


def _on_metrics_observed(
    r: Registry, seq: int, entity: str | None, layer: int | None, metrics: Mapping[str, float]
) -> None:
    r._observe(entity, layer, metrics)


def _on_decision_made(
    r: Registry, seq: int, action: str, step: int, layer: int | None, entity: str | None, parent: str | None
) -> None:
    r._decide(action, step, (None, layer, entity, parent))


def _on_step_sealed(r: Registry, seq: int, step: int) -> None:
    r._seal(step)


def _on_actions_verified(r: Registry, seq: int, step: int) -> None:
    r.verified_step = step


def _on_checkpoint(r: Registry, seq: int, checkpoint_id: str, path: str, sha256: str, upto_seq: int) -> None:
    r.last_checkpoint = {"checkpoint_id": checkpoint_id, "path": path, "sha256": sha256, "upto_seq": upto_seq}


_CHECKPOINT_PLACE = {"save": "active", "archive": "archive", "corrupt": "corrupt"}


def _on_checkpoint_recorded(r: Registry, seq: int, action: str, checkpoint_id: str) -> None:
    if action == "delete":
        r.checkpoints.pop(checkpoint_id, None)
    elif action in _CHECKPOINT_PLACE:
        r.checkpoints[checkpoint_id] = _CHECKPOINT_PLACE[action]
    # a restore leaves the checkpoint where it is


_Handler = Callable[..., None]
_CHECKPOINT_FIELDS = ("seq", "checkpoint_id", "path", "sha256", "upto_seq")
_HANDLERS: dict[str, tuple[_Handler, tuple[str, ...]]] = {
    "RunStarted": (_on_run_started, ("seq", "run_id", "config", "seed")),
    "RunStateChanged": (_on_run_state_changed, ("seq", "from_state", "to_state")),
    "EntityRegistered": (
        _on_entity_registered,
        ("seq", "entity", "spec", "state", "slot", "layer", "parent", "step", "attrs", "ts"),
    ),
    "TransitionApplied": (
        _on_transition_applied,
        ("seq", "entity", "from_state", "to_state", "step", "reason", "triggered_by", "metadata", "ts"),
    ),
    "TransitionRejected": (_on_transition_rejected, ("seq", "entity")),
    "MetricsObserved": (_on_metrics_observed, ("seq", "entity", "layer", "metrics")),
    "DecisionMade": (_on_decision_made, ("seq", "action", "step", "layer", "entity", "parent")),
    "StepSealed": (_on_step_sealed, ("seq", "step")),
    "ActionsVerified": (_on_actions_verified, ("seq", "step")),
    "CheckpointSaved": (_on_checkpoint, _CHECKPOINT_FIELDS),
    "CheckpointRestored": (_on_checkpoint, _CHECKPOINT_FIELDS),
    "CheckpointRecorded": (_on_checkpoint_recorded, ("seq", "action", "checkpoint_id")),
}
"""Each kind's handler and the fields it reads, in the order it takes them."""
_STATELESS = frozenset({"GateChecked", "GatesChecked", "DivergenceDetected", "RewardRecorded"})
"""The kinds that leave the registry as it is: gate statistics are a projection
(projections.metrics), a divergence is an incident for the audit trail, a reward is training
data for a policy. The fold skips them (half a replay's records)."""

_READERS = {kind: (handler, itemgetter(*fields)) for kind, (handler, fields) in _HANDLERS.items()}
"""Each kind's handler and the getter of its fields from a mapping."""
_LINE_READERS: dict[str, tuple[_Handler, Callable[[Any], tuple[Any, ...]]] | None] = {
    **{kind: (handler, attrgetter(*fields)) for kind, (handler, fields) in _HANDLERS.items()},
    **dict.fromkeys(_STATELESS),
}
"""Each kind's handler and the getter of its fields from a typed line; None: nothing to do."""


def _unknown_kind(r: Registry, seq: int, kind: str) -> NoReturn:
    raise SchemaError(f"record seq {seq}: unknown kind {kind!r}")


_UNKNOWN = (_unknown_kind, attrgetter("seq", "__class__.__struct_config__.tag"))
"""A line struct of a kind the fold has no handler for (a codec that knows more kinds)."""
_step_of = attrgetter("step")
