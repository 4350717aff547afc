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

What the metrics are, and why `share` is gate-weighted by default, is `_basin_readout`'s
docstring; the counters are `_routing_counters`.

The tracker must be collected (or `reset`) before a surgery changes a layer's rows, since the
kept routing indices name rows; a training loop that applies surgery right after the
checkpoint, as the lifecycle does, satisfies this by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lifecycle_es.controllers import BREADTH
from lifecycle_es.errors import ConfigError, UsageError
from projections.moe._basin_readout import (
    BasinReadout,
    LayerValues,
    ShareBasis,
    basin_breadth,
    expert_rows,
    layer_metrics,
)
from projections.moe._protocol import check_layer, check_token_types
from projections.moe._routing_counters import Counters, routing_counts

__all__ = ["BasinReadout", "BasinTracker", "RoutedLayer", "ShareBasis", "basin_breadth", "layer_metrics"]


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


@dataclass(slots=True)
class _Weights:
    """A checkpoint's flattened expert weights of one layer, and each expert's row in them."""

    rows: dict[str, int]
    flat: torch.Tensor


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
        self._counters: dict[int, Counters] = {}
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
        check_token_types(token_types)
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
            counters.add(indices, weights, types.to(indices.device), self.num_types)
            self._kept[index].clear()
        self._types.clear()

    def _layer_counters(self, index: int, capacity: int, device: torch.device) -> Counters:
        counters = self._counters.get(index)
        if counters is None:
            counters = self._counters[index] = Counters.zeros(capacity, self.num_types, device)
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
            rows = expert_rows(list(routing.values()), values, self.share, self.tokens)
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

    def _layer_values(self, index: int, layer: RoutedLayer, routing: Mapping[int, str]) -> LayerValues:
        """Compute a layer's numbers on its device, then bring them over in one transfer."""
        ids, n, types = list(routing.values()), len(routing), self.num_types
        flat = _flat_weights(layer)
        rows = torch.tensor(list(routing), dtype=torch.long, device=flat.device)
        weights = flat.index_select(0, rows).float()
        coact, mass = routing_counts(self._counters.get(index), layer.capacity, rows, self.num_types)
        norms = weights.norm(dim=1)
        cosine = (weights @ weights.t()) / (norms[:, None] * norms[None, :]).clamp_min(1e-12)
        deltas = self._deltas(index, ids, weights)
        self._previous[index] = _Weights(rows={e: i for i, e in enumerate(ids)}, flat=weights)
        packed = torch.cat([t.reshape(-1).double() for t in (coact, mass, norms, deltas, cosine)])
        v = packed.tolist()  # the one host transfer of this layer
        cut = [0, n * n, n * n + n * types, n * n + n * types + n, n * n + n * types + 2 * n]
        return LayerValues(
            coact=_square(v[cut[0] : cut[1]], n),
            mass=_square(v[cut[1] : cut[2]], types),
            norms=v[cut[2] : cut[3]],
            deltas=v[cut[3] : cut[4]],
            cosine=_square(v[cut[4] :], n),
        )

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


def _square(flat: Sequence[float], width: int) -> list[list[float]]:
    return [list(flat[i : i + width]) for i in range(0, len(flat), width)]


def _flat_weights(layer: RoutedLayer) -> torch.Tensor:
    """Return [capacity, n]: each slot's expert parameters flattened, in sorted name order."""
    params = layer.expert_parameters()
    capacity = layer.capacity
    return torch.cat([params[name].detach().reshape(capacity, -1) for name in sorted(params)], dim=1)
