"""The `module` spec: the guarded module lifecycle of seeds/000, with slot recycling.

seeds/000 ("ML Lifecycle Orchestration") names eight states but draws no transition table, so
the edges below are read from its text, each for the reason given:

- DORMANT -> INSTANTIATED (`instantiate`): growth into an empty slot. Guarded by the two
  growth gates of its structural-gate section, `slot_available` and `budget_permits`, and by
  `not_embargoed`: nothing grows into a slot on cooldown, whichever entity asks.
- INSTANTIATED -> TRAINING (`start_training`): the created module starts receiving gradients.
  Nothing in the text guards it.
- TRAINING -> BLENDING (`blend`): the heuristic controller advances a training module when "trained
  enough and improving"; the gates are `minimum_epochs_trained`, `loss_improved` and
  `gradient_health` (no exploding or vanishing gradients before it touches the host).
- BLENDING -> HOLDING (`hold`): the module reaches full contribution. `no_regression` compares
  the host with its accuracy "at blend", so it guards the end of blending.
- HOLDING -> INTEGRATED (`integrate`): the module becomes permanent. Integration needs the
  strongest evidence: `consistent_improvement` (stable, not good once), `positive_contribution`
  (counterfactual test) and `contribution_above_cost`.
- TRAINING / BLENDING / HOLDING -> PRUNED (`prune`): the heuristic controller prunes on
  regression in TRAINING and BLENDING, and HOLDING is "under observation" so it can still fail.
  Ungated: removing a failing module must never be blocked.
- PRUNED -> DORMANT (`recycle`): `can_recycle` says a pruned slot "can immediately reuse".
- PRUNED -> EMBARGOED (`embargo`): "after failure, wait before retrying"; the cooldown manager
  embargoes the failed slot with exponential backoff. The controller picks this or `recycle`.
  EMBARGOED is the spec's embargo state: the backoff counts from entering it, and while it runs
  no entity is registered into the slot or grows in it (a success, INTEGRATED, resets it).
- EMBARGOED -> DORMANT (`release`): `can_recycle` allows an embargoed slot back once its
  cooldown has elapsed, which the `not_embargoed` gate checks.

seeds/000 lists PRUNED and EMBARGOED among its terminal states, yet its `can_recycle` reuses
their slots. Here the entity is the slot, so both have exits and are not terminal; INTEGRATED is
the only terminal state ("integrated modules don't recycle").
"""

from __future__ import annotations

from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["MODULE_SPEC", "ModuleState"]


class ModuleState(SpecState):
    """A module slot's state, in the declaration order of seeds/000's `ModuleState`."""

    DORMANT = "DORMANT"
    INSTANTIATED = "INSTANTIATED"
    TRAINING = "TRAINING"
    BLENDING = "BLENDING"
    HOLDING = "HOLDING"
    INTEGRATED = "INTEGRATED"
    PRUNED = "PRUNED"
    EMBARGOED = "EMBARGOED"


_S = ModuleState
_C = StateCategory
_PRUNE = "the module fails its checks here and is removed; ungated so removal is never blocked"

_STATES = (
    state(_S.DORMANT, _C.INITIAL, description="slot empty, available for a new module"),
    state(_S.INSTANTIATED, _C.INITIAL, description="module created, not yet training"),
    state(_S.TRAINING, _C.ACTIVE, description="module receiving gradients, learning"),
    state(_S.BLENDING, _C.ACTIVE, description="module output alpha-blended into the host"),
    state(_S.HOLDING, _C.ACTIVE, description="module at full contribution, under observation"),
    state(_S.INTEGRATED, _C.SUCCESS, terminal=True, description="module permanently part of the host"),
    state(
        _S.PRUNED,
        _C.FAILURE,
        description="module removed for poor performance; the slot may be reused at once",
    ),
    state(
        _S.EMBARGOED,
        _C.FAILURE,
        embargo=True,
        description="slot on cooldown after a failure, reusable once the embargo ends",
    ),
)

_TRANSITIONS = (
    edge(
        _S.DORMANT,
        _S.INSTANTIATED,
        "instantiate",
        gates=("slot_available", "budget_permits", "not_embargoed"),
        description="grow a module into the empty slot when a slot and parameter budget exist and "
        "the slot is not on cooldown",
    ),
    edge(
        _S.INSTANTIATED,
        _S.TRAINING,
        "start_training",
        description="the created module starts receiving gradients",
    ),
    edge(
        _S.TRAINING,
        _S.BLENDING,
        "blend",
        gates=("minimum_epochs_trained", "loss_improved", "gradient_health"),
        description="trained enough, improving and with healthy gradients: start blending",
    ),
    edge(_S.TRAINING, _S.PRUNED, "prune", description=_PRUNE),
    edge(
        _S.BLENDING,
        _S.HOLDING,
        "hold",
        gates=("no_regression",),
        description="the host did not regress during blending: hold at full contribution",
    ),
    edge(_S.BLENDING, _S.PRUNED, "prune", description=_PRUNE),
    edge(
        _S.HOLDING,
        _S.INTEGRATED,
        "integrate",
        gates=("consistent_improvement", "positive_contribution", "contribution_above_cost"),
        description="consistent, positive contribution above its cost: make it permanent",
    ),
    edge(_S.HOLDING, _S.PRUNED, "prune", description=_PRUNE),
    edge(
        _S.PRUNED, _S.DORMANT, "recycle", description="a pruned slot can be reused immediately (can_recycle)"
    ),
    edge(
        _S.PRUNED,
        _S.EMBARGOED,
        "embargo",
        description="after a failure the slot waits out a cooldown with exponential backoff",
    ),
    edge(
        _S.EMBARGOED,
        _S.DORMANT,
        "release",
        gates=("not_embargoed",),
        description="the embargo has elapsed, so the slot is free again (can_recycle)",
    ),
)

MODULE_SPEC = Spec(
    name="module",
    states=_STATES,
    transitions=_TRANSITIONS,
    initial=(_S.DORMANT.value,),
    description="seeds/000 module lifecycle: guarded growth, blending and integration, with "
    "slot recycling after PRUNED and after EMBARGOED",
)
"""The module lifecycle of seeds/000."""
