"""Shared fixtures: real redis-server processes on free loopback ports, and unique run ids.

`redis_server` is one server for the whole session, or the one named by LCES_REDIS_URL when
.ci/run has started it already. `redis_factory` starts extra servers with custom options
(AOF with appendfsync always, ACL users) for fault and security tests. Tests skip only when
the redis-server binary is truly absent. The server processes themselves are
`bus.testing.RedisServer` (importable, unlike a conftest module).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from bus.testing import (
    RedisClusterNodes,
    RedisFactory,
    RedisServer,
    free_port,
    have_openssl,
    have_redis_cli,
    have_redis_server,
    redis_has_tls,
    start_tls_server,
    start_unix_server,
)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)


@contextmanager
def _serving(start: Callable[[Path], S], prefix: str) -> Iterator[S]:
    """Start a server (or a cluster) in a fresh temporary directory; stop it on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        server = start(Path(directory))
        try:
            yield server
        finally:
            server.stop()


def _plain_server(directory: Path) -> RedisServer:
    server = RedisServer(port=free_port(), directory=directory)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session: LCES_REDIS_URL if set, else one started here."""
    given = os.environ.get("LCES_REDIS_URL")
    if given:
        yield RedisServer(port=0, directory=Path(tempfile.gettempdir()), url=given)
        return
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    with _serving(_plain_server, "lces-redis-") as server:
        yield server


def start_cluster(root: Path, replicas: int, *, tls: bool = False) -> RedisClusterNodes:
    """A started cluster of three masters with `replicas` replicas each (skips without redis)."""
    if not (have_redis_server() and have_redis_cli()):
        pytest.skip("redis-server or redis-cli is not installed")
    if tls:
        _skip_without_tls()
    cluster = RedisClusterNodes(root=root, replicas=replicas, tls=tls)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster of three masters with one replica each, for a test that kills a master."""
    cluster = start_cluster(tmp_path, replicas=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """One Redis Cluster (three masters, no replicas) shared by the session's cluster tests;
    each test uses its own run ids, so sharing is safe."""
    with _serving(lambda directory: start_cluster(directory, replicas=0), "lces-cluster-") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_tls_cluster() -> Iterator[RedisClusterNodes]:
    """One TLS-only Redis Cluster (three masters; clients, cluster bus and replication all
    over TLS) for the session's `rediss://...?cluster=1` tests."""
    with _serving(lambda d: start_cluster(d, replicas=0, tls=True), "lces-tls-cluster-") as cluster:
        yield cluster


def _skip_without_tls() -> None:
    if not (have_redis_server() and have_openssl()):
        pytest.skip("redis-server or openssl is not installed")
    if not redis_has_tls():
        pytest.skip("this redis-server was built without TLS")


@pytest.fixture(scope="session")
def redis_tls_server() -> Iterator[RedisServer]:
    """A TLS-only redis-server for the session (CA and certificate made here with openssl)."""
    _skip_without_tls()
    with _serving(start_tls_server, "lces-tls-") as server:
        yield server


@pytest.fixture(scope="session")
def redis_unix_server() -> Iterator[RedisServer]:
    """A redis-server for the session listening only on a unix socket file."""
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    with _serving(start_unix_server, "lces-unix-") as server:
        yield server


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start extra redis-servers with custom options; all are stopped after the test."""
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    factory = RedisFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses, so tests sharing one server never see each other's keys."""
    return f"t-{uuid.uuid4().hex}"
