"""`lifecycle-es demo seeds`: a small host network that lacks capacity, grown by seeds.

`SeedsRun` trains it with a seed controller driving `kasmina` or `module` seeds on a
`SeedLayer`; `replay_seeds` folds the run's log again into the registry, state tensors and alpha.
"""

from replay.demo.seeds.model import SeedsModel, SeedsTask
from replay.demo.seeds.options import CONTROLLERS, GRAFTINGS, SeedsOptions
from replay.demo.seeds.replay import replay_seeds
from replay.demo.seeds.run import SeedsRun

__all__ = ["CONTROLLERS", "GRAFTINGS", "SeedsModel", "SeedsOptions", "SeedsRun", "SeedsTask", "replay_seeds"]
