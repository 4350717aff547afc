"""`replay(log, until=...)`: rebuild a run's projections as of a seq, a step or a wall time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bus import Log
from lifecycle_es.errors import ConfigError
from lifecycle_es.spec import Spec
from lifecycle_es.specs import BUILTIN_SPECS
from projections import MetricsProjection, RegistryProjection
from projections._projection import Projection, Record
from projections.runner import Runner, gc_paused

if TYPE_CHECKING:
    import torch

    from projections.state_tensors import StateTensors

__all__ = ["Replay", "Until", "replay"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Until:
    """Where a replay stops: after a seq, after a step, or at a wall time (inclusive)."""

    seq: int | None = None
    step: int | None = None
    time: float | None = None
    """Seconds since the epoch; records with a later `ts` are not applied."""

    def __post_init__(self) -> None:
        given = [v for v in (self.seq, self.step, self.time) if v is not None]
        if len(given) > 1:
            raise ConfigError("name at most one of until seq, step and time")
        if (self.seq is not None and self.seq < 0) or (self.step is not None and self.step < 0):
            raise ConfigError("until seq and step must be >= 0")

    @classmethod
    def parse_time(cls, text: str) -> Until:
        """Build an `Until` from an ISO 8601 time; a naive time is read as UTC."""
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"not an ISO 8601 time: {text!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(time=when.timestamp())

    def admits(self, record: Record) -> bool:
        """Tell whether `record` lies within the replay."""
        if self.seq is not None:
            return bool(record["seq"] <= self.seq)
        if self.step is not None:
            return bool(record["step"] <= self.step)
        if self.time is not None:
            return bool(record["ts"] <= self.time)
        return True

    def beyond(self, record: Record) -> bool:
        """Tell whether the bound lies strictly after `record` (an unbounded one always does)."""
        if self.seq is not None:
            return bool(self.seq > record["seq"])
        if self.step is not None:
            return bool(self.step > record["step"])
        if self.time is not None:
            return bool(self.time > record["ts"])
        return True

    @property
    def open_ended(self) -> bool:
        """True when no bound was given: replay everything."""
        return self.seq is None and self.step is None and self.time is None


@dataclass(frozen=True, slots=True)
class Replay:
    """The projections of a run as of the replay's end, and where that end is."""

    registry: RegistryProjection
    metrics: MetricsProjection
    tensors: StateTensors | None
    seq: int
    """The last seq applied."""
    step: int
    """The registry's step after the last applied record."""
    last_seq: int
    """The log's last seq when the replay ran."""
    reached_end: bool
    """True when every record of the log was applied (an `until` past the end included)."""


def replay(
    log: Log,
    until: Until | None = None,
    *,
    specs: Mapping[str, Spec] = BUILTIN_SPECS,
    tensors: bool = True,
    device: torch.device | str = "cpu",
    extra: Iterable[Projection] = (),
) -> Replay:
    """Replay a run into the registry, metrics and (optionally) state-tensor projections."""
    until = until or Until()
    registry, metrics = RegistryProjection(specs), MetricsProjection()
    state = _state_tensors(specs, device) if tensors else None
    runner = Runner(log, [p for p in (registry, metrics, state, *extra) if p is not None])
    last_seq = log.last_seq()
    with gc_paused():
        for batch in log.pages():
            # A replay stops at the first record past the bound, even if a later one (a clock
            # step back, say) would be admitted again: "as of" a point means a prefix of the log.
            cut = len(batch) if until.open_ended else _first_miss(until, batch)
            if cut:
                runner.apply(batch[:cut])
            if cut < len(batch):
                break
    seq = registry.seq
    return Replay(
        registry=registry,
        metrics=metrics,
        tensors=state,
        seq=seq,
        step=registry.registry.step,
        last_seq=max(last_seq, seq),
        reached_end=seq >= max(last_seq, log.last_seq()),
    )


def _state_tensors(specs: Mapping[str, Spec], device: torch.device | str) -> StateTensors:
    from projections.state_tensors import StateTensors  # torch loads only when tensors are asked for

    return StateTensors(specs, device=device)


def _first_miss(until: Until, batch: list[dict[str, Any]]) -> int:
    return next((i for i, record in enumerate(batch) if not until.admits(record)), len(batch))
