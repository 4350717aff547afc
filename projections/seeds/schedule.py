"""The alpha of every seed of a run, stepped with the training clock from folded facts.

`AlphaSchedule` is a projection: it gives every registered entity a row, in registration order
(the rows of `StateTensors`), folds each seed's recorded grafting facts (`grafting.FACTS`, from
`MetricsObserved`) and resets a row's schedule state when its seed enters a grafting state.
`tick(tensors)` then runs one schedule step for the rows in a grafting state, reading their time
in state and strategy id from the state tensors. A step is ticked at most once, so a replay
that folds the same records before the same ticks gets the same alpha on every rank. The step's
plan (`grafting.graft_plan`: the facts and strategy ids as row weights) is derived again only
when this schedule or the state tensors have folded something since, so a tick between folds
is the clock-driven part alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch

from lifecycle_es.errors import InconsistentEventError, UsageError
from projections._projection import Projection, Record, Snapshot
from projections.seeds.grafting import (
    FACTS,
    GraftingConfig,
    GraftPlan,
    GraftState,
    graft_plan,
    planned_step,
    should_abort,
)
from projections.seeds.modes import SeedMode, mode_of
from projections.state_tensors import EPOCHS_IN_STATE, GRAFTING_STRATEGY, StateTensors

__all__ = ["AlphaSchedule"]

_FACT = {name: i for i, name in enumerate(FACTS)}


def _finite32(values: list[float]) -> torch.Tensor:
    """float32 facts; a finite metric beyond float32's range is held at its edge, not made infinite."""
    edge = torch.finfo(torch.float32).max
    return torch.tensor(values, dtype=torch.float64).clamp(-edge, edge).to(torch.float32)


