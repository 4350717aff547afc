"""Checks of the checkpoint manager's arguments: a wrong one is a one-sentence `UsageError`
(or `ConfigError` at construction) before any file is touched."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from lifecycle_es._arguments import check_count, check_text, first_non_json, shown
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import RUN_ID_PATTERN
from projections.training._checkpoint_format import (
    CHECKPOINT_ID_PATTERN,
    PRIORITIES,
    CheckpointInfo,
    first_non_tensor_data,
)

__all__ = ["check_filters", "check_id", "check_run_id", "check_save", "device", "matches"]

_PLACES = ("active", "archive", "all")


def check_save(
    state_data: object,
    layer: object,
    seed: object,
    step: object,
    state: object,
    priority: object,
    extra: object,
) -> None:
    """Refuse, before anything is written, what a weights-only load or the sidecar could not hold."""
    if not isinstance(state_data, Mapping):
        raise UsageError(f"save(state_data=...) takes a mapping, got {type(state_data).__name__}")
    bad = first_non_tensor_data(dict(state_data), "state_data")
    if bad is not None:
        raise UsageError(f"save() takes tensors and plain data only, but {bad}")
    for name, value in (("layer", layer), ("seed", seed), ("step", step)):
        check_count(value, f"save({name}=...)")
    check_text(state, "save(state=...)")
    _check_priority(priority, "save(priority=...)")
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise UsageError(f"save(extra=...) takes a mapping of JSON values, got {type(extra).__name__}")
        bad = first_non_json(dict(extra), "extra")
        if bad is not None:
            raise UsageError(f"save(extra=...) takes JSON values only, but {bad}")


def check_filters(
    layer: object, seed: object, state: object, steps: object, priority: object, place: object
) -> frozenset[str] | None:
    """Check listing filters; returns the priorities asked for (None: any)."""
    for name, value in (("layer", layer), ("seed", seed)):
        if value is not None:
            check_count(value, f"{name}=...")
    if state is not None:
        check_text(state, "state=...")
    if steps is not None:
        if not isinstance(steps, tuple) or len(steps) != 2:
            raise UsageError(f"steps=... takes a (first, last) tuple, got {shown(repr(steps))}")
        first, last = (check_count(s, "each end of steps=...") for s in steps)
        if first > last:
            raise UsageError(f"steps=({first}, {last}) is empty: its first step is after its last")
    if place not in _PLACES:
        raise UsageError(f"place=... must be one of {list(_PLACES)}, got {shown(repr(place))}")
    if priority is None:
        return None
    wanted = [priority] if isinstance(priority, str) else priority
    if not isinstance(wanted, Iterable):
        raise UsageError(f"priority=... takes a priority or several, got {type(priority).__name__}")
    return frozenset(_check_priority(p, "priority=...") for p in wanted)


def _check_priority(value: object, what: str) -> str:
    if value not in PRIORITIES:
        raise UsageError(f"{what} must be one of {list(PRIORITIES)}, got {shown(repr(value))}")
    return str(value)


def check_id(value: object) -> str:
    """Return a checkpoint id that can only name a file inside the manager's directories."""
    text = check_text(value, "checkpoint id")
    if not re.fullmatch(CHECKPOINT_ID_PATTERN, text):
        raise UsageError(f"{shown(repr(text))} is not a checkpoint id (letters, digits, '_' and '-')")
    return text


def check_run_id(value: object) -> str:
    """Return a run id the log would accept, else raise `ConfigError`."""
    text = check_text(value, "run_id", ConfigError)
    if not re.fullmatch(RUN_ID_PATTERN, text):
        raise ConfigError(f"run_id {shown(repr(text))} is not a valid run id")
    return text


def device(map_location: Any) -> torch.device:
    """The device a checkpoint is restored onto; one that this machine lacks is refused here,
    not as a loader failure that would look like a corrupt file."""
    try:
        target = torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"map_location={shown(repr(map_location))} is not a device") from e
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"map_location={str(target)!r} names CUDA, which this machine does not have")
    return target


def matches(
    info: CheckpointInfo,
    layer: int | None,
    seed: int | None,
    state: str | None,
    steps: tuple[int, int] | None,
    priorities: frozenset[str] | None,
) -> bool:
    """Whether a checkpoint passes every filter given (None: any)."""
    return (
        (layer is None or info.layer == layer)
        and (seed is None or info.seed == seed)
        and (state is None or info.state == state)
        and (steps is None or steps[0] <= info.step <= steps[1])
        and (priorities is None or info.priority in priorities)
    )
