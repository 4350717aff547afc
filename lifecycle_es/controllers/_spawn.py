"""Spawn: a layer starved for `spawn_patience` checkpoints gets a new expert.

The layer with the highest unresolved topology debt spawns first. The child's checks are
recorded on the id it would get, with an empty `from_state` (it does not exist yet). Unless
`spawn_init_strategy` is random, the child starts from the layer's most loaded expert (or the
mean of its cluster of co-activated experts), which the decision names as its parent.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle_es.controllers import _checks as checks
from lifecycle_es.controllers._basin_park import returned_types, type_shares
from lifecycle_es.controllers._batch import Check
from lifecycle_es.controllers._expert_phase import PERF, STRUCT, ExpertPhase, position
from lifecycle_es.controllers._need import NeedPayoff, need_payoff
from lifecycle_es.controllers._signals import (
    BREADTH,
    COACT,
    USER,
    LayerSignal,
    layer_signal,
    mean,
    pair_window,
    starvation_thresholds,
)
from lifecycle_es.events import Action
from lifecycle_es.policies import patience, streak
from lifecycle_es.specs.expert import ROUTING_STATES, ExpertState, SpawnMetrics

__all__ = ["Spawns"]

S = ExpertState


@dataclass(frozen=True, slots=True)
class _Spawn:
    """The spawn a starved layer would make: where the child goes and what it would copy."""

    layer: int
    sig: LayerSignal
    held: int
    """Checkpoints in a row the layer has starved."""
    debt: float
    """The layer's topology debt averaged over the patience window."""
    slot: int | None
    child: str
    centre: str | None
    cluster: list[str]
    payoff: NeedPayoff | None
    """What the layer's earlier need spawns showed; None when this is no spawn for need."""


