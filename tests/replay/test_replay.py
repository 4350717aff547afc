"""replay(log, until=...): a run replayed to a seq, a step or a wall time is exactly the registry
the writer held at that point, on memory, JSONL and real Redis logs."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from _runs import Point, play

import bus
from bus import Log, MemoryLog
from bus.testing import RedisServer
from lifecycle_es import ConfigError, Lifecycle, Registry
from replay import Replay, Until, replay

Recorded = tuple[Log, list[Point]]


@pytest.fixture(params=["memory", "jsonl", pytest.param("redis", marks=pytest.mark.redis_server)])
def recorded(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> Iterator[Recorded]:
    """The scripted run written by a live Lifecycle, its points, and a separate reading handle."""
    if request.param == "memory":
        memory = MemoryLog(run_id)
        with memory:
            points = play(Lifecycle(memory))
            yield memory.attach(), points
        return
    if request.param == "jsonl":
        url = f"jsonl://{tmp_path / 'runs'}"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    with bus.open(url, run_id) as writer:
        points = play(Lifecycle(writer))
    with bus.open(url, run_id, create=False) as reader:
        yield reader, points


def assert_at(result: Replay, point: Point) -> None:
    """Assert a replay holds the registry recorded at `point`, and says where it stopped."""
    assert result.registry.registry == point.registry
    assert (result.seq, result.step) == (point.seq, point.step)


def test_replay_to_each_recorded_seq_is_the_live_registry_of_that_point(recorded: Recorded) -> None:
    """Until(seq=N) rebuilds exactly the registry the writer held right after seq N."""
    log, points = recorded
    for point in points:
        assert_at(replay(log, Until(seq=point.seq), tensors=False), point)


def test_replay_to_each_recorded_step_is_the_live_registry_of_that_point(recorded: Recorded) -> None:
    """Until(step=S) includes every record of step S and none later, also for a step with no records."""
    log, points = recorded
    for point in points:
        assert_at(replay(log, Until(step=point.step), tensors=False), point)
        # The script's steps are 25 apart: a step in between lands on the same point.
        assert_at(replay(log, Until(step=point.step + 1), tensors=False), point)


def test_replay_to_each_recorded_wall_time_is_the_live_registry_of_that_point(recorded: Recorded) -> None:
    """Until(time=T) applies the records stamped at or before T: the registry as of that moment."""
    log, points = recorded
    for point in points:
        assert_at(replay(log, Until(time=point.time), tensors=False), point)


def test_replay_to_a_time_given_as_iso_8601_matches_the_epoch_seconds(recorded: Recorded) -> None:
    """Until.parse_time of the ISO form of a recorded moment replays to that same point."""
    log, points = recorded
    point = points[len(points) // 2]
    iso = datetime.fromtimestamp(point.time, UTC).isoformat()
    assert_at(replay(log, Until.parse_time(iso), tensors=False), point)


@pytest.mark.parametrize(
    "until",
    [
        None,
        Until(),
        Until(seq=10**9),
        Until(step=10**9),
        Until(time=4_102_444_800.0),  # 2100-01-01
    ],
    ids=["none", "unbounded", "seq", "step", "time"],
)
def test_an_until_past_the_end_replays_to_the_end_and_says_it_reached_it(
    recorded: Recorded, until: Until | None
) -> None:
    """A bound beyond the last record replays every record and sets reached_end."""
    log, points = recorded
    result = replay(log, until, tensors=False)
    assert_at(result, points[-1])
    assert result.reached_end
    assert result.last_seq == log.last_seq() == points[-1].seq


def test_a_replay_that_stops_early_does_not_claim_the_end(recorded: Recorded) -> None:
    """A bound inside the log leaves reached_end False and still reports the log's last seq."""
    log, points = recorded
    result = replay(log, Until(seq=points[2].seq), tensors=False)
    assert not result.reached_end
    assert result.last_seq == points[-1].seq


def test_until_seq_zero_replays_nothing(recorded: Recorded) -> None:
    """Until(seq=0) is the empty registry before the first record."""
    log, _ = recorded
    result = replay(log, Until(seq=0), tensors=False)
    assert result.seq == 0
    assert len(result.registry.registry) == 0
    assert result.registry.registry == Registry(result.registry.registry.specs)


def test_the_tensors_and_metrics_of_a_replay_agree_with_its_registry(recorded: Recorded) -> None:
    """The state tensors and the metrics replayed to a point describe the registry of that point."""
    log, points = recorded
    point = points[4]
    result = replay(log, Until(step=point.step))
    assert result.tensors is not None
    registry = point.registry
    rows = [(r["entity"], r["spec"], r["state"], r["epochs_in_state"]) for r in result.tensors.as_rows()]
    assert rows == [(e.entity, e.spec, e.state, e.time_in_state(registry.step)) for e in registry]
    counts = {(r["spec"], r["state"]): r["count"] for r in result.metrics.population_rows() if r["count"]}
    assert counts == Counter((e.spec, e.state) for e in registry)
    assert result.tensors.seq == result.metrics.seq == point.seq


def test_a_replay_without_tensors_has_none(recorded: Recorded) -> None:
    """tensors=False skips the state-tensor projection and returns None for it."""
    log, _ = recorded
    assert replay(log, tensors=False).tensors is None


# -- Until ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"seq": 1, "step": 1},
        {"seq": 1, "time": 1.0},
        {"step": 1, "time": 1.0},
        {"seq": -1},
        {"step": -1},
    ],
)
def test_until_refuses_two_bounds_or_a_negative_one(fields: dict[str, float]) -> None:
    """An Until names at most one bound, and seq and step are never negative."""
    with pytest.raises(ConfigError):
        Until(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00", "12:00"])
def test_parse_time_refuses_what_is_not_iso_8601(text: str) -> None:
    """A time that is not ISO 8601 raises ConfigError naming the text."""
    with pytest.raises(ConfigError, match="ISO 8601"):
        Until.parse_time(text)


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """The process's local time zone set to UTC+05:30 for the test, then restored."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_parse_time_reads_a_naive_time_as_utc_whatever_the_local_zone() -> None:
    """A time without an offset is UTC, as documented; one with an offset or Z is honoured."""
    noon = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    assert Until.parse_time("2026-03-01T12:00:00").time == noon
    assert Until.parse_time("2026-03-01T12:00:00Z").time == noon
    assert Until.parse_time("2026-03-01T17:30:00+05:30").time == noon
    east = timezone(timedelta(hours=-3))
    assert Until.parse_time(datetime(2026, 3, 1, 9, 0, tzinfo=east).isoformat()).time == noon
