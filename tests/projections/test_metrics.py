"""The metrics projection: exact figures for scripted runs, the protocol, and Prometheus and
OpenMetrics output read back by prometheus_client's parsers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from lifecycle_es import Lifecycle
from lifecycle_es.errors import InconsistentEventError, InvalidTransitionError, SequenceGapError, UsageError
from lifecycle_es.events import GateCategory
from lifecycle_es.gates import Gate, GateInput, GateLibrary, GateResult
from lifecycle_es.spec import Spec, StateCategory, StateDef, TransitionDef
from projections import MetricsCollector, MetricsProjection, Snapshot
from tests._prometheus import Exposition, parse_both, parse_openmetrics, parse_prometheus, row_samples

RoundTrip = Callable[[Snapshot], Snapshot]
Records = list[dict[str, Any]]


def _metrics(records: Records) -> MetricsProjection:
    projection = MetricsProjection()
    projection.apply(records)
    return projection


# -- a Kasmina run with known gate outcomes ----------------------------------------------------------


@pytest.fixture(scope="module")
def kasmina_records() -> Records:
    """Two seeds: one refused then grafted, one refused, one refused edge; known gate outcomes.

    min_time_in_state: fails at step 50, passes at 101 and 120 (2 of 3).
    kasmina.reconstruction: fails at 50 (0.2) and 120 (0.5), passes at 101 (0.004) (1 of 3).
    """
    with Lifecycle(run_id="kasmina-metrics") as lc:
        lc.start()
        lc.register("seed-0", "kasmina", layer=0, slot=0)
        lc.register("seed-1", "kasmina", layer=0, slot=1)
        lc.transition("seed-0", "GERMINATED", step=0)
        lc.transition("seed-0", trigger="start_training", step=1)
        lc.transition("seed-1", "GERMINATED", step=1)
        lc.transition("seed-1", trigger="start_training", step=2)
        with pytest.raises(InvalidTransitionError):
            lc.transition("seed-0", "GRAFTING", step=50, metrics={"reconstruction_loss": 0.2})
        lc.transition("seed-0", "GRAFTING", step=101, metrics={"reconstruction_loss": 0.004})
        with pytest.raises(InvalidTransitionError):
            lc.transition("seed-1", "GRAFTING", step=120, metrics={"reconstruction_loss": 0.5})
        with pytest.raises(InvalidTransitionError):  # no such edge: refused without any gate
            lc.transition("seed-0", "FOSSILIZED", step=130)
        lc.seal(step=200)
        return lc.log.read()


def test_gate_pass_rates_are_exact(kasmina_records: Records) -> None:
    """Each gate's checks, passes and rate match the scripted outcomes."""
    assert _metrics(kasmina_records).gate_rows() == [
        {"gate": "kasmina.reconstruction", "checked": 3, "passed": 1, "failed": 2, "rate": 1 / 3},
        {"gate": "min_time_in_state", "checked": 3, "passed": 2, "failed": 1, "rate": 2 / 3},
    ]


def test_transition_and_rejection_counts(kasmina_records: Records) -> None:
    """Applied and refused transitions are counted per (spec, from, to), refused edges included."""
    assert _metrics(kasmina_records).transition_rows() == [
        {"spec": "kasmina", "from": "DORMANT", "to": "GERMINATED", "applied": 2, "rejected": 0},
        {"spec": "kasmina", "from": "GERMINATED", "to": "TRAINING", "applied": 2, "rejected": 0},
        {"spec": "kasmina", "from": "GRAFTING", "to": "FOSSILIZED", "applied": 0, "rejected": 1},
        {"spec": "kasmina", "from": "TRAINING", "to": "GRAFTING", "applied": 1, "rejected": 2},
    ]


