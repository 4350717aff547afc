"""Redis over TLS and unix sockets, beyond the contract suite both pass."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from _cli import one_line, run_cli

import bus
from bus import BusUnavailableError
from bus.testing import RedisServer, make_certificates

pytestmark = pytest.mark.redis_server

# A single TLS-only server and a TLS-only cluster: whatever holds for one must hold for both.
TLS_TARGETS = ["redis_tls_server", "redis_tls_cluster"]


def _tls_url(request: pytest.FixtureRequest, fixture: str) -> str:
    return str(request.getfixturevalue(fixture).url)


def _with_query(url: str, *, drop: str = "", **options: str) -> str:
    """`url` without the query option `drop` and with `options` set."""
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query) if k != drop} | options
    return parts._replace(query=urlencode(query, safe="/")).geturl()


@pytest.mark.parametrize("fixture", TLS_TARGETS)
def test_fresh_tls_connections_are_usable_at_once(request: pytest.FixtureRequest, fixture: str) -> None:
    """20 opens in a row each append: a TLS 1.3 server's session tickets, which arrive just
    after the handshake, are never taken for stray data ("Connection not ready")."""
    url = _tls_url(request, fixture)
    for n in range(20):
        with bus.open(url, f"t-tls-fresh-{n}") as log:
            assert log.append([{"event_id": "a"}]) == log.last_seq()


@pytest.mark.parametrize("fixture", TLS_TARGETS)
def test_the_tls_server_speaks_only_tls(request: pytest.FixtureRequest, fixture: str) -> None:
    """The same port over plain redis:// is refused, so the TLS tests really go over TLS."""
    url = _tls_url(request, fixture).replace("rediss://", "redis://")
    with pytest.raises(BusUnavailableError):
        bus.open(_with_query(url, drop="ssl_ca_certs", timeout="1"), "t-plain")


@pytest.mark.parametrize("fixture", TLS_TARGETS)
def test_a_wrong_ca_is_one_typed_line(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture: str
) -> None:
    """A CA that did not sign the server's certificate is BusUnavailableError naming the failed
    verification at the first try (retrying cannot change the answer), and one line (no
    traceback) from `lifecycle-es replay`."""
    wrong = make_certificates(tmp_path)["ca.crt"]
    url = _with_query(_tls_url(request, fixture), ssl_ca_certs=str(wrong), timeout="1")
    with pytest.raises(BusUnavailableError, match="certificate did not verify") as info:
        bus.open(url, "t-wrong-ca")
    assert "certificate verify failed" in str(info.value) and "tries" not in str(info.value)
    assert "timeout=1" in str(info.value)  # the URL as given, the bus's own options included
    status, out, err = run_cli(capsys, "replay", url, "--run", "x")
    assert (status, out) == (1, "")
    line = one_line(err)
    assert "cannot reach" in line and "certificate verify failed" in line


def test_unix_socket_url_names_the_socket(redis_unix_server: RedisServer) -> None:
    """A unix:// log works with the server's TCP port off, and its url names the socket path."""
    with bus.open(redis_unix_server.url, "t-unix") as log:
        log.append([{"event_id": "a"}])
        assert log.url.startswith("unix:///") and log.url.split("?")[0].endswith("redis.sock")
