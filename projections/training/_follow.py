"""Following the leader's log to a boundary's seal, and checking the sealed batch's decisions.

Every rank of `LifecycleSync` reads the log from its projections' seq up to and including
`StepSealed(step)`, within the sync's timeout, and refuses a batch whose decisions would apply
at another boundary than the next step's (DESIGN.md section 7).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bus import FollowTimeoutError, Log
from lifecycle_es.errors import InconsistentEventError, SyncTimeoutError
from projections._projection import Record

__all__ = ["check_decisions", "follow_to_seal"]


def follow_to_seal(
    log: Log, after: int, step: int, *, timeout: float, rank: int, leader: int, run_id: str
) -> list[Record]:
    """Read `log` after seq `after` up to and including `StepSealed(step)`, waiting `timeout` s."""
    deadline = time.monotonic() + timeout
    records: list[Record] = []
    while True:
        left = deadline - time.monotonic()
        try:
            batch = next(log.follow_batches(after, timeout=max(left, 0.001)))
        except FollowTimeoutError as e:
            raise SyncTimeoutError(
                f"rank {rank} waited {timeout:g} s for the leader (rank {leader}) to seal step "
                f"{step} of run {run_id}; the log ends at seq {after}",
                rank=rank,
                step=step,
            ) from e
        sealed = _sealed_at(batch, step, rank)
        if sealed is not None:
            records.extend(batch[: sealed + 1])
            return records
        records.extend(batch)
        after = batch[-1]["seq"]


def _sealed_at(batch: Sequence[Record], step: int, rank: int) -> int | None:
    """Return the index of `StepSealed(step)` in `batch`, None if it is not there yet."""
    for i, record in enumerate(batch):
        if record["kind"] != "StepSealed":
            continue
        if record["step"] == step:
            return i
        if record["step"] > step:
            raise InconsistentEventError(
                f"rank {rank} expected StepSealed({step}) but the log sealed step "
                f"{record['step']} first (seq {record['seq']}): ranks reached different "
                "evaluation steps"
            )
    return None


def check_decisions(records: Sequence[Record], step: int) -> int:
    """Count the batch's decisions; each must apply at the boundary it was sealed for."""
    count = 0
    for record in records:
        if record["kind"] != "DecisionMade":
            continue
        if record["apply_at_step"] != step + 1:
            raise InconsistentEventError(
                f"decision {record['event_id']} (seq {record['seq']}) is sealed at step {step} "
                f"but asks to apply at step {record['apply_at_step']}; decisions apply at the "
                f"boundary before the step after their seal ({step + 1})"
            )
        count += 1
    return count