def test_kasmina_population_and_time(kasmina_records: Records) -> None:
    """Populations keep emptied states at zero; time in state runs to the last step, 200."""
    metrics = _metrics(kasmina_records)
    assert metrics.step == 200
    assert metrics.population_rows() == [
        {"spec": "kasmina", "state": "DORMANT", "count": 0},
        {"spec": "kasmina", "state": "GERMINATED", "count": 0},
        {"spec": "kasmina", "state": "GRAFTING", "count": 1},
        {"spec": "kasmina", "state": "TRAINING", "count": 1},
    ]
    assert metrics.time_in_state() == {
        ("kasmina", "DORMANT"): 0 + 1,
        ("kasmina", "GERMINATED"): 1 + 1,
        ("kasmina", "GRAFTING"): 200 - 101,
        ("kasmina", "TRAINING"): (101 - 1) + (200 - 2),
    }


# -- an agent run with known steps ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_records() -> Records:
    """Agent a goes online and alternates busy and idle; agent b fails deploying; clock ends at 50."""
    with Lifecycle(run_id="agent-metrics") as lc:
        lc.start()
        lc.register("a", "agent", step=0)
        for target, step in (("deploying", 2), ("deployed", 5)):
            lc.transition("a", target, step=step)
        lc.register("b", "agent", step=5)
        for entity, target, step in (
            ("b", "deploying", 6),
            ("b", "failed", 8),
            ("a", "starting", 9),
            ("a", "online", 10),
            ("a", "busy", 20),
            ("a", "idle", 35),
            ("a", "busy", 40),
        ):
            lc.transition(entity, target, step=step)
        lc.seal(step=50)
        return lc.log.read()


def test_time_in_state_is_exact(agent_records: Records) -> None:
    """Closed intervals plus open ones up to the clock give each state's exact step total."""
    expected = {
        ("agent", "registered"): 2 + 1,
        ("agent", "deploying"): 3 + 2,
        ("agent", "deployed"): 4,
        ("agent", "starting"): 1,
        ("agent", "online"): 10,
        ("agent", "busy"): 15 + (50 - 40),
        ("agent", "idle"): 5,
        ("agent", "failed"): 50 - 8,
    }
    metrics = _metrics(agent_records)
    assert metrics.time_in_state() == expected
    assert sum(expected.values()) == (50 - 0) + (50 - 5)  # every step of every entity, once
    later = metrics.time_in_state(at=60)
    assert later[("agent", "busy")] == expected[("agent", "busy")] + 10
    assert later[("agent", "failed")] == expected[("agent", "failed")] + 10
    assert {"spec": "agent", "state": "idle", "steps": 5} in metrics.time_in_state_rows()
    with pytest.raises(UsageError, match="step 39 is before"):
        metrics.time_in_state(at=39)


def test_agent_transition_counts(agent_records: Records) -> None:
    """A repeated edge is counted each time; every applied edge appears once with its count."""
    rows = {(r["from"], r["to"]): r["applied"] for r in _metrics(agent_records).transition_rows()}
    assert rows == {
        ("registered", "deploying"): 2,
        ("deploying", "deployed"): 1,
        ("deploying", "failed"): 1,
        ("deployed", "starting"): 1,
        ("starting", "online"): 1,
        ("online", "busy"): 1,
        ("busy", "idle"): 1,
        ("idle", "busy"): 1,
    }


# -- the projection protocol ---------------------------------------------------------------------------


def test_batch_equals_one_by_one(kasmina_records: Records) -> None:
    """Applying one record at a time gives the same state and exposition as one batch."""
    batch = _metrics(kasmina_records)
    single = MetricsProjection()
    for record in kasmina_records:
        single.apply([record])
    assert single.snapshot() == batch.snapshot()
    assert single.prometheus() == batch.prometheus()


def test_reapplying_changes_nothing(kasmina_records: Records) -> None:
    """Records already applied are skipped: counts do not double."""
    metrics = _metrics(kasmina_records)
    before = metrics.snapshot()
    assert metrics.apply(kasmina_records) == 0
    assert metrics.apply(kasmina_records[3:9]) == 0
    assert metrics.snapshot() == before


