"""Training checkpoints: model, optimizer, projection snapshots and the log seq they cover.

One file per checkpoint, written by `torch.save` with only tensors and plain data in it, and
read back with `torch.load(weights_only=True)` after its SHA-256 is checked against the one
the log recorded (`CheckpointSaved.sha256`), so a truncated or swapped file is refused before
anything is loaded. The file appears atomically (written aside, fsynced, renamed).

`save_checkpoint` and `load_checkpoint` are the file format; `Checkpoints` is what a training
loop calls: the leader saves a checkpoint at a step boundary and records it on the log, and
every rank of a restarted run resumes from the one the log recorded last. A file that cannot
be used raises a `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifecycle_es.errors import (
    CheckpointMismatchError,
    CheckpointUnreadableError,
    ConfigError,
    ForeignCheckpointError,
    UsageError,
)
from lifecycle_es.events import CheckpointPriority, CheckpointRestored, CheckpointSaved
from lifecycle_es.session import Lifecycle
from projections._projection import Snapshot
from projections.runner import Runner
from projections.training import distributed
from projections.training._files import write_atomic
from projections.training.checkpoint_manager import CheckpointManager, RetentionConfig
from projections.training.distributed import Group
from projections.training.sync import Boundary

__all__ = ["FORMAT", "Checkpoint", "Checkpoints", "load_checkpoint", "save_checkpoint"]

_log = logging.getLogger("projections.training.checkpoint")

FORMAT = 1
"""The layout version written into every checkpoint."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A checkpoint's contents, as `load_checkpoint` returns them."""

    step: int
    """The training step after whose boundary the state was taken."""
    seq: int
    """The last log seq folded into the projections (the step's `StepSealed`)."""
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    snapshots: dict[str, Snapshot]
    """Projection snapshots by projection name."""
    extra: dict[str, Any]
    """The caller's own state (a data stream's generator state, a tracker's weights)."""


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    step: int,
    seq: int,
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    snapshots: Sequence[Snapshot],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically and return the SHA-256 of its bytes (hex)."""
    _check_save_arguments(path, step, seq, model, optimizer, snapshots, extra)
    payload = {
        "format": FORMAT,
        "step": step,
        "seq": seq,
        "model": dict(model),
        "optimizer": dict(optimizer),
        "snapshots": {s.kind: {"seq": s.seq, "state": s.state} for s in snapshots},
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    write_atomic(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | os.PathLike[str], *, sha256: str | None = None) -> Checkpoint:
    """Read a checkpoint, refusing it if its bytes do not hash to `sha256` (when given)."""
    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"load_checkpoint(path=...) takes a str or path, got {type(path).__name__}")
    if sha256 is not None and not isinstance(sha256, str):
        raise UsageError(f"load_checkpoint(sha256=...) takes hex text or None, got {type(sha256).__name__}")
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as e:
        raise CheckpointUnreadableError(f"cannot read checkpoint {target}: {e.strerror or e}") from e
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointMismatchError(
            f"checkpoint {target} does not match the SHA-256 the log "
            f"recorded ({sha256[:12]}...); it was changed or truncated"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        # On foreign bytes the weights-only loader raises almost any type (UnpicklingError,
        # RuntimeError, UnicodeDecodeError, IndexError, EOFError, ...): each means no checkpoint.
        raise CheckpointUnreadableError(
            f"{target} is not a lifecycle-es checkpoint: the loader failed ({type(e).__name__})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointUnreadableError(f"{target} is not a lifecycle-es checkpoint of format {FORMAT}")
    problem = _layout_problem(payload)
    if problem is not None:
        raise CheckpointUnreadableError(
            f"{target} is not a lifecycle-es checkpoint of format {FORMAT}: {problem}"
        )
    return Checkpoint(
        step=payload["step"],
        seq=payload["seq"],
        model=payload["model"],
        optimizer=payload["optimizer"],
        snapshots={
            kind: Snapshot(kind=kind, seq=s["seq"], state=s["state"])
            for kind, s in payload["snapshots"].items()
        },
        extra=payload["extra"],
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _layout_problem(payload: dict[str, Any]) -> str | None:
    """A phrase naming the first field of a loaded payload that is missing or of the wrong type.

    The SHA-256 only proves the bytes are the ones written; a file written by other code with
    our format number can still lack a field, and must not fail later with a KeyError.
    """
    for name in ("step", "seq"):
        if not _is_count(payload.get(name)):
            return f"its {name!r} is {payload.get(name)!r}, not an int >= 0"
    for name in ("model", "optimizer", "snapshots", "extra"):
        if not isinstance(payload.get(name), dict):
            return f"its {name!r} is of type {type(payload.get(name)).__name__}, not a dict"
    if any(not isinstance(v, torch.Tensor) for v in payload["model"].values()):
        return "its 'model' holds a value that is not a tensor"
    for kind, snapshot in payload["snapshots"].items():
        if not isinstance(kind, str) or not isinstance(snapshot, dict):
            return f"its snapshot {kind!r} is not a dict under a str name"
        if not _is_count(snapshot.get("seq")) or not isinstance(snapshot.get("state"), dict):
            return f"its snapshot {kind!r} lacks an int 'seq' >= 0 or a dict 'state'"
    return None


def _check_save_arguments(
    path: object,
    step: object,
    seq: object,
    model: object,
    optimizer: object,
    snapshots: object,
    extra: object,
) -> None:
    """Refuse, before anything is written, what `load_checkpoint` would refuse to read back."""
    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"save_checkpoint(path=...) takes a str or path, got {type(path).__name__}")
    for name, count in (("step", step), ("seq", seq)):
        if not _is_count(count):
            raise UsageError(f"save_checkpoint({name}=...) takes an int >= 0, got {count!r}")
    for name, mapping in (("model", model), ("optimizer", optimizer), ("extra", extra or {})):
        if not isinstance(mapping, Mapping):
            raise UsageError(f"save_checkpoint({name}=...) takes a mapping, got {type(mapping).__name__}")
    if not isinstance(snapshots, Sequence) or not all(isinstance(s, Snapshot) for s in snapshots):
        raise UsageError("save_checkpoint(snapshots=...) takes a sequence of Snapshot")


class Checkpoints:
    """A run's training checkpoints, as a loop takes and resumes them at step boundaries.

    Ranks are verified identical at a boundary, so one checkpoint holds every rank's state: the
    leader writes it through a `CheckpointManager` (keep the directory where every rank can
    read it; the manager records its saves, archives and restores on the log) and appends
    `CheckpointSaved`; after a restart every rank loads the newest intact one, passing over
    (and recording) a corrupt newer one.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        runner: Runner,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        leader: int = 0,
        group: Group = None,
        retention: RetentionConfig | None = None,
    ) -> None:
        """Checkpoint `model`, `optimizer` and the projections `runner` feeds, on the log of
        `lifecycle` (this rank's registry); `leader` is the rank that writes (the sync's
        leader), `group` the process group (None: the world, if any); `retention` is the
        manager's (default: the newest 5 active, older ones archived)."""
        world = distributed.world_size(group)
        if isinstance(leader, bool) or not isinstance(leader, int) or not 0 <= leader < world:
            raise ConfigError(f"leader rank {leader!r} is outside a world of {world}")
        self.lifecycle = lifecycle
        self.runner = runner
        self.model = model
        self.optimizer = optimizer
        self.leader = leader
        self.rank = distributed.rank(group)
        self.retention = retention
        self._managers: dict[Path, CheckpointManager] = {}

    @property
    def is_leader(self) -> bool:
        """Whether this rank writes the checkpoint files and records them."""
        return self.rank == self.leader

    def manager(self, directory: str | os.PathLike[str]) -> CheckpointManager:
        """The checkpoint manager of `directory` (the leader's records its actions on the log)."""
        root = Path(directory)
        if root not in self._managers:
            self._managers[root] = CheckpointManager(
                root,
                retention=self.retention,
                lifecycle=self.lifecycle if self.is_leader else None,
                run_id=self.lifecycle.run_id,
            )
        return self._managers[root]

    def save(
        self,
        directory: str | os.PathLike[str],
        boundary: Boundary,
        *,
        extra: Mapping[str, Any] | None = None,
        priority: CheckpointPriority = "normal",
        replayed_too: bool = False,
    ) -> Path | None:
        """Checkpoint the state at `boundary`, which `LifecycleSync.at_boundary` just returned.

        Call it on every rank; `extra` is the caller's own state (plain data and tensors,
        str-keyed). Returns the file's path on the leader, None on the others and on a boundary
        replayed from the log (its checkpoint, if any, was written by the run that first sealed
        it) unless `replayed_too` (a stop's checkpoint, which the resume needs, at any boundary).
        """
        _check_save_target(directory, boundary)
        if not self.is_leader or (boundary.replayed and not replayed_too):
            return None
        step, seq = boundary.step, self.runner.seq
        state_data = self._state_data(step, seq, extra)
        info = self.manager(directory).save(
            state_data, layer=0, seed=0, step=step, state=TRAINING_STATE, priority=priority
        )
        saved = CheckpointSaved(
            run_id=self.lifecycle.run_id,
            step=step,
            rank=self.rank,
            checkpoint_id=info.id,
            path=str(info.path),
            sha256=info.sha256,
            upto_seq=seq,
        )
        self.lifecycle.append([saved])
        _log.info("checkpoint %s covers the log to seq %d", info.path, seq)
        return info.path

    def _state_data(self, step: int, seq: int, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """What a checkpoint file holds: the model, the optimizer, each projection's snapshot, `extra`."""
        snapshots = [p.snapshot() for p in self.runner.projections]
        return {
            "format": FORMAT,
            "step": step,
            "seq": seq,
            "model": dict(self.model.state_dict()),
            "optimizer": _str_keys(self.optimizer.state_dict()),
            "snapshots": {s.kind: {"seq": s.seq, "state": s.state} for s in snapshots},
            "extra": dict(extra or {}),
        }

    def resume(self, directory: str | os.PathLike[str] | None = None) -> Checkpoint | None:
        """Load the newest intact checkpoint into the model, optimizer and projections.

        `directory` is where the checkpoints are (None: where the log recorded the last one).
        Returns the checkpoint (its `step`, and the caller's `extra` state), or None when there
        is none. The rank then replays the log from the checkpoint's seq as it reaches each
        sealed step, so it rejoins with the architecture and digest of the others.
        """
        self.lifecycle.catch_up()
        recorded = self.lifecycle.registry.last_checkpoint
        if directory is None and recorded is None:
            return None
        root = Path(directory) if directory is not None else _root_of(recorded)
        if root is None:  # a file of the format before the manager, as its log recorded it
            assert recorded is not None
            checkpoint = load_checkpoint(recorded["path"], sha256=recorded["sha256"])
            return self._restore(checkpoint, recorded["checkpoint_id"], recorded["path"], recorded["sha256"])
        recovery = self.manager(root).load_latest(layer=0, seed=0, state=TRAINING_STATE)
        if recovery is None:
            return None
        for checkpoint_id, why in recovery.skipped:
            _log.warning("passed over checkpoint %s: %s", checkpoint_id, why)
        info = recovery.checkpoint.info
        checkpoint = _from_state_data(recovery.checkpoint.state_data, info.path)
        return self._restore(checkpoint, info.id, str(info.path), info.sha256)

    def _restore(self, checkpoint: Checkpoint, checkpoint_id: str, path: str, sha256: str) -> Checkpoint:
        for projection in self.runner.projections:
            snapshot = checkpoint.snapshots.get(projection.name)
            if snapshot is None:
                raise ForeignCheckpointError(
                    f"checkpoint {path} holds no snapshot of projection {projection.name!r}"
                )
            try:
                projection.restore(snapshot)
            except UsageError as e:
                raise ForeignCheckpointError(
                    f"checkpoint {path} does not fit projection {projection.name!r}: {e}"
                ) from e
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.is_leader:
            restored = CheckpointRestored(
                run_id=self.lifecycle.run_id,
                step=checkpoint.step,
                rank=self.rank,
                upto_seq=checkpoint.seq,
                checkpoint_id=checkpoint_id,
                path=path,
                sha256=sha256,
            )
            self.lifecycle.append([restored])
        _log.info("resumed from %s at step %d (seq %d)", path, checkpoint.step, checkpoint.seq)
        return checkpoint


TRAINING_STATE = "training"
"""The `state` a training checkpoint is saved under in its manager (layer 0, seed 0: the run)."""


def _check_save_target(directory: object, boundary: object) -> None:
    """Refuse a boundary `at_boundary` did not return, and a directory that is not a path."""
    if not isinstance(boundary, Boundary):
        kind = type(boundary).__name__
        raise UsageError(f"Checkpoints.save(boundary=...) takes what at_boundary returned, got {kind}")
    if not isinstance(directory, str | os.PathLike):
        kind = type(directory).__name__
        raise UsageError(f"Checkpoints.save(directory=...) takes a str or path, got {kind}")


def _root_of(recorded: Mapping[str, Any] | None) -> Path | None:
    """The manager root of the checkpoint the log recorded, or None for a pre-manager file."""
    if recorded is None:
        return None
    path = Path(recorded["path"])
    return path.parent.parent if path.parent.name in ("active", "archive") else None


def _str_keys(optimizer_state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer's state dict with its int parameter keys as text, as the manager stores it."""
    return {**optimizer_state, "state": {str(k): v for k, v in optimizer_state["state"].items()}}


def _int_keys(optimizer_state: Mapping[str, Any]) -> dict[str, Any]:
    """Undo `_str_keys`: `Optimizer.load_state_dict` matches state to parameters by int id."""
    return {**optimizer_state, "state": {int(k): v for k, v in optimizer_state["state"].items()}}


def _from_state_data(state_data: dict[str, Any], path: Path) -> Checkpoint:
    """The checkpoint a manager's `state_data` holds, its layout checked first."""
    problem = "its format is not 1" if state_data.get("format") != FORMAT else _layout_problem(state_data)
    if problem is not None:
        raise CheckpointUnreadableError(f"{path} is not a training checkpoint of format {FORMAT}: {problem}")
    return Checkpoint(
        step=state_data["step"],
        seq=state_data["seq"],
        model=state_data["model"],
        optimizer=_int_keys(state_data["optimizer"]),
        snapshots={
            kind: Snapshot(kind=kind, seq=s["seq"], state=s["state"])
            for kind, s in state_data["snapshots"].items()
        },
        extra=state_data["extra"],
    )
