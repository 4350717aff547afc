"""The runner: catches several projections up with a log, resumes them from snapshots, follows
a live writer on a thread, stops cleanly and hands a projection's error to the caller."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _runs import GUARD_S, Point, play

import bus
from bus import Log, MemoryLog
from lifecycle_es import (
    BUILTIN_SPECS,
    CODEC,
    ConfigError,
    InconsistentEventError,
    Lifecycle,
    Registry,
    SchemaError,
    TransitionApplied,
    UsageError,
)
from projections import MetricsProjection, Projection, RegistryProjection, Runner, Snapshot, StateTensors


def fresh() -> tuple[RegistryProjection, MetricsProjection, StateTensors]:
    """An empty registry, metrics and state-tensor projection over the built-in specs."""
    return RegistryProjection(), MetricsProjection(), StateTensors(BUILTIN_SPECS, capacity=2)


def assert_agree(
    projections: tuple[RegistryProjection, MetricsProjection, StateTensors], registry: Registry
) -> None:
    """Assert all three projections describe `registry`, entity by entity, at its seq."""
    views, metrics, tensors = projections
    assert views.registry == registry
    rows = [(r["entity"], r["spec"], r["state"], r["epochs_in_state"]) for r in tensors.as_rows()]
    assert rows == [(e.entity, e.spec, e.state, e.time_in_state(registry.step)) for e in registry]
    counts = {(r["spec"], r["state"]): r["count"] for r in metrics.population_rows() if r["count"]}
    assert counts == Counter((e.spec, e.state) for e in registry)
    assert views.seq == metrics.seq == tensors.seq == registry.seq


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail (not hang) after GUARD_S."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {GUARD_S:g} s waiting for {what}")
        time.sleep(0.005)


def through_torch(snapshot: Snapshot) -> Snapshot:
    """A snapshot written as a checkpoint would be, and read back with weights_only."""
    buffer = io.BytesIO()
    torch.save({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state}, buffer)
    buffer.seek(0)
    return Snapshot(**torch.load(buffer, weights_only=True))


# -- catching up ----------------------------------------------------------------------------------


def test_catch_up_applies_the_whole_log_to_every_projection() -> None:
    """catch_up reads every record in batches; registry, metrics and tensors all match the writer."""
    lc = Lifecycle(run_id="runner")
    play(lc)
    projections = fresh()
    runner = Runner(lc.log, projections, batch_size=7)  # batches cut through steps and commands
    assert runner.catch_up() == lc.log.last_seq()
    assert runner.seq == lc.registry.seq
    assert_agree(projections, lc.registry)
    assert runner.catch_up() == 0  # nothing new: nothing read, nothing changed
    assert_agree(projections, lc.registry)


def test_resume_from_snapshots_taken_at_different_points_equals_a_full_replay() -> None:
    """Projections restored from snapshots of different seqs resume at the oldest and equal a full replay."""
    log = MemoryLog("resume")
    taken: dict[str, Snapshot] = {}
    live = fresh()
    snap_at = {25: live[0], 100: live[2], 150: live[1]}  # each projection snapshotted at its own step

    def snapshot_some(point: Point) -> None:
        Runner(log, live).catch_up()
        if point.step in snap_at:
            projection = snap_at[point.step]
            taken[projection.name] = through_torch(projection.snapshot())

    lc = Lifecycle(log)
    play(lc, after_step=snapshot_some)
    seqs = sorted(s.seq for s in taken.values())
    assert len(set(seqs)) == 3 and seqs[-1] < log.last_seq()

    resumed = fresh()
    for projection in resumed:
        projection.restore(taken[projection.name])
    runner = Runner(log.attach(), resumed)
    assert runner.seq == seqs[0]
    assert runner.catch_up() == log.last_seq() - seqs[0]

    full = fresh()
    Runner(log.attach(), full).catch_up()
    assert_agree(resumed, lc.registry)
    assert resumed[0].registry == full[0].registry
    assert resumed[1].snapshot() == full[1].snapshot()
    assert resumed[2].entities() == full[2].entities()
    mine, theirs = resumed[2].snapshot().state, full[2].snapshot().state
    for name in ("state", "history", "metrics", "row_specs"):
        assert torch.equal(mine[name], theirs[name]), name


# -- following on a thread -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "memory",
        "jsonl",
        pytest.param("redis", marks=pytest.mark.redis_server),
    ],
)
def test_a_started_runner_follows_the_writer_step_by_step_until_stopped(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, run_id: str
) -> None:
    """start() follows on a thread: after each sealed step the projections reach the writer's registry."""
    writer: Log
    reader: Log
    if backend == "memory":
        memory = MemoryLog(run_id)
        writer, reader = memory, memory.attach()
    else:
        url = f"jsonl://{tmp_path}" if backend == "jsonl" else request.getfixturevalue("redis_server").url
        writer, reader = bus.open(url, run_id), bus.open(url, run_id)
    projections = fresh()
    runner = Runner(reader, projections)

    def caught_up(point: Point) -> None:
        wait_until(
            lambda: runner.seq >= point.seq or not runner.running, f"the runner to reach seq {point.seq}"
        )
        assert runner.running
        assert_agree(projections, point.registry)

    with writer, reader, runner:
        runner.start()
        with pytest.raises(UsageError, match="already"):
            runner.start()
        lc = Lifecycle(writer)
        points = play(lc, after_step=caught_up)
        runner.stop()
        assert not runner.running
    assert runner.seq == points[-1].seq
    assert_agree(projections, lc.registry)