def test_gap_raises_and_changes_nothing(kasmina_records: Records) -> None:
    """A batch that skips a seq raises SequenceGapError and leaves every counter as it was."""
    metrics = _metrics(kasmina_records[:6])
    before = metrics.snapshot()
    with pytest.raises(SequenceGapError):
        metrics.apply(kasmina_records[7:])
    assert metrics.snapshot() == before


def test_transition_of_unknown_entity_raises(kasmina_records: Records) -> None:
    """A transition of an entity never registered is refused, leaving seq at the last good record."""
    metrics = _metrics(kasmina_records[:2])
    ghost = {**kasmina_records[4], "seq": 4, "entity": "ghost"}
    assert ghost["kind"] == "TransitionApplied"
    with pytest.raises(InconsistentEventError, match="ghost"):
        metrics.apply([kasmina_records[2], ghost])
    assert metrics.seq == 3
    assert metrics.population_rows() == [{"spec": "kasmina", "state": "DORMANT", "count": 1}]
    assert metrics.apply(kasmina_records) == len(kasmina_records) - 3


def test_snapshot_restore_continue(kasmina_records: Records, round_trip: RoundTrip) -> None:
    """A snapshot read back from JSON or torch, restored and fed the rest, equals the full apply."""
    full = _metrics(kasmina_records)
    half = len(kasmina_records) // 2
    first = _metrics(kasmina_records[:half])
    snapshot = round_trip(first.snapshot())
    resumed = MetricsProjection()
    resumed.restore(snapshot)
    assert resumed.seq == half
    assert resumed.snapshot() == first.snapshot()
    assert resumed.prometheus() == first.prometheus()
    resumed.apply(kasmina_records)
    assert resumed.snapshot() == full.snapshot()
    assert resumed.gate_rows() == full.gate_rows()
    assert resumed.prometheus() == full.prometheus()


def test_restore_refuses_another_kind() -> None:
    """Restoring a registry snapshot into the metrics raises UsageError."""
    with pytest.raises(UsageError, match="'registry'"):
        MetricsProjection().restore(Snapshot(kind="registry", seq=0, state={}))


# -- Prometheus exposition -----------------------------------------------------------------------------

FAMILIES = {
    "lifecycle_gate_checks": "counter",
    "lifecycle_transitions": "counter",
    "lifecycle_transitions_rejected": "counter",
    "lifecycle_entities": "gauge",
    "lifecycle_time_in_state_steps": "counter",
    "lifecycle_step": "gauge",
    "lifecycle_seq": "gauge",
}
"""Every family by name, as both parsers name them (a counter's family without `_total`)."""


def scrape(metrics: MetricsProjection, run: str | None = None) -> Exposition:
    """The projection's Prometheus and OpenMetrics text, each read by prometheus_client's parser."""
    return parse_both(metrics.prometheus(run=run), metrics.openmetrics(run=run))


def test_exposition_parses_and_holds_the_figures(kasmina_records: Records) -> None:
    """Both formats parse, type each family, and carry the run's exact figures."""
    read = scrape(_metrics(kasmina_records))
    assert read.types == FAMILIES
    gate = "kasmina.reconstruction"
    edge = {"spec": "kasmina", "from": "TRAINING", "to": "GRAFTING"}
    assert read.sample("lifecycle_gate_checks_total", gate=gate, result="passed") == 1
    assert read.sample("lifecycle_gate_checks_total", gate=gate, result="failed") == 2
    assert read.sample("lifecycle_transitions_total", **edge) == 1
    assert read.sample("lifecycle_transitions_rejected_total", **edge) == 2
    assert read.sample("lifecycle_entities", spec="kasmina", state="DORMANT") == 0
    assert read.sample("lifecycle_entities", spec="kasmina", state="TRAINING") == 1
    assert read.sample("lifecycle_time_in_state_steps_total", spec="kasmina", state="GRAFTING") == 99
    assert read.sample("lifecycle_step") == 200
    assert read.sample("lifecycle_seq") == len(kasmina_records)


