"""The numbers the expert coordinator decides on: pure functions of observed metrics.

Natural logarithms throughout, as ChronoMoE v2 computes routing entropy
(reference/seed-projects.md section 2.3).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from lifecycle_es.errors import UsageError

__all__ = [
    "basin_overlap",
    "decision_seed",
    "effective_types",
    "js_divergence",
    "load_balance",
    "normalized_entropy",
    "topology_debt",
]

_TINY = 1e-12
"""Probabilities at or below this contribute nothing to an entropy or a divergence."""


def normalized_entropy(entropy: float, n_experts: float) -> float:
    """Return the routing entropy as a fraction of its maximum, ln(n_experts), clipped to [0, 1].

    A layer of at most one expert counts as fully spread (1.0): its only expert takes every
    token there is.
    """
    if n_experts <= 1:
        return 1.0
    return min(1.0, max(0.0, entropy / math.log(n_experts)))


def topology_debt(*, n_experts: float, n_eff: float, top2_share: float, dead_count: float) -> float:
    """Return ChronoMoE v2's topology debt of a layer of `n_experts` experts, in [0, 1].

    `compute_topology_debt` of v2's controller with its default weights: 0.4 for effective
    experts below 60% of the layer, 0.4 for a top-2 share above 0.75, 0.2 for dead experts,
    each component clipped to [0, 1] (reference/seed-projects.md section 2.4).
    """
    n = n_experts
    floor = 0.6 * n
    debt_neff = _clip((floor - n_eff) / floor) if floor > 0 else 0.0
    debt_top2 = _clip((top2_share - 0.75) / (1 - 0.75))
    debt_dead = _clip(dead_count / max(1.0, n - 1))
    return 0.4 * debt_neff + 0.4 * debt_top2 + 0.2 * debt_dead


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Return the Jensen-Shannon divergence of two distributions (natural log, in [0, ln 2]).

    Both are normalised to sum to 1 first; each must have a positive sum.
    """
    sp, sq = math.fsum(p), math.fsum(q)
    if len(p) != len(q) or sp <= 0 or sq <= 0:
        raise UsageError("js_divergence needs two distributions of equal length with positive mass")
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        if a > _TINY:
            total += a * math.log(a / m)
        if b > _TINY:
            total += b * math.log(b / m)
    return min(math.log(2), max(0.0, total / 2))


def basin_overlap(p: Sequence[float], q: Sequence[float]) -> float:
    """Return how much two experts' routing basins overlap: 1 - JSD(p, q) / ln 2, in [0, 1].

    `p` and `q` are the experts' distributions over token types. Dividing by ln 2, the largest
    divergence two distributions can have, puts the overlap on a fixed scale: 1 for identical
    distributions, 0 for disjoint ones. An expert that received no tokens (all zeros) has no
    basin, so its overlap with anything is 0.
    """
    if math.fsum(p) <= 0 or math.fsum(q) <= 0:
        return 0.0
    return 1.0 - js_divergence(p, q) / math.log(2)


def effective_types(p: Sequence[float]) -> float:
    """Return the effective number of token types of a basin: exp of its entropy, in [1, len(p)].

    `p` is normalised first; a basin with no tokens (all zeros) counts as one type.
    """
    total = math.fsum(p)
    if total <= 0:
        return 1.0
    entropy = -math.fsum(x / total * math.log(x / total) for x in p if x / total > _TINY)
    return math.exp(entropy)


def load_balance(a: float, b: float) -> float:
    """Return how evenly two experts share their tokens: 2 min(a, b) / (a + b), in [0, 1].

    1 when each takes half of the pair's share, 0 when one takes all of it (or neither any).
    """
    total = a + b
    return 2 * min(a, b) / total if total > 0 else 0.0


def decision_seed(run_seed: int, step: int, action: str, target: str) -> int:
    """Return the 31-bit seed of a decision: blake2b of (run seed, step, action, target).

    The same decision gets the same seed on every rank and in every replay, and different
    decisions get unrelated ones; 31 bits fit any generator's `manual_seed`. The run's seed
    (from `RunStarted`), not its id, goes in, so the same seed reproduces a run under any id.
    """
    text = "\x1f".join((str(run_seed), str(step), action, target))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
