"""Comparing the ranks' digests at a boundary: agreement, divergence, and repair from the leader.

`LifecycleSync` hands this the digests a collective carried (`carried.read`) or asks it to
compare the state now. Equal digests give the leader's `ActionsVerified`; different ones are
recorded as `DivergenceDetected` and raise `DivergenceError` on every rank, or, with
`repair=True`, the leader's parameters, buffers and optimizer state are broadcast, the digests
checked again and the repair recorded (DESIGN.md section 7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from lifecycle_es.errors import DivergenceError
from lifecycle_es.events import ActionsVerified, DivergenceDetected
from lifecycle_es.session import Lifecycle
from projections.training import carried, distributed
from projections.training.carried import Pending
from projections.training.distributed import Group

__all__ = ["DigestCheck", "Surgery"]

_log = logging.getLogger("projections.training.sync")


class Surgery(Protocol):
    """What the sync needs of a model surgery (`ModelSurgery`, or the seed layers' `SeedSurgery`)."""

    optimizer: torch.optim.Optimizer
    model: nn.Module | None

    def digest(self) -> str:
        """Return the 16-hex-digit digest of parameters, optimizer state and applied event ids."""
        ...

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Return the parameters the digest covers, by name."""
        ...


class DigestCheck:
    """One rank's side of comparing every rank's digest of the same boundary."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        surgery: Surgery,
        *,
        leader: int,
        repair: bool,
        group: Group,
        append: Callable[[Sequence[Any]], None],
    ) -> None:
        """Compare `surgery`'s digests across `group`, `leader`'s being the reference; the leader
        writes what it finds with `append` (the sync's, so the run's one writer appends)."""
        self.lifecycle = lifecycle
        self.surgery = surgery
        self.leader = leader
        self.repair = repair
        self.group = group
        self.rank = distributed.rank(group)
        self.world_size = distributed.world_size(group)
        self._append = append

    @property
    def is_leader(self) -> bool:
        """Whether this rank records what the comparison finds."""
        return self.rank == self.leader

    def compare(self, values: Sequence[int], pending: Pending | None) -> tuple[list[ActionsVerified], bool]:
        """Compare the last boundary's digests the collective carried; return the leader's
        `ActionsVerified` to write (none elsewhere) and whether a repair was needed."""
        compared = carried.read(values)
        if compared is None:
            return [], False
        step, digests = compared
        if len(set(digests)) == 1:
            record = pending is not None and pending.record and self.is_leader
            return ([self.verified(step, digests[0])] if record else []), False
        digest = self._diverged(step, digests)
        if self.is_leader:
            self._append([self.verified(step, digest)])
        return [], True

    def now(self, step: int) -> tuple[str, bool]:
        """Digest the state now; return the agreed digest and whether a repair was needed to agree."""
        digest = self.surgery.digest()
        low, high = distributed.digest_range(digest, self.group)
        if low == high:
            return digest, False
        return self._diverged(step, distributed.gather_digests(digest, self.group)), True

    def verified(self, step: int, digest: str) -> ActionsVerified:
        """The event saying every rank held `digest` after the boundary of `step`."""
        return ActionsVerified(
            run_id=self.lifecycle.run_id, step=step, rank=self.rank, digest=digest, world_size=self.world_size
        )

    def _diverged(self, step: int, digests: Sequence[str]) -> str:
        """Record the ranks' disagreement at `step` and raise, or repair and return the digest."""
        leader = digests[self.leader]
        ranks = tuple(r for r, d in enumerate(digests) if d != leader)
        where = f"step {step}: ranks {list(ranks)} differ from the leader (rank {self.leader})"
        if not self.repair:
            self._record_divergence(step, digests, ranks, repaired=False)
            raise DivergenceError(
                f"{where} in parameters, optimizer state or applied events; "
                "restart from the last checkpoint or sync with repair=True",
                step=step,
                ranks=ranks,
            )
        self._repair(step, where)
        digest = self.surgery.digest()
        low, high = distributed.digest_range(digest, self.group)
        if low != high:
            self._record_divergence(step, digests, ranks, repaired=False)
            raise DivergenceError(
                f"{where} and the leader's state did not repair them: the ranks applied different events",
                step=step,
                ranks=ranks,
            )
        self._record_divergence(step, digests, ranks, repaired=True)
        _log.warning("%s; repaired from the leader's state", where)
        return digest

    def _repair(self, step: int, where: str) -> None:
        """Broadcast the leader's parameters, buffers and optimizer state, if their shapes agree."""
        named = self._named_state()
        structure = carried.structure_digest(named, self.surgery.optimizer)
        low, high = distributed.digest_range(structure, self.group)
        if low != high:
            raise DivergenceError(
                f"{where} in parameter or optimizer-state shapes, which a broadcast cannot repair",
                step=step,
                ranks=tuple(range(self.world_size)),
            )
        distributed.broadcast_training_state(named, self.surgery.optimizer, src=self.leader, group=self.group)

    def _named_state(self) -> list[tuple[str, torch.Tensor]]:
        model = self.surgery.model
        if model is not None:
            return distributed.named_state(model)
        return list(self.surgery.named_parameters())

    def _record_divergence(
        self, step: int, digests: Sequence[str], ranks: Iterable[int], *, repaired: bool
    ) -> None:
        if self.is_leader:
            self._append(
                [
                    DivergenceDetected(
                        run_id=self.lifecycle.run_id,
                        step=step,
                        rank=self.rank,
                        repaired=repaired,
                        digests={str(r): d for r, d in enumerate(digests)},
                        ranks=sorted(ranks),
                    )
                ]
            )
