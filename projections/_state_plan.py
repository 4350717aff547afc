"""The host side of the state tensors: which rows and cells a batch of records writes.

Records are Python mappings (or the typed lines of a trusted JSONL replay), so reading them is
a per-record scan on the host; the scan builds
a `Plan` and touches no tensor. Writes are kept in dictionaries keyed by the cell's flat index
(row * width + column), so a later record of the batch overwrites an earlier one's value:
last-write-wins is decided here, explicitly, before any `index_put_` sees an index (duplicate
indices in one `index_put_` are undefined in torch), and each tensor then takes one
`index_put_` on its flat view. Transitions are grouped in rounds by occurrence: round k holds
every row's k-th transition of the batch, so each round has distinct rows, and the rounds,
applied in order, write a row's last transition last and push its transitions onto its
history ring in order.

A record that names an unknown entity, spec or state raises `InconsistentEventError` from the
scan, before the projection changes.

A row mirrors the registry, which keeps metrics only of live entities: when an entity leaves the
live set (a failure or terminal state, `lifecycle_es.registry.holds_slot`), its metric-derived
cells go back to their blank values, and metrics observed of it while it is out are not written.
The scan knows which rows are out from a host-side flag per row, so it reads no device tensor.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

from bus import Record
from lifecycle_es.codec import TypedLines
from lifecycle_es.errors import InconsistentEventError, SchemaError
from lifecycle_es.registry import holds_slot, read_fields
from lifecycle_es.spec import Spec

__all__ = [
    "BLUEPRINT",
    "CHECKPOINT_ID",
    "COLUMNS",
    "EPOCHS_IN_STATE",
    "ERROR_COUNT",
    "EVALUATION_SCORE",
    "GRAFTING_STRATEGY",
    "HISTORY_DEPTH",
    "METRIC_NAMES",
    "MOVE_COLUMNS",
    "PARENT_STATE",
    "STATE",
    "Plan",
    "Round",
    "RowIndex",
    "plan_batch",
    "plan_lines",
]


COLUMNS = (
    "state",
    "blueprint",
    "epochs_in_state",
    "grafting_strategy",
    "parent_state",
    "checkpoint_id",
    "evaluation_score",
    "error_count",
)
"""The columns of the [N, 8] int32 state tensor, in Kasmina's order."""
(
    STATE,
    BLUEPRINT,
    EPOCHS_IN_STATE,
    GRAFTING_STRATEGY,
    PARENT_STATE,
    CHECKPOINT_ID,
    EVALUATION_SCORE,
    ERROR_COUNT,
) = range(len(COLUMNS))

HISTORY_DEPTH = 10
"""Transitions kept per row in the history ring (Kasmina's HISTORY_DEPTH)."""
METRIC_NAMES = ("loss", "accuracy", "stability", "efficiency")
"""The columns of the [N, 4] float32 metrics tensor: metric names of `MetricsObserved`."""

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_METRIC_COLUMN = {name: i for i, name in enumerate(METRIC_NAMES)}
_WIDTH = len(COLUMNS)


def _saturate(x: float) -> float:
    return min(max(x, float(_INT32_MIN)), float(_INT32_MAX))


_INT_METRICS: Mapping[str, tuple[int, Callable[[float], int]]] = {
    "checkpoint_id": (CHECKPOINT_ID, lambda x: int(_saturate(x))),
    "evaluation_score": (EVALUATION_SCORE, lambda x: round(_saturate(x * 1000.0))),
    "error_count": (ERROR_COUNT, lambda x: int(_saturate(x))),
}
"""Metrics stored in int32 columns: (column, conversion saturating at the int32 range)."""


def _int32_attr(attrs: Mapping[str, Any] | None, name: str) -> int | None:
    value = attrs.get(name) if attrs else None
    if type(value) is int and _INT32_MIN <= value <= _INT32_MAX:  # bool is not a blueprint id
        return value
    return None


