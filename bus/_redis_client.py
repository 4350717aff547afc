"""The Redis connection the bus owns: built from a URL with timeouts that suit blocking reads,
plus bounded retries and the translation of redis-py errors into bus errors."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, MovedError, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

from bus._redis_url import RedisTarget
from bus._urls import password_of, redact_url
from bus.errors import BusError, BusUnavailableError, CorruptLogError, InvalidArgumentError

log = logging.getLogger("bus.redis")

T = TypeVar("T")

# Errors a later try may not get: a lost connection, and a cluster mid-failover (redis-py
# refreshes its slot map when it sees them, so the next try goes to the new master).
TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    MovedError,
    TryAgainError,
    SlotNotCoveredError,
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to try before a log server counts as unavailable."""

    attempts: int = 6
    """Tries of one idempotent operation, the first included."""
    backoff_s: float = 0.05
    """Sleep before the second try; doubled for each later one."""
    backoff_cap_s: float = 1.0
    """Longest sleep between two tries."""
    connect_timeout_s: float = 1.5
    """Seconds to wait for a TCP/TLS/unix connection before the try fails."""
    command_timeout_s: float = 5.0
    """Seconds to wait for a reply, on top of any BLOCK time the command asks for."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidArgumentError(f"attempts must be at least 1, got {self.attempts}")
        if min(self.backoff_s, self.backoff_cap_s, self.connect_timeout_s) < 0:
            raise InvalidArgumentError("backoff and timeout seconds must not be negative")
        if self.command_timeout_s <= 0:
            raise InvalidArgumentError(f"command_timeout_s must be positive, got {self.command_timeout_s}")

    def sleep_before(self, attempt: int) -> float:
        """Seconds to sleep before try number `attempt` (1-based; the first try waits 0)."""
        return 0.0 if attempt <= 1 else min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 2))


Client = redis.Redis | RedisCluster


def connect(target: RedisTarget, policy: RetryPolicy, block_s: float) -> Client:
    """A client for `target` (redis://, rediss://, unix://, or a cluster) whose socket timeout
    exceeds the longest BLOCK the bus asks for, and with redis-py's own retries off (the bus
    retries only what is idempotent, a bounded number of times). A cluster client reads the
    slot map from the node the URL names, so the server must answer already (see `probe`)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": policy.connect_timeout_s,
        "socket_timeout": policy.command_timeout_s + block_s,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,  # the reply shapes the bus parses; RESP3 adds nothing it uses
        "max_connections": 32,
        "driver_info": None,  # no CLIENT SETINFO: one less command for a minimal ACL user
    }
    options.update(_tls_options(target.url, cluster=target.cluster))
    try:
        if target.cluster:
            return RedisCluster.from_url(target.url, **options)
        return redis.Redis.from_url(target.url, **options)
    except (ValueError, TypeError, redis.RedisError) as e:
        raise BusUnavailableError(redact_url(target.url), _scrub(str(e), target.url)) from e


def settle_tls(connection: Any) -> None:
    """Set up a new TLS connection, then PING it once. A TLS 1.3 server sends its session
    tickets just after the handshake; until a read consumes them the socket looks readable,
    and redis-py's pool takes that for stray data ("Connection has data", then "Connection
    not ready" on every reconnect). The PONG comes after the tickets, so reading it clears them."""
    connection.on_connect()
    _ping(connection)


def _ping(connection: Any) -> None:
    connection.send_command("PING")
    connection.read_response()


def _tls_options(url: str, *, cluster: bool = False) -> dict[str, Any]:
    """The connect hook for a rediss:// URL; RedisCluster runs on_connect itself, then the hook."""
    if not url.lower().startswith("rediss://"):
        return {}
    return {"redis_connect_func": _ping if cluster else settle_tls}


def probe(target: RedisTarget, policy: RetryPolicy) -> None:
    """Ping the node the URL names until it answers, at most `policy.attempts` times and within
    `target.first_contact_s` in all: every connect and reply wait is cut to the time left, so
    neither a closed port nor one that accepts and never answers can hold the caller longer."""
    started = time.monotonic()
    deadline = started + target.first_contact_s
    attempt = 0
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        try:
            _ping_once(target.url, min(left, policy.connect_timeout_s), left)
            return
        except redis.AuthenticationError as e:
            raise BusUnavailableError(target.shown, _scrub(str(e), target.url)) from e
        except TRANSIENT as e:
            if _certificate_refused(e):  # the server answered; asking again gets the same answer
                reason = f"the server's TLS certificate did not verify: {e}"
                raise BusUnavailableError(target.shown, _scrub(reason, target.url)) from e
            pause = policy.sleep_before(attempt + 1)
            if attempt >= policy.attempts or time.monotonic() + pause >= deadline:
                tries, spent = ("1 try" if attempt == 1 else f"{attempt} tries"), time.monotonic() - started
                reason = (
                    f"no answer after {tries} in {spent:.1f} s (timeout {target.first_contact_s:g} s): {e}"
                )
                raise BusUnavailableError(target.shown, _scrub(reason, target.url)) from e
            log.debug("log server %s unreachable (try %d): %s", target.shown, attempt, e)
            time.sleep(pause)


