"""Read models folded from a run's events: registry views, state tensors, metrics, the runner.

Each projection consumes records in seq order, in batches, skips what it has applied, and
snapshots as plain data with its seq (see `Projection`).
"""

from projections._projection import Projection, Snapshot
from projections.metrics import MetricsProjection
from projections.registry_views import RegistryProjection
from projections.runner import Runner
from projections.state_tensors import StateTensors

__all__ = [
    "MetricsProjection",
    "Projection",
    "RegistryProjection",
    "Runner",
    "Snapshot",
    "StateTensors",
]
