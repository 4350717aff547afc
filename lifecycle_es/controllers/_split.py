"""Split: an active expert overloaded for `split_patience` checkpoints gets a clone child.

The most loaded candidates split first. The child takes a free slot and cools; the parent's
state does not change, so the split's checks are recorded on the parent. Whether the pair then
divides the parent's basin is judged by `_failed_split`.
"""

from __future__ import annotations

from collections.abc import Callable

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import PERF, ExpertPhase, above, position
from lifecycle_es.controllers._signals import SHARE
from lifecycle_es.events import Action
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState, SplitMetrics

__all__ = ["Splits"]

S = ExpertState


class Splits(ExpertPhase):
    """The split phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Split every candidate whose gates pass, the most loaded first."""
        cfg = self.config
        overloaded = above(cfg.split_share_threshold)
        candidates = [
            e
            for e in self.experts((S.ACTIVE,))
            if any(map(overloaded, self.shares_in_state(e)[-cfg.split_patience :]))
        ]
        candidates.sort(key=lambda e: (-self.shares(e)[-1], *position(e)))
        for parent in candidates:
            self._split(parent, overloaded)

    def _split(self, parent: EntityState, overloaded: Callable[[float], bool]) -> None:
        cfg = self.config
        assert parent.layer is not None
        layer, shares = parent.layer, self.shares_in_state(parent)
        held = streak(shares, overloaded)
        slot, child = self.free_slot(layer), self.next_id(layer)
        gates = self._gates(parent, shares, held, slot, overloaded)
        if not self.batch.checks(parent.entity, parent.state, parent.state, gates):
            return
        assert slot is not None
        self.batch.register(child, layer=layer, slot=slot, parent=parent.entity)
        self.batch.decide(
            Action.SPLIT,
            layer=layer,
            entity=parent.entity,
            parent=parent.entity,
            children=[child],
            target=child,
            reason="sustained_overload",
            metrics=SplitMetrics(
                share=shares[-1],
                overload_duration=held,
                slot=slot,
                push=cfg.split_divergence_push * min(2.0, shares[-1] / cfg.split_share_threshold),
            ),
        )
        self.batch.move(child, S.COOLING, "integrated into routing")

    def _gates(
        self,
        parent: EntityState,
        shares: tuple[float, ...],
        held: int,
        slot: int | None,
        overloaded: Callable[[float], bool],
    ) -> list[Check]:
        """Return the split's checks: sustained overload, then cooldowns, cap, slot and budget."""
        cfg, registry = self.config, self.batch.registry
        assert parent.layer is not None
        layer = parent.layer
        return [
            *self._overload(shares, held, overloaded),
            *self._cooldowns(parent.entity),
            checks.cap(registry, cfg, "split.layer_cap", layer),
            checks.slot("split.free_slot", layer, slot, self.capacity[layer]),
            checks.budget(registry, "split.budget", Action.SPLIT, cfg.max_splits_per_cycle),
        ]

    def _overload(
        self, shares: tuple[float, ...], held: int, overloaded: Callable[[float], bool]
    ) -> list[Check]:
        """The checks that the share stayed over the threshold for the patience, and still is."""
        cfg, n, latest = self.config, self.config.split_patience, shares[-1]
        return [
            Check(
                "split.overload_patience",
                PERF,
                patience(shares, n, overloaded),
                f"share > {cfg.split_share_threshold:g} for {checks.count(held, 'checkpoint')} in a row, "
                f"patience {n}",
                {"checkpoints_overloaded": held},
                {"split_share_threshold": cfg.split_share_threshold, "split_patience": n},
            ),
            # seeds/002: the share must still exceed the threshold when the split executes.
            Check(
                "split.share_at_execution",
                PERF,
                overloaded(latest),
                f"share {latest:.3g} at execution against the threshold {cfg.split_share_threshold:g}",
                {SHARE: latest},
                {"split_share_threshold": cfg.split_share_threshold},
            ),
        ]

    def _cooldowns(self, parent: str) -> list[Check]:
        """The parent's cooldowns: since its last split, and since a split of it failed."""
        registry, step, cooldown = self.batch.registry, self.step, self.config.split_cooldown_per_expert
        return [
            checks.cooldown(registry, step, "split.cooldown", Action.SPLIT, cooldown, parent),
            # A parent whose split failed waits a whole cooldown before it is split again.
            checks.cooldown(registry, step, "split.failed_split_cooldown", Action.PRUNE, cooldown, parent),
        ]
