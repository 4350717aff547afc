"""Redis log URLs: the options the bus reads itself, split from what redis-py is given.

| option | meaning |
|---|---|
| `cluster=1` | the URL names one node of a Redis Cluster (redis-py's `RedisCluster`) |
| `timeout=SECONDS` | bound on the first contact, connect and retries together (default 5) |
| `wait=N` | an append is reported only once `WAIT` says N replicas hold it |
| `waitaof=1` | ... and once `WAITAOF` says the master's AOF holds it (Redis >= 7.2) |
| `db`, `username`, `password`, `client_name`, `ssl_*` | passed to redis-py as it reads them |

Any other option is refused: redis-py would silently take e.g. `socket_timeout`, which must
stay above the XREAD BLOCK time the log uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from bus._urls import password_of, pop_param, redact_url
from bus.errors import InvalidUrlError

DEFAULT_FIRST_CONTACT_S = 5.0
"""How long opening a Redis log may take before `BusUnavailableError` (URL `timeout`)."""

_BUS_OPTIONS = ("cluster", "timeout", "wait", "waitaof")
_REDIS_PY_OPTIONS = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
    }
)


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """A parsed Redis log URL."""

    url: str
    """The URL redis-py is given (the bus's own options removed)."""
    shown: str
    """The URL as given, password redacted: what messages name."""
    cluster: bool = False
    """Connect with `RedisCluster` (URL `cluster=1`)."""
    first_contact_s: float = DEFAULT_FIRST_CONTACT_S
    """Bound on opening: connect, handshake and retries together (URL `timeout`)."""
    wait_replicas: int = 0
    """Replicas `WAIT` must confirm before an append is reported (URL `wait`); 0: no WAIT."""
    waitaof: bool = False
    """Also confirm with `WAITAOF 1 0` that the master's AOF holds the append (URL `waitaof`)."""


def parse_redis_url(url: str) -> RedisTarget:
    """Check a redis://, rediss:// or unix:// URL and split off the bus's options; a malformed
    host or port or an unknown option is an `InvalidUrlError` (one sentence, no password)."""
    shown = redact_url(url)
    names = option_names(url)
    unknown = sorted(set(names) - _REDIS_PY_OPTIONS - set(_BUS_OPTIONS))
    if unknown:
        known = ", ".join(sorted(_REDIS_PY_OPTIONS | set(_BUS_OPTIONS) | {"mirror"}))
        raise InvalidUrlError(f"{shown} has the unknown option {unknown[0]!r} (known: {known})")
    values: dict[str, str | None] = {}
    for name in _BUS_OPTIONS:
        url, values[name] = pop_param(url, name)
    return RedisTarget(
        url=url,
        shown=shown,
        cluster=_flag(values["cluster"], "cluster", shown),
        first_contact_s=_number(values["timeout"], "timeout", shown, DEFAULT_FIRST_CONTACT_S),
        wait_replicas=int(_number(values["wait"], "wait", shown, 0, integer=True)),
        waitaof=_flag(values["waitaof"], "waitaof", shown),
    )


def option_names(url: str) -> list[str]:
    """The query option names of a URL whose host and port parse; else an `InvalidUrlError`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # parsing the port is what raises for a bad one
        return [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError as e:
        raise InvalidUrlError(f"{redact_url(url)} is not a usable log URL ({_no_secret(e, url)})") from e


def _flag(value: str | None, name: str, shown: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidUrlError(f"the {name} option of {shown} must be 1 or 0, got {value!r}")


def _number(value: str | None, name: str, shown: str, default: float, *, integer: bool = False) -> float:
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = -1
    if not 0 <= number < 1e6 or (not integer and number == 0):
        kind = "a whole number of replicas" if integer else "a positive number of seconds"
        raise InvalidUrlError(f"the {name} option of {shown} must be {kind}, got {value!r}")
    return number


def _no_secret(e: ValueError, url: str) -> str:
    """The parser's message, which never quotes the URL today; scrubbed so it never can."""
    secret = password_of(url)
    return str(e).replace(secret, "***") if secret else str(e)
