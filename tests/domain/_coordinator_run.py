"""A lifecycle with its expert coordinator over one layer, driven checkpoint by checkpoint."""

from __future__ import annotations

import math
from collections.abc import Mapping

from lifecycle_es import CODEC, Action, DecisionMade, GatesChecked, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import ExpertCoordinator, ExpertCoordinatorConfig
from lifecycle_es.events import EventBase, GateOutcome, gate_results

EVERY = 10
"""Training steps between two checkpoints."""

SPLIT_CONFIG = ExpertCoordinatorConfig.seeds_002(
    split_patience=2,
    cooling_period=1,
    split_cooldown_per_expert=200,
    split_divergence_window=3,
    basin_window_size=10,
    starvation_entropy_threshold=None,
    starvation_saturation_threshold=None,
    max_prunes_per_cycle=0,
)
"""seeds/002's settings made quick to split, with a short divergence window and no prunes or
starvation tests in the way: the failed-split tests script their checkpoints against it."""


class CoordinatorRun:
    """The coordinator under `config` over one layer of `slots` slots and `initial` experts."""

    def __init__(
        self, config: ExpertCoordinatorConfig, *, run_id: str, slots: int = 8, initial: int = 4
    ) -> None:
        self.run_id = run_id
        self.lc = Lifecycle(run_id=run_id, config=LifecycleConfig(metric_window=config.basin_window_size))
        self.lc.start()
        self.coordinator = ExpertCoordinator(config, {0: slots})
        self.coordinator.register_initial(self.lc, 0, initial)
        self.lc.seal(0)
        self.step = 0

    def checkpoint(
        self,
        shares: Mapping[str, float] | None = None,
        *,
        user: Mapping[str, float] | None = None,
        extra: Mapping[str, Mapping[str, float]] | None = None,
        layer_extra: Mapping[str, float] | None = None,
    ) -> list[EventBase]:
        """Observe every routing expert (share from `shares`, else an even one); decide; seal."""
        self.step += EVERY
        routing = [e.entity for e in self.lc.registry.live() if e.state in ("cooling", "active", "dormant")]
        experts = {
            e: {"share": (shares or {}).get(e, 1 / len(routing)), **(extra or {}).get(e, {})} for e in routing
        }
        found = [m["share"] for m in experts.values()]
        entropy = -math.fsum(s * math.log(s) for s in found if s > 0)
        layer = {
            "entropy": entropy,
            "n_eff": math.exp(entropy),
            "top2_share": sum(sorted(found)[-2:]),
            "dead_count": float(sum(s == 0 for s in found)),
            "n_active": float(sum(s > 0 for s in found)),
            **(layer_extra or {}),
        }
        self.lc.append(
            self.coordinator.observations(
                run_id=self.run_id, step=self.step, experts=experts, layers={0: layer}, user=user
            )
        )
        events = self.coordinator.decide(self.lc.registry, run_id=self.run_id, step=self.step)
        self.lc.append(events)
        self.lc.seal(self.step)
        return events

    def typed_checkpoint(
        self, types: Mapping[str, int | None], *, kinds: int = 4, user: Mapping[str, float] | None = None
    ) -> list[EventBase]:
        """One checkpoint where each expert of `types` answers its one token type of `kinds` (its
        basin), at even shares among those busy; None gets no tokens (its type is gone)."""
        busy = [e for e, k in types.items() if k is not None]
        shares = {e: (1 / len(busy) if k is not None else 0.0) for e, k in types.items()}
        extra = {e: {f"token_type.{j}": float(j == k) for j in range(kinds)} for e, k in types.items()}
        return self.checkpoint(shares, extra=extra, user=user)


def decisions(events: list[EventBase], action: Action | None = None) -> list[DecisionMade]:
    """The decisions among `events`, of `action` if given."""
    return [e for e in events if isinstance(e, DecisionMade) and (action is None or e.action == action)]


def gate_checks(events: list[EventBase], gate: str | None = None) -> list[tuple[str, GateOutcome]]:
    """Each gate result among `events` (of `gate` if given), with the entity it was checked on."""
    return [
        (e.entity, outcome)
        for e in events
        if isinstance(e, GatesChecked)
        for outcome in gate_results(CODEC.to_record(e))
        if gate is None or outcome.gate == gate
    ]
