"""The synchronized lifecycle across DDP ranks (DESIGN.md section 7), as pieces a loop calls.

The training step is the clock. At an evaluation step, after `optimizer.step()` and outside
any `no_sync()` window, every rank calls::

    sync.observe(step, local_counts)        # summed across ranks, in place
    sync.at_boundary(step, decide)          # the leader decides; every rank applies the same

`at_boundary` is one code path for every rank; the leader is a follower that also writes:

1. the leader runs `decide(lifecycle)` and appends what it recorded, then `StepSealed(step)`,
   as one atomic batch (a step whose seal the log already holds, as after a restart, is not
   decided again);
2. every rank follows the log to `StepSealed(step)` (a `SyncTimeoutError` naming the rank and
   the step if it does not come in time), folds it into its registry, clears gradients (set to
   None) if the batch holds decisions, and applies it to its projections, model surgery
   among them (which re-wraps DDP after a resize);
3. every rank computes the 64-bit digest of parameters, optimizer state and applied event ids
   (`projections.digest`, on the tensors' device) and keeps it for the next boundary.

One collective per boundary: the digests ride the next boundary's first all-reduce (the metric
sum of `observe`, or the stop-vote tally without one), each rank's in its own slot of a
2 x world-size int64 vector, so every rank reads every digest. There, before the leader decides:
equal: the leader appends `ActionsVerified` for that boundary, in the batch it seals, when the
boundary applied a decision; different: `DivergenceDetected` is recorded and `DivergenceError`
(naming the digested step) raised on every rank, or, with `repair=True`, the leader's
parameters, buffers and optimizer state are broadcast, the digests checked again and the repair
recorded. The last boundary's digest is compared by `verify` (the end of a run) or, at a stop
boundary, at once. `SyncConfig.verify_every` thins the digests out for very large models.

A stop (a preemption notice on any rank, `request_stop`) rides on the same boundary: each
rank's vote is summed with the metrics `observe` all-reduces (or, without an `observe` at that
step, in one small all-reduce of its own), so every rank reads the same sum at the same sealed
step and `Boundary.stop` is true on all of them or on none: every rank checkpoints at that
boundary and ends there (see `PreemptionGuard.stop`).

Without a process group nothing is communicated and nothing verified: the loop is the
single-process loop. On non-evaluation steps nothing here runs. Decisions sealed at step s
carry `apply_at_step = s + 1` (the boundary before step s+1's forward) and are applied there.

The sync takes its parts as the caller built them and wires nothing behind its back: the
caller gives `ModelSurgery` its `on_rewrap` (the DDP wrapper's `rewrap`) and has the runner
feed it. A boundary's checkpoint is saved, and a run resumed, by `checkpoint.Checkpoints`.
Following the log to a seal is `_follow`'s; comparing the digests and repairing, `_digest_check`'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import ActionsVerified
from lifecycle_es.session import Lifecycle
from projections._projection import Record
from projections.moe.surgery import ModelSurgery
from projections.runner import Runner
from projections.training import carried, distributed
from projections.training._digest_check import DigestCheck, Surgery
from projections.training._follow import check_decisions as _check_decisions  # tests import it from here
from projections.training._follow import follow_to_seal
from projections.training.carried import Pending
from projections.training.distributed import Group, Replicated

__all__ = ["Boundary", "LifecycleSync", "SyncConfig"]

_log = logging.getLogger("projections.training.sync")


Decide = Callable[[Lifecycle], None]
"""What the leader runs at an evaluation step: record metrics and decisions on the lifecycle."""


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """How ranks follow the leader."""

    leader: int = 0
    """The global rank that decides and writes the log."""
    timeout: float = 60.0
    """Seconds a rank waits for the leader's `StepSealed` before `SyncTimeoutError`."""
    repair: bool = False
    """On a digest mismatch, broadcast the leader's state instead of raising `DivergenceError`."""
    verify_every: int = 1
    """Digest (and compare) the state at boundaries whose step is a multiple of this, and at every
    boundary that applied a decision; 1: every boundary. For a model whose digest is costly:
    with an evaluation every I steps, K x I compares every K-th boundary without a decision."""

    def __post_init__(self) -> None:
        if isinstance(self.leader, bool) or not isinstance(self.leader, int) or self.leader < 0:
            raise ConfigError(f"leader must be a rank >= 0, got {self.leader!r}")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout < math.inf
        ):
            raise ConfigError(f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        every = self.verify_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"verify_every must be a number of steps >= 1, got {every!r}")