def test_stop_re_raises_the_error_a_projection_raised_while_following() -> None:
    """A record the registry refuses ends the follow thread; stop() raises that error, once."""
    log = MemoryLog("bad-follow")
    lc = Lifecycle(log)
    lc.start()
    lc.register("seed-0", "kasmina")
    projections = fresh()
    runner = Runner(log.attach(), projections)
    runner.start()
    wait_until(lambda: runner.seq == log.last_seq(), "the runner to catch up")

    ghost = TransitionApplied(
        run_id=log.run_id,
        step=1,
        entity="ghost",
        from_state="DORMANT",
        to_state="GERMINATED",
        trigger="germinate",
    )
    log.append([CODEC.to_record(ghost)])  # a raw append: nothing checks it on the way in
    wait_until(lambda: not runner.running, "the follow thread to end on the bad record")
    with pytest.raises(InconsistentEventError, match="ghost"):
        runner.stop()
    runner.stop()  # the error was handed over; a second stop has nothing to raise
    assert projections[0].registry == lc.registry  # as of the record before the bad one
    assert projections[0].seq == log.last_seq() - 1


def test_catch_up_raises_a_projections_error_and_keeps_the_seq_before_it() -> None:
    """Without a thread, the refused record's error comes straight out of catch_up."""
    log = MemoryLog("bad-catch-up")
    lc = Lifecycle(log)
    lc.start()
    ghost = TransitionApplied(
        run_id=log.run_id,
        step=0,
        entity="ghost",
        from_state="DORMANT",
        to_state="GERMINATED",
        trigger="germinate",
    )
    log.append([CODEC.to_record(ghost)])
    views = RegistryProjection()
    with pytest.raises(InconsistentEventError):
        Runner(log, [views]).catch_up()
    assert views.registry == lc.registry


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "SeedExploded", "step": 0, "run_id": "odd"},
        {"kind": "StepSealed", "schema": 99, "step": 0, "run_id": "odd"},
    ],
    ids=["unknown-kind", "newer-schema"],
)
def test_an_unknown_kind_or_a_newer_schema_raises_schema_error_before_any_projection_changes(
    record: dict[str, object],
) -> None:
    """Every record of a batch is checked first: a bad one raises SchemaError and nothing is applied."""
    log = MemoryLog("odd")
    lc = Lifecycle(log)
    lc.start()
    log.append([record])
    projections: tuple[Projection, ...] = fresh()
    runner = Runner(log, projections)
    with pytest.raises(SchemaError):
        runner.catch_up()
    assert [p.seq for p in projections] == [0, 0, 0]  # the good records shared the bad one's batch


def test_a_runner_needs_a_projection_and_a_positive_batch_size() -> None:
    """Building a runner with no projection or batch_size < 1 raises ConfigError."""
    log = MemoryLog("config")
    with pytest.raises(ConfigError, match="at least one"):
        Runner(log, [])
    with pytest.raises(ConfigError, match="batch_size"):
        Runner(log, [RegistryProjection()], batch_size=0)
