"""Lifecycle metrics: time in state, gate pass rates, transition counts and state populations.

The projection reads only the events: it keeps each entity's spec, state and entered step
itself, so it needs neither the specs nor the registry. Its clock is the latest step of any
record folded; time in state is the closed intervals (from entering a state to leaving it)
plus the open ones of the entities still there, measured up to that clock. The run itself is
not an entity (the registry tracks it apart), so its RunStateChanged events are not counted.

The same figures come out as plain rows (`*_rows`) for analysis and, through a
prometheus_client collector (`MetricsCollector`), as Prometheus or OpenMetrics text for
scraping.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from lifecycle_es.errors import InconsistentEventError, UsageError
from lifecycle_es.events import gate_results
from projections._projection import Projection, Record, Snapshot

__all__ = ["MetricsCollector", "MetricsProjection"]

_StateKey = tuple[str, str]  # (spec, state)
_EdgeKey = tuple[str, str, str]  # (spec, from, to)


class _Tracked(NamedTuple):
    spec: str
    state: str
    entered_step: int


class MetricsProjection(Projection):
    """Counters and gauges of a run's lifecycle, folded from its events."""

    name = "metrics"

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        """The projection's clock: the latest step of any record folded."""
        self._entities: dict[str, _Tracked] = {}
        self._closed: Counter[_StateKey] = Counter()
        self._population: Counter[_StateKey] = Counter()
        self._gates: dict[str, list[int]] = {}  # gate -> [checked, passed]
        self._applied: Counter[_EdgeKey] = Counter()
        self._rejected: Counter[_EdgeKey] = Counter()
        self._lock = threading.Lock()  # a scrape on the HTTP server's thread reads whole batches

    def apply(self, records: Sequence[Record]) -> int:
        """Fold a batch as every projection does (see `Projection.apply`), holding the lock."""
        with self._lock:
            return super().apply(records)

    # -- the projection ------------------------------------------------------------------------

    def _apply_batch(self, records: Sequence[Record]) -> None:
        for record in records:
            handler = _HANDLERS.get(record["kind"])
            if handler is not None:
                handler(self, record)
            self.step = max(self.step, record["step"])
            self.seq = record["seq"]  # so a refused record leaves the seq at the last folded

    def _on_registered(self, record: Record) -> None:
        entity = record["entity"]
        if entity in self._entities:
            raise InconsistentEventError(f"seq {record['seq']}: {entity!r} is registered twice")
        tracked = _Tracked(record["spec"], record["state"], record["step"])
        self._entities[entity] = tracked
        self._population[(tracked.spec, tracked.state)] += 1

    def _on_applied(self, record: Record) -> None:
        entity, source, target, step = (
            record["entity"],
            record["from_state"],
            record["to_state"],
            record["step"],
        )
        before = self._entities.get(entity)
        if before is None or before.state != source:
            raise InconsistentEventError(f"seq {record['seq']}: {entity!r} cannot move {source}->{target}")
        spec = before.spec
        self._closed[(spec, source)] += step - before.entered_step
        self._population[(spec, source)] -= 1
        self._population[(spec, target)] += 1
        self._applied[(spec, source, target)] += 1
        self._entities[entity] = _Tracked(spec, target, step)

    def _on_rejected(self, record: Record) -> None:
        tracked = self._entities.get(record["entity"])
        if tracked is None:
            raise InconsistentEventError(
                f"seq {record['seq']}: rejection for unknown entity {record['entity']!r}"
            )
        self._rejected[(tracked.spec, record["from_state"], record["to_state"])] += 1

    def _on_gate_checked(self, record: Record) -> None:
        for outcome in gate_results(record):  # one `GateChecked`, or a `GatesChecked`'s many
            counts = self._gates.setdefault(str(outcome.gate), [0, 0])
            counts[0] += 1
            counts[1] += bool(outcome.passed)

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return every counter as lists of plain rows (JSON- and `weights_only`-safe)."""
        return Snapshot(
            kind=self.name,
            seq=self.seq,
            state={
                "step": self.step,
                "entities": [[e, *t] for e, t in sorted(self._entities.items())],
                "closed": _plain(self._closed),
                "population": _plain(self._population),
                "gates": [[g, *c] for g, c in sorted(self._gates.items())],
                "applied": _plain(self._applied),
                "rejected": _plain(self._rejected),
            },
        )

    def restore(self, snapshot: Snapshot) -> None:
        """Replace every counter with a snapshot's, including the seq and the clock."""
        if snapshot.kind != self.name:
            raise UsageError(f"cannot restore a {snapshot.kind!r} snapshot into {self.name!r}")
        with self._lock:
            self._restore(snapshot)

    def _restore(self, snapshot: Snapshot) -> None:
        s = snapshot.state
        self.step = s["step"]
        self._entities = {e: _Tracked(spec, state, at) for e, spec, state, at in s["entities"]}
        self._closed = Counter({(spec, state): n for spec, state, n in s["closed"]})
        self._population = Counter({(spec, state): n for spec, state, n in s["population"]})
        self._gates = {g: [checked, passed] for g, checked, passed in s["gates"]}
        self._applied = Counter({(spec, a, b): n for spec, a, b, n in s["applied"]})
        self._rejected = Counter({(spec, a, b): n for spec, a, b, n in s["rejected"]})
        self.seq = snapshot.seq

    # -- figures -------------------------------------------------------------------------------

    def time_in_state(self, at: int | None = None) -> dict[_StateKey, int]:
        """Return the total steps entities spent in each (spec, state), measured up to `at`.

        `at` defaults to the projection's clock; it must not be before an open interval began.
        """
        at = self.step if at is None else at
        totals = Counter({k: n for k, n in self._closed.items()})
        for tracked in self._entities.values():
            if at < tracked.entered_step:
                raise UsageError(
                    f"step {at} is before an entity entered {tracked.state} at step {tracked.entered_step}"
                )
            totals[(tracked.spec, tracked.state)] += at - tracked.entered_step
        return dict(sorted(totals.items()))

    def time_in_state_rows(self, at: int | None = None) -> list[dict[str, Any]]:
        """Return one row per (spec, state): {"spec", "state", "steps"}."""
        return [
            {"spec": spec, "state": state, "steps": n} for (spec, state), n in self.time_in_state(at).items()
        ]

    def gate_rows(self) -> list[dict[str, Any]]:
        """Return one row per gate: {"gate", "checked", "passed", "failed", "rate"}."""
        return [
            {
                "gate": g,
                "checked": checked,
                "passed": passed,
                "failed": checked - passed,
                "rate": passed / checked,
            }
            for g, (checked, passed) in sorted(self._gates.items())
        ]

    def transition_rows(self) -> list[dict[str, Any]]:
        """Return one row per (spec, from, to) tried: {"spec", "from", "to", "applied", "rejected"}."""
        return [
            {
                "spec": spec,
                "from": a,
                "to": b,
                "applied": self._applied[(spec, a, b)],
                "rejected": self._rejected[(spec, a, b)],
            }
            for spec, a, b in sorted(self._applied.keys() | self._rejected.keys())
        ]

    def population_rows(self) -> list[dict[str, Any]]:
        """Return one row per (spec, state) ever occupied: {"spec", "state", "count"}.

        States emptied since keep a row with count 0, so a series never just disappears.
        """
        return [
            {"spec": spec, "state": state, "count": n}
            for (spec, state), n in sorted(self._population.items())
        ]

    # -- Prometheus ----------------------------------------------------------------------------

    def metric_families(self, *, run: str | None = None) -> list[Metric]:
        """Return every figure as prometheus_client metric families, read under the fold's lock.

        `run`, when given, labels every sample. Families and samples come in a fixed order, so
        equal projections give equal text. Pass rates are left to the query language:
        rate = passed / (passed + failed).
        """
        with self._lock:
            return _families(self, [] if run is None else [("run", run)])

    def registry(self, *, run: str | None = None) -> CollectorRegistry:
        """Return a registry of its own (never prometheus_client's global one) holding a
        `MetricsCollector` of this projection."""
        registry = CollectorRegistry()
        registry.register(MetricsCollector(self, run=run))
        return registry

    def prometheus(self, *, run: str | None = None) -> str:
        """Return every figure in the Prometheus text exposition format."""
        return generate_latest(self.registry(run=run)).decode("utf-8")

    def openmetrics(self, *, run: str | None = None) -> str:
        """Return every figure in the OpenMetrics text format (it ends with `# EOF`)."""
        # prometheus_client leaves the OpenMetrics writer unannotated; it returns bytes.
        text: bytes = openmetrics_latest(self.registry(run=run))  # type: ignore[no-untyped-call]
        return text.decode("utf-8")


