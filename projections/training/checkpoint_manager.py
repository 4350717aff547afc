"""`CheckpointManager`: per-(layer, seed) checkpoints with priorities, retention and recovery.

DESIGN.md section 7b, after seeds/001 section 3. Under a root directory, `active/` holds the
checkpoints in use and `archive/` the ones retention moved aside; each checkpoint is a file
pair `{id}.pt` + `{id}.json` (see `_checkpoint_format`). Both files appear atomically, the
sidecar last, so a listing never sees a half-written checkpoint; ids carry the save's
millisecond timestamp and a random suffix, so saves from any number of threads and processes
never collide. Given a `Lifecycle`, every save, archive, delete, restore and detected
corruption is a `CheckpointRecorded` event on the run's log; without one it is a plain library.

Listings read the sidecars afresh each time rather than caching them: other processes may
save into the same root, and a cache would hide their checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lifecycle_es.errors import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointWriteError,
    ConfigError,
    UsageError,
)
from lifecycle_es.events import CheckpointAction, CheckpointPriority, CheckpointRecorded
from lifecycle_es.session import Lifecycle
from projections.training._checkpoint_arguments import (
    check_filters,
    check_id,
    check_run_id,
    check_save,
    device,
    matches,
)
from projections.training._checkpoint_format import (
    MIGRATIONS,
    PRIORITIES,
    VERSION,
    CheckpointInfo,
    Migration,
    check_migrations,
    read_info,
    read_state,
)
from projections.training._files import write_atomic

__all__ = ["CheckpointInfo", "CheckpointManager", "LoadedCheckpoint", "Recovery", "RetentionConfig"]

_log = logging.getLogger("projections.training.checkpoint_manager")

Place = Literal["active", "archive", "all"]


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    """How many checkpoints the manager keeps, applied after every save."""

    per_seed: int = 5
    """Most checkpoints kept in `active/` per (run, layer, seed); critical ones count but are
    never moved, and the others are kept high first, then normal, then low, newest first."""
    per_run: int = 100
    """Most checkpoints kept in `active/` per run, chosen the same way."""
    archive: int = 1000
    """Most checkpoints kept in `archive/`; the oldest beyond it are deleted."""

    def __post_init__(self) -> None:
        for name in ("per_seed", "per_run", "archive"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RetentionConfig.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back: its metadata and its state, on the device asked for."""

    info: CheckpointInfo
    state_data: dict[str, Any]


@dataclass(frozen=True)
class Recovery:
    """What `load_latest` found: the newest intact checkpoint, and the newer ones it passed over."""

    checkpoint: LoadedCheckpoint
    skipped: tuple[tuple[str, str], ...] = field(default=())
    """(checkpoint id, why it was refused), newest first."""


