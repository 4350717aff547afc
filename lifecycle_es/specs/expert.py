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

The vocabulary the coordinator (which writes decisions) and expert surgery (which applies
them to a model) share is defined here, once: the states whose experts route tokens, the
spawn init strategies and their defaults, and the shape of each action's
`metrics_at_decision` and of the part of `config_snapshot` that surgery reads.
"""

# No `from __future__ import annotations` here: Python 3.11 sees NotRequired only in evaluated
# annotations, and the TypedDicts' required keys are checked at run time.
from typing import Literal, NotRequired, TypedDict, get_args

from lifecycle_es.spec import Spec, StateCategory
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = [
    "DEFAULT_INIT_STRATEGY",
    "DEFAULT_PERTURBATION",
    "EXPERT_SPEC",
    "INIT_STRATEGIES",
    "ROUTING_STATES",
    "BasinGoneMetrics",
    "ExpertState",
    "FailedSplitMetrics",
    "InitStrategy",
    "MergeMetrics",
    "PruneMetrics",
    "ReviveMetrics",
    "SpawnMetrics",
    "SplitMetrics",
    "SurgerySettings",
]


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
    edge(
        _S.ARCHIVED,
        _S.ACTIVE,
        "revive",
        description="drawn: rare revival from the archive, when inputs like its basin return "
        "and its weights are still parked",
    ),
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


ROUTING_STATES: frozenset[ExpertState] = frozenset({_S.COOLING, _S.ACTIVE, _S.DORMANT})
"""The states whose experts take part in routing (a dormant expert routes, with a share near 0)."""

InitStrategy = Literal["random", "clone_and_perturb", "mean_cluster"]
"""How a spawned expert's weights start (seeds/002): random init, a perturbed clone of one
expert, or the mean of a cluster of experts plus noise."""

INIT_STRATEGIES: tuple[InitStrategy, ...] = get_args(InitStrategy)
"""Every `InitStrategy`, in the order above."""

DEFAULT_INIT_STRATEGY: InitStrategy = "clone_and_perturb"
"""seeds/002's default `spawn_init_strategy`."""

DEFAULT_PERTURBATION = 0.01
"""seeds/002's default `split_perturbation_scale`: clone noise relative to the weights' RMS."""


class SurgerySettings(TypedDict, total=False):
    """The part of a decision's `config_snapshot` that expert surgery reads (coordinator field names)."""

    spawn_init_strategy: InitStrategy
    split_perturbation_scale: float


class SpawnMetrics(TypedDict):
    """`metrics_at_decision` of a SPAWN: why the layer starved, and which slot the child takes."""

    layer_entropy: float
    layer_neff: float
    normalized_entropy: float
    starvation_duration: int
    topology_debt: float
    topology_debt_latest: float
    slot: int
    topk_saturation: NotRequired[float]
    """Recorded when the layer's top-k saturation was observed."""
    basin_breadth: NotRequired[float]
    """Recorded when the layer's basin breadth was observed."""
    cluster: NotRequired[list[str]]
    """Under `mean_cluster`: the experts whose mean the child starts from (absent: every
    routing expert of the layer)."""
    push: NotRequired[float]
    """Under `clone_and_perturb`: how far the router rows of the source expert and the child
    are pushed apart, as a split's (`SplitMetrics.push`); absent or 0: a plain perturbed clone."""
    need_level: NotRequired[float]
    """A spawn made for need (`need_payoff_fraction`): the need metric's mean over its patience."""
    need_failures: NotRequired[int]
    """The need spawns in a row before it that did not pay off."""
    need_floor: NotRequired[float]
    """The floor in force (a level an earlier need spawn did not reduce), when there was one."""
    need_floor_from: NotRequired[str]
    """The child of the failed need spawn that set `need_floor`."""


class SplitMetrics(TypedDict):
    """`metrics_at_decision` of a SPLIT: the parent's overload and the child's slot."""

    share: float
    overload_duration: int
    slot: int
    push: NotRequired[float]
    """How far surgery pushes the router rows of parent and child apart (relative to the
    parent row's norm; absent: 0, a plain perturbed clone)."""
    direction: NotRequired[list[float]]
    """The unit direction (router row length) the rows were pushed along: the main direction
    separating the inputs routed to the parent (`projections.moe.split_direction`), computed on
    the leader; absent: a seeded direction."""


class ReviveMetrics(TypedDict):
    """`metrics_at_decision` of a REVIVE: how strongly inputs like the parked expert's returned."""

    affinity: NotRequired[float]
    """The latest fraction of evaluation tokens its router row would pick first (absent when
    the training loop measured none: an expert parked as `basin_gone` revived by its types)."""
    checkpoints_returned: int
    """Checkpoints in a row with the affinity (or the departed types' share) at or above its
    threshold."""
    slot: int
    """The slot it takes back (its own)."""
    departed_types: NotRequired[list[int]]
    """An expert parked as `basin_gone`: the token types whose departure parked it."""
    type_share: NotRequired[float]
    """An expert parked as `basin_gone`: its departed types' latest share of the layer's tokens."""


class BasinGoneMetrics(TypedDict):
    """`metrics_at_decision` of a PRUNE with reason `basin_gone`: the inputs its basin held left."""

    departed_types: list[int]
    """The expert's own token types (in its basin) gone from the layer's input for
    `park_patience` checkpoints or more."""
    type_shares: list[float]
    """Each departed type's latest share of the layer's tokens (below `park_type_share_epsilon`)."""
    basin_before: dict[str, float]
    """The expert's basin (`token_type.<k>` -> fraction) at the last checkpoint its departed
    types were seen."""
    gone_fraction: float
    """The part of that basin the departed types held."""
    checkpoints_gone: int
    """Checkpoints since the departed types were last seen."""
    share: float
    """The expert's latest routing share (a load-balancing loss keeps it above zero)."""
    live_experts: int


class FailedSplitMetrics(TypedDict):
    """`metrics_at_decision` of a PRUNE with reason `failed_split`: the pair never diverged."""

    overlap: float
    """Basin overlap of parent and child at the last checkpoint of the window."""
    checkpoints_overlapping: int
    """Checkpoints in a row, after the child's cooling, with the overlap above the threshold."""
    share: float
    """The child's routing share when it is undone."""
    purpose: NotRequired[Literal["load", "breadth"]]
    """What the split was for: "load" (its parent served one token type, so the pair is judged
    by how it shares the load) or "breadth" (judged by basin overlap); absent in older logs."""
    parent_types: NotRequired[float]
    """Effective number of token types the parent served when the child was born."""
    balance: NotRequired[float]
    """A load split's balance at the last checkpoint: 2 min(share) / (sum of the pair's shares)."""
    checkpoints_unbalanced: NotRequired[int]
    """A load split's checkpoints in a row, after the child's cooling, below the balance threshold."""


class PruneMetrics(TypedDict):
    """`metrics_at_decision` of a PRUNE: how long the expert was dormant, and who is left."""

    share: float
    dormant_checkpoints: int
    live_experts: int


class MergeMetrics(TypedDict):
    """`metrics_at_decision` of a MERGE: the pair's similarity and the weights of the average."""

    cosine: float
    overlap: float
    similar_duration: int
    shares: dict[str, float]
    """Entity -> routing share of the survivor and each absorbed expert: surgery averages their
    weights in these proportions (equal weights when absent or all zero)."""
