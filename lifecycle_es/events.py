"""The event model: every lifecycle fact as a frozen pydantic model in one discriminated union.

As a log record an event is one flat mapping, envelope and payload side by side; `kind` is the
stable stored name (equal to the class name), never a Python class path. The envelope
(`EventBase`) is `_event_base`; the gate records (`GateChecked`, `GatesChecked`) are
`_gate_events`; both are re-exported here, with every other kind and the union.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, JsonValue

from lifecycle_es._event_base import RUN_ID_PATTERN, EntityId, EventBase, FiniteFloat, Metrics
from lifecycle_es._gate_events import (
    GateCategory,
    GateChecked,
    GateMode,
    GateOutcome,
    GatesChecked,
    gate_results,
)

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