class Spawns(ExpertPhase):
    """The spawn phase of one evaluation."""

    __slots__ = ()

    def run(self) -> None:
        """Spawn into every starved layer whose gates pass, the most indebted first."""
        n = self.config.spawn_patience
        signals = {
            layer: layer_signal(self.batch.registry, layer, self.config) for layer in sorted(self.capacity)
        }
        candidates = [(layer, sig) for layer, sig in signals.items() if any(sig.starved[-n:])]
        # The layer with the highest unresolved topology debt first: its debt averaged over the
        # patience window, i.e. the debt the v2 lens left standing while the layer starved.
        candidates.sort(key=lambda c: (-mean(c[1].debt[-n:]), -mean(c[1].spread[-n:]), c[0]))
        for layer, sig in candidates:
            self._spawn(self._candidate(layer, sig))

    def _candidate(self, layer: int, sig: LayerSignal) -> _Spawn:
        centre, cluster = self._source(layer)
        return _Spawn(
            layer=layer,
            sig=sig,
            held=streak(sig.starved, bool),
            debt=mean(sig.debt[-self.config.spawn_patience :]),
            slot=self.free_slot(layer),
            child=self.next_id(layer),
            centre=centre,
            cluster=cluster,
            payoff=need_payoff(self.batch.registry, layer, self.config),
        )

    def _spawn(self, spawn: _Spawn) -> None:
        cfg = self.config
        if not self.batch.checks(spawn.child, "", S.PENDING_SPAWN, self._gates(spawn)):
            return
        assert spawn.slot is not None
        parent = None if cfg.spawn_init_strategy == "random" else spawn.centre
        attrs = None if spawn.payoff is None else spawn.payoff.attrs()
        self.batch.register(spawn.child, layer=spawn.layer, slot=spawn.slot, parent=parent, attrs=attrs)
        self.batch.decide(
            Action.SPAWN,
            layer=spawn.layer,
            entity=spawn.child,
            parent=parent,
            children=[spawn.child],
            target=spawn.child,
            reason="sustained_starvation",
            metrics=self._metrics(spawn),
        )
        self.batch.move(spawn.child, S.COOLING, "integrated into routing")

    def _gates(self, spawn: _Spawn) -> list[Check]:
        """Return the spawn's checks: starvation, any need payoff, then the structural limits."""
        cfg, n, registry = self.config, self.config.spawn_patience, self.batch.registry
        layer, sig, held = spawn.layer, spawn.sig, spawn.held
        gates = [
            Check(
                "spawn.starvation_patience",
                PERF,
                patience(sig.starved, n, bool),
                f"layer {layer} starved for {checks.count(held, 'checkpoint')} in a row, patience {n}; "
                f"unresolved topology debt {spawn.debt:.3g}",
                {
                    "checkpoints_starved": held,
                    "topology_debt": spawn.debt,
                    "normalized_entropy": sig.spread[-1],
                    **sig.breadth_now(),
                    **{k: v for k, v in sig.latest.items() if k.startswith(USER)},
                },
                starvation_thresholds(cfg),
            ),
            *self._return_grace(layer),
            checks.cooldown(
                registry, self.step, "spawn.cooldown", Action.SPAWN, cfg.spawn_cooldown_steps, None
            ),
            checks.cap(registry, cfg, "spawn.layer_cap", layer),
            checks.slot("spawn.free_slot", layer, spawn.slot, self.capacity[layer]),
            checks.budget(registry, "spawn.budget", Action.SPAWN, cfg.max_spawns_per_cycle),
        ]
        if spawn.payoff is not None:  # a spawn for need: it waits for the last one's payoff, and any floor
            gates.insert(1, spawn.payoff.check(cfg))
        if cfg.spawn_init_strategy != "random":
            gates.append(
                Check(
                    "spawn.init_source",
                    STRUCT,
                    spawn.centre is not None,
                    f"{cfg.spawn_init_strategy} copies {spawn.centre or 'no expert'}",
                    {"source_experts": len(spawn.cluster)},
                    {},
                )
            )
        return gates

    def _return_grace(self, layer: int) -> list[Check]:
        """Return the check that holds a spawn while token types that had left are coming back."""
        grace = self.config.spawn_return_grace
        back = returned_types(type_shares(self.batch.registry, layer), self.config, grace) if grace else {}
        if not back:
            return []
        return [
            Check(
                "spawn.return_grace",
                PERF,
                False,
                f"types {list(back)} back for {checks.count(min(back.values()), 'checkpoint')}, "
                f"grace {grace}: their loss is forgetting, not short capacity",
                {"types_returned": len(back), "checkpoints_back": min(back.values())},
                {"spawn_return_grace": grace},
            )
        ]

    def _metrics(self, spawn: _Spawn) -> SpawnMetrics:
        """Return the SPAWN decision's metrics: the starvation evidence and the init's source."""
        cfg, sig = self.config, spawn.sig
        assert spawn.slot is not None
        metrics = SpawnMetrics(
            layer_entropy=sig.latest["entropy"],
            layer_neff=sig.latest["n_eff"],
            normalized_entropy=sig.spread[-1],
            starvation_duration=spawn.held,
            topology_debt=spawn.debt,
            topology_debt_latest=sig.debt[-1],
            slot=spawn.slot,
        )
        if sig.saturation[-1] is not None:
            metrics["topk_saturation"] = sig.saturation[-1]
        if (breadth := sig.breadth_now().get(BREADTH)) is not None:
            metrics["basin_breadth"] = breadth
        if cfg.spawn_init_strategy == "mean_cluster":
            metrics["cluster"] = list(spawn.cluster)
        if cfg.spawn_init_strategy == "clone_and_perturb" and cfg.split_divergence_push:
            metrics["push"] = cfg.split_divergence_push  # a clone must divide its source's basin too
        if spawn.payoff is not None:
            spawn.payoff.record(metrics)
        return metrics

    def _source(self, layer: int) -> tuple[str | None, list[str]]:
        """Return the layer's most loaded expert and its cluster of co-activated experts.

        The cluster is that expert plus every other routing expert whose latest co-activation
        with it is positive and at least the mean over all of them; without co-activation data,
        every routing expert of the layer.
        """
        experts = self.experts(ROUTING_STATES, layer)
        if not experts:
            return None, []
        latest = {e.entity: self.latest_share(e) or 0.0 for e in experts}
        centre = min(experts, key=lambda e: (-latest[e.entity], *position(e))).entity
        coact = {e.entity: self._coactivation(centre, e.entity) for e in experts if e.entity != centre}
        known = {k: v for k, v in coact.items() if v is not None}
        if not known:
            return centre, [e.entity for e in experts]
        bar = mean(list(known.values()))
        return centre, [centre, *(k for k, v in known.items() if v > 0 and v >= bar)]

    def _coactivation(self, a: str, b: str) -> float | None:
        window = pair_window(self.batch.registry, COACT, a, b)
        return window[-1] if window else None
