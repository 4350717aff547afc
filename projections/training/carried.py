"""The digests a boundary's first collective carries, and the structure digest a repair checks.

`LifecycleSync` digests each boundary's state and compares it at the next boundary, in the
all-reduce that boundary makes anyway: each rank writes (step + 1, digest) into its own two
slots of a 2 x world-size int64 vector, zeros elsewhere, so the SUM hands every rank every
rank's digest, and a mismatch names the ranks at once (DESIGN.md section 7).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from projections.training import distributed

__all__ = ["Pending", "read", "slots", "structure_digest"]

_log = logging.getLogger("projections.training.sync")


@dataclass(frozen=True, slots=True)
class Pending:
    """A boundary's digest on this rank, until a collective compares it with the others'."""

    step: int
    digest: str
    record: bool
    """Whether the leader records `ActionsVerified` for it (the boundary applied a decision)."""


def slots(pending: Pending | None, rank: int, world: int) -> torch.Tensor:
    """This rank's contribution to the sum: (step + 1, digest) in its slots, zeros elsewhere."""
    vector = torch.zeros(2 * world, dtype=torch.long)
    if pending is not None:
        vector[2 * rank] = pending.step + 1
        vector[2 * rank + 1] = distributed.signed(pending.digest)
    return vector


def read(summed: Sequence[int]) -> tuple[int, list[str]] | None:
    """The step and every rank's digest (by rank) in the summed slots, or None when there is
    nothing to compare: no rank had a digest, or the ranks' digests are of different steps (a
    rank restarted since, with none)."""
    steps = {value - 1 for value in summed[0::2]}
    if len(steps) != 1 or -1 in steps:
        if steps != {-1}:
            _log.warning("digests of steps %s on different ranks: not compared", sorted(steps))
        return None
    return steps.pop(), [distributed.unsigned(value) for value in summed[1::2]]


def structure_digest(named: Sequence[tuple[str, torch.Tensor]], optimizer: torch.optim.Optimizer) -> str:
    """Hash names, shapes, dtypes and optimizer-state keys: what a broadcast needs to agree."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in named:
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype};".encode())
        state = optimizer.state.get(tensor, {}) if isinstance(tensor, nn.Parameter) else {}
        for key in sorted(state):
            value = state[key]
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            h.update(f"{key}{shape};".encode())
    return h.hexdigest()
