"""Bad input on a Redis log: corrupt entries, unusable URLs, unreachable or silent servers."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import fakeredis
import msgpack
import pytest
from _cli import one_line, run_cli

import bus
from bus import BusUnavailableError, CorruptLogError, InvalidArgumentError, RedisLog, RetryPolicy
from bus.testing import free_port

CORRUPT = {
    "a list": msgpack.packb([1, 2, 3]),
    "a map without seq": msgpack.packb({"event_id": "x"}),
    "not msgpack": b"\xc1\xc1 not msgpack",
}


@pytest.fixture
def log() -> Iterator[RedisLog]:
    """A RedisLog on fakeredis (corrupt entries are written with raw XADDs)."""
    pytest.importorskip("lupa")
    with RedisLog.from_client(fakeredis.FakeRedis(), f"t-{uuid.uuid4().hex}") as made:
        yield made


def plant(log: RedisLog, payload: bytes) -> None:
    """One good record, then a raw entry 2-0 holding `payload`."""
    log.append([{"event_id": "good"}])
    log.client.xadd(log.key, {"d": payload}, id="2-0")


@pytest.mark.parametrize("payload", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_entry_is_corrupt_log_error_on_read_follow_and_groups(log: RedisLog, payload: bytes) -> None:
    """A list, a map without seq or non-msgpack is CorruptLogError naming the run and entry."""
    plant(log, payload)
    readers = {
        "read": lambda: log.read(),
        "follow": lambda: list(log.follow(after=1, timeout=0.5)),
        "group": lambda: log.group("g", "w").read(),
    }
    for name, reader in readers.items():
        with pytest.raises(CorruptLogError) as info:
            reader()
        message = str(info.value)
        assert log.run_id in message and "entry 2-0" in message, name
        assert "\n" not in message


def test_corrupt_entry_is_corrupt_log_error_on_autoclaim(log: RedisLog) -> None:
    """Taking over a corrupt pending entry also raises CorruptLogError, not a msgpack error."""
    log.append([{"event_id": "good"}])
    worker = log.group("g", "w")
    worker.read()
    log.client.xadd(log.key, {"d": CORRUPT["a list"]}, id="2-0")
    with pytest.raises(CorruptLogError, match="entry 2-0"):
        worker.read()  # delivered (and pending) even though it cannot be decoded
    with pytest.raises(CorruptLogError, match="entry 2-0"):
        log.group("g", "other").autoclaim(min_idle_ms=0)


BAD_URLS = [
    "redis://[::1/0",
    "redis://u:hunter2@[::1/0",
    "redis://127.0.0.1:99999/0",
    "redis://u:hunter2@127.0.0.1:6379/0?colour=blue",
    "redis://127.0.0.1:6379/0?socket_timeout=1",
    "redis://127.0.0.1:6379/0?timeout=soon",
    "redis://127.0.0.1:6379/0?wait=-1",
    "redis://127.0.0.1:6379/0?cluster=maybe",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_redis_url_is_invalid_argument_without_password(url: str) -> None:
    """A malformed host or port or an unknown or bad option: one InvalidArgumentError sentence."""
    with pytest.raises(InvalidArgumentError) as info:
        bus.open(url, "r1")
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("url", BAD_URLS[:4])
def test_bad_redis_url_is_one_line_from_the_cli(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """The CLI's log argument reports a bad Redis URL in one line, exit 2, no password."""
    status, out, err = run_cli(capsys, "replay", url, "--run", "r1")
    assert (status, out) == (2, "")
    assert "hunter2" not in one_line(err)


@pytest.mark.parametrize("extra", ["", "&cluster=1"], ids=["single", "cluster"])
def test_closed_port_is_one_error_within_the_url_timeout(
    caplog: pytest.LogCaptureFixture, extra: str
) -> None:
    """Nothing listening (one server or a cluster's node): BusUnavailableError naming the URL
    without password, after tries bounded by the URL's timeout, retries logged at debug only."""
    caplog.set_level(logging.DEBUG, logger="bus.redis")
    port = free_port()
    with pytest.raises(BusUnavailableError) as info:
        bus.open(f"redis://u:hunter2@127.0.0.1:{port}/0?timeout=0.5{extra}", "r1")
    message = str(info.value)
    assert f"redis://u:***@127.0.0.1:{port}/0" in message and "hunter2" not in message
    assert "(timeout 0.5 s)" in message
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if r.name == "bus.redis")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_silent_server_fails_within_the_url_timeout(silent_port: int) -> None:
    """A server that accepts and never answers: one try cut at the URL's bound (not the
    former six tries of 5.5 s each), then BusUnavailableError naming the URL."""
    started = time.monotonic()
    with pytest.raises(BusUnavailableError) as info:
        bus.open(f"redis://127.0.0.1:{silent_port}/0?timeout=0.5", "r1")
    assert "no answer after 1 try in" in str(info.value) and "(timeout 0.5 s)" in str(info.value)
    assert time.monotonic() - started < 10  # generous: 20 times the bound; it used to be ~35 s


def test_unreachable_server_is_one_line_on_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints one line for an unreachable log server, no retry warnings."""
    url = f"redis://u:hunter2@127.0.0.1:{free_port()}/0?timeout=0.3"
    status, out, err = run_cli(capsys, "replay", url, "--run", "r1")
    assert status != 0 and out == ""
    line = one_line(err)
    assert "cannot reach" in line and "hunter2" not in line


def test_first_contact_stops_after_the_policy_attempts() -> None:
    """A closed port is tried `RetryPolicy.attempts` times (within the URL's bound), then one error."""
    policy = RetryPolicy(attempts=3, backoff_s=0.01)
    with pytest.raises(BusUnavailableError, match=r"no answer after 3 tries in"):
        bus.open(f"redis://127.0.0.1:{free_port()}/0?timeout=30", "r1", policy=policy)
