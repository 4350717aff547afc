"""Resuming a run: what `RunStarted` records to resume it, the run's move back to running, and
the digest that tells a resumed run from an uninterrupted one.

A training command records `run_metadata(...)` in `RunStarted.metadata`; `recorded_metadata`
reads it back, so a `--resume RUN` needs nothing but the log to continue with the same
arguments. `resume_run` moves an interrupted or stopped run back to running (the `run` spec's
`resume` or `start` edge, which fires its `post_start` hook). `run_digest` hashes what an
uninterrupted run and a resumed one must share bit for bit: parameters, optimizer state and the
registry's entities, metric windows and decision history (not its seq, run state or checkpoint
records, which a resume adds to).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import JsonValue

from bus import Log
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.session import Lifecycle
from lifecycle_es.specs import RunState
from projections.moe.surgery import ModelSurgery

__all__ = ["check_resumable", "recorded_metadata", "resume_run", "run_digest", "run_metadata"]

_RESUMABLE = {RunState.INTERRUPTED.value, RunState.STOPPED.value}

_RUN_ONLY = ("run_id", "seq", "run_state", "last_checkpoint", "checkpoints", "verified_step")
"""Registry fields a resume changes without changing the training: left out of `run_digest`."""


def run_metadata(
    *,
    command: Sequence[str],
    arguments: Mapping[str, JsonValue],
    checkpoint_dir: str | os.PathLike[str],
    seed: int,
    **more: JsonValue,
) -> dict[str, JsonValue]:
    """What `RunStarted.metadata` holds to resume a run: its command line, arguments, checkpoint
    directory, seed and the versions of torch, Python and this package (`more` is added)."""
    return {
        "command": list(command),
        "arguments": dict(arguments),
        "checkpoint_dir": os.fspath(checkpoint_dir),
        "seed": seed,
        "versions": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "lifecycle-es": _package_version(),
        },
        **more,
    }


def _package_version() -> str:
    try:
        return importlib.metadata.version("lifecycle-es")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def recorded_metadata(log: Log) -> dict[str, Any]:
    """The metadata the run's `RunStarted` recorded; a `ConfigError` if it has none to resume from."""
    for batch in log.pages():
        for record in batch:
            if record["kind"] != "RunStarted":
                continue
            metadata = record.get("metadata") or {}
            if not metadata:
                raise ConfigError(
                    f"run {log.run_id!r} recorded no metadata to resume from (it was started "
                    "before runs recorded their arguments); start it again under a new --run"
                )
            return dict(metadata)
    raise ConfigError(f"run {log.run_id!r} has no RunStarted on its log: there is nothing to resume")


def check_resumable(lc: Lifecycle) -> None:
    """Refuse (`UsageError`) to resume a run that has ended; call it before restoring anything."""
    lc.catch_up()
    if lc.registry.run_state == RunState.TERMINATED:
        raise UsageError(f"run {lc.run_id!r} has ended (terminated); a finished run cannot resume")


def resume_run(lc: Lifecycle, *, step: int, source: str) -> None:
    """Move the run back to running for a resume from `source` (a checkpoint id) at `step`.

    An interrupted or stopped run moves to running (its `post_start` hook fires); a running one
    (a process killed without a stop) stays; a terminated one cannot resume (`UsageError`).
    """
    check_resumable(lc)
    if lc.registry.run_state in _RESUMABLE:
        # Recorded at the log's latest step when an older checkpoint (a corrupt newer one passed
        # over) puts `step` behind it: the log's steps never go back.
        latest = max(step, lc.registry.step)
        lc.set_run_state(RunState.RUNNING, reason=f"resumed from {source}", step=latest)


def run_digest(surgery: ModelSurgery, registry: Registry) -> str:
    """16 hex digits over parameters, optimizer state and the registry's training state: equal
    for a resumed run and the uninterrupted run of the same seed on the same machine."""
    h = hashlib.blake2b(digest_size=8)
    h.update(surgery.digest(event_ids=False).encode())
    state = {k: _unordered(v) for k, v in registry.to_state().items() if k not in _RUN_ONLY}
    state["entities"] = [_compared(entity) for entity in state["entities"]]
    h.update(json.dumps(state, sort_keys=True, default=repr).encode())
    return h.hexdigest()


_UNCOMPARED = frozenset(f.name for f in dataclasses.fields(EntityState) if not f.compare)
"""Entity fields registry equality ignores (wall-clock stamps): a resumed run writes its events
at other moments than the uninterrupted one."""


def _compared(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity's plain form without the fields equality ignores."""
    return {name: value for name, value in entity.items() if name not in _UNCOMPARED}


def _unordered(value: Any) -> Any:
    """A top-level list of the registry's state in a canonical order: some (the last decision
    per target) are dicts' items, inserted in an order that follows Python's string hashing."""
    if not isinstance(value, list):
        return value
    return sorted(value, key=lambda item: json.dumps(item, sort_keys=True, default=repr))
