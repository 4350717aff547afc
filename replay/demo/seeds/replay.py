"""The seeds demo's replay: its log folded again, without training, into what the run held."""

from __future__ import annotations

from typing import Any

import torch

from bus import Log
from lifecycle_es import BUILTIN_SPECS, Lifecycle
from lifecycle_es.registry import Registry
from projections.seeds import AlphaSchedule
from projections.state_tensors import StateTensors
from replay.demo.seeds.options import SeedsOptions

__all__ = ["replay_seeds"]


def replay_seeds(log: Log, options: SeedsOptions) -> tuple[Registry, StateTensors, torch.Tensor]:
    """Fold a seeds-demo log again, ticking the clock as the run did; return registry, tensors, alpha.

    No training: the registry and the state tensors come from the events, and alpha from the
    folded facts and the clock, so they equal the live run's.
    """
    records = log.read(0)
    lc = Lifecycle(log)
    tensors, schedule = StateTensors(dict(BUILTIN_SPECS)), AlphaSchedule()
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_step.setdefault(int(r.get("step", 0)), []).append(r)
    first = by_step.get(0, [])
    tensors.apply(first)
    schedule.apply(first)
    for step in range(options.steps):
        tensors.advance(step)
        schedule.tick(tensors, step)
        batch = by_step.get(step, [])
        if step and batch:
            tensors.apply(batch)
            schedule.apply(batch)
    return lc.registry, tensors, schedule.alpha
