"""Basin tracking: each MoE layer's routing statistics, kept on the device, read at checkpoints.

Between two evaluation checkpoints a training loop calls `BasinTracker.record(token_types)`
after each forward. That call only keeps references to the layers' `last_indices` (the slots
each token was routed to) and `last_weights` (their gate weights), and to the batch's token
types: no device work and no host sync, so a step that is not an evaluation costs nothing
measurable. Every `fold_every` steps, and at the checkpoint, the kept tensors are folded in one
vectorized pass into two integer device tensors per layer: `pairs[a, b]`, the tokens whose
top-k holds both slot `a` and slot `b` (the diagonal counts the tokens routed to `a`), and
`mass[a, t]`, the gate weight slot `a` received from tokens of type `t`, in fixed point (units
of 2^-16) so that sums are exact and the same on every device and in every order. Memory stays
bounded by `fold_every` batches plus capacity x (capacity + types) counters.

`collect` turns the counters and the experts' weights into the expert coordinator's metric
dicts with one host transfer per layer, and starts the next interval.

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

The tracker must be collected (or `reset`) before a surgery changes a layer's rows, since the
kept routing indices name rows; a training loop that applies surgery right after the
checkpoint, as the lifecycle does, satisfies this by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from lifecycle_es.controllers import BREADTH
from lifecycle_es.errors import ConfigError, UsageError
from projections.moe._protocol import check_layer

__all__ = ["BasinReadout", "BasinTracker", "RoutedLayer", "ShareBasis", "basin_breadth", "layer_metrics"]

ShareBasis = Literal["gate", "dispatch"]
"""What an expert's `share` counts: gate weight received (default) or dispatches (v2)."""

SHARE_EPS = 1e-10
"""Shares at or below this are left out of the entropy, as ChronoMoE v2 does."""
MASS_UNIT = 1 << 16
"""Gate weights are summed in fixed point, in units of 1 / MASS_UNIT: exact, order-free sums."""


@runtime_checkable
class RoutedLayer(Protocol):
    """What basin tracking reads from an MoE layer: its routing of the last forward, and weights."""

    last_indices: torch.Tensor
    """[tokens, top_k] long: the slots each token of the last forward went to, -1 for none."""
    last_weights: torch.Tensor
    """[tokens, top_k] float: the gate weight of each of those selections, 0 for none."""

    @property
    def capacity(self) -> int:
        """Slots allocated: dim 0 of every slot-major parameter."""
        ...

    def expert_parameters(self) -> Mapping[str, nn.Parameter]:
        """Return the experts' slot-major parameters by name; row i belongs to slot i."""
        ...


@dataclass(frozen=True, slots=True)
class BasinReadout:
    """The metrics of one checkpoint, as `ExpertCoordinator.observations` takes them."""

    experts: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per expert id: share, basin, co-activation and weight metrics."""
    layers: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per layer: entropy, n_eff, top2_share, dead_count, n_active."""
    tokens: int = 0
    """Tokens recorded in the interval (every token passes every layer)."""


@dataclass(slots=True)
class _Counters:
    """One layer's routing counters on the device."""

    capacity: int
    pairs: torch.Tensor
    """[capacity * capacity] long: tokens whose top-k holds both slots (diagonal: routed)."""
    mass: torch.Tensor
    """[capacity * types] long: gate weight received per (slot, type), in 1 / MASS_UNIT."""


@dataclass(slots=True)
class _Weights:
    """A checkpoint's flattened expert weights of one layer, and each expert's row in them."""

    rows: dict[str, int]
    flat: torch.Tensor


@dataclass(frozen=True, slots=True)
class _LayerValues:
    """One layer's numbers for the routing experts, on the host, experts in row order."""

    coact: list[list[float]]
    mass: list[list[float]]
    norms: list[float]
    deltas: list[float]
    cosine: list[list[float]]


