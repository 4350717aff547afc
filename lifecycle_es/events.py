"""The event model: every lifecycle fact as a frozen pydantic model in one discriminated union.

As a log record an event is one flat mapping, envelope and payload side by side; `kind` is the
stable stored name (equal to the class name), never a Python class path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from lifecycle_es._ids import new_event_id

__all__ = [
    "EVENT_TYPES",
    "RUN_ID_PATTERN",
    "Action",
    "ActionsVerified",
    "CheckpointAction",
    "CheckpointPriority",
    "CheckpointRecorded",
    "CheckpointRestored",
    "CheckpointSaved",
    "DecisionMade",
    "DivergenceDetected",
    "EntityRegistered",
    "Event",
    "EventBase",
    "FiniteFloat",
    "GateCategory",
    "GateChecked",
    "GateMode",
    "GateOutcome",
    "GatesChecked",
    "MetricsObserved",
    "RewardRecorded",
    "RunStarted",
    "RunStateChanged",
    "StepSealed",
    "TransitionApplied",
    "TransitionRejected",
    "gate_results",
]

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A metric value: NaN and infinities are refused at validation."""

Metrics = dict[str, FiniteFloat]
EntityId = Annotated[str, Field(min_length=1, max_length=256)]

# Bound once: `EventBase.trusted` is on the transition's hot path (DESIGN.md section 9).
_new, _set, _now = object.__new__, object.__setattr__, time.time


class GateCategory(StrEnum):
    """What a gate checks (seeds/000): prerequisites, performance, consistency or usefulness."""

    STRUCTURAL = "structural"
    PERFORMANCE = "performance"
    STABILITY = "stability"
    CONTRIBUTION = "contribution"


class GateMode(StrEnum):
    """Strict: every gate must pass. Permissive: only structural gates block."""

    STRICT = "strict"
    PERMISSIVE = "permissive"


class Action(StrEnum):
    """What a lifecycle decision does to the model or to an entity."""

    SPAWN = "SPAWN"
    PRUNE = "PRUNE"
    SPLIT = "SPLIT"
    MERGE = "MERGE"
    GERMINATE = "GERMINATE"
    CULL = "CULL"
    ROLLBACK = "ROLLBACK"
    FOSSILIZE = "FOSSILIZE"
    ADVANCE = "ADVANCE"
    REVIVE = "REVIVE"
    REPAIR = "REPAIR"
    HOLD = "HOLD"
    """A seed controller decided to leave the entity where it is (recorded for offline training)."""


class EventBase(BaseModel):
    """The envelope every event carries; subclasses add their payload and a `kind` literal."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    SCHEMA: ClassVar[int] = 1
    """The schema version this code writes for the kind; older records are upcast on read."""

    event_id: str = Field(default_factory=new_event_id, pattern=_UUID_PATTERN)
    """Unique id of the event; a retried append is recognised by it."""
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    """The run whose log holds the event."""
    seq: int = Field(0, ge=0)
    """Position in the run's log, from 1; 0 until appended."""
    schema_version: int = Field(1, ge=1, alias="schema")
    """Version of the kind's payload layout, stored as `schema`."""
    step: int = Field(0, ge=0)
    """Training step (the lifecycle clock) at which the event happened."""
    ts: float = Field(default_factory=time.time, allow_inf_nan=False)
    """Wall time, seconds since the epoch."""
    rank: int = Field(0, ge=0)
    """DDP rank of the writer."""
    entity: EntityId | None = None
    """The entity the event is about, or None for run-level events."""
    causation: str | None = Field(None, pattern=_UUID_PATTERN)
    """The event_id of the event that caused this one."""

    _defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._defaults = {
            name: info.default
            for name, info in cls.model_fields.items()
            if not info.is_required() and info.default_factory is None
        }
        cls._defaults["schema_version"] = cls.SCHEMA

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The field's default is 1 for every kind; a kind at a newer SCHEMA must write that
        # version, or its records would be upcast again on read. Only such a kind gets the
        # post-init hook (set here, before pydantic looks for one): it is a Python call in
        # every validated construction, a tenth of an event's validation.
        super().__init_subclass__(**kwargs)
        if cls.SCHEMA != 1:
            cls.model_post_init = _write_schema  # type: ignore[method-assign,assignment]  # a plain function, bound as a method

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """Build an event without validation, from values a command handler already checked.

        This is the hot path of a transition (DESIGN.md section 9); everything built from
        outside input goes through the validating constructor or `codec.from_record` instead.
        """
        values = cls._defaults.copy()
        values["event_id"] = new_event_id()
        values["ts"] = _now()
        values.update(fields)
        event = _new(cls)
        _set(event, "__dict__", values)
        _set(event, "__pydantic_fields_set__", set(values))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event


def _write_schema(self: EventBase, context: Any, /) -> None:
    """`model_post_init` of a kind at a newer SCHEMA: an event built without a version gets it."""
    if "schema_version" not in self.model_fields_set:
        self.__dict__["schema_version"] = self.SCHEMA


