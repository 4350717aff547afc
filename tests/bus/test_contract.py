"""Every backend runs the same contract (bus.testing.LogContract) in a few lines each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

import bus
from bus import JsonlLog, Log, MemoryLog, MirroredLog, RedisLog
from bus.testing import LogContract, RedisClusterNodes, RedisServer


class TestMemoryLog(LogContract):
    """The reference backend."""

    def make_log(self) -> Log:
        if not hasattr(self, "_first"):
            self._first = MemoryLog(self.run_id)
            return self._first
        return self._first.attach()


class TestJsonlLog(LogContract):
    """The JSONL file backend."""

    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "runs"

    def make_log(self) -> Log:
        return JsonlLog(self.directory, self.run_id, fsync="never")

    def process_url(self) -> str:
        return f"jsonl://{self.directory}"


class TestFakeRedisLog(LogContract):
    """Redis Streams through fakeredis (Lua via lupa), one fake server per test."""

    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        pytest.importorskip("lupa")
        self.server = fakeredis.FakeServer()

    def make_log(self) -> Log:
        client = fakeredis.FakeRedis(server=self.server)
        return RedisLog.from_client(client, self.run_id)


@pytest.mark.redis_server
class TestRedisLog(LogContract):
    """Redis Streams on a real redis-server."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.url = redis_server.url

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
class TestMirroredLog(LogContract):
    """A real redis-server primary with a JSONL mirror, checked equal after every test."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer, tmp_path: Path) -> Iterator[None]:
        self.url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"
        yield
        with RedisLog(redis_server.url, self.run_id) as primary:
            if primary.last_seq():
                with JsonlLog(tmp_path / "mirror", self.run_id) as mirror:
                    assert bus.verify(primary, mirror).equal

    def make_log(self) -> Log:
        log = bus.open(self.url, self.run_id)
        assert isinstance(log, MirroredLog)
        return log

    def process_url(self) -> str:
        return self.url


class TestFakeRedisMirroredLog(LogContract):
    """fakeredis primary with a JSONL mirror (no server needed)."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path) -> None:
        pytest.importorskip("lupa")
        self.server = fakeredis.FakeServer()
        self.directory = tmp_path / "mirror"

    def make_log(self) -> Log:
        primary = RedisLog.from_client(fakeredis.FakeRedis(server=self.server), self.run_id)
        return MirroredLog(primary, JsonlLog(self.directory, self.run_id))


@pytest.mark.redis_server
class TestRedisClusterLog(LogContract):
    """Redis Streams on a real three-master Redis Cluster (`?cluster=1`)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_cluster: RedisClusterNodes) -> None:
        self.url = redis_cluster.url

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
class TestRedisTlsLog(LogContract):
    """Redis Streams over TLS (`rediss://` with the test CA in `ssl_ca_certs`)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_tls_server: RedisServer) -> None:
        self.url = redis_tls_server.url

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
class TestRedisTlsClusterLog(LogContract):
    """Redis Streams on a TLS-only three-master Redis Cluster (`rediss://...?cluster=1`)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_tls_cluster: RedisClusterNodes) -> None:
        self.url = redis_tls_cluster.url

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url


@pytest.mark.redis_server
class TestRedisUnixLog(LogContract):
    """Redis Streams over a unix socket (`unix:///path?db=0`)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_unix_server: RedisServer) -> None:
        self.url = redis_unix_server.url

    def make_log(self) -> Log:
        return bus.open(self.url, self.run_id)

    def process_url(self) -> str:
        return self.url