class CheckpointManager:
    """Saves, lists, retains and restores checkpoints under one root directory.

    Thread-safe; several processes may share a root (each with its own manager): retention
    then tolerates a file another process already moved or deleted. The lock serialises the
    manager's own appends to `lifecycle`; other writers of that lifecycle must not append from
    other threads at the same time.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        retention: RetentionConfig | None = None,
        lifecycle: Lifecycle | None = None,
        run_id: str | None = None,
        migrations: Mapping[int, Migration] = MIGRATIONS,
        durable: bool = True,
    ) -> None:
        """Manage `root`; `lifecycle` (optional) receives the events, and names the run unless
        `run_id` does ("run" when neither does); `migrations` lift older versions on load.
        `durable=False` skips the fsync of each file: readers still never see a torn file, but
        a power loss may lose the newest checkpoints (the disk's flush is most of a save)."""
        if not isinstance(root, str | os.PathLike):
            raise ConfigError(f"CheckpointManager(root=...) takes a str or path, got {type(root).__name__}")
        if retention is not None and not isinstance(retention, RetentionConfig):
            raise ConfigError(f"retention must be a RetentionConfig, got {type(retention).__name__}")
        if lifecycle is not None and not isinstance(lifecycle, Lifecycle):
            raise ConfigError(f"lifecycle must be a Lifecycle or None, got {type(lifecycle).__name__}")
        if run_id is not None and lifecycle is not None and run_id != lifecycle.run_id:
            raise ConfigError(f"run_id {run_id!r} differs from the lifecycle's run {lifecycle.run_id!r}")
        self.run_id = check_run_id(run_id if run_id is not None else lifecycle.run_id if lifecycle else "run")
        self.root = Path(root)
        self.retention = retention or RetentionConfig()
        self.lifecycle = lifecycle
        self.migrations = check_migrations(migrations)
        if not isinstance(durable, bool):
            raise ConfigError(f"durable must be a bool, got {type(durable).__name__}")
        self.durable = durable
        # Retention and log appends: a Lifecycle has one writer, and two threads evicting at
        # once would each count the other's victims.
        self._lock = threading.Lock()

    # -- saving ----------------------------------------------------------------------------------

    def save(
        self,
        state_data: Mapping[str, Any],
        *,
        layer: int,
        seed: int,
        step: int,
        state: str = "",
        priority: CheckpointPriority = "normal",
        extra: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Write a checkpoint of `state_data` (tensors and plain data) for (`layer`, `seed`),
        then apply retention; returns its metadata."""
        check_save(state_data, layer, seed, step, state, priority, extra)
        created = time.time()
        checkpoint_id = f"layer{layer}_seed{seed}_{int(created * 1000):013d}_{secrets.token_hex(4)}"
        buffer = io.BytesIO()
        torch.save({"version": VERSION, "state_data": dict(state_data)}, buffer)
        data = buffer.getvalue()
        info = CheckpointInfo(
            id=checkpoint_id,
            run_id=self.run_id,
            layer=layer,
            seed=seed,
            state=state,
            step=step,
            priority=priority,
            version=VERSION,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            created_at=created,
            extra=dict(extra or {}),
            path=self.root / "active" / f"{checkpoint_id}.pt",
        )
        _write_pair(info, data, durable=self.durable)
        with self._lock:
            self._retain(info, _Cause(step=step, event_id=self._record("save", info)))
        return info

    # -- listing ---------------------------------------------------------------------------------

    def list_checkpoints(
        self,
        *,
        layer: int | None = None,
        seed: int | None = None,
        state: str | None = None,
        steps: tuple[int, int] | None = None,
        priority: CheckpointPriority | Iterable[CheckpointPriority] | None = None,
        place: Place = "active",
    ) -> list[CheckpointInfo]:
        """The checkpoints matching every filter given, newest first; `steps` is an inclusive
        (first, last) range, `place` "active", "archive" or "all"."""
        wanted = check_filters(layer, seed, state, steps, priority, place)
        infos, broken = self._scan(place)
        for checkpoint_id, why in broken:
            _log.warning("checkpoint %s is left out of the listing: %s", checkpoint_id, why)
        return [i for i in infos if matches(i, layer, seed, state, steps, wanted)]

    def _scan(self, place: Place) -> tuple[list[CheckpointInfo], list[tuple[str, str]]]:
        """Every readable sidecar's info, newest first, and (id, why) for each unreadable one."""
        infos, broken = [], []
        for where in ("active", "archive") if place == "all" else (place,):
            for sidecar in (self.root / where).glob("*.json"):
                try:
                    infos.append(read_info(sidecar, self.migrations)[1])
                except CheckpointError as e:
                    if not isinstance(e.__cause__, FileNotFoundError):  # else: moved since the glob
                        broken.append((sidecar.stem, str(e)))
        infos.sort(key=lambda i: (i.created_at, i.step, i.id), reverse=True)
        return infos, broken

    # -- loading ---------------------------------------------------------------------------------

    def load(self, checkpoint_id: str, *, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
        """Read a checkpoint (active or archived) onto `map_location`, verified and migrated.

        A file whose bytes do not match its SHA-256 raises `CheckpointMismatchError`, and is
        recorded as `corrupt` first.
        """
        target, checkpoint_id = device(map_location), check_id(checkpoint_id)
        for attempt in range(2):
            sidecar = self._locate(checkpoint_id)
            raw, listed = read_info(sidecar, self.migrations)
            try:
                info, state_data = read_state(raw, sidecar, self.migrations, target)
            except CheckpointError as e:
                if attempt == 0 and isinstance(e.__cause__, FileNotFoundError):
                    continue  # retention archived it between the two reads: look again, once
                with self._lock:
                    self._record("corrupt", listed, reason=str(e))
                raise
            with self._lock:
                self._record("restore", info)
            return LoadedCheckpoint(info, state_data)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def load_latest(
        self,
        *,
        layer: int | None = None,
        seed: int | None = None,
        state: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> Recovery | None:
        """Restore the newest intact checkpoint matching the filters, active or archived.

        Newer ones that fail to load are passed over (each recorded as `corrupt`) and named in
        `Recovery.skipped`, as is any metadata file too damaged to filter; None when nothing
        matches; `CheckpointMismatchError` when no match is intact.
        """
        target = device(map_location)
        check_filters(layer, seed, state, None, None, "all")
        infos, skipped = self._scan("all")
        matching = [i for i in infos if matches(i, layer, seed, state, None, None)]
        for info in matching:
            try:
                loaded = self.load(info.id, map_location=target)
            except CheckpointError as e:
                skipped.append((info.id, str(e)))
                continue
            if skipped:
                _log.warning("restored %s after passing over %d newer checkpoints", info.id, len(skipped))
            return Recovery(loaded, tuple(skipped))
        if not matching:
            return None
        raise CheckpointMismatchError(
            f"none of the {len(matching)} matching checkpoints is intact; the newest, "
            f"{skipped[0][0]}, failed with: {skipped[0][1]}"
        )

    def _locate(self, checkpoint_id: str) -> Path:
        for where in ("active", "archive"):
            sidecar = self.root / where / f"{checkpoint_id}.json"
            if sidecar.exists():
                return sidecar
        raise UsageError(f"no checkpoint {checkpoint_id!r} under {self.root}")

    # -- retention -------------------------------------------------------------------------------

    def _retain(self, saved: CheckpointInfo, cause: _Cause) -> None:
        """Bring `active/` and `archive/` within the limits after `saved` was written."""
        active = [i for i in self._scan("active")[0] if i.run_id == saved.run_id]
        group = [i for i in active if (i.layer, i.seed) == (saved.layer, saved.seed)]
        limit = self.retention.per_seed
        evicted = {
            i.id: f"over the {limit} kept for layer {i.layer}, seed {i.seed}" for i in _over(group, limit)
        }
        rest = [i for i in active if i.id not in evicted]
        evicted |= {
            i.id: f"over the {self.retention.per_run} kept for the run"
            for i in _over(rest, self.retention.per_run)
        }
        for info in active:
            if info.id in evicted:
                self._evict(info, evicted[info.id], cause)
        archived = self._scan("archive")[0]
        for info in archived[self.retention.archive :]:  # newest first: the tail is the oldest
            self._delete(info, f"over the {self.retention.archive} kept in the archive", cause)

    def _evict(self, info: CheckpointInfo, reason: str, cause: _Cause) -> None:
        if info.priority == "low":
            self._delete(info, reason, cause)
            return
        target = self.root / "archive" / info.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # The sidecar first: from then on no listing of active/ offers the checkpoint.
            os.replace(info.path.with_suffix(".json"), target.with_suffix(".json"))
        except FileNotFoundError:
            return  # another process archived or deleted it
        os.replace(info.path, target)
        self._record("archive", info, path=target, reason=reason, cause=cause)

    def _delete(self, info: CheckpointInfo, reason: str, cause: _Cause) -> None:
        try:
            info.path.with_suffix(".json").unlink()
        except FileNotFoundError:
            return  # another process deleted it
        info.path.unlink(missing_ok=True)
        self._record("delete", info, reason=reason, cause=cause)

    # -- events ----------------------------------------------------------------------------------

    def _record(
        self,
        action: CheckpointAction,
        info: CheckpointInfo,
        *,
        path: Path | None = None,
        reason: str = "",
        cause: _Cause | None = None,
    ) -> str | None:
        """Append the action to the run's log (callers hold the lock), and log it; returns the
        event's id (None without a lifecycle)."""
        _log.info("checkpoint %s: %s%s", info.id, action, f" ({reason})" if reason else "")
        if self.lifecycle is None:
            return None
        event = CheckpointRecorded(
            run_id=self.lifecycle.run_id,
            step=info.step if cause is None else cause.step,
            causation=None if cause is None else cause.event_id,
            rank=self.lifecycle.rank,
            action=action,
            checkpoint_id=info.id,
            layer=info.layer,
            seed=info.seed,
            priority=info.priority,
            path=str(path or info.path),
            sha256=info.sha256,
            reason=reason,
        )
        self.lifecycle.append([event])
        return event.event_id


def _write_pair(info: CheckpointInfo, data: bytes, *, durable: bool) -> None:
    """Write the `.pt`, then the sidecar that makes the pair visible; on failure remove both."""
    try:
        write_atomic(info.path, data, durable=durable)
        write_atomic(info.path.with_suffix(".json"), info.to_json(), durable=durable)
    except OSError as e:
        with contextlib.suppress(OSError):  # best effort: the error below is the one to report
            info.path.unlink(missing_ok=True)
        raise CheckpointWriteError(f"cannot write checkpoint {info.path}: {e.strerror or e}") from e


@dataclass(frozen=True, kw_only=True)
class _Cause:
    """The save that made retention archive or delete a checkpoint: the step it happened at,
    and its event (the causation of the archive or delete; None without a lifecycle)."""

    step: int
    event_id: str | None


_RANK = {p: n for n, p in enumerate(PRIORITIES)}


def _over(infos: Sequence[CheckpointInfo], limit: int) -> list[CheckpointInfo]:
    """The checkpoints beyond `limit`: critical ones stay, the rest are kept most important
    first, newest first within a priority (`infos` is newest first)."""
    critical = [i for i in infos if i.priority == "critical"]
    others = sorted((i for i in infos if i.priority != "critical"), key=lambda i: -_RANK[i.priority])
    return others[max(0, limit - len(critical)) :]
