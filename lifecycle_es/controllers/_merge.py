"""Merge: two active experts whose weights and basins converged become one.

A pair is a candidate when, at one of its last `merge_patience` checkpoints in state, its weight
cosine and its basin overlap were both above their thresholds; it merges when both held for the
whole patience. The larger share survives (and cools for `merge_cooling_period`); the other is
scheduled for removal.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import STAB, ExpertPhase, above
from lifecycle_es.controllers._signals import pair_cosine, pair_series
from lifecycle_es.events import Action
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import ExpertState, MergeMetrics

__all__ = ["Merges"]

S = ExpertState


@dataclass(frozen=True, slots=True)
class _Pair:
    """Two active experts of a layer whose convergence is being judged."""

    a: EntityState
    b: EntityState
    cosine: tuple[float, ...]
    overlap: tuple[float, ...]


class Merges(ExpertPhase):
    """The merge phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Merge every candidate pair whose gates pass, unless an earlier merge took one of it."""
        for pair in self._candidates():
            if self.state_of(pair.a.entity) == S.ACTIVE and self.state_of(pair.b.entity) == S.ACTIVE:
                self._merge(pair)

    def _candidates(self) -> list[_Pair]:
        cfg, registry = self.config, self.batch.registry
        found = []
        for layer in sorted(self.capacity):
            for a, b in itertools.combinations(self.experts((S.ACTIVE,), layer), 2):
                n = min(cfg.merge_patience, self.in_state(a), self.in_state(b))
                # The cheap test first: basin overlaps are only computed for similar weights.
                cosine = pair_cosine(registry, a.entity, b.entity)
                if not n or not any(c > cfg.merge_similarity_threshold for c in cosine[-n:]):
                    continue
                cosine, overlap = pair_series(registry, a.entity, b.entity, n)
                if any(
                    c > cfg.merge_similarity_threshold and o > cfg.merge_overlap_threshold
                    for c, o in zip(cosine, overlap, strict=True)
                ):
                    found.append(_Pair(a, b, cosine, overlap))
        return found

    def _merge(self, pair: _Pair) -> None:
        """Merge the pair into its larger expert if every check passes."""
        cfg, registry = self.config, self.batch.registry
        survivor, absorbed, shares = self._ranked(pair)
        assert survivor.layer is not None
        held_cos = streak(pair.cosine, above(cfg.merge_similarity_threshold))
        held_ovl = streak(pair.overlap, above(cfg.merge_overlap_threshold))
        gates = [
            *self._patience(pair, f"{survivor.entity} and {absorbed.entity}", held_cos, held_ovl),
            checks.lineage(self.step, cfg, pair.a, pair.b),
            *self._below_split(shares),
            checks.floor(registry, cfg, "merge.population_floor", survivor.layer),
            checks.budget(registry, "merge.budget", Action.MERGE, cfg.max_merges_per_cycle),
        ]
        if not self.batch.checks(absorbed.entity, S.ACTIVE, S.PENDING_PRUNE, gates):
            return
        metrics = MergeMetrics(
            cosine=pair.cosine[-1],
            overlap=pair.overlap[-1],
            similar_duration=min(held_cos, held_ovl),
            shares=dict(shares),
        )
        self.batch.decide(
            Action.MERGE,
            layer=survivor.layer,
            entity=survivor.entity,
            target=survivor.entity,
            children=[absorbed.entity],
            reason="converged_basins",
            metrics=metrics,
        )
        self.batch.move(absorbed.entity, S.PENDING_PRUNE, f"merged into {survivor.entity}")
        self.batch.move(survivor.entity, S.COOLING, f"absorbed {absorbed.entity}")

    def _ranked(self, pair: _Pair) -> tuple[EntityState, EntityState, dict[str, float]]:
        """Return the survivor, the absorbed expert and both experts' latest shares."""
        shares = {e.entity: self.latest_share(e) or 0.0 for e in (pair.a, pair.b)}
        # The larger share survives; on a tie the lower slot (pair.a) does.
        if shares[pair.a.entity] >= shares[pair.b.entity]:
            return pair.a, pair.b, shares
        return pair.b, pair.a, shares

    def _patience(self, pair: _Pair, names: str, held_cos: int, held_ovl: int) -> list[Check]:
        """The checks that weights and basins both stayed converged for `merge_patience`."""
        cfg, n = self.config, self.config.merge_patience
        similar, overlapping = above(cfg.merge_similarity_threshold), above(cfg.merge_overlap_threshold)
        return [
            Check(
                "merge.similarity_patience",
                STAB,
                patience(pair.cosine, n, similar),
                f"{names}: weight cosine > {cfg.merge_similarity_threshold:g} for "
                f"{checks.count(held_cos, 'checkpoint')} in a row, patience {n}",
                {"cosine": pair.cosine[-1], "checkpoints_similar": held_cos},
                {"merge_similarity_threshold": cfg.merge_similarity_threshold, "merge_patience": n},
            ),
            Check(
                "merge.overlap_patience",
                STAB,
                patience(pair.overlap, n, overlapping),
                f"{names}: basin overlap > {cfg.merge_overlap_threshold:g} for "
                f"{checks.count(held_ovl, 'checkpoint')} in a row, patience {n}",
                {"overlap": pair.overlap[-1], "checkpoints_overlapping": held_ovl},
                {"merge_overlap_threshold": cfg.merge_overlap_threshold, "merge_patience": n},
            ),
        ]

    def _below_split(self, shares: dict[str, float]) -> list[Check]:
        """Return the merge's hysteresis check when `merge_below_split_share` asks for it."""
        cfg = self.config
        if not cfg.merge_below_split_share:
            return []
        combined = math.fsum(shares.values())
        return [
            Check(
                "merge.below_split_share",
                STAB,
                combined <= cfg.split_share_threshold,
                f"merged share {combined:.3g}, split threshold {cfg.split_share_threshold:g}",
                {"combined_share": combined},
                {"split_share_threshold": cfg.split_share_threshold},
            )
        ]