class RunStarted(EventBase):
    """A run began: its configuration, the specs in use and the environment that reproduces it."""

    kind: Literal["RunStarted"] = "RunStarted"
    config: dict[str, JsonValue] = Field(default_factory=dict)
    specs: list[str] = Field(default_factory=list)
    world_size: int = Field(1, ge=1)
    torch_version: str = ""
    seed: int = 0
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    """What resumes the run: its command line, arguments, checkpoint directory and package
    versions (empty in logs written before it was recorded)."""


class RunStateChanged(EventBase):
    """The run itself moved between states of the `run` spec."""

    kind: Literal["RunStateChanged"] = "RunStateChanged"
    from_state: str
    to_state: str
    reason: str = ""
    attrs: dict[str, JsonValue] = Field(default_factory=dict)
    """What the move carries beyond its reason, e.g. a preemption stop's `checkpoint_saved`."""


class EntityRegistered(EventBase):
    """An entity (seed, module, expert, agent) entered the registry in an initial state."""

    kind: Literal["EntityRegistered"] = "EntityRegistered"
    entity: EntityId
    spec: str
    state: str
    slot: int | None = Field(None, ge=0)
    layer: int | None = Field(None, ge=0)
    parent: str | None = None
    attrs: dict[str, JsonValue] = Field(default_factory=dict)


class GateChecked(EventBase):
    """One gate was evaluated for a requested transition."""

    kind: Literal["GateChecked"] = "GateChecked"
    entity: EntityId
    from_state: str
    to_state: str
    gate: str
    category: GateCategory
    passed: bool
    blocking: bool = True
    """Whether a failure of this gate refuses the transition in the mode in force."""
    reason: str = ""
    observed: Metrics = Field(default_factory=dict)
    thresholds: Metrics = Field(default_factory=dict)
    mode: GateMode = GateMode.STRICT


class GateOutcome(NamedTuple):
    """One checked gate inside a `GatesChecked` (a name with its verdict), stored as a list:
    `[gate, passed, observed]`, with `thresholds` and `reason` after them when they are not empty."""

    gate: str
    passed: bool
    observed: Metrics
    thresholds: Metrics = {}  # noqa: RUF012 -- a NamedTuple default, never mutated (stored() copies)
    reason: str = ""

    def stored(self) -> list[JsonValue]:
        """The outcome as a `GatesChecked` stores it: a plain list, so a record stays plain JSON,
        with empty trailing items left out (a passed gate of the coordinator is three items)."""
        items: list[JsonValue] = [self.gate, self.passed, dict(self.observed)]
        if self.thresholds or self.reason:
            items.append(dict(self.thresholds))
        if self.reason:
            items.append(self.reason)
        return items


_OUTCOME: TypeAdapter[GateOutcome] = TypeAdapter(GateOutcome)


def _stored_outcome(item: list[JsonValue]) -> list[JsonValue]:
    return _OUTCOME.validate_python(item).stored()


GateItem = Annotated[list[JsonValue], AfterValidator(_stored_outcome)]
"""A `GateOutcome` as stored: `[gate, passed, observed(, thresholds(, reason))]`, checked as one."""


class GatesChecked(EventBase):
    """Every gate of one decision attempt on an entity, checked together (the compact form).

    One event per attempt instead of one `GateChecked` each: the envelope is written once and
    each result is a short list, which is what keeps a long run's log small. The coordinator
    writes a passed gate as `[gate, true, observed]` and a failed one with its thresholds and
    reason as well (a passed gate's thresholds are the run's settings, in `RunStarted` and each
    decision's `config_snapshot`); observed values are rounded to 4 significant digits, the
    verdict having been reached on the exact ones. The gates are strict and blocking, as the
    expert coordinator checks them; `GateChecked` stays for the transitions a spec's own gates
    guard, where category and mode vary per gate.
    """

    kind: Literal["GatesChecked"] = "GatesChecked"
    entity: EntityId
    from_state: str
    to_state: str
    gates: list[GateItem] = Field(default_factory=list)
    """Each gate in the order checked; read them with `gate_results`."""


def gate_results(record: Mapping[str, Any]) -> Iterator[GateOutcome]:
    """The gate results a record holds, in either form: one for a `GateChecked`, each of a
    `GatesChecked`'s, none for any other kind. Readers count gates through this alone."""
    kind = record.get("kind")
    if kind == "GateChecked":
        yield GateOutcome(
            record["gate"], record["passed"], record["observed"], record["thresholds"], record["reason"]
        )
    elif kind == "GatesChecked":
        for item in record["gates"]:
            yield GateOutcome(*item)


class TransitionApplied(EventBase):
    """An entity moved from one state to another."""

    kind: Literal["TransitionApplied"] = "TransitionApplied"
    entity: EntityId
    from_state: str
    to_state: str
    trigger: str
    reason: str = ""
    triggered_by: str | None = None
    """Who asked for the move (a user, a service, "hf_sync"); None on logs written before it."""
    metadata: dict[str, JsonValue] | None = None
    """JSON values the requester attached to the move; None when it attached none."""