class BasinTracker:
    """Accumulates the routing of several MoE layers between checkpoints, and reads it out."""

    def __init__(
        self,
        layers: Mapping[int, RoutedLayer],
        *,
        num_types: int,
        share: ShareBasis = "gate",
        fold_every: int = 32,
    ) -> None:
        """Track `layers` (by layer index) over tokens of `num_types` types (ids 0..num_types-1)."""
        for name, value in (("num_types", num_types), ("fold_every", fold_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if share not in ("gate", "dispatch"):
            raise ConfigError(f"share must be 'gate' or 'dispatch', got {share!r}")
        for index, layer in layers.items():
            check_layer(index, layer, RoutedLayer)
        self.layers = dict(sorted(layers.items()))
        self.num_types = num_types
        self.share: ShareBasis = share
        self.fold_every = fold_every
        self.tokens = 0
        """Tokens recorded since the last checkpoint."""
        self._kept: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in self.layers}
        self._types: list[torch.Tensor] = []
        self._outside: torch.Tensor | None = None
        """[1] long on the types' device: tokens recorded with a type id outside [0, num_types)."""
        self._counters: dict[int, _Counters] = {}
        self._previous: dict[int, _Weights] = {}

    # -- every step ----------------------------------------------------------------------------

    def record(self, token_types: torch.Tensor) -> None:
        """Keep the last forward's routing of every layer, with each token's type ([tokens] long).

        Only references are kept (nothing is copied or read), so call it once per forward,
        before the next forward replaces the layers' `last_indices` and `last_weights`. Type
        ids outside [0, num_types) are counted on the device as they are folded, and `collect`
        refuses the interval with a `UsageError`: checked there, off the training step, since
        reading the ids here would wait for the device every step.
        """
        tokens = int(token_types.shape[0])
        for index, layer in self.layers.items():
            if int(layer.last_indices.shape[0]) != tokens:
                raise UsageError(
                    f"layer {index} routed {layer.last_indices.shape[0]} tokens, "
                    f"but {tokens} token types were given"
                )
            self._kept[index].append((layer.last_indices, layer.last_weights))
        self._types.append(token_types)
        self.tokens += tokens
        if len(self._types) >= self.fold_every:
            self._fold()

    def _fold(self) -> None:
        """Add the kept batches to each layer's counters: a few vectorized device ops per layer."""
        if not self._types:
            return
        types = torch.cat(self._types)
        outside = ((types < 0) | (types >= self.num_types)).sum().reshape(1)
        self._outside = outside if self._outside is None else self._outside + outside
        types = types.clamp(0, self.num_types - 1)  # every cell stays in its counter; collect refuses
        for index, layer in self.layers.items():
            indices = torch.cat([i for i, _ in self._kept[index]])
            weights = torch.cat([w for _, w in self._kept[index]])
            counters = self._layer_counters(index, layer.capacity, indices.device)
            pair_cells, hits, mass_cells, mass = _cells(
                indices, weights, types.to(indices.device), counters.capacity, self.num_types
            )
            counters.pairs.index_add_(0, pair_cells, hits)
            counters.mass.index_add_(0, mass_cells, mass)
            self._kept[index].clear()
        self._types.clear()

    def _layer_counters(self, index: int, capacity: int, device: torch.device) -> _Counters:
        counters = self._counters.get(index)
        if counters is None:
            counters = self._counters[index] = _Counters(
                capacity=capacity,
                pairs=torch.zeros(capacity * capacity, dtype=torch.long, device=device),
                mass=torch.zeros(capacity * self.num_types, dtype=torch.long, device=device),
            )
        elif counters.capacity != capacity:
            raise UsageError(
                f"layer {index} changed capacity since the last checkpoint; "
                "collect or reset the basin tracker before surgery"
            )
        return counters

    def reset(self) -> None:
        """Forget the routing recorded since the last checkpoint (weight snapshots are kept)."""
        for kept in self._kept.values():
            kept.clear()
        self._types.clear()
        self._outside = None
        self._counters.clear()
        self.tokens = 0

    def sum_across(self, reduce: Callable[[dict[str, torch.Tensor]], object]) -> None:
        """Replace this interval's counters and token count by their sum over every rank.

        `reduce` sums a dict of tensors across ranks in place, e.g.
        `functools.partial(sync.observe, step)`; every rank must have recorded the same steps.
        """
        self._fold()
        shared = {
            f"{i}.{name}": getattr(c, name)
            for i, c in sorted(self._counters.items())
            for name in ("pairs", "mass")
        }
        shared["tokens"] = torch.tensor([self.tokens], dtype=torch.long)
        # summed too, so that every rank refuses the interval in `collect` if any rank must
        shared["outside_types"] = torch.zeros(1, dtype=torch.long) if self._outside is None else self._outside
        reduce(shared)
        self.tokens = int(shared["tokens"])
        self._outside = shared["outside_types"]

    def state(self) -> dict[str, Any]:
        """Return the weights kept for the next checkpoint's deltas, as checkpoint data.

        Take it right after `collect`, when no routing is pending.
        """
        return {
            str(i): {"rows": dict(w.rows), "flat": w.flat.detach().cpu()} for i, w in self._previous.items()
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `state()` returned, on the tracked layers' devices."""
        previous = {}
        for index, kept in state.items():
            layer = self.layers[int(index)]
            device = next(iter(layer.expert_parameters().values())).device
            previous[int(index)] = _Weights(
                rows={str(k): int(v) for k, v in kept["rows"].items()}, flat=kept["flat"].to(device)
            )
        self._previous = previous

    # -- at a checkpoint -----------------------------------------------------------------------

    def collect(self, experts: Mapping[int, Mapping[int, str]]) -> BasinReadout:
        """Return the interval's metrics and start the next interval.

        `experts` maps each tracked layer to its routing experts by row (`ModelSurgery
        .routing_experts(layer)`); rows not named there are left out of every metric.
        """
        self._fold()
        self._check_types()
        readout = BasinReadout(tokens=self.tokens)
        for index, layer in self.layers.items():
            routing = dict(sorted(experts.get(index, {}).items()))
            if not routing:
                self._previous.pop(index, None)
                readout.layers[index] = layer_metrics([])
                continue
            values = self._layer_values(index, layer, routing)
            rows = self._expert_rows(list(routing.values()), values)
            readout.experts.update(rows)
            readout.layers[index] = {
                **layer_metrics([row["share"] for row in rows.values()]),
                BREADTH: basin_breadth(rows.values(), self.num_types),
            }
        self.reset()
        return readout

    def _check_types(self) -> None:
        """Refuse an interval in which tokens were recorded with type ids outside [0, num_types)."""
        outside = 0 if self._outside is None else int(self._outside)  # one host read per checkpoint
        if outside:
            tokens = self.tokens
            self.reset()
            raise UsageError(
                f"token type ids must lie in [0, {self.num_types}) (num_types={self.num_types}), but "
                f"{outside} of the {tokens} tokens recorded since the last checkpoint had ids outside it"
            )

    def _layer_values(self, index: int, layer: RoutedLayer, routing: Mapping[int, str]) -> _LayerValues:
        """Compute a layer's numbers on its device, then bring them over in one transfer."""
        ids, n, types = list(routing.values()), len(routing), self.num_types
        flat = _flat_weights(layer)
        rows = torch.tensor(list(routing), dtype=torch.long, device=flat.device)
        weights = flat.index_select(0, rows).float()
        coact, mass = self._routing_counts(index, layer.capacity, rows)
        norms = weights.norm(dim=1)
        cosine = (weights @ weights.t()) / (norms[:, None] * norms[None, :]).clamp_min(1e-12)
        deltas = self._deltas(index, ids, weights)
        self._previous[index] = _Weights(rows={e: i for i, e in enumerate(ids)}, flat=weights)
        packed = torch.cat([t.reshape(-1).double() for t in (coact, mass, norms, deltas, cosine)])
        v = packed.tolist()  # the one host transfer of this layer
        cut = [0, n * n, n * n + n * types, n * n + n * types + n, n * n + n * types + 2 * n]
        return _LayerValues(
            coact=_square(v[cut[0] : cut[1]], n),
            mass=_square(v[cut[1] : cut[2]], types),
            norms=v[cut[2] : cut[3]],
            deltas=v[cut[3] : cut[4]],
            cosine=_square(v[cut[4] :], n),
        )

    def _routing_counts(
        self, index: int, capacity: int, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the routing experts' co-selection counts [n, n] and gate mass [n, types]."""
        n = int(rows.shape[0])
        counters = self._counters.get(index)
        if counters is None:
            return (
                torch.zeros(n, n, dtype=torch.long, device=rows.device),
                torch.zeros(n, self.num_types, dtype=torch.long, device=rows.device),
            )
        pairs = counters.pairs.view(capacity, capacity).index_select(0, rows).index_select(1, rows)
        return pairs, counters.mass.view(capacity, self.num_types).index_select(0, rows)

    def _deltas(self, index: int, ids: Sequence[str], weights: torch.Tensor) -> torch.Tensor:
        """Return each expert's weight change since the previous checkpoint (0 if first seen)."""
        delta = torch.zeros(len(ids), device=weights.device)
        previous = self._previous.get(index)
        if previous is None or previous.flat.shape[1] != weights.shape[1]:
            return delta
        pairs = [(i, previous.rows[e]) for i, e in enumerate(ids) if e in previous.rows]
        if pairs:
            now = torch.tensor([i for i, _ in pairs], dtype=torch.long, device=weights.device)
            then = torch.tensor([j for _, j in pairs], dtype=torch.long, device=weights.device)
            change = weights.index_select(0, now) - previous.flat.index_select(0, then)
            delta.index_copy_(0, now, change.norm(dim=1))
        return delta

    def _expert_rows(self, ids: Sequence[str], v: _LayerValues) -> dict[str, dict[str, float]]:
        dispatch = _normalized([v.coact[i][i] for i in range(len(ids))])
        gate = _normalized([math.fsum(row) for row in v.mass])
        shares = gate if self.share == "gate" else dispatch
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
                    row[f"coact.{other}"] = v.coact[i][j] / self.tokens if self.tokens else 0.0
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


def _square(flat: Sequence[float], width: int) -> list[list[float]]:
    return [list(flat[i : i + width]) for i in range(0, len(flat), width)]


def _cells(
    indices: torch.Tensor, weights: torch.Tensor, types: torch.Tensor, capacity: int, num_types: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the counter cells each token adds to, and what it adds there.

    Pairs: a token routed to slots {a, b} adds 1 to cells (a,a), (a,b), (b,a) and (b,b). Mass:
    it adds its gate weight for a (in units of 1 / MASS_UNIT) to cell (a, its type). Unused
    top-k positions (-1) add 0.
    """
    valid = indices >= 0
    slots = indices.clamp(min=0)
    pair_cells = slots[:, :, None] * capacity + slots[:, None, :]
    hits = (valid[:, :, None] & valid[:, None, :]).long()
    mass_cells = slots * num_types + types[:, None]
    mass = torch.round(weights.float() * MASS_UNIT).long() * valid
    return pair_cells.reshape(-1), hits.reshape(-1), mass_cells.reshape(-1), mass.reshape(-1)


def _flat_weights(layer: RoutedLayer) -> torch.Tensor:
    """Return [capacity, n]: each slot's expert parameters flattened, in sorted name order."""
    params = layer.expert_parameters()
    capacity = layer.capacity
    return torch.cat([params[name].detach().reshape(capacity, -1) for name in sorted(params)], dim=1)