class MetricsCollector(Collector):
    """A prometheus_client collector of a `MetricsProjection`: each collect reads it as it is.

    The projection may go on folding on another thread (a `Runner` following the log) while a
    scrape reads it; the projection's lock keeps each scrape to whole batches.
    """

    def __init__(self, projection: MetricsProjection, *, run: str | None = None) -> None:
        self.projection = projection
        self.run = run
        """The value of the `run` label on every sample; None leaves the label out."""

    def collect(self) -> Iterator[Metric]:
        """Yield the projection's metric families."""
        yield from self.projection.metric_families(run=self.run)


_Labels = list[tuple[str, str]]
_Samples = Iterable[tuple[Sequence[str], int]]
_Kind = type[CounterMetricFamily | GaugeMetricFamily]


def _families(m: MetricsProjection, base: _Labels) -> list[Metric]:
    return [
        _family(kind, name, help_text, base, labels, samples(m))
        for kind, name, help_text, labels, samples in _FAMILIES
    ]


def _family(
    kind: _Kind, name: str, help_text: str, base: _Labels, labels: Sequence[str], samples: _Samples
) -> Metric:
    """One family whose every sample carries the `base` labels (the run) before its own."""
    family = kind(name, help_text, labels=[*(k for k, _ in base), *labels])
    for values, n in samples:
        family.add_metric([*(v for _, v in base), *values], n)
    return family