@dataclass(frozen=True, slots=True)
class Boundary:
    """What one `at_boundary` call did on this rank."""

    step: int
    records: list[Record]
    """The records followed up to and including `StepSealed(step)`."""
    decisions: int
    """`DecisionMade` records among them (applied now)."""
    digest: str | None
    """This rank's digest after applying, which the next boundary's collective (or `verify`)
    compares with every rank's; None without a process group or where `verify_every` skips."""
    repaired: bool = False
    replayed: bool = False
    """The log held this step's seal already (a resumed run catching up): nothing was decided."""
    stop_votes: int = 0
    """How many ranks asked to stop here (`request_stop`); every rank reads the same number."""

    @property
    def stop(self) -> bool:
        """Whether the run stops at this boundary: some rank asked to, and every rank knows."""
        return self.stop_votes > 0


class LifecycleSync:
    """One rank's side of the synchronized lifecycle: follow the leader's log, apply, verify."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        runner: Runner,
        surgery: ModelSurgery | Surgery,
        *,
        replicated: Replicated | None = None,
        config: SyncConfig | None = None,
        group: Group = None,
    ) -> None:
        """Join `lifecycle` (this rank's registry on the run's log) to the projections `runner`
        feeds, `surgery` among them; `group` is the process group (None: the world, if any).

        `replicated`, the DDP wrapper the loop trains through, lets `at_boundary` refuse to run
        inside a `no_sync()` window. The parts are used as given: build `surgery` with
        `on_rewrap=replicated.rewrap` so DDP is re-wrapped after a resize.
        """
        self.lifecycle = lifecycle
        self.runner = runner
        self.surgery = surgery
        self.replicated = replicated
        self.config = config or SyncConfig()
        self.group = group
        self.rank = distributed.rank(group)
        self.world_size = distributed.world_size(group)
        self.last_step: int | None = None
        """The step of the last boundary this sync applied (None before the first)."""
        self._stop_vote = False
        self._votes: tuple[int, int, list[int]] | None = None
        """(step, votes, carried) summed by `observe` for the boundary of that step."""
        self._pending: Pending | None = None
        """This rank's digest of the last boundary, for the next collective to compare."""
        if self.config.leader >= self.world_size:
            raise ConfigError(f"leader rank {self.config.leader} is outside a world of {self.world_size}")
        self._check = DigestCheck(
            lifecycle,
            surgery,
            leader=self.config.leader,
            repair=self.config.repair,
            group=group,
            # Looked up at each call, so what replaces this sync's `_append` sees these too.
            append=lambda events: self._append(events),
        )

    @property
    def is_leader(self) -> bool:
        """Whether this rank decides and writes."""
        return self.rank == self.config.leader

    @property
    def distributed(self) -> bool:
        """Whether a process group connects this rank to others (verification runs then)."""
        return distributed.active(self.group)

    # -- the protocol ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Vote to stop the run at the next boundary (this rank received a notice)."""
        self._stop_vote = True

    def observe(self, step: int, local: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Sum this interval's metric tensors (e.g. routed token counts) across ranks, in place.

        Every rank must pass the same names with the same shapes and dtypes; the leader then
        decides on the sums. Returns `local`, now global.
        """
        # The stop vote and the last boundary's digests join the metrics' all-reduce.
        votes, slots = self._carriers()
        distributed.sum_in_place([local[name] for name in sorted(local)] + [votes, slots], self.group)
        self._votes = (step, int(votes), slots.tolist())
        _log.debug("step %d: summed %d metric tensors over %d ranks", step, len(local), self.world_size)
        return local

    def at_boundary(self, step: int, decide: Decide | None = None) -> Boundary:
        """Run the lifecycle at the boundary after step `step`: decide (leader), follow, apply, verify.

        Boundaries go forward: a step at or before the last one this sync applied is refused at
        once (its seal is behind this rank already, so waiting for it could only time out).
        """
        self._refuse_out_of_place(step)
        votes, values = self._stop_votes(step)
        verified, repaired = self._compare_carried(values)
        replayed = self._seal(step, decide, verified) if self.is_leader else False
        records = self._follow_to_seal(step)
        self.lifecycle.fold(records)
        decisions = _check_decisions(records, step)
        if decisions:
            self.surgery.optimizer.zero_grad(set_to_none=True)  # no grad may view old buckets
        self.runner.apply(records)
        self.last_step = step
        if not self.distributed:
            return Boundary(step, records, decisions, None, replayed=replayed, stop_votes=votes)
        digest = None
        if decisions or step % self.config.verify_every == 0:
            digest = self.surgery.digest()
            self._pending = Pending(step, digest, record=bool(decisions and not replayed))
        if votes:  # the run ends here: compare now, not at a boundary that will not come
            self._flush()
        return Boundary(step, records, decisions, digest, repaired, replayed, votes)

    def _refuse_out_of_place(self, step: int) -> None:
        """Refuse a boundary at or before the last one applied, or inside a `no_sync()` window."""
        if self.last_step is not None and step <= self.last_step:
            raise UsageError(
                f"step {step}: this rank applied the boundary of step {self.last_step} already; "
                "give each evaluation step once (after_step, at_boundary), with steps that increase"
            )
        wrapper = None if self.replicated is None else self.replicated.wrapper
        if not getattr(wrapper, "require_backward_grad_sync", True):
            raise UsageError(
                f"step {step}: at_boundary inside a no_sync() window; apply lifecycle "
                "decisions only at gradient-accumulation boundaries"
            )

    def _carriers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's stop vote, and its slots of the digest vector: (pending step + 1, digest)."""
        votes = torch.tensor([int(self._stop_vote)], dtype=torch.long)
        return votes, carried.slots(self._pending, self.rank, self.world_size)

    def _stop_votes(self, step: int) -> tuple[int, list[int]]:
        """The ranks voting to stop at `step` and the carried digests: as `observe` summed them,
        else summed now."""
        if self._votes is not None and self._votes[0] == step:
            _, votes, values = self._votes
        else:
            tally, slots = self._carriers()
            distributed.sum_in_place([tally, slots], self.group)
            votes, values = int(tally), slots.tolist()
        self._stop_vote = False  # counted: a vote asks for one stop
        if votes:
            _log.info("step %d: %d of %d ranks asked to stop; stopping here", step, votes, self.world_size)
        return votes, values

    def verify(self, step: int) -> str | None:
        """Check every rank holds the same digest now, as after a batch; the leader records it.

        For the end of a run, or any point between boundaries. Returns the digest, or None
        without a process group.
        """
        if not self.distributed:
            return None
        self._flush()
        digest, _ = self._check.now(step)
        if self.is_leader:
            self._record_verified(step, digest)
        return digest

    def _seal(self, step: int, decide: Decide | None, verified: Sequence[Any] = ()) -> bool:
        """Decide and seal `step` unless the log sealed it already; return True if it had.

        `verified` (the last boundary's `ActionsVerified`) goes first in the batch.
        """
        # No read first: the leader is the run's one writer and its Lifecycle folded the whole
        # log when it was built, so its registry knows every seal (a stale one would make the
        # batch's append fail with ConcurrencyError).
        lc = self.lifecycle
        sealed = lc.registry.sealed_step
        if sealed is not None and sealed >= step:
            _log.info("step %d is sealed in the log already: following it, not deciding", step)
            if verified:
                self._append(verified)
            return True
        with lc.batch():
            if verified:
                lc.append(verified)
            if decide is not None:
                decide(lc)
            lc.seal(step)
        return False

    def _follow_to_seal(self, step: int) -> list[Record]:
        """Read the log from the projections' seq up to and including `StepSealed(step)`."""
        return follow_to_seal(
            self.runner.log,
            self.runner.seq,
            step,
            timeout=self.config.timeout,
            rank=self.rank,
            leader=self.config.leader,
            run_id=self.lifecycle.run_id,
        )

    # -- verification ------------------------------------------------------------------------

    def _compare_carried(self, values: Sequence[int]) -> tuple[list[ActionsVerified], bool]:
        """Compare the last boundary's digests the collective carried; return the leader's
        `ActionsVerified` to write (none elsewhere) and whether a repair was needed."""
        pending, self._pending = self._pending, None
        return self._check.compare(values, pending)

    def _flush(self) -> None:
        """Compare the last boundary's digest now, with a collective of its own (if there is one)."""
        _, slots = self._carriers()
        distributed.sum_in_place([slots], self.group)
        verified, _ = self._compare_carried(slots.tolist())
        if verified:
            self._append(verified)

    def _record_verified(self, step: int, digest: str) -> None:
        self._append([self._check.verified(step, digest)])

    def _append(self, events: Sequence[Any]) -> None:
        # The leader is the run's one writer, so its registry is at the log's end; another
        # writer would make this append fail with ConcurrencyError, as it should.
        self.lifecycle.append(events)