class RowIndex:
    """Host-side maps: entity to row (registration order), row to spec, state name to codes.

    A state's key numbers it across every spec (its spec's offset plus its code), so one
    boolean table indexed by key answers "is this row of spec S in one of these states".
    """

    def __init__(self, specs: Mapping[str, Spec]) -> None:
        self.spec_names = list(specs)
        """Spec names by spec id: the order of the mapping the projection was built with."""
        self.spec_ids = {name: i for i, name in enumerate(self.spec_names)}
        self.offsets: list[int] = []
        """Per spec id, the key of its state with code 0."""
        self.tables: list[dict[str, tuple[int, int]]] = []
        """Per spec id, state name to (code, key)."""
        self.retired_codes: list[frozenset[int]] = []
        """Per spec id, the codes of the states outside the live set."""
        offset = 0
        for spec in specs.values():
            self.offsets.append(offset)
            self.tables.append({s.name: (s.code, offset + s.code) for s in spec.states})
            self.retired_codes.append(frozenset(s.code for s in spec.states if not holds_slot(spec, s.name)))
            offset += 1 + max(s.code for s in spec.states)
        self.keys = offset
        """How many keys there are."""
        self.rows: dict[str, int] = {}
        self.row_spec: list[int] = []
        self.retired = bytearray()
        """Per row, 1 while its entity is out of the live set (its metric cells stay blank)."""

    @property
    def live(self) -> int:
        """How many rows are in use."""
        return len(self.row_spec)

    def reset(self, entities: Sequence[str], row_spec: Sequence[int], codes: Sequence[int]) -> None:
        """Replace the maps with the rows of a snapshot, given each row's spec id and state code."""
        self.rows = {entity: row for row, entity in enumerate(entities)}
        self.row_spec = list(row_spec)
        self.retired = bytearray(
            code in self.retired_codes[sid] for sid, code in zip(self.row_spec, codes, strict=True)
        )

    def commit(self, plan: Plan) -> None:
        """Take in the rows a plan registered and the rows it moved into or out of the live set."""
        self.rows.update(plan.new_rows)
        self.row_spec.extend(plan.new_specs)
        self.retired.extend(bytes(len(plan.new_specs)))
        for row, out in plan.retired.items():
            self.retired[row] = out


@dataclass(slots=True)
class Round:
    """Round k of a batch: every row's k-th transition, so no row appears twice."""

    rows: array[int] = field(default_factory=lambda: array("i"))
    moves: array[int] = field(default_factory=lambda: array("i"))
    """Per row, flattened: (from code, to code, epochs in state relative to the plan's start),
    the values of the columns `MOVE_COLUMNS`."""
    keys: array[int] = field(default_factory=lambda: array("i"))
    """Per row, the key of the state it moved to."""

    def take(self, other: Round, i: int) -> None:
        """Append the `i`-th transition of another round."""
        self.rows.append(other.rows[i])
        self.moves.extend(other.moves[3 * i : 3 * i + 3])
        self.keys.append(other.keys[i])


MOVE_COLUMNS = (PARENT_STATE, STATE, EPOCHS_IN_STATE)
"""The state columns a transition writes, in the order of `Round.moves`."""


@dataclass(slots=True)
class Plan:
    """The writes of one batch, on the host, each cell with its last value.

    Epochs in state are written relative to `start`: a row that entered a state at `step`
    gets `start - step`, and the device then adds the batch's clock advance, `clock - start`,
    to every live row.
    """

    first_row: int
    """The row the batch's first registration takes."""
    start: int
    """The largest step folded before the batch."""
    clock: int = 0
    """The largest step folded, this batch included."""
    new_rows: dict[str, int] = field(default_factory=dict)
    new_specs: list[int] = field(default_factory=list)
    cells: dict[int, int] = field(default_factory=dict)
    """Flat index (row * 8 + column) of the int32 state tensor to its value, for what
    registrations and metrics write; transitions write through `rounds`, applied after."""
    keys: dict[int, int] = field(default_factory=dict)
    """Row to the key of the state it was registered in."""
    values: dict[int, float] = field(default_factory=dict)
    """Flat index (row * 4 + column) of the float32 metrics tensor to its value."""
    counts: dict[int, int] = field(default_factory=dict)
    """Row to how many transitions it made in the batch."""
    retired: dict[int, bool] = field(default_factory=dict)
    """Row to whether it is out of the live set after the batch, for rows the batch put in or out."""
    rounds: list[Round] = field(default_factory=list)
    """The transitions by occurrence: applied in order, the last of a row is written last."""

    def history_rounds(self) -> list[Round]:
        """Return the rounds to apply: `rounds`, or fewer when a row moved too often to keep all.

        Only a row's last HISTORY_DEPTH transitions survive in its ring, so when a row moved
        more often the transitions are regrouped by rank from the newest, oldest rank first,
        and older ones are dropped; each row's newest transition is still written last.
        """
        if len(self.rounds) <= HISTORY_DEPTH:
            return self.rounds
        by_rank = [Round() for _ in range(HISTORY_DEPTH)]
        for k, round_ in enumerate(self.rounds):
            for i, row in enumerate(round_.rows):
                rank = self.counts[row] - 1 - k
                if rank < HISTORY_DEPTH:
                    by_rank[rank].take(round_, i)
        return [r for r in reversed(by_rank) if r.rows]


