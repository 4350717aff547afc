"""The envelope every event carries (`EventBase`) and the field types event payloads share.

The envelope is what the log, the fold and the bus rely on for any kind: id, run, seq, step,
entity and causation. `EventBase.trusted` builds an event without validation for the hot path
of a transition; everything from outside input is validated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from lifecycle_es._ids import new_event_id

__all__ = ["RUN_ID_PATTERN", "UUID_PATTERN", "EntityId", "EventBase", "FiniteFloat", "Metrics"]

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A run id: it names streams and files, so it is kept to a safe alphabet."""
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""An event id (and a causation, which names one): lower-case UUID text."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A metric value: NaN and infinities are refused at validation."""

Metrics = dict[str, FiniteFloat]
"""Named metric values, as observations and gate evidence carry them."""
EntityId = Annotated[str, Field(min_length=1, max_length=256)]
"""The id of a registered entity."""

# Bound once: `EventBase.trusted` is on the transition's hot path (DESIGN.md section 9).
_new, _set, _now = object.__new__, object.__setattr__, time.time


class EventBase(BaseModel):
    """The envelope every event carries; subclasses add their payload and a `kind` literal."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    SCHEMA: ClassVar[int] = 1
    """The schema version this code writes for the kind; older records are upcast on read."""

    event_id: str = Field(default_factory=new_event_id, pattern=UUID_PATTERN)
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
    causation: str | None = Field(None, pattern=UUID_PATTERN)
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
        # every validated construction, a tenth of an event's validation. A hook the kind
        # defines or inherits still runs, after the version is written.
        super().__init_subclass__(**kwargs)
        if cls.SCHEMA != 1:
            cls.model_post_init = _with_schema(cls.model_post_init)  # type: ignore[method-assign]

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


PostInit = Callable[[Any, Any], None]


def _write_schema(self: EventBase, context: Any, /) -> None:
    """`model_post_init` of a kind at a newer SCHEMA: an event built without a version gets it."""
    if "schema_version" not in self.model_fields_set:
        self.__dict__["schema_version"] = self.SCHEMA


_SCHEMA_HOOKS: set[PostInit] = {_write_schema}
"""The post-init hooks that write a kind's SCHEMA (so a subclass does not wrap them again)."""


def _with_schema(hook: PostInit) -> PostInit:
    """`hook` (a kind's `model_post_init`) preceded by `_write_schema`, or `_write_schema` alone
    for pydantic's default hook, which does nothing."""
    if hook in _SCHEMA_HOOKS:
        return hook
    if hook is BaseModel.model_post_init:
        return _write_schema

    def model_post_init(self: EventBase, context: Any, /) -> None:
        _write_schema(self, context)
        hook(self, context)

    _SCHEMA_HOOKS.add(model_post_init)
    return model_post_init