def test_exposition_holds_every_row(kasmina_records: Records) -> None:
    """Every row of the projection's tables is a sample, and there is no other sample."""
    metrics = _metrics(kasmina_records)
    assert scrape(metrics).samples == row_samples(metrics)


def test_run_label_on_every_sample(kasmina_records: Records) -> None:
    """With a run, every sample of both formats carries its label, with the same figures."""
    metrics = _metrics(kasmina_records)
    labelled = scrape(metrics, run="kasmina-metrics")
    assert labelled.types == FAMILIES
    assert labelled.samples == row_samples(metrics, run="kasmina-metrics")
    assert all(("run", "kasmina-metrics") in labels for _, labels in labelled.samples)


def test_collector_in_a_registry_of_its_own(kasmina_records: Records) -> None:
    """The registry holds only the projection's collector (no process or GC metrics), and a
    collector registered elsewhere reads the projection as it is at each collect."""
    metrics = _metrics(kasmina_records[:5])
    assert {f.name for f in metrics.registry(run="r").collect()} == set(FAMILIES)
    collector = MetricsCollector(metrics, run="r")
    before = {f.name: f.samples for f in collector.collect()}["lifecycle_seq"]
    metrics.apply(kasmina_records)
    after = {f.name: f.samples for f in collector.collect()}["lifecycle_seq"]
    assert [(s.labels, s.value) for s in before] == [({"run": "r"}, 5)]
    assert [(s.labels, s.value) for s in after] == [({"run": "r"}, len(kasmina_records))]


WEIRD_GATE = 'say "hi"\nthen \\ leave'


def _always_ok(inp: GateInput, params: Mapping[str, float]) -> GateResult:
    return GateResult(inp.metrics.get("ok", 0.0) > 0, "ok metric", {})


def test_label_values_are_escaped() -> None:
    """A gate name with a quote, a newline and a backslash is escaped in the text and parses back."""
    spec = Spec(
        name="tiny",
        states=(
            StateDef(name="new", code=0, category=StateCategory.INITIAL),
            StateDef(name="done", code=1, category=StateCategory.SUCCESS, terminal=True),
        ),
        transitions=(TransitionDef(source="new", target="done", trigger="finish", gates=(WEIRD_GATE,)),),
        initial=("new",),
    )
    gates = GateLibrary([Gate(WEIRD_GATE, GateCategory.PERFORMANCE, _always_ok)])
    with Lifecycle(run_id="escape", specs=[spec], gates=gates) as lc:
        lc.start()
        lc.register("x", "tiny")
        with pytest.raises(InvalidTransitionError):
            lc.transition("x", "done", step=1)
        lc.transition("x", "done", step=2, metrics={"ok": 1})
        metrics = _metrics(lc.log.read())
    escaped = 'say \\"hi\\"\\nthen \\\\ leave'
    assert f'gate="{escaped}"' in metrics.prometheus()
    assert f'gate="{escaped}"' in metrics.openmetrics()
    read = scrape(metrics)
    assert read.sample("lifecycle_gate_checks_total", gate=WEIRD_GATE, result="failed") == 1
    assert read.sample("lifecycle_gate_checks_total", gate=WEIRD_GATE, result="passed") == 1


def test_parsers_reject_a_raw_quote() -> None:
    """Both parsers refuse an unescaped quote, so the escaping check cannot pass vacuously."""
    bad = '# HELP m x\n# TYPE m gauge\nm{gate="a"b"} 1\n'
    with pytest.raises(ValueError):
        parse_prometheus(bad)
    with pytest.raises(ValueError):
        parse_openmetrics(bad + "# EOF\n")


def test_exposition_of_an_empty_projection() -> None:
    """A projection that folded nothing still gives every family, with step and seq at zero."""
    read = scrape(MetricsProjection())
    assert read.types == FAMILIES
    assert read.samples == {("lifecycle_step", frozenset()): 0.0, ("lifecycle_seq", frozenset()): 0.0}
