"""A failed split: a clone child that never divided its parent's basin is undone, with its evidence.

A split (or a cloned spawn) is meant to divide its parent's basin, and what dividing means
depends on what the split was for, read from the parent's basin when the child was born:

- a split for *load*: the parent served one token type (at most `split_load_types` effective
  types), as when one type surges. seeds/002 splits on share alone, and twins serving one
  type may never diverge by type, so the pair is judged by how it shares the load: balance
  `2 min(share) / (sum of the pair's shares)` below `split_load_balance` means one twin still
  takes (nearly) all of the parent's former tokens. A pair whose basins have nonetheless
  diverged (overlap at most `split_divergence_overlap`: one twin took the surging type, the
  other went back to the rest) has divided the basin and is kept whatever its balance;
- a split for *breadth*: the parent served several types; the twins must take different ones,
  so the pair is judged by basin overlap above `split_divergence_overlap`, as seeds/002's
  "their basins should diverge".

When the pair has not divided at any of the `split_divergence_window` checkpoints after the
child's cooling, one twin is pruned as a failed split (reason `failed_split`, the purpose and
its measure recorded) rather than merged back later and split again. The twins are near-copies,
so the one pruned is the one with the smaller routing share, the child unless it took the load:
pruning a child that carries most of its parent's tokens would throw them onto the rest of the
layer (on one demo seed, pruning a child that carried 0.66 of the layer's share left a surge-
phase loss of 1.96, where the seed's other runs ended that phase near 0.01). The decision's
`parent` names the twin that stays, which then waits a whole `split_cooldown_per_expert` before
another split (`split.failed_split_cooldown`). Without token types the purpose is unknown and
nothing is undone. Every input is a metric window of the registry, so replay decides the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_phase import ExpertPhase
from lifecycle_es.controllers._signals import SHARE, pair_balance, pair_overlap, types_at_step
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.policies import streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState, FailedSplitMetrics

__all__ = ["FailedSplits", "judge_split"]

Purpose = Literal["load", "breadth"]


@dataclass(frozen=True, slots=True)
class _Measure:
    """What a pair's division is judged by, per checkpoint of the window, and when it failed."""

    purpose: Purpose
    parent_types: float
    values: tuple[float, ...]
    undivided: tuple[bool, ...]
    """Per checkpoint of `values`: whether the pair had not divided the basin then."""


class FailedSplits(ExpertPhase):
    """The failed-split phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Undo the clone children that did not diverge from their parent within the window."""
        cfg = self.config
        for child in self.experts((ExpertState.ACTIVE,)):
            parent = self.batch.registry.get(child.parent) if child.parent else None
            young = self.step - child.born_step < cfg.split_cooldown_per_expert
            if parent is None or parent.state != ExpertState.ACTIVE or not young:
                continue
            n = min(cfg.split_divergence_window, self.in_state(child))
            judge_split(cfg, self.batch, parent, child, n)


def judge_split(
    cfg: ExpertCoordinatorConfig, batch: Batch, parent: EntityState, child: EntityState, n: int
) -> None:
    """Undo the child when, over its last `n` checkpoints (the whole window), it never divided its
    parent's basin in the way the split's purpose asks."""
    if n < cfg.split_divergence_window:
        return
    measure = _measure(cfg, batch, parent, child, n)
    if measure is not None and any(measure.undivided):
        _undo(cfg, batch, parent, child, measure, n)


def _measure(
    cfg: ExpertCoordinatorConfig, batch: Batch, parent: EntityState, child: EntityState, n: int
) -> _Measure | None:
    registry = batch.registry
    types = types_at_step(registry, parent.entity, child.born_step)
    overlap = pair_overlap(registry, parent.entity, child.entity, n)
    if types is None or not overlap:
        return None
    if types <= cfg.split_load_types:
        balance = pair_balance(registry, parent.entity, child.entity, n)
        k = min(len(balance), len(overlap))  # both end at the latest checkpoint
        flags = (
            b < cfg.split_load_balance and o > cfg.split_divergence_overlap
            for b, o in zip(balance[len(balance) - k :], overlap[len(overlap) - k :], strict=True)
        )
        return _Measure("load", types, balance[len(balance) - k :], tuple(flags))
    flags = (o > cfg.split_divergence_overlap for o in overlap)
    return _Measure("breadth", types, overlap, tuple(flags))


