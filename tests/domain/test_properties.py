"""Property tests: random command sequences keep the fold, the specs and the log consistent.

Each example drives a `Lifecycle` with a random sequence of commands (register, transition to
any state including refused ones, observe metrics, seal) over random built-in specs and
entities, then checks invariants on the registry and on the log it appended.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle_es import (
    BUILTIN_SPECS,
    CODEC,
    DuplicateEntityError,
    GateLibrary,
    InvalidTransitionError,
    Lifecycle,
    LifecycleConfig,
    Registry,
    UnknownEntityError,
    default_gates,
    fold,
    fold_record,
)

SPECS = sorted(BUILTIN_SPECS)
ENTITIES = [f"e{i}" for i in range(4)]
MAX_STATES = max(len(s.states) for s in BUILTIN_SPECS.values())

# The metric names the built-in gates read, so the default-gate runs pass and fail gates.
GATE_METRICS = [
    "reconstruction_loss", "performance_delta", "stability_score", "error_rate", "error_count",
    "total_improvement", "final_stability", "available_slots", "epochs_trained",
    "loss_at_instantiation", "current_loss", "host_accuracy_at_blend", "current_accuracy",
    "module_grad_norm", "module_contribution", "module_cost", "improvement",
]  # fmt: skip

metrics = st.dictionaries(
    st.sampled_from(GATE_METRICS),
    st.floats(min_value=-2.0, max_value=20.0, allow_nan=False, allow_infinity=False),
    max_size=4,
)
register_op = st.tuples(
    st.just("register"),
    st.sampled_from(ENTITIES),
    st.sampled_from(SPECS),
    st.integers(0, 1),
    st.none() | st.integers(0, 2),
    st.none() | st.integers(0, 1),
)
# An exit of the current state (usually allowed) or any state of the spec (usually refused).
transition_op = st.tuples(
    st.just("transition"),
    st.integers(0, 8 * len(ENTITIES)),
    st.booleans(),
    st.integers(0, MAX_STATES - 1),
    st.sampled_from([0, 1, 20, 60, 120]),
    st.none() | metrics,
)
observe_op = st.tuples(st.just("observe"), st.sampled_from([*ENTITIES, None]), metrics)
seal_op = st.tuples(st.just("seal"))
commands = st.lists(register_op, min_size=1, max_size=len(ENTITIES), unique_by=lambda op: op[1]).flatmap(
    lambda registrations: st.lists(
        # Transitions are the point; one_of would draw each kind about equally often.
        st.sampled_from([transition_op] * 5 + [register_op, observe_op, seal_op]).flatmap(lambda op: op),
        min_size=10,
        max_size=60,
    ).map(lambda ops: registrations + ops)
)
"""Some registrations first (so transitions have entities to act on), then any commands."""

EXPECTED_REFUSALS = (InvalidTransitionError, UnknownEntityError, DuplicateEntityError)


def run_commands(lc: Lifecycle, ops: list[tuple[Any, ...]]) -> None:
    """Apply the ops; refusals the command handlers are meant to raise are part of the run."""
    for op in ops:
        with contextlib.suppress(*EXPECTED_REFUSALS):
            apply(lc, op)


def apply(lc: Lifecycle, op: tuple[Any, ...]) -> None:
    match op:
        case ("register", entity, spec, initial, slot, layer):
            initials = lc.registry.specs[spec].initial
            lc.register(entity, spec, state=initials[initial % len(initials)], slot=slot, layer=layer)
        case ("transition", pick, along_exit, choice, gap, ms):
            # Mostly a registered entity; now and then one that does not exist.
            names = [*lc.registry.entities] * 4 + ["ghost"]
            current = lc.registry.get(names[pick % len(names)])
            spec = lc.registry.specs[current.spec]
            exits = spec.exits(current.state)
            targets = [t.target for t in exits] if along_exit and exits else [s.name for s in spec.states]
            lc.advance(lc.registry.step + gap)
            lc.transition(current.entity, to=targets[choice % len(targets)], metrics=ms)
        case ("observe", entity, ms):
            if entity is None or entity in lc.registry:
                lc.observe(ms, entity=entity)
        case ("seal",):
            lc.seal()


def check_invariants(lc: Lifecycle) -> None:
    records = lc.log.read()
    live = lc.registry
    assert [r["seq"] for r in records] == list(range(1, live.seq + 1))

    # Folding the log from scratch, three ways, gives the live registry.
    from_records = Registry(live.specs, window=live.window)
    for record in records:
        fold_record(from_records, record)
    from_events = Registry(live.specs, window=live.window)
    for record in records:
        fold(from_events, CODEC.from_record(record))
    reopened = Lifecycle(lc.log, gates=lc.gates, config=lc.config)
    assert from_records == live
    assert from_events == live
    assert reopened.registry == live

    # Every entity is in exactly one state of its spec, and the population counts agree.
    for e in live:
        assert live.specs[e.spec].has_state(e.state)
    counted = Counter((e.spec, e.layer, e.state) for e in live)
    for spec, layer in {(e.spec, e.layer) for e in live}:
        for s in live.specs[spec].states:
            assert live.population(spec, layer, s.name) == counted[(spec, layer, s.name)]

    # No transition leaves a terminal state, and every history is a path of its spec's graph.
    position: dict[str, tuple[str, str]] = {}
    for r in records:
        if r["kind"] == "EntityRegistered":
            assert r["state"] in live.specs[r["spec"]].initial
            position[r["entity"]] = (r["spec"], r["state"])
        elif r["kind"] == "TransitionApplied":
            spec_name, state = position[r["entity"]]
            graph = live.specs[spec_name]
            assert r["from_state"] == state
            assert not graph.state(state).terminal
            assert graph.edge(state, r["to_state"]) is not None
            position[r["entity"]] = (spec_name, r["to_state"])
    assert {name: state for name, (_, state) in position.items()} == {e.entity: e.state for e in live}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(ops=commands)
def test_random_commands_with_passing_gates_keep_every_invariant(
    ops: list[tuple[Any, ...]], passing_gates: GateLibrary
) -> None:
    """With gates that pass, any command sequence folds back to the live registry and keeps
    entities on their spec's graph."""
    lc = Lifecycle(gates=passing_gates)
    run_commands(lc, ops)
    check_invariants(lc)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(ops=commands, window=st.integers(1, 4))
def test_random_commands_with_the_real_gates_keep_every_invariant(
    ops: list[tuple[Any, ...]], window: int
) -> None:
    """With default_gates and random metrics (gates pass and fail), the invariants still hold."""
    lc = Lifecycle(gates=default_gates(), config=LifecycleConfig(metric_window=window))
    run_commands(lc, ops)
    check_invariants(lc)


@settings(max_examples=50, deadline=None)
@given(ops=commands)
def test_refused_commands_change_nothing_but_their_records(
    ops: list[tuple[Any, ...]], passing_gates: GateLibrary
) -> None:
    """A command that raises leaves the registry as before, apart from recorded rejections."""
    lc = Lifecycle(gates=passing_gates)
    for op in ops:
        before, seq = lc.registry.copy(), lc.log.last_seq()
        try:
            apply(lc, op)
        except InvalidTransitionError:
            added = lc.log.read(after=seq)
            assert added[-1]["kind"] == "TransitionRejected"
            assert {r["kind"] for r in added[:-1]} <= {"GateChecked"}
            assert lc.registry.get(added[-1]["entity"]).state == before.get(added[-1]["entity"]).state
        except (UnknownEntityError, DuplicateEntityError):
            assert lc.registry == before
            assert lc.log.last_seq() == seq
