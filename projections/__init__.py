"""Read models folded from a run's events: registry views, state tensors, metrics, the runner.

Each projection consumes records in seq order, in batches, skips what it has applied, and
snapshots as plain data with its seq (see `Projection`). The torch side has rooms of its own:
`projections.moe` (the MoE layer protocol and reference layer, basin tracking, expert surgery),
`projections.seeds` (the seed-host layer, blueprints, grafting schedules, seed surgery and
rollback) and `projections.training` (what a training loop calls: collectives and the DDP wrapper,
`LifecycleSync`, checkpoints).
"""

from typing import TYPE_CHECKING, Any

from projections._projection import Projection, Snapshot
from projections.metrics import MetricsCollector, MetricsProjection
from projections.registry_views import RegistryProjection
from projections.runner import Runner

if TYPE_CHECKING:
    from projections.state_tensors import StateTensors


def __getattr__(name: str) -> Any:
    # StateTensors needs torch (over a second to import); tools that only read the log, such
    # as `lifecycle-es tail`, should not pay for it.
    if name == "StateTensors":
        from projections.state_tensors import StateTensors

        return StateTensors
    raise AttributeError(f"module 'projections' has no attribute {name!r}")


__all__ = [
    "MetricsCollector",
    "MetricsProjection",
    "Projection",
    "RegistryProjection",
    "Runner",
    "Snapshot",
    "StateTensors",
]
