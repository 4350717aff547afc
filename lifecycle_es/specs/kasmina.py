"""The `kasmina` spec: esperlite's 11-state seed lifecycle (Kasmina Phase 2, branch RC1).

The table is `StateTransition.VALID_TRANSITIONS` of
`src/esper/morphogenetic_v2/lifecycle/extended_lifecycle.py`, and only that one: the repository
holds two other tables that disagree with it (reference/seed-projects.md section 1.4). The
minimum epochs in state are `MIN_EPOCHS_IN_STATE`; every edge into ROLLED_BACK skips them, as
`validate_transition` does, while edges into CULLED and CANCELLED do not. The four per-edge
metric checks of `validate_transition` are the gates `kasmina.*` of the gate library.

Embargo comes from the Kasmina design (`kasmina.md` section 5): a CULLED seed's slot "will not
allow germination ... until an embargo period ... has passed". CULLED and ROLLED_BACK (a graft
that hurt) are the spec's embargo states. Both are terminal, so a slot grows again only through a
new seed, and registering one into an embargoed slot is refused until the cooldown ends; the
table itself stays esperlite's, with no extra gate.
"""

from __future__ import annotations

from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["KASMINA_SPEC", "KasminaState"]


class KasminaState(SpecState):
    """A Kasmina seed's state; the codes 0..10 are `ExtendedLifecycle`'s values."""

    DORMANT = "DORMANT"
    GERMINATED = "GERMINATED"
    TRAINING = "TRAINING"
    GRAFTING = "GRAFTING"
    STABILIZATION = "STABILIZATION"
    EVALUATING = "EVALUATING"
    FINE_TUNING = "FINE_TUNING"
    FOSSILIZED = "FOSSILIZED"
    CULLED = "CULLED"
    CANCELLED = "CANCELLED"
    ROLLED_BACK = "ROLLED_BACK"


_S = KasminaState
_C = StateCategory
_ROLLBACK = "emergency revert; like esperlite's validator it skips the minimum epochs in state"

_STATES = (
    state(_S.DORMANT, _C.INITIAL, description="monitoring only, no active computation"),
    state(_S.GERMINATED, _C.TRANSITIONAL, description="queued for training, awaiting resources"),
    state(_S.TRAINING, _C.ACTIVE, min_time_in_state=100, description="self-supervised learning phase"),
    state(
        _S.GRAFTING,
        _C.ACTIVE,
        min_time_in_state=50,
        description="blending into the network via an alpha ramp",
    ),
    state(
        _S.STABILIZATION,
        _C.TRANSITIONAL,
        min_time_in_state=20,
        description="network settling after integration",
    ),
    state(_S.EVALUATING, _C.TRANSITIONAL, min_time_in_state=30, description="performance validation phase"),
    state(_S.FINE_TUNING, _C.ACTIVE, min_time_in_state=50, description="task-specific optimisation"),
    state(_S.FOSSILIZED, _C.SUCCESS, terminal=True, description="permanently integrated, read-only"),
    state(
        _S.CULLED,
        _C.FAILURE,
        terminal=True,
        embargo=True,
        description="failed adaptation, marked for removal",
    ),
    state(
        _S.CANCELLED,
        _C.FAILURE,
        terminal=True,
        description="cancelled by the user or the system before completion",
    ),
    state(
        _S.ROLLED_BACK,
        _C.ERROR,
        terminal=True,
        embargo=True,
        description="emergency revert; kept for reporting while training restores a checkpoint",
    ),
)

_TRANSITIONS = (
    edge(_S.DORMANT, _S.GERMINATED, "germinate", description="a seed is chosen to grow"),
    edge(
        _S.GERMINATED, _S.TRAINING, "start_training", description="resources are granted and training begins"
    ),
    edge(
        _S.GERMINATED,
        _S.CANCELLED,
        "cancel",
        description="the germination is cancelled before training (cancel_germination)",
    ),
    edge(
        _S.TRAINING,
        _S.GRAFTING,
        "graft",
        gates=("kasmina.reconstruction",),
        description="the seed reconstructs its target well enough to be blended in",
    ),
    edge(_S.TRAINING, _S.CULLED, "cull", description="training failed to produce a useful seed"),
    edge(_S.TRAINING, _S.CANCELLED, "cancel", description="training is cancelled"),
    edge(
        _S.GRAFTING,
        _S.STABILIZATION,
        "stabilize",
        description="the alpha ramp completed; the network settles",
    ),
    edge(_S.GRAFTING, _S.ROLLED_BACK, "rollback", skip_min_time=True, description=_ROLLBACK),
    edge(
        _S.STABILIZATION,
        _S.EVALUATING,
        "evaluate",
        description="the network settled; the seed's effect is measured",
    ),
    edge(_S.STABILIZATION, _S.ROLLED_BACK, "rollback", skip_min_time=True, description=_ROLLBACK),
    edge(
        _S.EVALUATING,
        _S.FINE_TUNING,
        "fine_tune",
        gates=("kasmina.positive_evaluation",),
        description="the evaluation is positive and stable",
    ),
    edge(
        _S.EVALUATING,
        _S.CULLED,
        "cull",
        gates=("kasmina.negative_evaluation",),
        description="the evaluation shows harm or too many errors",
    ),
    edge(_S.EVALUATING, _S.ROLLED_BACK, "rollback", skip_min_time=True, description=_ROLLBACK),
    edge(
        _S.FINE_TUNING,
        _S.FOSSILIZED,
        "fossilize",
        gates=("kasmina.improvement",),
        description="fine-tuning gave a stable improvement; the seed becomes permanent",
    ),
    edge(_S.FINE_TUNING, _S.CULLED, "cull", description="fine-tuning failed to help"),
    edge(_S.FINE_TUNING, _S.ROLLED_BACK, "rollback", skip_min_time=True, description=_ROLLBACK),
)

KASMINA_SPEC = Spec(
    name="kasmina",
    states=_STATES,
    transitions=_TRANSITIONS,
    initial=(_S.DORMANT.value,),
    description="esperlite RC1 Kasmina seed lifecycle: 11 states, the 16 edges of "
    "StateTransition.VALID_TRANSITIONS, minimum epochs in state and four metric validators",
)
"""The Kasmina seed lifecycle."""
