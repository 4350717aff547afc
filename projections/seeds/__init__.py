"""Seeds on a host layer: the torch side of the `kasmina` and `module` seed lifecycles.

`SeedLayer` wraps a host layer and gives each chunk of its output a seed slot running a
blueprint from a `BlueprintLibrary`; `AlphaSchedule` computes every seed's grafting alpha with
the schedules of `grafting` from folded facts, stepped with the training clock; `SeedSurgery`
folds the seeds' lifecycles into the layers and their optimizer state (germination, rollback
points, culling) under the masked or the resize strategy, the same way on every rank.
`TorchPolicy` makes a torch network the policy of a seed `PolicyController`.
"""

from projections.seeds.blueprints import Blueprint, BlueprintLibrary, default_library, low_rank, residual_mlp
from projections.seeds.grafting import (
    FACTS,
    DriftMeter,
    GraftingConfig,
    GraftingStrategy,
    GraftState,
    graft_step,
    should_abort,
)
from projections.seeds.layer import HostLayer, SeedLayer
from projections.seeds.modes import SEED_MODES, SeedMode, mode_of
from projections.seeds.policy import TorchPolicy
from projections.seeds.rollback import RollbackPoints
from projections.seeds.schedule import AlphaSchedule
from projections.seeds.surgery import Seed, SeedSurgery

__all__ = [
    "FACTS",
    "SEED_MODES",
    "AlphaSchedule",
    "Blueprint",
    "BlueprintLibrary",
    "DriftMeter",
    "GraftState",
    "GraftingConfig",
    "GraftingStrategy",
    "HostLayer",
    "RollbackPoints",
    "Seed",
    "SeedLayer",
    "SeedMode",
    "SeedSurgery",
    "TorchPolicy",
    "default_library",
    "graft_step",
    "low_rank",
    "mode_of",
    "residual_mlp",
    "should_abort",
]
