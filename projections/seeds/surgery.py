"""Seed surgery: the lifecycle of `kasmina` and `module` seeds folded into seed layers.

A seed is an entity of a seed spec registered with a `layer` this surgery manages and a `slot`:
the chunk of that layer's output it grows in. Its blueprint is named (by name or library id)
in the registration's `attrs["blueprint"]`, or in the germinating transition's `metadata`,
else it is the layer's first hosted blueprint. Folding, identically on every rank:

- germination (`modes.GERMINATION`) gives the seed fresh weights, drawn on a CPU generator
  seeded from (blueprint, entity, step), with no first moment and its siblings' mean second
  moment (not from the random event id: two runs of equal options then grow equal seeds);
  under `resize` the row is appended to the blueprint's weights first;
- entering a risky state (`modes.RISKY`) saves the seed's rows, weights and moments, as a
  rollback point (given `RollbackPoints`); ROLLED_BACK, a failure state reached in the risky
  period and a failed verification (`rollback.Verdicts`) restore them bit for bit; success
  (`modes.SUCCESS`) forgets the point (rollback.py says when and why);
- a failure state (culled, cancelled, pruned) takes the weights out of use: `masked` zeroes
  the row's moments, `resize` removes the row from the weights and the optimizer state.

After each batch every changed layer gets its chunks' modes in one copy; `tick(step)`, called
once per training step, advances the state tensors' clock, steps the alpha schedule and copies
each grafting layer's alpha (one gather per layer). The surgery applies each batch to its
`StateTensors` and `AlphaSchedule` first (projections skip what they have seen, so a runner
feeding them too is harmless). `digest()` is what `LifecycleSync` compares across ranks.
The edits on a seed's rows (germinate, release, freeze, roll back) are `_seed_rows`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lifecycle_es.errors import ConfigError, InconsistentEventError, UsageError
from lifecycle_es.spec import StateCategory
from lifecycle_es.specs import KASMINA_SPEC, MODULE_SPEC, KasminaState
from projections._projection import Projection, Record, Snapshot
from projections.digest import digest, training_items
from projections.digest import extend_chain as _chain
from projections.seeds._seed_rows import (
    Seed,
    germinate,
    reindex,
    release,
    row_of,
    rows_of,
    settle_moments,
    write_back,
)
from projections.seeds.layer import SeedLayer
from projections.seeds.modes import GERMINATION, RISKY, SUCCESS, SeedMode, learns, mode_of
from projections.seeds.rollback import RollbackPoints, Verdicts
from projections.seeds.schedule import AlphaSchedule
from projections.state_tensors import StateTensors

__all__ = ["Seed", "SeedSurgery"]

_SPECS = {KASMINA_SPEC.name: KASMINA_SPEC, MODULE_SPEC.name: MODULE_SPEC}
_FAILED = {name: frozenset(spec.states_in(StateCategory.FAILURE)) for name, spec in _SPECS.items()}


class SeedSurgery(Projection):
    """Folds seed lifecycles into `SeedLayer`s and their optimizer state, and drives their alpha."""

    name = "seed_surgery"

    def __init__(
        self,
        layers: Mapping[int, SeedLayer],
        optimizer: torch.optim.Optimizer,
        *,
        tensors: StateTensors,
        schedule: AlphaSchedule,
        rollback: RollbackPoints | None = None,
        model: nn.Module | None = None,
        on_rewrap: Callable[[], None] | None = None,
    ) -> None:
        """Manage `layers` (by layer index) trained by `optimizer`; each layer's strategy applies.

        `model`, when given, names the parameters `digest()` covers; `on_rewrap` runs after a
        batch that resized weights (re-wrap DDP there).
        """
        super().__init__()
        for index, layer in layers.items():
            if not isinstance(layer, SeedLayer):
                raise ConfigError(f"layer {index} must be a SeedLayer, got {type(layer).__name__}")
        self.layers = dict(sorted(layers.items()))
        self.optimizer, self.tensors, self.schedule = optimizer, tensors, schedule
        self.rollback, self.model, self.on_rewrap = rollback, model, on_rewrap
        self.seeds: dict[str, Seed] = {}
        self.owners: dict[int, list[str | None]] = {i: [None] * lay.chunks for i, lay in self.layers.items()}
        """Per layer, the seed each chunk belongs to (the latest registered into its slot)."""
        self._rows = 0
        self._dirty: set[int] = set(self.layers)
        self._chunk_rows = {i: _zeros_like_chunks(lay) for i, lay in self.layers.items()}
        """Per layer, each chunk's row in the alpha schedule (0 where it has no seed: its mode is
        HOST, so the alpha copied there is never read)."""
        self.applied_chain = ""
        """A running hash of the event ids of the structural changes applied, in order."""
        self.verdicts = Verdicts()
        """The gates failed by each seed's pending transition attempt (a failed verification
        restores its rollback point)."""

    # -- the clock -----------------------------------------------------------------------------

    def tick(self, step: int) -> None:
        """Advance time in state to training step `step`, step the alpha schedule, copy the alphas."""
        self.tensors.advance(step)
        if self.schedule.tick(self.tensors, step):
            self._write_alpha()

    def _write_alpha(self) -> None:
        alpha = self.schedule.alpha
        if alpha.numel() == 0:
            return
        for index, layer in self.layers.items():
            if layer.any_active:
                layer.alpha.copy_(alpha.index_select(0, self._chunk_rows[index]))

    # -- folding -------------------------------------------------------------------------------

    def _apply_batch(self, records: Sequence[Record]) -> None:
        self.tensors.apply(records)
        self.schedule.apply(records)
        resized = False
        try:
            for record in records:
                resized |= self._fold(record)
        finally:
            self._write_modes()
            if resized and self.on_rewrap is not None:
                self.on_rewrap()

    def _fold(self, r: Record) -> bool:
        kind = r["kind"]
        if kind == "EntityRegistered":
            self._rows += 1
            if r["spec"] in _SPECS and r.get("layer") in self.layers:
                return self._register(r)
        elif kind == "TransitionApplied" and r["entity"] in self.seeds:
            self.verdicts.applied(r["entity"])
            return self._move(r)
        elif kind == "GateChecked" and r["entity"] in self.seeds:
            self.verdicts.gate(r)
        elif kind == "TransitionRejected" and r["entity"] in self.seeds and self.verdicts.rejected(r):
            self._restore(r["entity"], keep=True)
        return False

    def _register(self, r: Record) -> bool:
        layer = self.layers[r["layer"]]
        chunk = r.get("slot")
        if chunk is None or not 0 <= chunk < layer.chunks:
            raise InconsistentEventError(
                f"{self.name}: seed {r['entity']!r} names slot {chunk!r}; "
                f"layer {r['layer']} has {layer.chunks} chunks"
            )
        blueprint = self._blueprint(layer, r.get("attrs")) or layer.hosted[0].name
        seed = Seed(r["spec"], r["layer"], chunk, r["state"], blueprint, self._rows - 1)
        self.seeds[r["entity"]] = seed
        self.owners[seed.layer][chunk] = r["entity"]
        self._chunk_rows[seed.layer][chunk] = seed.row
        self._dirty.add(seed.layer)
        if r["state"] == GERMINATION[seed.spec] or mode_of(seed.spec, r["state"]) != SeedMode.HOST:
            return self._germinate(r["entity"], seed, r)
        return False

    def _move(self, r: Record) -> bool:
        entity, seed, to = r["entity"], self.seeds[r["entity"]], r["to_state"]
        seed.state = to
        self._dirty.add(seed.layer)
        if to == GERMINATION[seed.spec]:
            seed.blueprint = self._blueprint(self.layers[seed.layer], r.get("metadata")) or seed.blueprint
            return self._germinate(entity, seed, r)
        if self.rollback is not None and to in RISKY[seed.spec]:
            rows = rows_of(self.layers[seed.layer], self.optimizer, seed)
            self.rollback.save(entity, rows, layer=seed.layer, slot=seed.chunk, step=r["step"], state=to)
        elif to == KasminaState.ROLLED_BACK.value and seed.spec == KASMINA_SPEC.name:
            self._restore(entity, keep=False)
        elif self.rollback is not None and to == SUCCESS[seed.spec]:
            self.rollback.discard(entity)
        elif to in _FAILED[seed.spec]:
            self._restore(entity, keep=False)  # the risky period failed: back to before it
            return self._release(seed, r["event_id"])
        settle_moments(self.layers[seed.layer], self.optimizer, seed, r["from_state"])
        return False

    def _blueprint(self, layer: SeedLayer, attrs: Mapping[str, Any] | None) -> str | None:
        """Return the hosted blueprint `attrs["blueprint"]` names (a name or a library id), if any."""
        named = (attrs or {}).get("blueprint")
        if named is None:
            return None
        name = layer.library.by_id(named).name if isinstance(named, int) else str(named)
        if name not in layer.weights:
            raise InconsistentEventError(
                f"{self.name}: blueprint {named!r} is not hosted by the seed's layer"
            )
        return name

    def _write_modes(self) -> None:
        for index in sorted(self._dirty):
            layer, modes, kinds, learning = self.layers[index], [], [], []
            hosted = [b.name for b in layer.hosted]
            for chunk, entity in enumerate(self.owners[index]):
                seed = None if entity is None else self.seeds[entity]
                live = seed is not None and chunk in layer.row_chunks[seed.blueprint]
                modes.append(mode_of(seed.spec, seed.state) if live and seed else SeedMode.HOST)
                kinds.append(hosted.index(seed.blueprint) if live and seed else -1)
                learning.append(bool(live and seed and learns(seed.spec, seed.state)))
            layer.set_modes(modes, kinds, learning)
        self._dirty.clear()
        self._write_alpha()

    # -- rows ----------------------------------------------------------------------------------

    def _germinate(self, entity: str, seed: Seed, record: Record) -> bool:
        layer = self.layers[seed.layer]
        resized = germinate(layer, self.optimizer, entity, seed, step=record["step"])
        self._applied(record["event_id"])
        return resized

    def _release(self, seed: Seed, event_id: str) -> bool:
        layer = self.layers[seed.layer]
        row = row_of(layer, seed)
        if row is None:
            return False
        self._applied(event_id)
        return release(layer, self.optimizer, seed, row)

    def _restore(self, entity: str, *, keep: bool) -> None:
        """Restore a seed's rollback point if it has one, forgetting it unless `keep`."""
        if self.rollback is not None and entity in self.rollback.points:
            self.roll_back(entity)
            if not keep:
                self.rollback.discard(entity)

    def roll_back(self, entity: str) -> bool:
        """Put a seed's weights and moments back from its latest rollback point; True if it had one."""
        seed = self.seeds.get(entity)
        if seed is None:
            raise UsageError(f"{self.name}: {entity!r} is not a seed of a managed layer")
        saved = None if self.rollback is None else self.rollback.load(entity)
        if saved is None:
            return False
        return write_back(self.layers[seed.layer], self.optimizer, seed, saved)

    def _applied(self, event_id: str) -> None:
        self.applied_chain = _chain(self.applied_chain, event_id)

    # -- digest and snapshots ------------------------------------------------------------------

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Return the parameters `digest()` covers, by name, in sorted name order."""
        if self.model is not None:
            return sorted(self.model.named_parameters())
        return sorted(
            (f"{i}.{n}", p) for i, layer in self.layers.items() for n, p in layer.named_parameters()
        )

    def digest(self, *, event_ids: bool = True) -> str:
        """Return 16 hex digits hashing parameters, optimizer state and applied event ids exactly."""
        chain = self.applied_chain if event_ids else None
        return digest(training_items(self.named_parameters(), self.optimizer), events=chain)

    def snapshot(self) -> Snapshot:
        """Return the seed table, each layer's rows and the rollback points' ids (the model and
        optimizer are the caller's; the points' files stay with their `CheckpointManager`)."""
        state: dict[str, Any] = {
            "seeds": {
                e: [s.spec, s.layer, s.chunk, s.state, s.blueprint, s.row] for e, s in self.seeds.items()
            },
            "rows": self._rows,
            "row_chunks": {str(i): dict(lay.row_chunks) for i, lay in self.layers.items()},
            "applied_chain": self.applied_chain,
            "rollback_points": {} if self.rollback is None else dict(self.rollback.points),
        }
        return Snapshot(kind=self.name, seq=self.seq, state=state)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the seed table, rows and modes with a snapshot's (restore the state tensors and
        the schedule first); then load the checkpoint's model and optimizer state into the layers.

        Under resize a blueprint whose row count differs gets blank rows of the snapshot's shape
        (and `on_rewrap` runs), so the checkpoint's weights fit. The rollback points are taken
        back (their ids, loaded from the files the surgery's `RollbackPoints` manager kept), so a
        seed stopped in its risky period is restored on a later failure as if the run never
        stopped; a snapshot with points and a surgery without `RollbackPoints` is refused.
        """
        if snapshot.kind != self.name:
            raise UsageError(f"{self.name}: cannot restore a {snapshot.kind!r} snapshot")
        s = snapshot.state
        points = {str(e): str(c) for e, c in s.get("rollback_points", {}).items()}
        if points and self.rollback is None:
            raise UsageError(
                f"{self.name}: the snapshot holds rollback points of {sorted(points)}; "
                "restore it into a surgery given RollbackPoints over the same checkpoint directory"
            )
        if self.rollback is not None:
            self.rollback.points = points
        self.seeds = {e: Seed(*v) for e, v in s["seeds"].items()}
        self._rows, self.applied_chain = int(s["rows"]), str(s["applied_chain"])
        self.verdicts = Verdicts()  # an attempt's gates and its verdict are appended together
        self.owners = {i: [None] * lay.chunks for i, lay in self.layers.items()}
        for entity, seed in self.seeds.items():
            self.owners[seed.layer][seed.chunk] = entity
            self._chunk_rows[seed.layer][seed.chunk] = seed.row
        if self._restore_rows(s["row_chunks"]) and self.on_rewrap is not None:
            self.on_rewrap()
        self._dirty = set(self.layers)
        self._write_modes()
        self.seq = snapshot.seq

    def _restore_rows(self, row_chunks: Mapping[str, Mapping[str, list[int]]]) -> bool:
        """Give each blueprint the snapshot's row chunks; return True if any row count changed."""
        resized = False
        for index, layer in self.layers.items():
            for blueprint, chunks in row_chunks[str(index)].items():
                if len(chunks) == len(layer.row_chunks[blueprint]):
                    layer.replace_parameters(blueprint, layer.slot_parameters(blueprint), chunks)
                else:  # resize: blank rows of the snapshot's shape, for the checkpoint to fill
                    reindex(layer, self.optimizer, blueprint, [None] * len(chunks), chunks)
                    resized = True
        return resized


def _zeros_like_chunks(layer: SeedLayer) -> torch.Tensor:
    return torch.zeros(layer.chunks, dtype=torch.long, device=layer.alpha.device)
