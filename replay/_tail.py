"""Tailing a run: where to start, which records to show, where to stop, and how to print them."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from bus import Log, Record
from lifecycle_es.codec import CODEC
from lifecycle_es.errors import ConfigError
from lifecycle_es.events import gate_results
from lifecycle_es.specs import RUN_SPEC
from replay._replay import Until

__all__ = [
    "Filter",
    "Printer",
    "Stop",
    "ends_run",
    "entity_seen",
    "parse_kinds",
    "records_from",
    "start_after",
    "take",
    "unknown_kinds",
]

_MAX_NUMBER = 2**63 - 1
"""The largest seq or step a record can hold (a 64-bit int)."""


def start_after(log: Log, start: str) -> int:
    """Return the seq after which a tail starting at `start` begins.

    `start` is `beginning`, `end`, `seq:N` (N is shown first), `last:N` (the log's last N
    records, before any filter: kcat's `-o -N`), `step:N` or `time:ISO8601` (the first record
    at or after that step or time is shown first).
    """
    if start == "beginning":
        return 0
    if start == "end":
        return log.last_seq()
    kind, _, value = start.partition(":")
    if kind == "seq":
        return max(_int(value, start) - 1, 0)
    if kind == "last":
        return max(log.last_seq() - _int(value, start), 0)
    if kind == "step":
        step = _int(value, start)
        return _first_after(log, lambda r: r["step"] >= step)
    if kind == "time":
        until = Until.parse_time(value)
        assert until.time is not None
        moment = until.time
        return _first_after(log, lambda r: r["ts"] >= moment)
    raise ConfigError(f"--from must be beginning, end, seq:N, last:N, step:N or time:ISO8601, not {start!r}")


def _int(text: str, whole: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--from {whole!r}: {text!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"--from {whole!r}: the number must be >= 0")
    if value > _MAX_NUMBER:  # no log holds such a seq or step, and Redis refuses it as a stream id
        raise ConfigError(f"--from {whole!r}: the number must be at most 2**63 - 1")
    return value


def _first_after(log: Log, hit: Any) -> int:
    for batch in log.pages():
        for record in batch:
            if hit(record):
                return int(record["seq"]) - 1
    return log.last_seq()


@dataclass(frozen=True, kw_only=True, slots=True)
class Filter:
    """Which records a tail shows; an unset criterion admits everything."""

    kinds: frozenset[str] = frozenset()
    entity: str | None = None
    """A glob (fnmatch) matched against the record's entity."""
    layer: int | None = None
    rank: int | None = None

    def admits(self, record: Record) -> bool:
        """Tell whether `record` passes every criterion."""
        if self.kinds and record.get("kind") not in self.kinds:
            return False
        if self.entity is not None:
            entity = record.get("entity")
            if entity is None or not fnmatch.fnmatchcase(entity, self.entity):
                return False
        if self.layer is not None and record.get("layer") != self.layer:
            return False
        return self.rank is None or record.get("rank") == self.rank


def records_from(log: Log, after: int, *, follow: bool) -> Iterator[dict[str, Any]]:
    """Yield records after `after` to the current end, then live ones if `follow`."""
    if follow:
        yield from log.follow(after)
        return
    for batch in log.pages(after):
        yield from batch


_COLOURS = {
    "TransitionApplied": "32",
    "TransitionRejected": "31",
    "DecisionMade": "35",
    "GateChecked": "36",
    "GatesChecked": "36",
    "StepSealed": "2",
    "ActionsVerified": "2",
    "RunStarted": "1",
    "DivergenceDetected": "31;1",
    "RunStateChanged": "1",
    "MetricsObserved": "34",
    "EntityRegistered": "33",
}
_ENVELOPE = frozenset(
    {"seq", "kind", "step", "ts", "rank", "entity", "event_id", "run_id", "schema", "causation"}
)


