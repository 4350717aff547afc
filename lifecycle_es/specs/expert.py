"""The `expert` spec: the Mixture-of-Experts expert lifecycle of seeds/002 (ChronoMoEv3 design).

The seven edges drawn in the design's state diagram are here as drawn. Two more come from its
merge mechanism, which the diagram does not draw: "one expert absorbs the merged weights; the
other is pruned" and "the merged expert enters a brief cooling period". So the survivor moves
active -> cooling (`absorb`) and the absorbed expert active -> pending_prune (`merge_away`), from
where it is archived like any pruned expert. Splitting adds no edge: the parent "remains active"
and the child is a new expert registered in pending_spawn.

A model's initial experts are registered straight into `active`, so the spec has two initial
states: pending_spawn (the default, for spawned and split-off experts) and active.

No edge has gates: the expert coordinator decides with patience, cooldowns and budgets.
"""

from __future__ import annotations

from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["EXPERT_SPEC", "ExpertState"]


class ExpertState(SpecState):
    """An expert's state; the values are the design's lowercase names."""

    PENDING_SPAWN = "pending_spawn"
    COOLING = "cooling"
    ACTIVE = "active"
    DORMANT = "dormant"
    PENDING_PRUNE = "pending_prune"
    ARCHIVED = "archived"


_S = ExpertState
_C = StateCategory

_STATES = (
    state(
        _S.PENDING_SPAWN, _C.INITIAL, description="new expert initialised but not yet integrated into routing"
    ),
    state(
        _S.COOLING,
        _C.TRANSITIONAL,
        description="recently spawned, split or merged; grace period before full evaluation",
    ),
    state(_S.ACTIVE, _C.ACTIVE, description="participating in routing, receiving tokens"),
    state(
        _S.DORMANT,
        _C.TRANSITIONAL,
        description="share has dropped to zero but the expert is not yet confirmed dead",
    ),
    state(
        _S.PENDING_PRUNE, _C.TRANSITIONAL, description="confirmed dead or merged away, scheduled for removal"
    ),
    state(
        _S.ARCHIVED,
        _C.FAILURE,
        description="removed from the active pool, basin history preserved; rarely revived",
    ),
)

_TRANSITIONS = (
    edge(
        _S.PENDING_SPAWN,
        _S.COOLING,
        "integrate",
        description="drawn: integrated into the routing table on the next forward pass",
    ),
    edge(_S.COOLING, _S.ACTIVE, "activate", description="drawn: the grace period expires"),
    edge(
        _S.ACTIVE,
        _S.COOLING,
        "absorb",
        description="merge: the surviving expert absorbs the merged weights and cools briefly",
    ),
    edge(_S.ACTIVE, _S.DORMANT, "go_dormant", description="drawn: its routing share fell to zero"),
    edge(_S.ACTIVE, _S.PENDING_PRUNE, "merge_away", description="merge: the absorbed expert is pruned"),
    edge(_S.DORMANT, _S.ACTIVE, "recover", description="drawn: the expert receives tokens again"),
    edge(
        _S.DORMANT,
        _S.PENDING_PRUNE,
        "confirm_dead",
        description="drawn: dormant for prune_patience checkpoints, confirmed dead",
    ),
    edge(
        _S.PENDING_PRUNE,
        _S.ARCHIVED,
        "archive",
        description="drawn: weights detached and routing slot removed; basin history kept",
    ),
    edge(_S.ARCHIVED, _S.ACTIVE, "revive", description="drawn: rare revival from the archive"),
)

EXPERT_SPEC = Spec(
    name="expert",
    states=_STATES,
    transitions=_TRANSITIONS,
    initial=(_S.PENDING_SPAWN.value, _S.ACTIVE.value),
    description="seeds/002 MoE expert lifecycle: spawn, cooling, dormancy, prune, archive and "
    "revive, plus the two edges of a merge",
)
"""The expert lifecycle of seeds/002."""
