"""One evaluation of the expert coordinator: upkeep, failed splits, prune, merge, split, revive, spawn.

Upkeep comes first so every action sees this checkpoint's states (an expert that just went
dormant is no merge candidate, one whose cooling just ended may split). Removals come before
additions so a spawn counts the experts a prune or merge just took out of the layer.

Patience counts checkpoints, not steps, and an expert is judged only on the checkpoints
observed in its current state: a cooling expert's grace period, a dormant expert's wait for
pruning, and the overload or convergence of an active one all start over when it changes state,
so nothing seen during cooling counts against an expert once it is active.

A *candidate* is an expert, pair or layer whose trigger signal held on at least one of its
last `patience` checkpoints. Every gate of every candidate is evaluated, and a candidate's gates
are recorded together as one `GatesChecked` (signals first, then the structural limits), so the
log shows each action's run-up, what held it back, and a signal that faded; experts showing no
sign of a trigger record nothing.
An action is taken when all its gates pass, and its events follow its gate checks: the children
it creates are registered (so every id a decision names exists when it is folded), then the
`DecisionMade`, then the state moves it causes. A spawn's checks are recorded on the id the
child would get, with an empty `from_state` (it does not exist yet); a split's on its parent,
whose state does not change.

Left alone: experts of layers not in `capacity`, and `pending_spawn` experts the coordinator did
not create in the same evaluation (it cannot know their weights exist). Revival of parked
experts is `_revive.Revivals`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._basin_park import BasinParks
from lifecycle_es.controllers._batch import Batch, Check
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import expert_id, parse_expert_id
from lifecycle_es.controllers._failed_split import judge_split
from lifecycle_es.controllers._need import need_payoff
from lifecycle_es.controllers._revive import Revivals, parked_metadata, reserved_slots
from lifecycle_es.controllers._signals import (
    BREADTH,
    COACT,
    CONTRIBUTION,
    SHARE,
    USER,
    LayerSignal,
    checkpoints_since,
    layer_signal,
    mean,
    pair_cosine,
    pair_series,
    pair_window,
    starvation_thresholds,
)
from lifecycle_es.events import Action, EventBase, GateCategory
from lifecycle_es.policies import patience, streak
from lifecycle_es.registry import EntityState
from lifecycle_es.specs.expert import (
    EXPERT_SPEC,
    ROUTING_STATES,
    ExpertState,
    MergeMetrics,
    PruneMetrics,
    SpawnMetrics,
    SplitMetrics,
)

__all__ = ["Evaluation"]

S = ExpertState
PERF, STAB, STRUCT = GateCategory.PERFORMANCE, GateCategory.STABILITY, GateCategory.STRUCTURAL
"""The categories of signal checks (performance, stability) and of limits (structural)."""


@dataclass(frozen=True, slots=True)
class _Pair:
    """Two active experts of a layer whose convergence is being judged."""

    a: EntityState
    b: EntityState
    cosine: tuple[float, ...]
    overlap: tuple[float, ...]


class Evaluation:
    """The work of one `decide` call; `run()` returns its events in append order."""

    def __init__(self, config: ExpertCoordinatorConfig, capacity: dict[int, int], batch: Batch) -> None:
        self.config = config
        self.capacity = capacity
        self.batch = batch
        self.step = batch.stamp.step

    def run(self) -> list[EventBase]:
        """Evaluate every phase against the scratch registry; return the events made."""
        revivals = Revivals(self.config, self.capacity, self.batch).run
        phases = (
            self._upkeep,
            self._failed_splits,
            self._prunes,
            BasinParks(self.config, self.capacity, self.batch).run,
            self._merges,
            self._splits,
            revivals,
            self._spawns,
        )
        for phase in phases:
            phase()
        return self.batch.events

    # -- reading the scratch registry ----------------------------------------------------------

    def _experts(self, states: Iterable[str], layer: int | None = None) -> list[EntityState]:
        wanted = frozenset(states)  # live states only: archived experts are never asked for
        found = [
            e
            for e in self.batch.registry.live()
            if e.spec == EXPERT_SPEC.name
            and e.layer in self.capacity
            and e.state in wanted
            and (layer is None or e.layer == layer)
        ]
        return sorted(found, key=_position)

    def _shares(self, e: EntityState) -> tuple[float, ...]:
        return self.batch.registry.metric_window(e.entity, SHARE)

    def _latest_share(self, e: EntityState) -> float | None:
        shares = self._shares(e)
        return shares[-1] if shares else None

    def _in_state(self, e: EntityState) -> int:
        """Return how many checkpoints have observed the expert in its current state."""
        if not e.history:  # never moved: every observation of it was made in this state
            return len(self._shares(e))
        return checkpoints_since(self.batch.registry, e.layer, e.entered_step)

    def _shares_in_state(self, e: EntityState) -> tuple[float, ...]:
        shares, k = self._shares(e), self._in_state(e)
        return shares[max(0, len(shares) - k) :] if k else ()

    def _is_zero(self, share: float) -> bool:
        return share < self.config.dormant_share_epsilon

    def _state(self, entity: str) -> str:
        return self.batch.registry.get(entity).state

    def _free_slot(self, layer: int) -> int | None:
        """Return the layer's first free slot, one no parked expert wants back first."""
        registry = self.batch.registry
        slots = range(self.capacity[layer])
        free = [s for s in slots if registry.slot_holder(EXPERT_SPEC.name, layer, s) is None]
        wanted = reserved_slots(registry, layer, self.config.park_budget)
        return min(free, key=lambda s: (s in wanted, s), default=None)

    def _next_id(self, layer: int) -> str:
        taken = [
            parsed[1]
            for e in self.batch.registry
            if e.layer == layer and (parsed := parse_expert_id(e.entity)) and parsed[0] == layer
        ]
        return expert_id(layer, max(taken, default=-1) + 1)

    # -- upkeep: the state moves no action causes ----------------------------------------------

    def _upkeep(self) -> None:
        cfg = self.config
        for e in self._experts((S.PENDING_PRUNE, S.COOLING, S.ACTIVE, S.DORMANT)):
            latest = self._latest_share(e)
            if e.state == S.PENDING_PRUNE:
                waited = self.step - e.entered_step
                self._move_if(
                    e,
                    S.ARCHIVED,
                    "removed after its scheduled removal was applied",
                    parked_metadata(e),
                    Check(
                        "expert.removal_applied",
                        STRUCT,
                        waited >= 1,
                        f"scheduled for removal {checks.count(waited, 'step')} ago; it applies 1 step after",
                        {"steps_scheduled": waited},
                        {"min_steps": 1},
                    ),
                )
            elif e.state == S.COOLING:
                merged = bool(e.history) and e.history[-1][1] == S.ACTIVE
                period = cfg.merge_cooling_period if merged else cfg.cooling_period
                spent = self._in_state(e)
                self._move_if(
                    e,
                    S.ACTIVE,
                    "grace period expired",
                    None,
                    Check(
                        "expert.grace_period",
                        STRUCT,
                        spent >= period,
                        f"{checks.count(spent, 'checkpoint')} of {period} in cooling",
                        {"checkpoints_cooling": spent},
                        {"cooling_period": period},
                    ),
                )
            elif e.state == S.ACTIVE and latest is not None and self._is_zero(latest):
                self._move_if(
                    e,
                    S.DORMANT,
                    "routing share fell to zero",
                    None,
                    Check(
                        "expert.zero_share",
                        PERF,
                        True,
                        f"share {latest:.3g} < {cfg.dormant_share_epsilon:g}",
                        {SHARE: latest},
                        {"dormant_share_epsilon": cfg.dormant_share_epsilon},
                    ),
                )
            elif e.state == S.DORMANT and latest is not None and not self._is_zero(latest):
                self._move_if(
                    e,
                    S.ACTIVE,
                    "receives tokens again",
                    None,
                    Check(
                        "expert.recovered_share",
                        PERF,
                        True,
                        f"share {latest:.3g} >= {cfg.dormant_share_epsilon:g}",
                        {SHARE: latest},
                        {"dormant_share_epsilon": cfg.dormant_share_epsilon},
                    ),
                )

    def _move_if(
        self, e: EntityState, to: ExpertState, reason: str, metadata: dict[str, Any] | None, check: Check
    ) -> None:
        if self.batch.checks(e.entity, e.state, to, [check]):
            self.batch.move(e.entity, to, reason, metadata)

    # -- failed splits -------------------------------------------------------------------------

    def _failed_splits(self) -> None:
        """Undo the clone children that did not diverge from their parent within the window."""
        cfg = self.config
        for child in self._experts((S.ACTIVE,)):
            parent = self.batch.registry.get(child.parent) if child.parent else None
            young = self.step - child.born_step < cfg.split_cooldown_per_expert
            if parent is None or parent.state != S.ACTIVE or not young:
                continue
            n = min(cfg.split_divergence_window, self._in_state(child))
            judge_split(cfg, self.batch, parent, child, n)

    # -- prune ---------------------------------------------------------------------------------

    def _prunes(self) -> None:
        cfg, registry = self.config, self.batch.registry
        for e in self._experts((S.DORMANT,)):
            assert e.layer is not None
            shares = self._shares_in_state(e)
            held = streak(shares, self._is_zero)
            gates = [
                Check(
                    "prune.dormant_patience",
                    PERF,
                    patience(shares, cfg.prune_patience, self._is_zero),
                    f"dormant without tokens for {checks.count(held, 'checkpoint')}, "
                    f"patience {cfg.prune_patience}",
                    {"checkpoints_dormant": held},
                    {"prune_patience": cfg.prune_patience},
                ),
                *self._prune_needs(e),
                checks.floor(registry, cfg, "prune.population_floor", e.layer),
                checks.budget(registry, "prune.budget", Action.PRUNE, cfg.max_prunes_per_cycle),
            ]
            if self.batch.checks(e.entity, e.state, S.PENDING_PRUNE, gates):
                self.batch.decide(
                    Action.PRUNE,
                    layer=e.layer,
                    entity=e.entity,
                    target=e.entity,
                    reason="confirmed_dead",
                    metrics=PruneMetrics(
                        share=shares[-1],
                        dormant_checkpoints=held,
                        live_experts=checks.live(registry, e.layer),
                    ),
                )
                self.batch.move(e.entity, S.PENDING_PRUNE, "confirmed dead")

    def _prune_needs(self, e: EntityState) -> list[Check]:
        """Return the prune's need checks: low contribution, and an initial expert's grace."""
        cfg, found = self.config, []
        contribution = self.batch.registry.metric_window(e.entity, CONTRIBUTION)
        if contribution:
            found.append(
                Check(
                    "prune.low_contribution",
                    PERF,
                    contribution[-1] <= cfg.prune_contribution_threshold,
                    f"masking it raises the loss by {contribution[-1]:.3g}, "
                    f"threshold {cfg.prune_contribution_threshold:g}",
                    {CONTRIBUTION: contribution[-1]},
                    {"prune_contribution_threshold": cfg.prune_contribution_threshold},
                )
            )
        if e.parent is None and e.born_step == 0 and cfg.prune_init_grace:
            seen = checkpoints_since(self.batch.registry, e.layer, 0)
            found.append(
                Check(
                    "prune.init_grace",
                    STRUCT,
                    seen >= cfg.prune_init_grace,
                    f"{checks.count(seen, 'checkpoint')} since the run began, grace {cfg.prune_init_grace}",
                    {"checkpoints_since_start": seen},
                    {"prune_init_grace": cfg.prune_init_grace},
                )
            )
        return found

    # -- merge ---------------------------------------------------------------------------------

    def _merges(self) -> None:
        for pair in self._merge_candidates():
            if self._state(pair.a.entity) == S.ACTIVE and self._state(pair.b.entity) == S.ACTIVE:
                self._merge(pair)

    def _merge_candidates(self) -> list[_Pair]:
        cfg, registry = self.config, self.batch.registry
        found = []
        for layer in sorted(self.capacity):
            for a, b in itertools.combinations(self._experts((S.ACTIVE,), layer), 2):
                n = min(cfg.merge_patience, self._in_state(a), self._in_state(b))
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
        cfg, n, registry = self.config, self.config.merge_patience, self.batch.registry
        shares = {e.entity: self._latest_share(e) or 0.0 for e in (pair.a, pair.b)}
        # The larger share survives; on a tie the lower slot (pair.a) does.
        survivor, absorbed = (
            (pair.a, pair.b) if shares[pair.a.entity] >= shares[pair.b.entity] else (pair.b, pair.a)
        )
        assert survivor.layer is not None
        similar = _above(cfg.merge_similarity_threshold)
        overlapping = _above(cfg.merge_overlap_threshold)
        held_cos, held_ovl = streak(pair.cosine, similar), streak(pair.overlap, overlapping)
        names = f"{survivor.entity} and {absorbed.entity}"
        gates = [
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
            checks.lineage(self.step, cfg, pair.a, pair.b),
            *self._below_split(shares),
            checks.floor(registry, cfg, "merge.population_floor", survivor.layer),
            checks.budget(registry, "merge.budget", Action.MERGE, cfg.max_merges_per_cycle),
        ]
        if not self.batch.checks(absorbed.entity, S.ACTIVE, S.PENDING_PRUNE, gates):
            return
        self.batch.decide(
            Action.MERGE,
            layer=survivor.layer,
            entity=survivor.entity,
            target=survivor.entity,
            children=[absorbed.entity],
            reason="converged_basins",
            metrics=MergeMetrics(
                cosine=pair.cosine[-1],
                overlap=pair.overlap[-1],
                similar_duration=min(held_cos, held_ovl),
                shares=dict(shares),
            ),
        )
        self.batch.move(absorbed.entity, S.PENDING_PRUNE, f"merged into {survivor.entity}")
        self.batch.move(survivor.entity, S.COOLING, f"absorbed {absorbed.entity}")

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

    # -- split ---------------------------------------------------------------------------------

    def _splits(self) -> None:
        cfg = self.config
        overloaded = _above(cfg.split_share_threshold)
        candidates = [
            e
            for e in self._experts((S.ACTIVE,))
            if any(map(overloaded, self._shares_in_state(e)[-cfg.split_patience :]))
        ]
        candidates.sort(key=lambda e: (-self._shares(e)[-1], *_position(e)))
        for parent in candidates:
            self._split(parent, overloaded)

    def _split(self, parent: EntityState, overloaded: Callable[[float], bool]) -> None:
        cfg, n, registry = self.config, self.config.split_patience, self.batch.registry
        assert parent.layer is not None
        layer, shares = parent.layer, self._shares_in_state(parent)
        latest, held = shares[-1], streak(shares, overloaded)
        slot, child = self._free_slot(layer), self._next_id(layer)
        gates = [
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
            checks.cooldown(
                registry,
                self.step,
                "split.cooldown",
                Action.SPLIT,
                cfg.split_cooldown_per_expert,
                parent.entity,
            ),
            # A parent whose split failed waits a whole cooldown before it is split again.
            checks.cooldown(
                registry,
                self.step,
                "split.failed_split_cooldown",
                Action.PRUNE,
                cfg.split_cooldown_per_expert,
                parent.entity,
            ),
            checks.cap(registry, cfg, "split.layer_cap", layer),
            checks.slot("split.free_slot", layer, slot, self.capacity[layer]),
            checks.budget(registry, "split.budget", Action.SPLIT, cfg.max_splits_per_cycle),
        ]
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
                share=latest,
                overload_duration=held,
                slot=slot,
                push=cfg.split_divergence_push * min(2.0, latest / cfg.split_share_threshold),
            ),
        )
        self.batch.move(child, S.COOLING, "integrated into routing")

    # -- spawn ---------------------------------------------------------------------------------

    def _spawns(self) -> None:
        n = self.config.spawn_patience
        signals = {
            layer: layer_signal(self.batch.registry, layer, self.config) for layer in sorted(self.capacity)
        }
        candidates = [(layer, sig) for layer, sig in signals.items() if any(sig.starved[-n:])]
        # The layer with the highest unresolved topology debt first: its debt averaged over the
        # patience window, i.e. the debt the v2 lens left standing while the layer starved.
        candidates.sort(key=lambda c: (-mean(c[1].debt[-n:]), -mean(c[1].spread[-n:]), c[0]))
        for layer, sig in candidates:
            self._spawn(layer, sig)

    def _spawn(self, layer: int, sig: LayerSignal) -> None:
        cfg, n, registry = self.config, self.config.spawn_patience, self.batch.registry
        held = streak(sig.starved, bool)
        debt = mean(sig.debt[-n:])
        slot, child = self._free_slot(layer), self._next_id(layer)
        centre, cluster = self._spawn_source(layer)
        gates = [
            Check(
                "spawn.starvation_patience",
                PERF,
                patience(sig.starved, n, bool),
                f"layer {layer} starved for {checks.count(held, 'checkpoint')} in a row, patience {n}; "
                f"unresolved topology debt {debt:.3g}",
                {
                    "checkpoints_starved": held,
                    "topology_debt": debt,
                    "normalized_entropy": sig.spread[-1],
                    **sig.breadth_now(),
                    **{k: v for k, v in sig.latest.items() if k.startswith(USER)},
                },
                starvation_thresholds(self.config),
            ),
            checks.cooldown(
                registry, self.step, "spawn.cooldown", Action.SPAWN, cfg.spawn_cooldown_steps, None
            ),
            checks.cap(registry, cfg, "spawn.layer_cap", layer),
            checks.slot("spawn.free_slot", layer, slot, self.capacity[layer]),
            checks.budget(registry, "spawn.budget", Action.SPAWN, cfg.max_spawns_per_cycle),
        ]
        payoff = need_payoff(registry, layer, cfg)
        if payoff is not None:  # a spawn for need: it waits for the last one's payoff, and any floor
            gates.insert(1, payoff.check(cfg))
        if cfg.spawn_init_strategy != "random":
            gates.append(
                Check(
                    "spawn.init_source",
                    STRUCT,
                    centre is not None,
                    f"{cfg.spawn_init_strategy} copies {centre or 'no expert'}",
                    {"source_experts": len(cluster)},
                    {},
                )
            )
        if not self.batch.checks(child, "", S.PENDING_SPAWN, gates):
            return
        assert slot is not None
        parent = None if cfg.spawn_init_strategy == "random" else centre
        metrics = SpawnMetrics(
            layer_entropy=sig.latest["entropy"],
            layer_neff=sig.latest["n_eff"],
            normalized_entropy=sig.spread[-1],
            starvation_duration=held,
            topology_debt=debt,
            topology_debt_latest=sig.debt[-1],
            slot=slot,
        )
        if sig.saturation[-1] is not None:
            metrics["topk_saturation"] = sig.saturation[-1]
        if (breadth := sig.breadth_now().get(BREADTH)) is not None:
            metrics["basin_breadth"] = breadth
        if cfg.spawn_init_strategy == "mean_cluster":
            metrics["cluster"] = list(cluster)
        if cfg.spawn_init_strategy == "clone_and_perturb" and cfg.split_divergence_push:
            metrics["push"] = cfg.split_divergence_push  # a clone must divide its source's basin too
        if payoff is not None:
            payoff.record(metrics)
        self.batch.register(
            child, layer=layer, slot=slot, parent=parent, attrs=None if payoff is None else payoff.attrs()
        )
        self.batch.decide(
            Action.SPAWN,
            layer=layer,
            entity=child,
            parent=parent,
            children=[child],
            target=child,
            reason="sustained_starvation",
            metrics=metrics,
        )
        self.batch.move(child, S.COOLING, "integrated into routing")

    def _spawn_source(self, layer: int) -> tuple[str | None, list[str]]:
        """Return the layer's most loaded expert and its cluster of co-activated experts.

        The cluster is that expert plus every other routing expert whose latest co-activation
        with it is positive and at least the mean over all of them; without co-activation data,
        every routing expert of the layer.
        """
        experts = self._experts(ROUTING_STATES, layer)
        if not experts:
            return None, []
        latest = {e.entity: self._latest_share(e) or 0.0 for e in experts}
        centre = min(experts, key=lambda e: (-latest[e.entity], *_position(e))).entity
        coact = {e.entity: self._coactivation(centre, e.entity) for e in experts if e.entity != centre}
        known = {k: v for k, v in coact.items() if v is not None}
        if not known:
            return centre, [e.entity for e in experts]
        bar = mean(list(known.values()))
        return centre, [centre, *(k for k, v in known.items() if v > 0 and v >= bar)]

    def _coactivation(self, a: str, b: str) -> float | None:
        window = pair_window(self.batch.registry, COACT, a, b)
        return window[-1] if window else None


def _position(e: EntityState) -> tuple[int, int, str]:
    return (e.layer if e.layer is not None else -1, e.slot if e.slot is not None else -1, e.entity)


def _above(threshold: float) -> Callable[[float], bool]:
    return lambda value: value > threshold
