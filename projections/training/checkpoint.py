"""Training checkpoints: model, optimizer, projection snapshots and the log seq they cover.

One file per checkpoint, written by `torch.save` with only tensors and plain data in it, and
read back with `torch.load(weights_only=True)` after its SHA-256 is checked against the one
the log recorded (`CheckpointSaved.sha256`), so a truncated or swapped file is refused before
anything is loaded. The file appears atomically (written aside, fsynced, renamed).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifecycle_es.errors import ConfigError, InconsistentEventError
from projections._projection import Snapshot

__all__ = ["FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(aside, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, target)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | os.PathLike[str], *, sha256: str | None = None) -> Checkpoint:
    """Read a checkpoint, refusing it if its bytes do not hash to `sha256` (when given)."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read checkpoint {target}: {e.strerror or e}") from e
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InconsistentEventError(
            f"checkpoint {target} does not match the SHA-256 the log "
            f"recorded ({sha256[:12]}...); it was changed or truncated"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        # On foreign bytes the weights-only loader raises almost any type (UnpicklingError,
        # RuntimeError, UnicodeDecodeError, IndexError, EOFError, ...): each means no checkpoint.
        raise ConfigError(
            f"{target} is not a lifecycle-es checkpoint: the loader failed ({type(e).__name__})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{target} is not a lifecycle-es checkpoint of format {FORMAT}")
    return Checkpoint(
        step=int(payload["step"]),
        seq=int(payload["seq"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        snapshots={
            kind: Snapshot(kind=kind, seq=int(s["seq"]), state=s["state"])
            for kind, s in payload["snapshots"].items()
        },
        extra=payload["extra"],
    )
