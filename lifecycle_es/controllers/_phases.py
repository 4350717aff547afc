"""One evaluation of the expert coordinator: upkeep, failed splits, prune, merge, split, revive, spawn.

Upkeep comes first so every action sees this checkpoint's states (an expert that just went
dormant is no merge candidate, one whose cooling just ended may split). Removals come before
additions so a spawn counts the experts a prune or merge just took out of the layer.

Patience counts checkpoints, not steps, and an expert is judged only on the checkpoints
observed in its current state: a cooling expert's grace period, a dormant expert's wait for
pruning, and the overload or convergence of an active one all start over when it changes state,
so nothing seen during cooling counts against an expert once it is active.

A *candidate* is an expert, pair or layer whose trigger signal held on at least one of its
last `patience` checkpoints. Every gate of every candidate is evaluated, and a candidate's gates
are recorded together as one `GatesChecked` (signals first, then the structural limits), so the
log shows each action's run-up, what held it back, and a signal that faded; experts showing no
sign of a trigger record nothing.
An action is taken when all its gates pass, and its events follow its gate checks: the children
it creates are registered (so every id a decision names exists when it is folded), then the
`DecisionMade`, then the state moves it causes. A spawn's checks are recorded on the id the
child would get, with an empty `from_state` (it does not exist yet); a split's on its parent,
whose state does not change.

Left alone: experts of layers not in `capacity`, and `pending_spawn` experts the coordinator did
not create in the same evaluation (it cannot know their weights exist). Each phase is a class of
its own module (`_upkeep`, `_failed_split`, `_prune`, `_basin_park`, `_merge`, `_split`,
`_revive`, `_spawn`), all reading the scratch registry the same way (`_expert_phase`).
"""

from __future__ import annotations

from lifecycle_es.controllers._basin_park import BasinParks
from lifecycle_es.controllers._batch import Batch
from lifecycle_es.controllers._config import ExpertCoordinatorConfig
from lifecycle_es.controllers._failed_split import FailedSplits
from lifecycle_es.controllers._merge import Merges
from lifecycle_es.controllers._prune import Prunes
from lifecycle_es.controllers._revive import Revivals
from lifecycle_es.controllers._spawn import Spawns
from lifecycle_es.controllers._split import Splits
from lifecycle_es.controllers._upkeep import Upkeep
from lifecycle_es.events import EventBase

__all__ = ["Evaluation"]

_PHASES = (Upkeep, FailedSplits, Prunes, BasinParks, Merges, Splits, Revivals, Spawns)
"""The phases in the order they run: upkeep, then removals, then additions."""


class Evaluation:
    """The work of one `decide` call; `run()` returns its events in append order."""

    def __init__(self, config: ExpertCoordinatorConfig, capacity: dict[int, int], batch: Batch) -> None:
        self.config = config
        self.capacity = capacity
        self.batch = batch

    def run(self) -> list[EventBase]:
        """Evaluate every phase against the scratch registry; return the events made."""
        for phase in _PHASES:
            phase(self.config, self.capacity, self.batch).run()
        return self.batch.events
