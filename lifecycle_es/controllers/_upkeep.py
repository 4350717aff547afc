"""Upkeep: the state moves no action causes, made first so every action sees this checkpoint's states.

A scheduled removal is applied, a cooling expert's grace period ends, an active expert whose
share fell to zero goes dormant and a dormant one that receives tokens again is active. Each
move is recorded with its one check, like an action's gates.
"""

from __future__ import annotations

from typing import Any

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import PERF, STRUCT, ExpertPhase
from lifecycle_es.controllers._revive import parked_metadata
from lifecycle_es.controllers._signals import SHARE
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState

__all__ = ["Upkeep"]

S = ExpertState


class Upkeep(ExpertPhase):
    """The upkeep phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Move every expert whose state the checkpoint's observations (or the clock) change."""
        for e in self.experts((S.PENDING_PRUNE, S.COOLING, S.ACTIVE, S.DORMANT)):
            latest = self.latest_share(e)
            if e.state == S.PENDING_PRUNE:
                self._remove(e)
            elif e.state == S.COOLING:
                self._end_cooling(e)
            elif e.state == S.ACTIVE and latest is not None and self.is_zero(latest):
                self._share_moved(e, latest, S.DORMANT)
            elif e.state == S.DORMANT and latest is not None and not self.is_zero(latest):
                self._share_moved(e, latest, S.ACTIVE)

    def _remove(self, e: EntityState) -> None:
        """Archive an expert one step after its removal was scheduled (surgery applied it)."""
        waited = self.step - e.entered_step
        check = Check(
            "expert.removal_applied",
            STRUCT,
            waited >= 1,
            f"scheduled for removal {checks.count(waited, 'step')} ago; it applies 1 step after",
            {"steps_scheduled": waited},
            {"min_steps": 1},
        )
        reason = "removed after its scheduled removal was applied"
        self._move_if(e, S.ARCHIVED, reason, parked_metadata(e), check)

    def _end_cooling(self, e: EntityState) -> None:
        """Activate a cooling expert whose grace period (longer after a merge) has passed."""
        cfg = self.config
        merged = bool(e.history) and e.history[-1][1] == S.ACTIVE
        period = cfg.merge_cooling_period if merged else cfg.cooling_period
        spent = self.in_state(e)
        check = Check(
            "expert.grace_period",
            STRUCT,
            spent >= period,
            f"{checks.count(spent, 'checkpoint')} of {period} in cooling",
            {"checkpoints_cooling": spent},
            {"cooling_period": period},
        )
        self._move_if(e, S.ACTIVE, "grace period expired", None, check)

    def _share_moved(self, e: EntityState, latest: float, to: ExpertState) -> None:
        """Move an active expert whose share fell to zero to dormant, or a dormant one back."""
        eps = self.config.dormant_share_epsilon
        dormant = to == S.DORMANT
        check = Check(
            "expert.zero_share" if dormant else "expert.recovered_share",
            PERF,
            True,
            f"share {latest:.3g} {'<' if dormant else '>='} {eps:g}",
            {SHARE: latest},
            {"dormant_share_epsilon": eps},
        )
        reason = "routing share fell to zero" if dormant else "receives tokens again"
        self._move_if(e, to, reason, None, check)

    def _move_if(
        self, e: EntityState, to: ExpertState, reason: str, metadata: dict[str, Any] | None, check: Check
    ) -> None:
        if self.batch.checks(e.entity, e.state, to, [check]):
            self.batch.move(e.entity, to, reason, metadata)