class _Scan:
    """One pass over a batch: dispatches each record by kind into a `Plan`.

    Each handler takes the fields it reads as arguments (named in `_FIELDS`), so one handler
    serves a batch of mappings (`plan_batch`) and a page of typed lines (`plan_lines`).
    """

    def __init__(self, index: RowIndex, clock: int) -> None:
        self.index = index
        self.plan = Plan(first_row=index.live, start=clock)
        self.handlers: dict[str, Callable[..., None]] = {
            "EntityRegistered": self.register,
            "TransitionApplied": self.transition,
            "MetricsObserved": self.metrics,
        }

    def row(self, entity: Any) -> int | None:
        row = self.index.rows.get(entity)
        return self.plan.new_rows.get(entity) if row is None else row

    def spec_id(self, row: int) -> int:
        first = self.plan.first_row
        return self.index.row_spec[row] if row < first else self.plan.new_specs[row - first]

    def enter(self, row: int, sid: int, code: int) -> None:
        """Note the row's (of spec id `sid`) new state; a row leaving the live set gets blank
        metric cells."""
        out = code in self.index.retired_codes[sid]
        self.plan.retired[row] = out
        if out:
            cells, at = self.plan.cells, row * _WIDTH
            cells[at + CHECKPOINT_ID], cells[at + EVALUATION_SCORE], cells[at + ERROR_COUNT] = -1, 0, 0
            for column in range(len(METRIC_NAMES)):
                self.plan.values[row * len(METRIC_NAMES) + column] = 0.0

    def register(self, seq: int, entity: Any, spec: Any, state: Any, step: int, attrs: Any) -> None:
        plan = self.plan
        sid = self.index.spec_ids.get(spec)
        found = None if sid is None else self.index.tables[sid].get(state)
        if found is None or sid is None or self.row(entity) is not None:
            raise InconsistentEventError(f"seq {seq}: cannot register {entity!r} as {spec}/{state}")
        row = plan.first_row + len(plan.new_specs)
        plan.new_rows[entity] = row
        plan.new_specs.append(sid)
        cells, at = plan.cells, row * _WIDTH
        cells[at + STATE], plan.keys[row] = found
        cells[at + EPOCHS_IN_STATE] = plan.start - step
        self.seed_columns(row, attrs)
        self.enter(row, sid, found[0])

    def seed_columns(self, row: int, attrs: Mapping[str, Any] | None) -> None:
        """Write the blueprint and grafting strategy a registration or germination names."""
        if not attrs:
            return  # most transitions carry no metadata
        for column, name in ((BLUEPRINT, "blueprint"), (GRAFTING_STRATEGY, "grafting_strategy")):
            value = _int32_attr(attrs, name)
            if value is not None:
                self.plan.cells[row * _WIDTH + column] = value

    def transition(self, seq: int, entity: Any, source: Any, target: Any, step: int, metadata: Any) -> None:
        row = self.row(entity)
        sid = None if row is None else self.spec_id(row)
        table = None if sid is None else self.index.tables[sid]
        left = None if table is None else table.get(source)
        entered = None if table is None else table.get(target)
        if row is None or sid is None or left is None or entered is None:
            raise InconsistentEventError(f"seq {seq}: {entity!r} cannot move {source}->{target}")
        plan = self.plan
        k = plan.counts.get(row, 0)
        plan.counts[row] = k + 1
        if k == len(plan.rounds):
            plan.rounds.append(Round())
        round_ = plan.rounds[k]
        round_.rows.append(row)
        round_.moves.extend((left[0], entered[0], plan.start - step))
        round_.keys.append(entered[1])
        # A germination names its blueprint in the transition's metadata (issue 13 point 7);
        # rounds apply after the cells, which these columns are not among (MOVE_COLUMNS).
        self.seed_columns(row, metadata)
        self.enter(row, sid, entered[0])

    def metrics(self, entity: Any, metrics: Mapping[str, Any]) -> None:
        # `row` and the retired check inlined: this runs for a fifth of a replay's records
        plan, index = self.plan, self.index
        row = index.rows.get(entity)
        if row is None:
            row = plan.new_rows.get(entity)
            if row is None:  # a layer's or the run's, or unknown
                return
        out = plan.retired.get(row)
        if out or (out is None and row < plan.first_row and index.retired[row]):
            return  # out of the live set
        values, at = plan.values, row * len(METRIC_NAMES)
        for name, value in metrics.items():
            column = _METRIC_COLUMN.get(name)
            if column is not None:
                values[at + column] = (
                    value
                    if -_FLOAT32_MAX <= value <= _FLOAT32_MAX
                    else min(max(value, -_FLOAT32_MAX), _FLOAT32_MAX)
                )
            elif name in _INT_METRICS:
                column, convert = _INT_METRICS[name]
                plan.cells[row * _WIDTH + column] = convert(value)


