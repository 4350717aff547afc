"""Tailing a run: where to start, which records to show, and how to print them."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from bus import Log, Record
from lifecycle_es.errors import ConfigError
from replay._replay import Until

__all__ = ["Filter", "Printer", "records_from", "start_after"]


def start_after(log: Log, start: str) -> int:
    """Return the seq after which a tail starting at `start` begins.

    `start` is `beginning`, `end`, `seq:N` (N is shown first), `step:N` or `time:ISO8601`
    (the first record at or after that step or time is shown first).
    """
    if start == "beginning":
        return 0
    if start == "end":
        return log.last_seq()
    kind, _, value = start.partition(":")
    if kind == "seq":
        return max(_int(value, start) - 1, 0)
    if kind == "step":
        step = _int(value, start)
        return _first_after(log, lambda r: r["step"] >= step)
    if kind == "time":
        until = Until.parse_time(value)
        assert until.time is not None
        moment = until.time
        return _first_after(log, lambda r: r["ts"] >= moment)
    raise ConfigError(f"--from must be beginning, end, seq:N, step:N or time:ISO8601, not {start!r}")


def _int(text: str, whole: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--from {whole!r}: {text!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"--from {whole!r}: the number must be >= 0")
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
        details = " ".join(
            f"{k}={_short(v)}"
            for k, v in record.items()
            if k not in _ENVELOPE and v not in (None, "", [], {})
        )
        seq, step = record.get("seq", "?"), record.get("step", "?")
        return f"{seq:>7} step {step:>6}  {label} {entity:<14} {details}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def parse_kinds(text: str | None) -> frozenset[str]:
    """Split a comma-separated `--kind` list."""
    return frozenset(k.strip() for k in (text or "").split(",") if k.strip())


def take(records: Iterable[dict[str, Any]], flt: Filter, count: int | None) -> Iterator[dict[str, Any]]:
    """Yield the records the filter admits, at most `count` of them."""
    if count == 0:
        return
    shown = 0
    for record in records:
        if flt.admits(record):
            yield record
            shown += 1
            if shown == count:
                return  # before asking for another: a follow would wait for one that may never come