class TransitionRejected(EventBase):
    """A requested transition was refused; `reasons` has one sentence per failed check."""

    kind: Literal["TransitionRejected"] = "TransitionRejected"
    entity: EntityId
    from_state: str
    to_state: str
    trigger: str = ""
    reasons: list[str] = Field(default_factory=list)
    triggered_by: str | None = None
    """Who asked for the move; None on logs written before it."""
    metadata: dict[str, JsonValue] | None = None
    """JSON values the requester attached to the move; None when it attached none."""


class MetricsObserved(EventBase):
    """Metrics of an entity or a layer at an evaluation checkpoint (not every step)."""

    kind: Literal["MetricsObserved"] = "MetricsObserved"
    layer: int | None = Field(None, ge=0)
    metrics: Metrics = Field(default_factory=dict)


class DecisionMade(EventBase):
    """A controller decided a lifecycle action, to be applied at `apply_at_step` on every rank."""

    kind: Literal["DecisionMade"] = "DecisionMade"
    action: Action
    layer: int | None = Field(None, ge=0)
    parent: str | None = None
    children: list[str] = Field(default_factory=list)
    reason: str = ""
    metrics_at_decision: dict[str, JsonValue] = Field(default_factory=dict)
    config_snapshot: dict[str, JsonValue] = Field(default_factory=dict)
    apply_at_step: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    """Seeds the CPU generator of any noise or random init the action draws."""


class StepSealed(EventBase):
    """The leader finished writing the lifecycle events of `step`; followers may apply them."""

    kind: Literal["StepSealed"] = "StepSealed"


Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
"""A 64-bit digest of a rank's parameters, optimizer state and applied event ids, as hex."""


class ActionsVerified(EventBase):
    """Every rank reported the same digest after applying the step's actions."""

    kind: Literal["ActionsVerified"] = "ActionsVerified"
    digest: Digest
    world_size: int = Field(1, ge=1)


class DivergenceDetected(EventBase):
    """Ranks reported different digests after a step's batch; `repaired` if the leader's state was
    broadcast to every rank (the `ActionsVerified` that follows proves the repair)."""

    kind: Literal["DivergenceDetected"] = "DivergenceDetected"
    digests: dict[Annotated[str, Field(pattern=r"^[0-9]+$")], Digest]
    """Each rank's digest (16 hex digits), by rank number as a string."""
    ranks: list[int]
    """The ranks whose digest differs from the leader's."""
    repaired: bool = False


class CheckpointSaved(EventBase):
    """A checkpoint (model, optimizer, projections) was written, covering the log up to `upto_seq`."""

    kind: Literal["CheckpointSaved"] = "CheckpointSaved"
    checkpoint_id: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    upto_seq: int = Field(ge=0)


class CheckpointRestored(EventBase):
    """A process resumed from a checkpoint and will replay the log after `upto_seq`."""

    kind: Literal["CheckpointRestored"] = "CheckpointRestored"
    checkpoint_id: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    upto_seq: int = Field(ge=0)


CheckpointAction = Literal["save", "archive", "delete", "restore", "corrupt"]
"""What a checkpoint manager did to one checkpoint file (or found: `corrupt`)."""

CheckpointPriority = Literal["low", "normal", "high", "critical"]
"""How hard retention keeps a checkpoint: low ones are deleted, normal and high ones archived,
critical ones always kept."""


class CheckpointRecorded(EventBase):
    """A checkpoint manager saved, archived, deleted or restored a checkpoint, or found it corrupt.

    `path` is where the file is after the action (for `delete` and `corrupt`, where it was);
    `reason` says why it was archived, deleted or refused.
    """

    kind: Literal["CheckpointRecorded"] = "CheckpointRecorded"
    action: CheckpointAction
    checkpoint_id: str = Field(min_length=1, max_length=256)
    layer: int = Field(ge=0)
    seed: int = Field(ge=0)
    priority: CheckpointPriority = "normal"
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str = ""


class RewardRecorded(EventBase):
    """The reward a seed controller's decision earned (seeds/000's `get_reward`); `causation` is
    the rewarded `DecisionMade`, `components` the terms that add up to `reward`."""

    kind: Literal["RewardRecorded"] = "RewardRecorded"
    entity: EntityId
    reward: FiniteFloat
    components: Metrics = Field(default_factory=dict)


Event = Annotated[
    RunStarted
    | RunStateChanged
    | EntityRegistered
    | GateChecked
    | GatesChecked
    | TransitionApplied
    | TransitionRejected
    | MetricsObserved
    | DecisionMade
    | StepSealed
    | ActionsVerified
    | DivergenceDetected
    | CheckpointSaved
    | CheckpointRestored
    | CheckpointRecorded
    | RewardRecorded,
    Field(discriminator="kind"),
]
"""Any lifecycle event; validate with `codec.from_record`."""

EVENT_TYPES: tuple[type[EventBase], ...] = (
    RunStarted,
    RunStateChanged,
    EntityRegistered,
    GateChecked,
    GatesChecked,
    TransitionApplied,
    TransitionRejected,
    MetricsObserved,
    DecisionMade,
    StepSealed,
    ActionsVerified,
    DivergenceDetected,
    CheckpointSaved,
    CheckpointRestored,
    CheckpointRecorded,
    RewardRecorded,
)