_FIELDS = {
    "EntityRegistered": ("seq", "entity", "spec", "state", "step", "attrs"),
    "TransitionApplied": ("seq", "entity", "from_state", "to_state", "step", "metadata"),
    "MetricsObserved": ("entity", "metrics"),
}
"""The fields each `_Scan` handler reads, in the order it takes them."""
_OPTIONAL: dict[str, dict[str, Any]] = {
    "EntityRegistered": {"attrs": None},
    "TransitionApplied": {"metadata": None},
    "MetricsObserved": {"entity": None},  # run-level metrics name no entity
}
"""Per kind, what a handler reads for a field a mapping may lack (records written before it
existed); any other field missing is refused."""
_ITEMS = {kind: itemgetter(*fields) for kind, fields in _FIELDS.items()}
_ATTRS = {kind: attrgetter(*fields) for kind, fields in _FIELDS.items()}


def plan_batch(index: RowIndex, records: Sequence[Record], clock: int) -> Plan:
    """Scan a batch of mappings into its writes.

    `clock` is the largest step folded before the batch; the plan's clock includes the batch.
    """
    scan = _Scan(index, clock)
    handlers = scan.handlers
    for record in records:
        kind: str = record.get("kind", "")
        handler = handlers.get(kind)
        if handler is None:
            if not kind:
                raise SchemaError(f"record seq {record.get('seq')!r} lacks the field 'kind'")
            continue
        try:
            values = _ITEMS[kind](record)
        except KeyError:
            values = read_fields(_ITEMS[kind], record, _OPTIONAL[kind], kind)
        handler(*values)
    try:
        scan.plan.clock = max(clock, max(map(_step, records), default=clock))  # at C speed
    except KeyError:
        lacking = next(r for r in records if "step" not in r)
        raise SchemaError(f"record seq {lacking.get('seq')!r} lacks the field 'step'") from None
    return scan.plan


def plan_lines(index: RowIndex, lines: TypedLines, clock: int) -> Plan:
    """`plan_batch` for a page of typed lines (`Codec.decode_typed_lines`), read by attribute."""
    scan = _Scan(index, clock)
    readers = {
        struct: (scan.handlers[kind], _ATTRS[kind]) if kind in _ATTRS else None
        for struct, kind in lines.kinds.items()
    }
    structs = lines.structs
    for line in structs:
        reader = readers[type(line)]
        if reader is not None:
            reader[0](*reader[1](line))
    scan.plan.clock = max(clock, max(map(_step_of, structs), default=clock))
    return scan.plan


_step = itemgetter("step")
_step_of = attrgetter("step")
