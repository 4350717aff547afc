"""State tensors: the Kasmina seed layout on a chosen device, folded from lifecycle events.

Every registered entity, of any spec, owns one row, in registration order, of three tensors
that hold exactly 128 bytes per entity, the layout of esperlite's `ExtendedStateTensor`
(reference/seed-projects.md section 1.5):

- `state` [N, 8] int32, columns `STATE` ... `ERROR_COUNT` (32 bytes): the state's code in its
  own spec; the blueprint id (-1 unknown); the steps spent in the current state; the grafting
  strategy; the code of the state the last transition left (-1 before any transition, where
  Kasmina writes 0, which is a real state code); the checkpoint id (-1 none); the evaluation
  score x 1000; the error count. Metric-derived values saturate at the int32 range;
- `history` [N, 10, 2] int32 (80 bytes): the latest (from, to) codes, newest at index 0, kept
  in order by shifting rather than with Kasmina's per-seed write pointer; -1 when empty;
- `metrics` [N, 4] float32 (16 bytes): the latest loss, accuracy, stability and efficiency.

The metric-derived cells (checkpoint id, evaluation score, error count, `metrics`) hold the
registry's latest metrics of the entity, so they are blank for an entity out of the live set
(a failure or terminal state), whose metrics the registry no longer keeps.

Outside that budget each row has one int32 `state_keys` entry: its state numbered across all
specs (spec offset + code). State codes are per spec (code 1 is GERMINATED for a kasmina seed
and INSTANTIATED for a module), so a mask by state must know each row's spec; with the key, a
mask is one `index_select` of a cached boolean table, with no host sync. A projection per spec
would avoid the 4 bytes but give up one row space for all entities.

`EPOCHS_IN_STATE` equals the registry's `time_in_state(registry.step)`: the projection's clock
is the largest step folded (or given to `advance`, which a training loop calls every step so
time in state, and the alpha ramps read from it, move with the training clock), every live
row gains what the clock gained, and the rows a batch registered or moved are set to clock
minus the step they entered their state at. Steps, like every value stored, must fit in int32.

What the clock gains is added lazily: batches and `advance` only count the steps the live rows
are owed, and reading `state` adds them in one add over the column. That add is a strided pass
over every live row, most of what one transition's apply would otherwise cost, and a run that
reads time in state once per training step (an alpha ramp) then pays it once per step, not once
per batch and once per `advance`. So rows a batch writes are written relative to the step the
column has reached (`_base`), not to the clock.

A batch is scanned on the host into a plan (`_state_plan`), uploaded in one transfer per dtype
(`_state_upload`), then each tensor gets one `index_put_` of the cells registrations and metrics
write, and each round of transitions one write of its columns and keys and one push onto the
history rings; nothing reads a device tensor back while applying. A torch call costs
microseconds on the host (a kernel launch on CUDA), most of what a batch of one transition
costs, so a batch makes no more calls than its writes need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from lifecycle_es.codec import TypedLines
from lifecycle_es.errors import ConfigError, SpecError, UnknownEntityError, UsageError
from lifecycle_es.spec import Spec
from projections._projection import Projection, Record, Snapshot
from projections._state_plan import (
    BLUEPRINT,
    CHECKPOINT_ID,
    COLUMNS,
    EPOCHS_IN_STATE,
    ERROR_COUNT,
    EVALUATION_SCORE,
    GRAFTING_STRATEGY,
    HISTORY_DEPTH,
    METRIC_NAMES,
    MOVE_COLUMNS,
    PARENT_STATE,
    STATE,
    Plan,
    RowIndex,
    plan_batch,
    plan_lines,
)
from projections._state_rows import row_dicts
from projections._state_upload import pack
from projections._writes import SMALL_BATCH, Writes

__all__ = [
    "BLUEPRINT",
    "BYTES_PER_ROW",
    "CHECKPOINT_ID",
    "COLUMNS",
    "EPOCHS_IN_STATE",
    "ERROR_COUNT",
    "EVALUATION_SCORE",
    "GRAFTING_STRATEGY",
    "HISTORY_DEPTH",
    "METRIC_NAMES",
    "PARENT_STATE",
    "STATE",
    "StateTensors",
]

BYTES_PER_ROW = 128
"""Bytes of Kasmina-layout tensor state per entity: 32 (state) + 80 (history) + 16 (metrics)."""

_BLANK_ROW = (0, -1, 0, 0, -1, -1, 0, 0)
"""A row before registration writes it: no blueprint, parent state or checkpoint."""
_TENSORS = ("_state", "history", "metrics", "state_keys")
"""The stored tensors; `_state` is what `state` returns once it is owed no steps."""


class StateTensors(Projection):
    """The Kasmina state, history and metrics tensors of every entity, updated in batches."""

    name = "state_tensors"
    small_batch = SMALL_BATCH
    """A batch of at most this many transitions has its indices built on the host (`_writes`):
    fewer torch calls; above it, per-transition Python would cost more than the calls saved."""

    def __init__(
        self, specs: Mapping[str, Spec], *, capacity: int = 64, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        if capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {capacity}")
        self.specs = dict(specs)
        self.device = torch.device(device)
        self._index = RowIndex(self.specs)
        self._clock = 0
        self._owed = 0
        """Steps every live row's time in state has gained and `state` has not added yet."""
        self._masks: dict[tuple[str, frozenset[str]], torch.Tensor] = {}
        self._move_columns = torch.tensor(MOVE_COLUMNS, device=self.device)
        self._allocate(capacity)

    # -- storage -------------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        """Replace the tensors with blank ones of `capacity` rows on the projection's device."""
        dev = self.device
        self._state = torch.tensor(_BLANK_ROW, dtype=torch.int32, device=dev).repeat(capacity, 1)
        self.history = torch.full((capacity, HISTORY_DEPTH, 2), -1, dtype=torch.int32, device=dev)
        """[N, 10, 2] int32: (from, to) state codes of the latest transitions, newest first."""
        self.metrics = torch.zeros((capacity, len(METRIC_NAMES)), dtype=torch.float32, device=dev)
        """[N, 4] float32: the latest value of each of `METRIC_NAMES`."""
        self.state_keys = torch.zeros(capacity, dtype=torch.int32, device=dev)
        """[N] int32: each row's state numbered across all specs, what masks index by."""
        self._flat_state = self._state.view(-1)
        self._flat_metrics = self.metrics.view(-1)
        self._flat_history = self.history.view(-1)
        self._state_columns = self._state.unbind(1)
        self._live_epochs = self._state_columns[EPOCHS_IN_STATE][:0]
        self._rings = self.history.view(capacity, 2 * HISTORY_DEPTH)
        """`history` with each row's ring as one run of (from, to) pairs, newest first."""
        self._ring_heads, self._ring_tails = self._rings[:, :2], self._rings[:, 2:]

    def _grow(self, needed: int) -> None:
        """Double the capacity until `needed` rows fit, keeping every live row."""
        capacity = self.capacity
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        live = self._index.live
        old = [getattr(self, name) for name in _TENSORS]
        self._allocate(capacity)
        for name, kept in zip(_TENSORS, old, strict=True):
            getattr(self, name)[:live] = kept[:live]

    @property
    def state(self) -> torch.Tensor:
        """[N, 8] int32: the columns of `COLUMNS`, every live row's time in state brought up to
        the clock first (one add on the device, no host sync).

        Time in state in a tensor taken here stops at the clock of that moment, so take it
        again after a batch or an `advance`.
        """
        self._pay_owed()
        return self._state

    @property
    def capacity(self) -> int:
        """Rows allocated; it doubles when a registration needs more."""
        return int(self._state.shape[0])

    # -- applying a batch ----------------------------------------------------------------------

    @property
    def _base(self) -> int:
        """The step the stored time in state counts to: the clock less the steps owed."""
        return self._clock - self._owed

    def _apply_batch(self, records: Sequence[Record]) -> None:
        self._commit(plan_batch(self._index, records, self._base))

    def apply_lines(self, lines: TypedLines) -> int:
        """Fold a page of typed lines without building its records (`plan_lines`)."""
        return self._apply_following(lines, self._fold_lines)

    def _fold_lines(self, lines: TypedLines) -> None:
        self._commit(plan_lines(self._index, lines, self._base))

    def _commit(self, plan: Plan) -> None:
        """Write a plan scanned from `_base`: new rows; its cells, keys and metrics; the rounds;
        then the clock and the steps the live rows are owed."""
        if plan.new_specs:
            self._grow(plan.first_row + len(plan.new_specs))
        self._index.commit(plan)
        writes = Writes.of(plan, plan.history_rounds(), small=self.small_batch)
        cells, rows, where, *indices = pack(writes.indices, torch.int64, self.device)
        values, keys, bits, *rest = pack(writes.values, torch.int32, self.device)
        has_cells, has_keys, has_metrics = writes.indices[:3]
        if has_cells:
            self._flat_state.put_(cells, values)
        if has_keys:
            self.state_keys.put_(rows, keys)
        if has_metrics:
            self._flat_metrics.put_(where, bits.view(torch.float32))
        if writes.flat:
            for i, pairs in enumerate(rest):
                source, target, heads = indices[3 * i : 3 * i + 3]
                self._push_flat(source, target, heads, pairs)
        else:
            for i in range(0, len(rest), 3):
                moves = rest[i + 1].view(-1, len(MOVE_COLUMNS))
                self._apply_round(rest[i].long(), moves, rest[i + 2])
        self._clock = max(self._clock, plan.clock)
        self._owed = self._clock - plan.start  # epochs written are relative to the start

    def _push_flat(
        self, source: torch.Tensor, target: torch.Tensor, heads: torch.Tensor, pairs: torch.Tensor
    ) -> None:
        """Push a round's (from, to) pairs onto its rings by flat history cells built on the host."""
        self._flat_history.put_(target, self._flat_history.take(source))
        self._flat_history.put_(heads, pairs)

    def _apply_round(self, rows: torch.Tensor, moves: torch.Tensor, keys: torch.Tensor) -> None:
        """Write one round of transitions (distinct int64 rows): columns, keys, a ring push.

        The rings are read once and written through cached views of their tail and head, two
        `index_copy_` where building the new rings would take a `cat` and one more.
        """
        self._state.index_put_((rows[:, None], self._move_columns), moves)
        self.state_keys.index_copy_(0, rows, keys)
        kept = self._rings.index_select(0, rows).narrow(1, 0, 2 * (HISTORY_DEPTH - 1))
        self._ring_tails.index_copy_(0, rows, kept)
        self._ring_heads.index_copy_(0, rows, moves[:, :2])

    def _pay_owed(self) -> None:
        """Add the steps owed to every live row's time in state: one add on a cached column view."""
        if not self._owed:
            return
        live = self._index.live
        if self._live_epochs.shape[0] != live:  # rows were registered, or the tensors replaced
            self._live_epochs = self._state_columns[EPOCHS_IN_STATE][:live]
        self._live_epochs += self._owed
        self._owed = 0

    def advance(self, step: int) -> None:
        """Move the clock to the training step `step`: every row's time in state grows with it.

        Events only arrive at evaluation steps, so without this a seed's time in state (and an
        alpha ramp read from it) would jump from one evaluation to the next. The rows are owed
        the steps until `state` is next read (no tensor work here); a step at or before the
        clock changes nothing, so calling it every step and folding the step's events in either
        order agree.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise UsageError(f"{self.name}: step must be an int, got {type(step).__name__}")
        if step > self._clock:
            self._owed += step - self._clock
            self._clock = step

    @property
    def clock(self) -> int:
        """The training step the rows' time in state counts to: the largest folded or advanced to."""
        return self._clock

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """How many entities have a row."""
        return self._index.live

    def entities(self) -> list[str]:
        """Return the entities in row order."""
        return list(self._index.rows)

    def row(self, entity: str) -> int:
        """Return the entity's row, or raise `UnknownEntityError`."""
        try:
            return self._index.rows[entity]
        except KeyError:
            raise UnknownEntityError(f"{self.name}: no row for entity {entity!r}") from None

    def codes(self) -> torch.Tensor:
        """Return the live rows' state codes: a device view of column `STATE`, not a copy.

        The view is of the current tensors; growth replaces them, so take it again after a batch.
        """
        return self._state[: self._index.live, STATE]  # owed steps do not touch this column

    def mask(self, spec: str, states: Iterable[str]) -> torch.Tensor:
        """Return a [live rows] bool device tensor: True where a row of `spec` is in `states`.

        The table of a (spec, states) pair is uploaded once and cached, so repeated calls (a
        model's forward reading the experts that route) never wait on the host.
        """
        key = (spec, frozenset(str(s) for s in states))
        table = self._masks.get(key)
        if table is None:
            table = self._masks[key] = self._mask_table(*key)
        return table.index_select(0, self.state_keys[: self._index.live])

    def _mask_table(self, spec: str, states: frozenset[str]) -> torch.Tensor:
        if spec not in self.specs:
            raise SpecError(f"{self.name}: unknown spec {spec!r}; known: {', '.join(self.specs)}")
        offset = self._index.offsets[self._index.spec_ids[spec]]
        table = torch.zeros(self._index.keys, dtype=torch.bool)
        table[[offset + self.specs[spec].state(name).code for name in sorted(states)]] = True
        return table.to(self.device)

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return the live rows as CPU tensors, with the entities and each row's spec; time in
        state is brought up to the clock first (see `state`).

        Entities are one JSON string and row specs one tensor: `torch.load(weights_only=True)`
        unpickles in Python, one object at a time, so 10k small objects would cost more than
        all the tensors together.
        """
        live = self._index.live
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "clock": self._clock,
            "specs": list(self._index.spec_names),
            "entities": json.dumps(list(self._index.rows)),
            "row_specs": torch.tensor(self._index.row_spec, dtype=torch.int32),
            **{
                name: getattr(self, name)[:live].detach().to("cpu", copy=True)
                for name in ("state", "history", "metrics")
            },
        }
        return Snapshot(kind=self.name, seq=self.seq, state=state)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace every row, the clock and the seq with a snapshot's, on this device."""
        if snapshot.kind != self.name:
            raise UsageError(f"{self.name}: cannot restore a {snapshot.kind!r} snapshot")
        s = snapshot.state
        entities: list[str] = json.loads(s["entities"])
        live = len(entities)
        row_specs = self._remap_specs(s["specs"], s["row_specs"])
        self._allocate(max(int(s["capacity"]), live, 1))
        for stored, name in ((self._state, "state"), (self.history, "history"), (self.metrics, "metrics")):
            stored[:live] = s[name].to(self.device)
        offsets = torch.tensor(self._index.offsets, dtype=torch.int32)
        keys = offsets[row_specs] + s["state"][:, STATE]
        self.state_keys[:live] = keys.to(self.device)
        self._index.reset(entities, row_specs.tolist(), s["state"][:, STATE].tolist())
        self._clock, self._owed = int(s["clock"]), 0
        self.seq = snapshot.seq

    def _remap_specs(self, names: Sequence[str], row_specs: torch.Tensor) -> torch.Tensor:
        """Translate a snapshot's per-row spec ids into this projection's, by spec name."""
        unknown = sorted(set(names) - set(self.specs))
        if unknown:
            raise SpecError(f"{self.name}: the snapshot uses specs this projection lacks: {unknown}")
        ids = torch.tensor([self._index.spec_ids[name] for name in names] or [0], dtype=torch.long)
        return ids[row_specs.long()]

    # -- inspection ----------------------------------------------------------------------------

    def as_rows(self) -> list[dict[str, Any]]:
        """Return every live row as plain values with state names, copied to the host once.

        For tests and debugging; a training loop reads the tensors, never this.
        """
        return row_dicts(self.specs, self._index, self.state, self.history, self.metrics)
