"""What a training loop calls to run the lifecycle on one process or on every DDP rank.

`distributed` holds the collectives (no-ops without a process group), `process_group` and the
DDP wrapper `Replicated` that surgery re-wraps after a resize; `LifecycleSync` is the step
boundary protocol of DESIGN.md section 7 (the leader decides, every rank follows the log,
applies the same batch and checks that all ranks still hold the same bytes); `checkpoint`
writes and reads a rank's model and optimizer state next to the log seq it reflects.
"""

from projections.training import distributed
from projections.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from projections.training.distributed import Replicated, process_group
from projections.training.sync import Boundary, LifecycleSync, SyncConfig

__all__ = [
    "Boundary",
    "Checkpoint",
    "LifecycleSync",
    "Replicated",
    "SyncConfig",
    "distributed",
    "load_checkpoint",
    "process_group",
    "save_checkpoint",
]
