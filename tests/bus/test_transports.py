"""Redis over TLS and unix sockets, beyond the contract suite both pass."""

from __future__ import annotations

import pytest

import bus
from bus import BusUnavailableError
from bus.testing import RedisServer

pytestmark = pytest.mark.redis_server


def test_fresh_tls_connections_are_usable_at_once(redis_tls_server: RedisServer) -> None:
    """20 opens in a row each append: a TLS 1.3 server's session tickets, which arrive just
    after the handshake, are never taken for stray data ("Connection not ready")."""
    for n in range(20):
        with bus.open(redis_tls_server.url, f"t-tls-fresh-{n}") as log:
            assert log.append([{"event_id": "a"}]) == log.last_seq()


def test_the_tls_server_speaks_only_tls(redis_tls_server: RedisServer) -> None:
    """The same port over plain redis:// is refused, so the TLS tests really go over TLS."""
    plain = redis_tls_server.url.replace("rediss://", "redis://").split("?")[0] + "?timeout=1"
    with pytest.raises(BusUnavailableError):
        bus.open(plain, "t-plain")


def test_unix_socket_url_names_the_socket(redis_unix_server: RedisServer) -> None:
    """A unix:// log works with the server's TCP port off, and its url names the socket path."""
    with bus.open(redis_unix_server.url, "t-unix") as log:
        log.append([{"event_id": "a"}])
        assert log.url.startswith("unix:///") and log.url.split("?")[0].endswith("redis.sock")
