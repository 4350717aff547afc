"""The seed controllers' one action vocabulary, and how each action maps to a spec's triggers.

Every seed controller (heuristic, policy, hybrid) speaks five actions. Each spec says which of
its triggers an action fires: the first trigger in the action's list whose edge leaves the
entity's current state. An action with no such edge asks for a move the spec does not have, and
is recorded as refused.

- hold: nothing moves, in either spec;
- advance: `kasmina` start_training, graft, stabilize, evaluate, fine_tune, fossilize;
  `module` start_training, blend, hold, integrate, recycle, release;
- prune: `kasmina` cull, cancel; `module` prune, embargo;
- rollback: `kasmina` rollback; `module` prune (the host restores its own checkpoint);
- grow: `kasmina` germinate; `module` instantiate.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from lifecycle_es.events import Action
from lifecycle_es.spec import Spec
from lifecycle_es.specs.kasmina import KASMINA_SPEC
from lifecycle_es.specs.module import MODULE_SPEC

__all__ = ["ACTION_TRIGGERS", "SEED_ACTIONS", "SeedAction", "decision_action", "trigger_for"]


class SeedAction(StrEnum):
    """What a seed controller may decide for one entity."""

    HOLD = "hold"
    ADVANCE = "advance"
    PRUNE = "prune"
    ROLLBACK = "rollback"
    GROW = "grow"


SEED_ACTIONS: tuple[SeedAction, ...] = tuple(SeedAction)
"""The actions in the order of a policy's probability vector."""

_A = SeedAction
ACTION_TRIGGERS: Mapping[str, Mapping[SeedAction, tuple[str, ...]]] = MappingProxyType(
    {
        KASMINA_SPEC.name: {
            _A.HOLD: (),
            _A.ADVANCE: ("start_training", "graft", "stabilize", "evaluate", "fine_tune", "fossilize"),
            _A.PRUNE: ("cull", "cancel"),
            _A.ROLLBACK: ("rollback",),
            _A.GROW: ("germinate",),
        },
        MODULE_SPEC.name: {
            _A.HOLD: (),
            _A.ADVANCE: ("start_training", "blend", "hold", "integrate", "recycle", "release"),
            _A.PRUNE: ("prune", "embargo"),
            _A.ROLLBACK: ("prune",),
            _A.GROW: ("instantiate",),
        },
    }
)
"""Per spec, the triggers each action may fire, tried in order from the entity's state."""

_DECISION_ACTIONS = {
    (KASMINA_SPEC.name, _A.PRUNE): Action.CULL,
    (MODULE_SPEC.name, _A.PRUNE): Action.PRUNE,
}
_DEFAULT_ACTIONS = {
    _A.HOLD: Action.HOLD,
    _A.ADVANCE: Action.ADVANCE,
    _A.PRUNE: Action.PRUNE,
    _A.ROLLBACK: Action.ROLLBACK,
    _A.GROW: Action.GERMINATE,
}


def trigger_for(spec: Spec, state: str, action: SeedAction) -> str | None:
    """Return the trigger `action` fires from `state`, the action's first one for a refusal, or None
    for hold (an action of a spec the table lacks asks for nothing either)."""
    triggers = ACTION_TRIGGERS.get(spec.name, {}).get(action, ())
    for trigger in triggers:
        if spec.edge_for_trigger(state, trigger) is not None:
            return trigger
    return triggers[0] if triggers else None


def decision_action(spec: str, action: SeedAction) -> Action:
    """Return the `DecisionMade` action recording `action` on an entity of `spec`."""
    return _DECISION_ACTIONS.get((spec, action), _DEFAULT_ACTIONS[action])