class AlphaSchedule(Projection):
    """Per-row grafting state and facts on a device; `alpha` is what seed layers blend with."""

    name = "alpha_schedule"

    def __init__(self, config: GraftingConfig | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config or GraftingConfig()
        self.device = torch.device(device)
        self.rows: dict[str, int] = {}
        self._specs: list[str] = []
        self._grafting = bytearray()
        """Per row, 1 while its seed is in a grafting state (host side)."""
        self._mask = torch.zeros(0, dtype=torch.bool, device=self.device)
        self._facts = torch.zeros(len(FACTS), 0, device=self.device)
        """[len(FACTS), rows]: one contiguous row per fact, which a plan reads fast."""
        self.state = GraftState.blank(0, self.device)
        self.ticked: int | None = None
        """The last step `tick` stepped (None before the first)."""
        self._plan: tuple[tuple[int, int, int], GraftPlan] | None = None
        """The step plan and what it was derived from: (this seq, the state tensors' id and seq)."""

    @property
    def facts(self) -> torch.Tensor:
        """[rows, len(FACTS)] float32 (a view): each row's latest recorded facts, 0 until recorded."""
        return self._facts.T

    @property
    def alpha(self) -> torch.Tensor:
        """[rows] float32 device tensor: each row's current alpha (0 before it grafts)."""
        return self.state.alpha

    def should_abort(self) -> torch.Tensor:
        """Return [rows] bool: grafting rows whose recorded error rate is above 0.5."""
        return should_abort(self.facts) & self._mask

    # -- folding -------------------------------------------------------------------------------

    def _apply_batch(self, records: Sequence[Record]) -> None:
        values: dict[tuple[int, int], float] = {}
        reset: set[int] = set()
        first = len(self._specs)
        for r in records:
            kind = r["kind"]
            if kind == "EntityRegistered":
                self.rows[r["entity"]] = len(self._specs)
                self._specs.append(r["spec"])
                self._grafting.append(self._enter(len(self._specs) - 1, r["state"], reset))
            elif kind == "TransitionApplied":
                row = self._row(r)
                self._grafting[row] = self._enter(row, r["to_state"], reset)
            elif kind == "MetricsObserved" and r.get("entity") in self.rows:
                row = self.rows[r["entity"]]
                values.update({(row, _FACT[k]): float(v) for k, v in r["metrics"].items() if k in _FACT})
        self._write(first, values, reset)

    def _row(self, r: Record) -> int:
        row = self.rows.get(r["entity"])
        if row is None:
            raise InconsistentEventError(f"{self.name}: seq {r['seq']} moves unregistered {r['entity']!r}")
        return row

    def _enter(self, row: int, state: str, reset: set[int]) -> bool:
        """Note a row's new state; entering a grafting state restarts its schedule."""
        grafting = mode_of(self._specs[row], state) == SeedMode.GRAFT
        if grafting and not (row < len(self._grafting) and self._grafting[row]):
            reset.add(row)
        return grafting

    def _write(self, first: int, values: dict[tuple[int, int], float], reset: set[int]) -> None:
        """Grow to the new rows, then write facts, resets and the grafting mask in a few ops."""
        rows = len(self._specs)
        if rows > first:
            blank = GraftState.blank(rows - first, self.device)
            self.state = GraftState(
                **{
                    f.name: torch.cat((getattr(self.state, f.name), getattr(blank, f.name)))
                    for f in fields(blank)
                }
            )
            grown = torch.zeros(len(FACTS), rows - first, device=self.device)
            self._facts = torch.cat((self._facts, grown), dim=1)
        if values:
            where = torch.tensor(list(values), dtype=torch.long).T.to(self.device)
            self._facts.index_put_((where[1], where[0]), _finite32(list(values.values())).to(self.device))
        if reset:
            mask = torch.zeros(rows, dtype=torch.bool)
            mask[sorted(reset)] = True
            self.state = GraftState.blank(rows, self.device).where(mask.to(self.device), self.state)
        self._mask = torch.tensor(list(self._grafting), dtype=torch.bool).to(self.device)

    # -- the clock -----------------------------------------------------------------------------

    def tick(self, tensors: StateTensors, step: int) -> bool:
        """Step the schedule of every grafting row once for training step `step`; True if it stepped.

        A step at or before the last ticked one does nothing, so each step moves alpha once.
        """
        if self.ticked is not None and step <= self.ticked:
            return False
        rows = len(self._specs)
        if rows != len(tensors):
            raise UsageError(
                f"{self.name}: {rows} rows but the state tensors have {len(tensors)}; "
                "fold the same records into both before ticking"
            )
        self.ticked = step
        if 1 not in self._grafting:
            return True
        state = tensors.state[:rows]
        self.state = planned_step(self.state, self._plan_for(tensors), state[:, EPOCHS_IN_STATE], self.config)
        return True

    def _plan_for(self, tensors: StateTensors) -> GraftPlan:
        """The plan of the folded facts and strategies, derived again only after either side folds."""
        key = (self.seq, id(tensors), tensors.seq)
        if self._plan is None or self._plan[0] != key:
            strategies = tensors.state[: len(self._specs), GRAFTING_STRATEGY]
            rows = None if 0 not in self._grafting else self._mask
            previous = None if self._plan is None else self._plan[1]
            self._plan = (key, graft_plan(self.facts, strategies, self.config, rows, previous=previous))
        return self._plan[1]

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return rows, facts, schedule state (CPU) and the last ticked step, with the seq."""
        state: dict[str, Any] = {
            "rows": list(self.rows),
            "specs": list(self._specs),
            "grafting": list(self._grafting),
            "facts": self.facts.cpu().contiguous(),
            "ticked": self.ticked,
            **{f.name: getattr(self.state, f.name).cpu().clone() for f in fields(self.state)},
        }
        return Snapshot(kind=self.name, seq=self.seq, state=state)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything with a snapshot's, on this schedule's device."""
        if snapshot.kind != self.name:
            raise UsageError(f"{self.name}: cannot restore a {snapshot.kind!r} snapshot")
        s = snapshot.state
        self.rows = {entity: row for row, entity in enumerate(s["rows"])}
        self._specs = list(s["specs"])
        self._grafting = bytearray(s["grafting"])
        self._facts = s["facts"].to(self.device).T.contiguous()
        # float32 throughout: a snapshot from before the counters were floats holds them as int32.
        self.state = GraftState(
            **{f.name: s[f.name].to(self.device, torch.float32) for f in fields(GraftState)}
        )
        self._mask = torch.tensor(list(self._grafting), dtype=torch.bool).to(self.device)
        self.ticked = s["ticked"]
        self._plan = None
        self.seq = snapshot.seq
