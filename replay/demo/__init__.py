"""`lifecycle-es demo`: a small MoE trained on a non-stationary task, its experts run by the lifecycle.

The task (`_task`) changes in phases so that spawning, pruning, splitting and merging experts
each become useful at some point; the expert coordinator decides from routing statistics
alone. The loop (`_loop`) writes every observation, decision and seal to the run's log and
folds them into the model through `ModelSurgery`, so the log replays to the same experts.
"""

from replay.demo._loop import DemoOptions, DemoRun, PhaseLoss, RankOptions, Tick, demo_config
from replay.demo._task import PHASES, Phase, Task

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
]
