"""Basin-driven parking: an expert whose inputs left the layer is parked until they return.

Under a load-balancing loss no expert goes idle when its data leaves: the loss feeds it other
tokens, and by the time its data returns it has been trained on something else. So an active
expert whose basin (its `token_type.<k>` distribution) was mostly made of token types that
have since left the layer's input is parked: a PRUNE with reason `basin_gone`, which surgery
applies like a `confirmed_dead` one (weights and optimizer moments kept under `park_budget`),
taking it out of routing (seeds/002's archived state), where nothing can overwrite it.
`_revive.Revivals` brings it back, through archived -> active, when the departed types' share
of the layer's tokens returns (or its `revival:<id>` affinity does).

Everything is read from the registry's metric windows, so replay and what-if decide the same.
A layer's share of type k at a checkpoint is the sum over its live experts of share x
`token_type.<k>` (with gate shares, each token is one unit of routing, so this is the fraction
of the layer's tokens of type k); an expert archived since contributes nothing to the past
checkpoints it was observed at, which only lowers the shares of types that were present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._signals import SHARE, TOKEN_TYPE
from lifecycle_es.events import Action, GateCategory
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs.expert import EXPERT_SPEC, BasinGoneMetrics, ExpertState

__all__ = ["BASIN_GONE", "BasinParks", "DepartedBasin", "departed_share", "returned_types", "type_shares"]

BASIN_GONE = "basin_gone"
"""The reason of a PRUNE that parks an active expert whose inputs left (and of its moves' metadata)."""
S = ExpertState


@dataclass(frozen=True, slots=True)
class DepartedBasin:
    """What parks or keeps an expert: its types that left, its basin at the last checkpoint it was
    routed while they were present, the part of it they held, and checkpoints since they left."""

    types: tuple[int, ...]
    basin: dict[str, float]
    gone_fraction: float
    checkpoints_gone: int


def type_shares(registry: Registry, layer: int) -> list[dict[int, float]]:
    """Return the layer's share of each token type at each checkpoint of its window, oldest first."""
    length = len(registry.metric_window(layer, "entropy", layer=True))
    parts: list[dict[int, list[float]]] = [{} for _ in range(length)]
    experts = sorted(e.entity for e in registry.live() if e.spec == EXPERT_SPEC.name and e.layer == layer)
    for entity in experts:
        shares = registry.metric_window(entity, SHARE)
        for name in sorted(registry.latest_metrics(entity)):
            if not name.startswith(TOKEN_TYPE):
                continue
            basin, k = registry.metric_window(entity, name), int(name[len(TOKEN_TYPE) :])
            for back in range(1, min(len(shares), len(basin), length) + 1):
                parts[-back].setdefault(k, []).append(shares[-back] * basin[-back])
    return [{k: math.fsum(v) for k, v in sorted(cp.items())} for cp in parts]


def departed_share(series: Sequence[dict[int, float]], types: Sequence[int]) -> tuple[float, ...]:
    """Return the share of the layer's tokens `types` together made up at each checkpoint."""
    return tuple(math.fsum(cp.get(k, 0.0) for k in types) for cp in series)


def departed_types(series: Sequence[dict[int, float]], config: ExpertCoordinatorConfig) -> tuple[int, ...]:
    """Return the types present earlier in the window and gone for the last `park_patience` checkpoints."""
    n, eps = config.park_patience, config.park_type_share_epsilon
    if len(series) <= n:
        return ()
    known = sorted({k for cp in series for k in cp})
    return tuple(
        k
        for k in known
        if all(cp.get(k, 0.0) < eps for cp in series[-n:])
        and any(cp.get(k, 0.0) >= eps for cp in series[:-n])
    )


def returned_types(
    series: Sequence[dict[int, float]], config: ExpertCoordinatorConfig, within: int
) -> dict[int, int]:
    """Return each type back for at most `within` checkpoints, with how many it has been back.

    A type is back when it is present now (the checkpoint of its return counts as 1), was absent
    for at least `park_patience` checkpoints in a row just before (it had departed) and was
    present before that, all within `series` (the layer's window).
    """
    eps, n, found = config.park_type_share_epsilon, config.park_patience, {}
    for k in sorted({k for cp in series for k in cp}):
        present = [cp.get(k, 0.0) >= eps for cp in series]
        back = len(present)
        while back > 0 and present[back - 1]:
            back -= 1
        left = back
        while left > 0 and not present[left - 1]:
            left -= 1
        if back < len(present) and left > 0 and back - left >= n and len(present) - back <= within:
            found[k] = len(present) - back
    return found


def departed_basin(
    registry: Registry, e: EntityState, series: Sequence[dict[int, float]], config: ExpertCoordinatorConfig
) -> DepartedBasin | None:
    """Return what departed from `e`'s basin, or None when its inputs did not leave while it had them.

    Its basin is read at the last checkpoint it was routed while a departed type was still in
    the input: for an active expert, the last one they were seen at; for one that went idle as
    they left, the last one it had tokens at. Only its own departed types count, and only if
    they left within `park_patience` checkpoints of that one: an expert that went idle while its
    types were still in the input (served by another) is dead, whatever left later.
    """
    gone = departed_types(series, config)
    shares = registry.metric_window(e.entity, SHARE)
    offset = len(series) - len(shares)  # the expert's window ends at the same checkpoint
    seen = _last_routed_with(series, shares, gone, config) if gone else None
    if seen is None:
        return None
    basin = {}
    for name in sorted(registry.latest_metrics(e.entity)):
        window = registry.metric_window(e.entity, name)
        if name.startswith(TOKEN_TYPE) and len(window) == len(shares):
            basin[name] = window[seen - offset]
    mine = tuple(k for k in gone if basin.get(f"{TOKEN_TYPE}{k}", 0.0) > 0.0)
    eps = config.park_type_share_epsilon
    last = max((i for i, cp in enumerate(series) if any(cp.get(k, 0.0) >= eps for k in mine)), default=None)
    if last is None or last - seen > config.park_patience:
        return None
    fraction = math.fsum(basin[f"{TOKEN_TYPE}{k}"] for k in mine)
    return DepartedBasin(mine, basin, fraction, len(series) - 1 - last)


def _last_routed_with(
    series: Sequence[dict[int, float]],
    shares: Sequence[float],
    gone: Sequence[int],
    config: ExpertCoordinatorConfig,
) -> int | None:
    """Return the last checkpoint (index into `series`) the expert was routed while a type of
    `gone` was in the input, or None if there is none in its window."""
    offset, eps = len(series) - len(shares), config.park_type_share_epsilon
    for i in range(len(series) - 1, max(offset, 0) - 1, -1):
        if shares[i - offset] >= config.dormant_share_epsilon and any(
            series[i].get(k, 0.0) >= eps for k in gone
        ):
            return i
    return None


@dataclass(frozen=True, slots=True)
class BasinParks:
    """The basin-driven parking phase of one evaluation (after the prunes of dead experts)."""

    config: ExpertCoordinatorConfig
    capacity: dict[int, int]
    batch: Batch

    def run(self) -> None:
        """Park every active expert whose basin was mostly made of types that left the input."""
        cfg = self.config
        if cfg.park_basin_gone_share is None or cfg.park_budget == 0:
            return
        for layer in sorted(self.capacity):
            series = type_shares(self.batch.registry, layer)
            for e in self._active(layer):
                departed = departed_basin(self.batch.registry, e, series, cfg)
                if departed is not None and departed.gone_fraction >= cfg.park_basin_gone_share:
                    self._park(e, layer, departed, series[-1])

    def _active(self, layer: int) -> list[EntityState]:
        registry = self.batch.registry
        found = [e for e in registry.live() if e.spec == EXPERT_SPEC.name and e.layer == layer]
        return sorted((e for e in found if e.state == S.ACTIVE), key=lambda e: (e.slot or 0, e.entity))

    def _park(self, e: EntityState, layer: int, departed: DepartedBasin, latest: dict[int, float]) -> None:
        cfg, registry = self.config, self.batch.registry
        threshold = cfg.park_basin_gone_share
        assert threshold is not None
        shares = registry.metric_window(e.entity, SHARE)
        gone = checks.count(departed.checkpoints_gone, "checkpoint")
        gates = [
            Check(
                "park.basin_gone",
                GateCategory.PERFORMANCE,
                True,
                f"types {list(departed.types)}, gone for {gone}, held "
                f"{departed.gone_fraction:.3g} of its basin, threshold {threshold:g}",
                {"gone_fraction": departed.gone_fraction, "checkpoints_gone": departed.checkpoints_gone},
                {"park_basin_gone_share": threshold, "park_patience": cfg.park_patience},
            ),
            checks.floor(registry, cfg, "park.population_floor", layer),
            checks.budget(registry, "park.budget", Action.PRUNE, cfg.max_prunes_per_cycle),
        ]
        if not self.batch.checks(e.entity, e.state, S.PENDING_PRUNE, gates):
            return
        types = list(departed.types)
        self.batch.decide(
            Action.PRUNE,
            layer=layer,
            entity=e.entity,
            target=e.entity,
            reason=BASIN_GONE,
            metrics=BasinGoneMetrics(
                departed_types=types,
                type_shares=[latest.get(k, 0.0) for k in types],
                basin_before=departed.basin,
                gone_fraction=departed.gone_fraction,
                checkpoints_gone=departed.checkpoints_gone,
                share=shares[-1],
                live_experts=checks.live(registry, layer),
            ),
        )
        metadata = {"parked": BASIN_GONE, "departed_types": types}
        self.batch.move(e.entity, S.PENDING_PRUNE, "its basin's inputs left: parked", metadata)
