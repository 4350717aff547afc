"""The record of checked gates: one `GateChecked` per gate, or one compact `GatesChecked` per attempt.

Both forms stay readable, and readers count gates through `gate_results` alone, which yields a
`GateOutcome` per gate whichever form a record holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, Field, JsonValue, TypeAdapter

from lifecycle_es._event_base import EntityId, EventBase, Metrics

__all__ = ["GateCategory", "GateChecked", "GateMode", "GateOutcome", "GatesChecked", "gate_results"]


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
