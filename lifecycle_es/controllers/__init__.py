"""Controllers: turn a run's registry and observed metrics into lifecycle events.

`ExpertCoordinator` runs the Mixture-of-Experts expert lifecycle of seeds/002 (spawn, prune,
split and merge with patience, cooldowns, budgets and basin similarity) under a
`ExpertCoordinatorConfig`; `expert_id` names the experts it creates and `parse_expert_id` reads
such a name back. `CHECKPOINT_STEP` is the metric its layer observations carry (the step of the
checkpoint), which marks them as the coordinator's; `REVIVAL` prefixes the layer metric of a
parked expert's affinity, which revives it.

The seed controllers (seeds/000 and 001) drive `kasmina` and `module` entities with one action
vocabulary (`SeedAction`: hold, advance, prune, rollback, grow): `HeuristicController`
(seeds/000's per-state rules under a `HeuristicConfig`), `PolicyController` (a user's policy,
observation -> probabilities) and `HybridController` (the heuristic as safety net, blended by the
policy's confidence). `SeedDriver` runs one of them and records each decision, its transition
request and its reward (`get_reward`).
"""

from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import expert_id, parse_expert_id
from lifecycle_es.controllers._revive import REVIVAL
from lifecycle_es.controllers._seed_actions import ACTION_TRIGGERS, SEED_ACTIONS, SeedAction, trigger_for
from lifecycle_es.controllers._seed_view import (
    OBSERVATION_KEYS,
    SeedController,
    SeedDecision,
    SeedView,
    observation_of,
)
from lifecycle_es.controllers._signals import BREADTH, CHECKPOINT_STEP
from lifecycle_es.controllers.driver import SEED_DECISION_KEY, SeedDriver, SeedStep
from lifecycle_es.controllers.expert import ExpertCoordinator
from lifecycle_es.controllers.heuristic import HeuristicConfig, HeuristicController
from lifecycle_es.controllers.hybrid import HybridConfig, HybridController
from lifecycle_es.controllers.policy import PolicyController, PolicyFn, probabilities_of
from lifecycle_es.controllers.rewards import REWARD_TERMS, get_reward

__all__ = [
    "ACTION_TRIGGERS",
    "BREADTH",
    "CHECKPOINT_STEP",
    "OBSERVATION_KEYS",
    "REVIVAL",
    "REWARD_TERMS",
    "SEED_ACTIONS",
    "SEED_DECISION_KEY",
    "ExpertCoordinator",
    "ExpertCoordinatorConfig",
    "HeuristicConfig",
    "HeuristicController",
    "HybridConfig",
    "HybridController",
    "PolicyController",
    "PolicyFn",
    "SeedAction",
    "SeedController",
    "SeedDecision",
    "SeedDriver",
    "SeedStep",
    "SeedView",
    "expert_id",
    "get_reward",
    "observation_of",
    "parse_expert_id",
    "probabilities_of",
    "trigger_for",
]
