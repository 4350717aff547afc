"""The basin readout: a checkpoint's routing numbers turned into the coordinator's metric dicts.

Per expert, keyed by expert id:

- `share`: the expert's part of the layer's routing (see "Shares" below), and
  `entropy_contribution` = -s ln s (0 for s <= 1e-10);
- `dispatch_share` and `gate_share`: both kinds of share, whichever `share` is;
- `token_type.<k>` for every type k: the expert's basin, the fraction of the gate weight it
  received that came from tokens of type k (all 0 for an expert that received none);
- `coact.<other>`: the fraction of the interval's tokens whose top-k held both experts;
- `weight_norm`: L2 norm of the expert's parameters (its router row excluded); `weight_delta`:
  L2 norm of their change since the previous checkpoint (0 for an expert first seen at this
  one); `cosine.<other>`: cosine similarity of the two experts' parameters.

Per layer, ChronoMoE v2's `LayerSnapshot` formulas (`chronomoe/metrics.py`,
reference/seed-projects.md section 2.3) over the experts' shares: entropy = -sum s ln s over
s > 1e-10 (natural log), n_eff = exp(entropy), top2_share = the two largest shares (1.0 with
fewer than two experts), dead_count = shares exactly 0, n_active = shares above 0. And
`basin_breadth` (`basin_breadth()`): the share-weighted mean over the layer's experts of the
effective number of token types in each basin, exp of its entropy; 1 when every expert serves
one kind of token.

Shares. v2 divides dispatch counts by their sum (`share="dispatch"`). With top-k routing every
token is dispatched k times, so an expert that is in every token's top-2 shows 0.5 however
little of the output it produces, and two experts that split a cluster (each the first choice
of half of it and the second choice of the rest) show equal shares forever. The default
`share="gate"` gives each token one unit of routing, split over its top-k by gate weight: it
equals v2's share for top-1 routing, is the top-k counterpart of the router-probability share
ChronoMoE v3's lifecycle decides on, and is still exactly 0 for an expert no token selected.
The basin (`token_type.*`) is gate-weighted for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BasinReadout", "LayerValues", "ShareBasis", "basin_breadth", "expert_rows", "layer_metrics"]

ShareBasis = Literal["gate", "dispatch"]
"""What an expert's `share` counts: gate weight received (default) or dispatches (v2)."""

SHARE_EPS = 1e-10
"""Shares at or below this are left out of the entropy, as ChronoMoE v2 does."""


@dataclass(frozen=True, slots=True)
class BasinReadout:
    """The metrics of one checkpoint, as `ExpertCoordinator.observations` takes them."""

    experts: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per expert id: share, basin, co-activation and weight metrics."""
    layers: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per layer: entropy, n_eff, top2_share, dead_count, n_active."""
    tokens: int = 0
    """Tokens recorded in the interval (every token passes every layer)."""


@dataclass(frozen=True, slots=True)
class LayerValues:
    """One layer's numbers for the routing experts, on the host, experts in row order."""

    coact: list[list[float]]
    mass: list[list[float]]
    norms: list[float]
    deltas: list[float]
    cosine: list[list[float]]


def expert_rows(
    ids: Sequence[str], v: LayerValues, share: ShareBasis, tokens: int
) -> dict[str, dict[str, float]]:
    """Return each expert's metric dict from its layer's numbers over an interval of `tokens`."""
    dispatch = _normalized([v.coact[i][i] for i in range(len(ids))])
    gate = _normalized([math.fsum(row) for row in v.mass])
    shares = gate if share == "gate" else dispatch
    out: dict[str, dict[str, float]] = {}
    for i, entity in enumerate(ids):
        row = {
            "share": shares[i],
            "entropy_contribution": _plogp(shares[i]),
            "dispatch_share": dispatch[i],
            "gate_share": gate[i],
            "weight_norm": v.norms[i],
            "weight_delta": v.deltas[i],
        }
        received = math.fsum(v.mass[i])
        for k, cell in enumerate(v.mass[i]):
            row[f"token_type.{k}"] = cell / received if received > 0 else 0.0
        for j, other in enumerate(ids):
            if j != i:
                row[f"coact.{other}"] = v.coact[i][j] / tokens if tokens else 0.0
                row[f"cosine.{other}"] = v.cosine[i][j]
        out[entity] = row
    return out


def layer_metrics(shares: Sequence[float]) -> dict[str, float]:
    """Return a layer's entropy, n_eff, top-2 share, dead and active counts from its shares.

    ChronoMoE v2's definitions: shares are normalized to sum to 1 (all zero when they sum to
    0), entropy -sum s ln s over s > 1e-10, n_eff = exp(entropy), top-2 the two largest
    shares (1.0 with fewer than two experts), dead the shares exactly 0, active those above 0.
    """
    normalized = _normalized(shares)
    entropy = math.fsum(_plogp(s) for s in normalized)
    top2 = 1.0 if len(normalized) < 2 else math.fsum(sorted(normalized, reverse=True)[:2])
    return {
        "entropy": entropy,
        "n_eff": math.exp(entropy),
        "top2_share": top2,
        "dead_count": float(sum(1 for s in normalized if s == 0.0)),
        "n_active": float(sum(1 for s in normalized if s > 0.0)),
    }


def basin_breadth(rows: Iterable[Mapping[str, float]], num_types: int) -> float:
    """Return the share-weighted mean of exp(entropy) of the experts' token-type basins.

    The effective number of token types an expert serves, averaged over the layer's routing
    by share: 1.0 when each expert's tokens are of one type, k when each spreads evenly over
    k; 0.0 when no expert received tokens.
    """
    total = weighted = 0.0
    for row in rows:
        basin = [row[f"token_type.{k}"] for k in range(num_types)]
        if math.fsum(basin) <= 0:
            continue
        weighted += row["share"] * math.exp(math.fsum(_plogp(p) for p in basin))
        total += row["share"]
    return weighted / total if total > 0 else 0.0


def _normalized(values: Sequence[float]) -> list[float]:
    total = math.fsum(values)
    return [v / total for v in values] if total > 0 else [0.0] * len(values)


def _plogp(share: float) -> float:
    """Return -s ln s, or 0 for s <= 1e-10 (v2's cut-off)."""
    return -share * math.log(share) if share > SHARE_EPS else 0.0
