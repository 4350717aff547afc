"""Security: a Redis ACL user limited to stream and script commands on lces:* keys runs the
whole contract, and no password ever shows in an error, a repr, a URL or a log line."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import bus
from bus import BusUnavailableError, Log, MirroredLog, redact_url
from bus.testing import LogContract, RedisFactory, RedisServer, have_redis_server

PASSWORD = "s3cr3t-Pa55-7f1d"
# The least the bus needs: stream commands, running (and loading) its one script, and PING
# at open. No other key patterns, no pub/sub channels, no EVAL of arbitrary scripts.
ACL_RULES = ["reset", "on", f">{PASSWORD}", "~lces:*", "resetchannels", "-@all",
             "+@stream", "+evalsha", "+script|load", "+ping"]  # fmt: skip


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with user `lces` allowed only what the bus needs."""
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    factory = RedisFactory(tmp_path_factory.mktemp("acl"))
    server = factory.start()
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "lces", *ACL_RULES)  # type: ignore[no-untyped-call]
    admin.close()
    yield server
    factory.stop_all()


def user_url(server: RedisServer, password: str = PASSWORD) -> str:
    return f"redis://lces:{password}@127.0.0.1:{server.port}/0"


@pytest.mark.redis_server
class TestAclRedisLog(LogContract):
    """The whole contract as the restricted ACL user."""

    @pytest.fixture(autouse=True)
    def _server(self, acl_server: RedisServer) -> None:
        self.url = user_url(acl_server)

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
class TestAclMirroredLog(LogContract):
    """The whole contract as the restricted ACL user, with a JSONL mirror."""

    @pytest.fixture(autouse=True)
    def _server(self, acl_server: RedisServer, tmp_path: Path) -> None:
        self.url = f"{user_url(acl_server)}?mirror={tmp_path}"

    def make_log(self) -> Log:
        log = bus.open(self.url, self.run_id)
        assert isinstance(log, MirroredLog)
        return log

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
def test_acl_user_can_run_consumer_groups(acl_server: RedisServer) -> None:
    """Consumer-group commands need nothing beyond +@stream."""
    with bus.open(user_url(acl_server), f"t-{uuid.uuid4().hex}") as log:
        assert isinstance(log, bus.RedisLog)
        log.append([{"event_id": "a"}, {"event_id": "b"}])
        worker = log.group("g", "w")
        assert [r["seq"] for r in worker.read()] == [1, 2]
        assert worker.ack([1, 2]) == 2
        assert worker.autoclaim(0) == []
        assert worker.pending() == []


@pytest.mark.redis_server
def test_acl_user_is_really_restricted(acl_server: RedisServer) -> None:
    """The ACL is not a formality: other keys and other commands are refused."""
    client = redis.Redis.from_url(user_url(acl_server))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("lces:{x}:other", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.xadd("elsewhere", {"d": b"x"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.eval("return 1", 0)
    finally:
        client.close()


@pytest.mark.redis_server
def test_wrong_password_never_shows_the_password(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused login raises BusUnavailableError; the password is nowhere in it or the logs."""
    wrong = "Wr0ng-" + PASSWORD
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BusUnavailableError) as info:
        bus.open(user_url(acl_server, wrong), "t-denied")
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert "lces:***@127.0.0.1" in str(info.value)
    assert wrong not in shown
    assert wrong not in caplog.text
    assert all(wrong not in str(r.args) for r in caplog.records)


@pytest.mark.redis_server
def test_password_absent_from_url_repr_errors_and_logs(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A working log never shows its password: not in url, repr, errors or log records."""
    caplog.set_level(logging.DEBUG)
    run_id = f"t-{uuid.uuid4().hex}"
    with bus.open(user_url(acl_server), run_id) as log:
        log.append([{"event_id": "a"}])
        with pytest.raises(bus.ConcurrencyError) as conflict:
            log.append([{"event_id": "b"}], expected_seq=0)
        with pytest.raises(bus.FollowTimeoutError) as timeout:
            list(log.follow(0, timeout=0.1))
        shown = [log.url, repr(log), str(conflict.value), str(timeout.value), caplog.text]
    assert all(PASSWORD not in text for text in shown)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h:1", "redis://:***@h:1"),
        ("rediss://u@h:1", "rediss://u@h:1"),
        ("redis://h:1/0?password=pw&db=2", "redis://h:1/0?password=***&db=2"),
        ("unix:///tmp/r.sock?password=pw", "unix:///tmp/r.sock?password=***"),
        ("redis://u:pw@h:1/0?mirror=/var/runs", "redis://u:***@h:1/0?mirror=/var/runs"),
    ],
)
def test_redact_url_hides_every_password_form(url: str, expected: str) -> None:
    """Passwords in the userinfo or the query are replaced by ***."""
    assert redact_url(url) == expected
    assert "pw" not in redact_url(url).replace("password", "")


@pytest.mark.parametrize("location", ["runs", "/var/runs/exp-1", "./runs"])
def test_redact_url_leaves_a_bare_directory_as_given(location: str) -> None:
    """A location without a scheme holds no credentials and is printed as the user typed it."""
    assert redact_url(location) == location
