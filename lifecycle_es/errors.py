"""The domain's exceptions: one hierarchy rooted at `LifecycleError`.

Transport errors live in `bus.errors` (rooted at `BusError`) because `bus` imports nothing of
ours; `lifecycle_es` re-exports them so users import every error from one place.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointUnreadableError",
    "CheckpointWriteError",
    "ConfigError",
    "DivergenceError",
    "DuplicateEntityError",
    "ForeignCheckpointError",
    "InconsistentEventError",
    "InvalidMetricError",
    "InvalidTransitionError",
    "LifecycleError",
    "MissingExtraError",
    "SchemaError",
    "SequenceGapError",
    "SlotEmbargoedError",
    "SpecError",
    "SyncTimeoutError",
    "UnknownEntityError",
    "UnknownStateError",
    "UsageError",
]


class LifecycleError(Exception):
    """Base class of every domain error raised by lifecycle_es."""


class SpecError(LifecycleError, ValueError):
    """Raised when a lifecycle spec is malformed: unknown names, duplicate edges, unreachable states."""


class ConfigError(LifecycleError, ValueError):
    """Raised when a configuration value is out of range or of the wrong type: a constructor
    argument, a config dataclass field, a CLI option, a hook registration. Checked when the
    thing is configured, not while it runs."""


class UsageError(LifecycleError, ValueError):
    """Raised when the API is used wrongly at run time: a method argument out of range or of
    the wrong kind (a step before the run's latest, a layer that is not managed, a snapshot of
    another projection), a call the object's state does not allow now (a second open batch, a
    runner already following), or parts handed over at construction that no longer fit each
    other (an optimizer that lost the model's parameters)."""


class MissingExtraError(LifecycleError, ImportError):
    """Raised when a feature needs an optional dependency that is not installed; the message
    names the `pip install 'lifecycle-es[EXTRA]'` that adds it (the HTML report's matplotlib)."""


class SchemaError(LifecycleError, ValueError):
    """Raised when a record cannot be decoded: unknown kind, newer schema, or invalid fields."""


class UnknownEntityError(LifecycleError, KeyError):
    """Raised when a command names an entity the registry does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateEntityError(LifecycleError, ValueError):
    """Raised when an entity id, or an occupied slot, is registered a second time."""


class SlotEmbargoedError(LifecycleError, ValueError):
    """Raised when an entity is registered into a slot whose embargo (cooldown after a failure)
    has not ended: nothing grows into an embargoed slot, whatever the entity."""


class UnknownStateError(LifecycleError, ValueError):
    """Raised when a state or trigger name is not part of the entity's spec."""


class InvalidMetricError(LifecycleError, ValueError):
    """Raised when a metric is not a finite real number (NaN, infinity, or a wrong type)."""


class SequenceGapError(LifecycleError, ValueError):
    """Raised when an event is folded whose seq is not exactly one past the last folded seq."""


class InconsistentEventError(LifecycleError, ValueError):
    """Raised when the fold meets an event that contradicts the registry (a corrupt or foreign log)."""


class InvalidTransitionError(LifecycleError):
    """Raised after a refused transition has been recorded as `TransitionRejected`.

    `reasons` holds one sentence per failed check (the edge itself, or each failed gate).
    """

    def __init__(self, message: str, *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class DivergenceError(LifecycleError):
    """Raised when ranks disagree on the digest of parameters, optimizer state and applied events."""

    def __init__(self, message: str, *, step: int, ranks: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.step = step
        self.ranks = ranks


class SyncTimeoutError(LifecycleError, TimeoutError):
    """Raised on a rank that waited longer than its timeout for the leader to seal a step."""

    def __init__(self, message: str, *, rank: int, step: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.step = step


class CheckpointError(LifecycleError):
    """Base class of the errors raised when a training checkpoint cannot be read or used."""


class CheckpointUnreadableError(CheckpointError, ValueError):
    """Raised when a checkpoint file is missing or unreadable, or its bytes are not a lifecycle-es
    checkpoint of the current format (corrupt, another program's file, another layout)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """Raised when a checkpoint's bytes do not hash to the SHA-256 its `CheckpointSaved` recorded:
    the file was changed, truncated or swapped after it was written."""


class CheckpointWriteError(CheckpointError, OSError):
    """Raised when a checkpoint's files cannot be written (disk full, no permission, a file
    where a directory belongs); nothing half-written is left in their place."""


class ForeignCheckpointError(CheckpointError, ValueError):
    """Raised when a checkpoint does not fit the rank resuming from it: it holds no snapshot of one
    of the rank's projections (it was written by a run built from other parts)."""