def _undo(
    cfg: ExpertCoordinatorConfig,
    batch: Batch,
    parent: EntityState,
    child: EntityState,
    measure: _Measure,
    n: int,
) -> None:
    """Record the undo's checks; when the pair stayed undivided for the whole window, prune the
    twin with the smaller share."""
    assert child.layer is not None
    held = streak(measure.undivided, bool)
    gone, kept = _pruned_and_kept(batch, parent, child)
    gates = [
        _division_check(cfg, parent, child, measure, held, n),
        checks.floor(batch.registry, cfg, "split.undo_population_floor", child.layer),
    ]
    if not batch.checks(gone.entity, gone.state, ExpertState.PENDING_PRUNE, gates):
        return
    overlap = pair_overlap(batch.registry, parent.entity, child.entity, n)
    shares = batch.registry.metric_window(gone.entity, SHARE)
    metrics = FailedSplitMetrics(
        overlap=overlap[-1],
        checkpoints_overlapping=streak(overlap, lambda o: o > cfg.split_divergence_overlap),
        share=shares[-1] if shares else 0.0,
        purpose=measure.purpose,
        parent_types=measure.parent_types,
    )
    if measure.purpose == "load":
        metrics["balance"] = measure.values[-1]
        metrics["checkpoints_unbalanced"] = held
    batch.decide(
        Action.PRUNE,
        layer=child.layer,
        entity=gone.entity,
        target=gone.entity,
        parent=kept.entity,
        reason="failed_split",
        metrics=metrics,
    )
    batch.move(gone.entity, ExpertState.PENDING_PRUNE, f"failed split of {parent.entity} undone")


def _pruned_and_kept(
    batch: Batch, parent: EntityState, child: EntityState
) -> tuple[EntityState, EntityState]:
    """The twin to prune and the one to keep: the child, unless its latest share is the larger."""
    parent_share, child_share = (_latest_share(batch, e) for e in (parent, child))
    return (parent, child) if child_share > parent_share else (child, parent)


def _latest_share(batch: Batch, e: EntityState) -> float:
    shares = batch.registry.metric_window(e.entity, SHARE)
    return shares[-1] if shares else 0.0


def _division_check(
    cfg: ExpertCoordinatorConfig,
    parent: EntityState,
    child: EntityState,
    measure: _Measure,
    held: int,
    window: int,
) -> Check:
    """The check that the pair stayed undivided, by the measure its purpose names, for the window."""
    load = measure.purpose == "load"
    gate, name, run_of = _LOAD if load else _BREADTH
    setting = "split_load_balance" if load else "split_divergence_overlap"
    bound: float = getattr(cfg, setting)
    also = f" with overlap > {cfg.split_divergence_overlap:g}" if load else ""
    thresholds = {setting: bound, "split_divergence_window": window, "split_load_types": cfg.split_load_types}
    if load:
        thresholds["split_divergence_overlap"] = cfg.split_divergence_overlap
    return Check(
        gate,
        GateCategory.STABILITY,
        held >= window,
        f"{parent.entity} and {child.entity} (a split for {measure.purpose}): {name} "
        f"{'<' if load else '>'} {bound:g}{also} for {checks.count(held, 'checkpoint')} in a row "
        f"after cooling, window {window}",
        {name: measure.values[-1], run_of: held, "parent_types": measure.parent_types},
        thresholds,
    )


_LOAD = ("split.load_sharing", "balance", "checkpoints_unbalanced")
_BREADTH = ("split.divergence", "overlap", "checkpoints_overlapping")
"""The gate, the measure and its run's name in the evidence of each purpose's check."""