class Printer:
    """Writes records as `pretty` lines (colour only on a terminal) or compact JSON lines."""

    def __init__(self, out: TextIO, *, fmt: str, colour: bool) -> None:
        if fmt not in ("pretty", "json"):
            raise ConfigError(f"--format must be pretty or json, not {fmt!r}")
        self.out, self.fmt, self.colour = out, fmt, colour

    def write(self, record: Record) -> None:
        """Write one record and flush, so a pipe reader (jq) sees it at once."""
        line = json.dumps(record, separators=(",", ":")) if self.fmt == "json" else self._pretty(record)
        self.out.write(line + "\n")
        self.out.flush()

    def _pretty(self, record: Record) -> str:
        kind = str(record.get("kind", "?"))
        label = f"\x1b[{_COLOURS.get(kind, '0')}m{kind:<18}\x1b[0m" if self.colour else f"{kind:<18}"
        entity = record.get("entity") or "-"
        details = _gates(record) if kind == "GatesChecked" else _fields(record)
        seq, step = record.get("seq", "?"), record.get("step", "?")
        return f"{seq:>7} step {step:>6}  {label} {entity:<14} {details}"


def _fields(record: Record) -> str:
    return " ".join(
        f"{k}={_short(v)}" for k, v in record.items() if k not in _ENVELOPE and v not in (None, "", [], {})
    )


def _gates(record: Record) -> str:
    """`from->to` (`->to` for an entity not yet registered), then each gate as `+name` (passed)
    or `-name (reason)` (failed)."""
    marks = [
        f"+{o.gate}" if o.passed else f"-{o.gate} ({o.reason})" if o.reason else f"-{o.gate}"
        for o in gate_results(record)
    ]
    return f"{record.get('from_state')}->{record.get('to_state')} " + " ".join(marks)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def parse_kinds(text: str | None) -> frozenset[str]:
    """Split a comma-separated `--kind` list."""
    return frozenset(k.strip() for k in (text or "").split(",") if k.strip())


def unknown_kinds(kinds: Iterable[str]) -> list[str]:
    """The names in `kinds` that are no event kind the codec knows, sorted (typos such as
    `DecisonMade`)."""
    return sorted(set(kinds) - CODEC.kinds)


def entity_seen(log: Log, glob: str) -> bool:
    """Tell whether any record on the log so far has an entity matching `glob`.

    Reads from the beginning and stops at the first match, so a glob that matches reads only
    as far as that entity's first record (usually its registration, early in a run).
    """
    for batch in log.pages():
        for record in batch:
            entity = record.get("entity")
            if entity is not None and fnmatch.fnmatchcase(entity, glob):
                return True
    return False


def ends_run(record: Record) -> bool:
    """Tell whether `record` is a run's recorded end, after which a tail stops by itself.

    The one hook for "the run is over": today a `RunStateChanged` into a terminal state of the
    `run` spec (`terminated`), which a training loop records with `Lifecycle.set_run_state`.
    An event added later to mark a run's end (the preemption work's) is named here, and every
    `tail --follow` then stops at it.
    """
    return record.get("kind") == "RunStateChanged" and record.get("to_state") in _TERMINAL_RUN_STATES


_TERMINAL_RUN_STATES = frozenset(s.name for s in RUN_SPEC.states if s.terminal)


@dataclass(frozen=True, kw_only=True, slots=True)
class Stop:
    """Where a tail stops by itself, besides a count: the run's recorded end (`ends_run`), the
    first record of a kind in `kinds` (`--until-kind`), or the end of step `step` (`--until-step`).

    Every record read is weighed, whether the filters show it or not. A step is over once a
    `StepSealed` at or past it is read (shown, if the filters admit it) or a record of a later
    step is read (not shown): the seal ends the run's last step, which no later record follows.
    """

    kinds: frozenset[str] = frozenset()
    step: int | None = None

    def before(self, record: Record) -> bool:
        """Tell whether the tail ends before `record`, leaving it out."""
        return self.step is not None and int(record.get("step", 0)) > self.step

    def after(self, record: Record) -> bool:
        """Tell whether the tail ends after `record`, once it is shown if the filters admit it."""
        kind = record.get("kind")
        if kind in self.kinds or ends_run(record):
            return True
        return self.step is not None and kind == "StepSealed" and int(record.get("step", 0)) >= self.step


def take(
    records: Iterable[dict[str, Any]], flt: Filter, count: int | None, stop: Stop | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the records the filter admits, at most `count` of them, until `stop` says the end."""
    if count == 0:
        return
    stop = stop or Stop()
    shown = 0
    for record in records:
        if stop.before(record):
            return
        if flt.admits(record):
            yield record
            shown += 1
            if shown == count:
                return  # before asking for another: a follow would wait for one that may never come
        if stop.after(record):
            return
