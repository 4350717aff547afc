"""What a training loop calls to run the lifecycle on one process or on every DDP rank.

`distributed` holds the collectives (no-ops without a process group), `process_group` and the
DDP wrapper `Replicated` whose `rewrap` the loop gives `ModelSurgery(on_rewrap=...)`;
`LifecycleSync` is the step boundary protocol of DESIGN.md section 7 (the leader decides, every
rank follows the log, applies the same batch and checks that all ranks still hold the same
bytes); `Checkpoints` saves the model, optimizer and projection snapshots at a boundary, with
the log seq they reflect, and resumes every rank of a restarted run from the last one
(`save_checkpoint` and `load_checkpoint` are its file format); `CheckpointManager` keeps
per-(layer, seed) checkpoints with priorities, retention, migration and recovery to the newest
intact one (DESIGN.md section 7b). `ExpertLifecycle` builds all of
these, with the expert coordinator and basin tracking, around a model's MoE layers, for a loop
that calls it in three lines (`find_expert_layers` is how it finds the layers).
`PreemptionGuard` stops a loop at a step boundary on SIGTERM, SIGINT or a notice source
(`FileNotice`, `CallableNotice`, `AwsSpotNotice`, `GceNotice`), checkpointing first;
`resume` holds what a resumed run needs (`run_metadata`, `resume_run`, `run_digest`).
"""

from projections.training import distributed
from projections.training.checkpoint import Checkpoint, Checkpoints, load_checkpoint, save_checkpoint
from projections.training.checkpoint_manager import (
    CheckpointInfo,
    CheckpointManager,
    LoadedCheckpoint,
    Recovery,
    RetentionConfig,
)
from projections.training.distributed import Replicated, process_group
from projections.training.expert import ExpertLifecycle, find_expert_layers
from projections.training.notices import AwsSpotNotice, CallableNotice, FileNotice, GceNotice, NoticeSource
from projections.training.preemption import REQUEUE_EXIT_CODE, Notice, PreemptionGuard
from projections.training.resume import (
    check_resumable,
    recorded_metadata,
    resume_run,
    run_digest,
    run_metadata,
)
from projections.training.sync import Boundary, LifecycleSync, SyncConfig

__all__ = [
    "REQUEUE_EXIT_CODE",
    "AwsSpotNotice",
    "Boundary",
    "CallableNotice",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointManager",
    "Checkpoints",
    "ExpertLifecycle",
    "FileNotice",
    "GceNotice",
    "LifecycleSync",
    "LoadedCheckpoint",
    "Notice",
    "NoticeSource",
    "PreemptionGuard",
    "Recovery",
    "Replicated",
    "RetentionConfig",
    "SyncConfig",
    "check_resumable",
    "distributed",
    "find_expert_layers",
    "load_checkpoint",
    "process_group",
    "recorded_metadata",
    "resume_run",
    "run_digest",
    "run_metadata",
    "save_checkpoint",
]
