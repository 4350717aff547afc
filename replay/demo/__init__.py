"""`lifecycle-es demo`: a small MoE trained on a non-stationary task, its experts run by the lifecycle.

Written to be read and copied: `train` is the training loop with the expert lifecycle wired
in (start here), `options` what defines a run, `model` the MoE model it trains, `task` the
synthetic task, which changes in phases so that spawning, pruning, splitting and merging
experts each become useful at some point, and `report` the summary `lifecycle-es demo`
prints. The expert coordinator decides from routing statistics alone; the loop writes every
observation, decision and seal to the run's log and folds them into the model through
`ModelSurgery`, so the log replays to the same experts.
"""

from replay.demo.task import PHASES, Phase, Task
from replay.demo.train import DemoOptions, DemoRun, PhaseLoss, RankOptions, Tick, demo_config, demo_model

__all__ = [
    "PHASES",
    "DemoOptions",
    "DemoRun",
    "Phase",
    "PhaseLoss",
    "RankOptions",
    "Task",
    "Tick",
    "demo_config",
    "demo_model",
]