def _certificate_refused(error: BaseException) -> bool:
    """Whether a connection failed because the server's certificate did not verify."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _ping_once(url: str, connect_s: float, reply_s: float) -> None:
    """One PING on a fresh single connection with the given timeouts."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=max(connect_s, 0.001),
        socket_timeout=max(reply_s, 0.001),
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        driver_info=None,
        single_connection_client=True,
        **_tls_options(url),
    )
    try:
        client.ping()
    finally:
        client.close()


def _scrub(text: str, url: str) -> str:
    secret = password_of(url)
    return text.replace(secret, "***") if secret else text


class Caller:
    """Runs Redis commands for one log: retries transient failures of idempotent commands
    and turns redis-py errors into bus errors whose messages hold no password."""

    def __init__(self, url: str, policy: RetryPolicy) -> None:
        self.url = redact_url(url)
        self.policy = policy
        self._secret = password_of(url)

    def call(self, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run `fn`, retrying connection failures when `idempotent`; raise bus errors."""
        attempts = self.policy.attempts if idempotent else 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:  # time.sleep(0) still yields the CPU: ~0.5 ms per call on a busy host
                time.sleep(self.policy.sleep_before(attempt))
            try:
                return fn()
            except redis.AuthenticationError as e:
                raise self.unavailable(e) from e
            except TRANSIENT as e:
                if attempt == attempts:
                    raise self.unavailable(e) from e
                log.debug(  # debug, not warning: the user sees the one error if all tries fail
                    "log server %s unreachable (try %d of %d): %s",
                    self.url,
                    attempt,
                    attempts,
                    self.scrub(str(e)),
                )
            except redis.RedisError as e:
                raise BusError(f"the log server at {self.url} refused: {self.scrub(str(e))}") from e
        raise AssertionError("unreachable: the loop returns or raises")

    def unavailable(self, e: Exception) -> BusUnavailableError:
        """The bus error for a server that could not be reached or would not let us in."""
        return BusUnavailableError(self.url, self.scrub(str(e)) or type(e).__name__)

    def scrub(self, text: str) -> str:
        """`text` with the URL's password (if any) replaced, in case a library echoed it."""
        return text.replace(self._secret, "***") if self._secret else text


def decode_id(entry_id: Any) -> int:
    """The seq of a stream entry id `<seq>-0` (bytes or str)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


_unpack = msgpack.unpackb


def decode_entries(entries: list[Any], run_id: str) -> list[dict[str, Any]]:
    """Records from XRANGE/XREAD/XREADGROUP entries `(id, {b'd': payload})`; an entry that is
    not a bus record (no `d`, not msgpack, not a map, no seq or a seq unlike its id) is a
    `CorruptLogError` naming the run and the entry id."""
    out = []
    for entry_id, fields in entries:
        try:
            record = _unpack(fields[b"d"])
        except (KeyError, ValueError, TypeError) as e:
            raise _corrupt(run_id, entry_id, f"{type(e).__name__}: {e}") from e
        if not isinstance(record, dict) or record.get("seq") != decode_id(entry_id):
            raise _corrupt(run_id, entry_id, "not a map whose seq matches the entry id")
        out.append(record)
    return out


def stored_payloads(entries: list[Any], first_seq: int) -> list[bytes] | None:
    """The `d` payloads of XRANGE entries whose ids run `<first_seq>-0`, `<first_seq + 1>-0`,
    ..., for a reader that decodes them itself; None when an id is off or an entry has no `d`
    (`decode_entries` then names what is wrong). Checking the ids against the payloads' seqs
    is left to that reader."""
    try:
        payloads = [fields[b"d"] for _, fields in entries]
    except (KeyError, TypeError):
        return None
    expected = [b"%d-0" % seq for seq in range(first_seq, first_seq + len(entries))]
    return payloads if [entry_id for entry_id, _ in entries] == expected else None


def _corrupt(run_id: str, entry_id: Any, reason: str) -> CorruptLogError:
    shown = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return CorruptLogError(f"the log of run {run_id!r}", 0, f"entry {shown} is not a bus record ({reason})")
