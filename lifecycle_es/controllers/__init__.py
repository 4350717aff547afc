"""Controllers: turn a run's registry and observed metrics into lifecycle events.

`ExpertCoordinator` runs the Mixture-of-Experts expert lifecycle of seeds/002 (spawn, prune,
split and merge with patience, cooldowns, budgets and basin similarity) under a
`ExpertCoordinatorConfig`; `expert_id` names the experts it creates and `parse_expert_id` reads
such a name back. `CHECKPOINT_STEP` is the metric its layer observations carry (the step of the
checkpoint), which marks them as the coordinator's; `REVIVAL` prefixes the layer metric of a
parked expert's affinity, which revives it.
"""

from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._expert_ids import expert_id, parse_expert_id
from lifecycle_es.controllers._revive import REVIVAL
from lifecycle_es.controllers._signals import BREADTH, CHECKPOINT_STEP
from lifecycle_es.controllers.expert import ExpertCoordinator

__all__ = [
    "BREADTH",
    "CHECKPOINT_STEP",
    "REVIVAL",
    "ExpertCoordinator",
    "ExpertCoordinatorConfig",
    "expert_id",
    "parse_expert_id",
]
