"""Redis specifics: the stream layout, lost replies, consumer groups, timeouts, bad servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import msgpack
import pytest
import redis

import bus
from bus import (
    BusError,
    BusUnavailableError,
    ConcurrencyError,
    InvalidArgumentError,
    RedisLog,
    RetryPolicy,
)
from bus.testing import RedisServer, free_port


@pytest.fixture(
    params=[
        "fakeredis",
        pytest.param("redis-server", marks=pytest.mark.redis_server),
        pytest.param("cluster", marks=pytest.mark.redis_server),
    ]
)
def log(request: pytest.FixtureRequest) -> Iterator[RedisLog]:
    """An empty RedisLog on fakeredis, the session's real redis-server or its cluster."""
    run_id = f"t-{uuid.uuid4().hex}"
    if request.param == "fakeredis":
        pytest.importorskip("lupa")
        made = RedisLog.from_client(fakeredis.FakeRedis(), run_id)
    elif request.param == "cluster":
        made = RedisLog(request.getfixturevalue("redis_cluster").url, run_id)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisLog(server.url, run_id)
    with made:
        yield made


def test_stream_layout_is_seq_ids_and_one_msgpack_field(log: RedisLog) -> None:
    """Key lces:{run}:log, entry id <seq>-0, one field d = msgpack of the record, seq first."""
    log.append([{"event_id": "a", "x": 1}, {"event_id": "b"}])
    assert log.key == f"lces:{{{log.run_id}}}:log"
    entries: Any = log.client.xrange(log.key)
    assert [e[0] for e in entries] == [b"1-0", b"2-0"]
    assert all(set(fields) == {b"d"} for _, fields in entries)
    first = msgpack.unpackb(entries[0][1][b"d"])
    assert list(first.items()) == [("seq", 1), ("event_id", "a"), ("x", 1)]


def flaky_script(log: RedisLog, failures: int) -> list[int]:
    """Make the next `failures` script calls run on the server but lose their reply."""
    real, calls = log._script, [0]

    def lose_reply(**kwargs: Any) -> Any:
        calls[0] += 1
        result = real(**kwargs)
        if calls[0] <= failures:
            raise redis.ConnectionError("the reply was lost")
        return result

    log._script = lose_reply  # type: ignore[assignment]  # a test double
    return calls


@pytest.mark.parametrize("expected", [None, 1])
def test_lost_reply_is_retried_without_duplicate(log: RedisLog, expected: int | None) -> None:
    """A batch that landed but whose reply was lost is recognised on retry, not re-added."""
    log.append([{"event_id": "first"}])
    calls = flaky_script(log, failures=2)
    batch = [{"event_id": "a"}, {"event_id": "b"}]
    assert log.append(batch, expected_seq=expected) == 2
    assert calls[0] == 3  # two lost replies, then the retry that recognised the batch
    assert [r["event_id"] for r in log.read()] == ["first", "a", "b"]


def test_lost_reply_without_ids_is_not_resent(log: RedisLog) -> None:
    """A batch without ids is not retried after a lost reply (it could duplicate)."""
    calls = flaky_script(log, failures=1)
    with pytest.raises(BusUnavailableError):
        log.append([{"n": 1}])
    assert calls[0] == 1
    assert log.last_seq() == 1


def test_append_without_expected_goes_to_the_real_end(log: RedisLog) -> None:
    """A handle whose idea of the last seq is stale still appends at the end."""
    log.append([{"event_id": "a"}])
    other = RedisLog.from_client(log.client, log.run_id)
    other.append([{"event_id": "b"}, {"event_id": "c"}])
    assert log.append([{"event_id": "d"}]) == 4
    with pytest.raises(ConcurrencyError):
        log.append([{"event_id": "e"}], expected_seq=3)


def test_script_is_reloaded_after_script_flush(log: RedisLog) -> None:
    """EVALSHA falls back to loading the script when the server lost it (restart, flush)."""
    log.append([{"event_id": "a"}])
    log.client.script_flush()
    assert log.append([{"event_id": "b"}]) == 2


def test_foreign_entries_are_reported(log: RedisLog) -> None:
    """An entry the bus did not write (no d field) raises BusError on read."""
    log.client.xadd(log.key, {"other": "x"}, id="1-0")
    with pytest.raises(BusError, match="not a bus record"):
        log.read()


def test_consumer_group_shares_records_between_workers(log: RedisLog) -> None:
    """Each record goes to one consumer; acks clear it; idle records can be claimed."""
    log.append([{"event_id": f"e{n}"} for n in range(1, 6)])
    one, two = log.group("g", "one"), log.group("g", "two")
    assert [r["seq"] for r in one.read(count=3)] == [1, 2, 3]
    assert [r["seq"] for r in two.read(count=10)] == [4, 5]
    assert one.read() == []
    assert one.ack([1, 2]) == 2
    pending = one.pending()
    assert [(p.seq, p.consumer) for p in pending] == [(3, "one"), (4, "two"), (5, "two")]
    assert all(p.deliveries == 1 for p in pending)
    claimed = two.autoclaim(min_idle_ms=0)
    assert [r["seq"] for r in claimed] == [3, 4, 5]
    assert {p.consumer for p in two.pending()} == {"two"}
    assert two.ack([3, 4, 5]) == 3
    assert two.pending() == []


def test_each_group_sees_every_record(log: RedisLog) -> None:
    """Two groups each get all records; a group can start after a seq."""
    log.append([{"event_id": f"e{n}"} for n in range(1, 4)])
    assert [r["seq"] for r in log.group("a", "w").read()] == [1, 2, 3]
    assert [r["seq"] for r in log.group("b", "w").read()] == [1, 2, 3]
    assert [r["seq"] for r in log.group("c", "w", start=2).read()] == [3]
    log.group("a", "w2")  # an existing group is kept, not reset
    assert log.group("a", "w3").read() == []


def test_group_read_block_must_stay_under_socket_timeout(log: RedisLog) -> None:
    """A BLOCK as long as the socket timeout would be cut off by it, so it is refused."""
    worker = log.group("g", "w")
    with pytest.raises(InvalidArgumentError, match="block_ms"):
        worker.read(block_ms=int(log.policy.command_timeout_s * 1000))
    assert worker.read(block_ms=10) == []


@pytest.mark.redis_server
def test_socket_timeout_exceeds_the_block_time(redis_server: RedisServer) -> None:
    """The client's socket timeout is longer than any XREAD BLOCK the log issues."""
    with RedisLog(redis_server.url, "t-timeouts") as log:
        kwargs = log.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] > log.poll_interval
        assert kwargs["socket_connect_timeout"] == log.policy.connect_timeout_s


def test_unreachable_server_raises_bus_unavailable_naming_url_without_password() -> None:
    """Nothing listening: BusUnavailableError at open, with the password redacted."""
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    policy = RetryPolicy(attempts=2, backoff_s=0.01)
    with pytest.raises(BusUnavailableError) as info:
        bus.open(url, "t-unreachable", policy=policy)
    assert f"redis://user:***@127.0.0.1:{url.split(':')[-1]}" in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)
    assert isinstance(info.value, ConnectionError)


def test_retry_policy_is_validated() -> None:
    """A policy that cannot work is refused with a one-sentence InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(InvalidArgumentError, match="command_timeout_s"):
        RetryPolicy(command_timeout_s=0)