def _gate_samples(m: MetricsProjection) -> _Samples:
    return [((r["gate"], result), r[result]) for r in m.gate_rows() for result in ("failed", "passed")]


_EDGE = ("spec", "from", "to")
_STATE = ("spec", "state")
_FAMILIES: tuple[tuple[_Kind, str, str, tuple[str, ...], Callable[[MetricsProjection], _Samples]], ...] = (
    (
        CounterMetricFamily,
        "lifecycle_gate_checks_total",
        "Gate evaluations, by gate and result.",
        ("gate", "result"),
        _gate_samples,
    ),
    (
        CounterMetricFamily,
        "lifecycle_transitions_total",
        "Transitions applied, by spec and edge.",
        _EDGE,
        lambda m: sorted(m._applied.items()),
    ),
    (
        CounterMetricFamily,
        "lifecycle_transitions_rejected_total",
        "Transitions refused, by spec and requested edge.",
        _EDGE,
        lambda m: sorted(m._rejected.items()),
    ),
    (
        GaugeMetricFamily,
        "lifecycle_entities",
        "Entities in each state, by spec.",
        _STATE,
        lambda m: [((r["spec"], r["state"]), r["count"]) for r in m.population_rows()],
    ),
    (
        CounterMetricFamily,
        "lifecycle_time_in_state_steps_total",
        "Steps entities spent in each state, open intervals up to the clock.",
        _STATE,
        lambda m: [((r["spec"], r["state"]), r["steps"]) for r in m.time_in_state_rows()],
    ),
    (GaugeMetricFamily, "lifecycle_step", "Latest step of any event folded.", (), lambda m: [((), m.step)]),
    (GaugeMetricFamily, "lifecycle_seq", "Seq of the last event folded.", (), lambda m: [((), m.seq)]),
)
"""Each exposed family, in the exposition's order: its type, name, help, labels and samples."""


_HANDLERS: dict[str, Callable[[MetricsProjection, Record], None]] = {
    "EntityRegistered": MetricsProjection._on_registered,
    "TransitionApplied": MetricsProjection._on_applied,
    "TransitionRejected": MetricsProjection._on_rejected,
    "GateChecked": MetricsProjection._on_gate_checked,
    "GatesChecked": MetricsProjection._on_gate_checked,
}
"""The kinds the metrics read; every other kind only moves the clock and the seq."""


def _plain(counter: Counter[Any]) -> list[list[Any]]:
    return [[*key, n] for key, n in sorted(counter.items())]
