"""`bus.open`: a log from a URL.

| URL | log |
|---|---|
| `memory://` | a new, empty `MemoryLog` (nothing is shared between opens) |
| `jsonl://DIR` (relative or absolute; `?fsync=always|batch|never&lenient=1`) | `JsonlLog` |
| `redis://`, `rediss://`, `unix://` (user, password, db, `ssl_*` as redis-py reads them) | `RedisLog` |
| any Redis URL with `?cluster=1` (naming one node; db 0) | `RedisLog` on a Redis Cluster |
| any Redis URL with `?mirror=DIR` | `MirroredLog` of that Redis log and `JsonlLog(DIR)` |
| a bare path to an existing directory (`runs`, `./runs`, `/data/runs`) | `JsonlLog`, as `jsonl://PATH` |

Redis URLs also take `timeout=SECONDS` (the bound on opening: connect and retries, default 5),
`wait=N` (an append is reported once `WAIT` says N replicas hold it, else
`DurabilityUnknownError`) and `waitaof=1` (and once the master's AOF holds it; Redis >= 7.2).
Any other option is an `InvalidUrlError` (see `bus._redis_url`).

`log_url` holds the bare-path rule, so every opener (`open`, the CLI's readers, the demo)
reads a location the same way.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from bus._jsonl import JsonlLog
from bus._log import Log
from bus._memory import MemoryLog
from bus._mirror import MirroredLog
from bus._redis import RedisLog
from bus._redis_url import option_names
from bus._runid import validate_run_id
from bus._urls import pop_param, redact_url
from bus.errors import CorruptLogError, InvalidUrlError, UnknownRunError

DEFAULT_URL = "jsonl://./runs"
"""The embedded default log: JSONL files under ./runs, no server needed."""

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def open(url: str, run_id: str, *, create: bool = True, **options: Any) -> Log:
    """Open the log of run `run_id` at `url`; keyword options go to the backend's constructor.

    With `create=False` (readers: replay, tail, verify) a run with no log there raises
    `UnknownRunError`, and nothing is created or changed: a JSONL log opens read-only, and a
    mirrored URL gives its primary alone (reads come from the primary; catching the mirror
    up is a writer's job).
    """
    validate_run_id(run_id)
    url = log_url(url)
    scheme = _scheme(url)
    if scheme == "memory":
        if not create:
            raise UnknownRunError(run_id, "memory:// (a memory log exists only in its process)")
        return MemoryLog(run_id, **options)
    if scheme == "jsonl":
        directory, params = jsonl_target(url)
        if not create and not (Path(directory) / f"{run_id}.jsonl").is_file():
            raise UnknownRunError(run_id, redact_url(url))
        return JsonlLog(directory, run_id, **{**params, **options, "readonly": not create})
    primary_url, mirror = split_mirror(url)
    primary = RedisLog(primary_url, run_id, **options)
    if not create and primary.last_seq() == 0:
        primary.close()
        raise UnknownRunError(run_id, primary.url)
    if mirror is None or not create:
        return primary
    try:
        return MirroredLog(primary, _open_mirror(mirror, run_id, redact_url(url)))
    except BaseException:
        primary.close()
        raise


def _open_mirror(directory: str, run_id: str, url: str) -> JsonlLog:
    """The mirror's JSONL log; damage that stops it opening names the command that repairs it."""
    try:
        return JsonlLog(directory, run_id)
    except CorruptLogError as e:
        hint = f"run `lifecycle-es verify {url} --run {run_id} --repair` to rebuild the mirror"
        raise CorruptLogError(e.path, e.line, f"{e.reason}; {hint}") from e


def log_url(location: str) -> str:
    """The log URL a location names: a URL as given, a bare directory path as `jsonl://PATH`.

    A location without `://` must be an existing directory (absolute or relative); anything
    else without a scheme (a file, a path not there yet, a typo such as `redis:/host`) is an
    `InvalidUrlError`, so a mistyped URL never becomes a new directory.
    """
    if not isinstance(location, str) or "://" in location:
        return location  # a URL (or not a string): `_scheme` judges it
    if location and Path(location).is_dir():
        return f"jsonl://{location}"
    shown = redact_url(f"path://{location}").split("://", 1)[1]  # a mistyped URL's password too
    raise InvalidUrlError(
        f"{shown!r} is neither a log URL (memory://, jsonl://DIR, redis://, rediss://, "
        "unix://) nor an existing directory"
    )


def split_mirror(url: str) -> tuple[str, str | None]:
    """A Redis URL without its `mirror` option, and the mirror directory (or None)."""
    if _scheme(url) not in REDIS_SCHEMES:
        raise InvalidUrlError(f"{redact_url(url)} is not a redis://, rediss:// or unix:// URL")
    option_names(url)  # a malformed host or port is refused before anything reads the URL
    primary_url, mirror = pop_param(url, "mirror")
    if mirror == "":
        raise InvalidUrlError(f"the mirror option of {redact_url(url)} names no directory")
    return primary_url, mirror


def jsonl_target(url: str) -> tuple[str, dict[str, Any]]:
    """The directory of a `jsonl://DIR` URL and the options in its query."""
    rest = url.split("://", 1)[1]
    directory, _, query = rest.partition("?")
    if not directory:
        raise InvalidUrlError(f"{redact_url(url)} names no directory (try {DEFAULT_URL})")
    params: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "fsync":
            params["fsync"] = value
        elif key == "lenient":
            params["lenient"] = value.lower() in ("1", "true", "yes")
        else:
            raise InvalidUrlError(f"{redact_url(url)} has the unknown option {key!r} (fsync, lenient)")
    return directory, params


def _scheme(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidUrlError(
            f"{redact_url(str(url))} is not a log URL (memory://, jsonl://DIR, redis://, rediss://, unix://)"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in REDIS_SCHEMES | {"memory", "jsonl"}:
        raise InvalidUrlError(
            f"unknown log URL scheme {scheme!r}: use memory://, jsonl://DIR, redis://, rediss:// or unix://"
        )
    return scheme


class LogOwner:
    """A holder of `log` that closes it on `close()` (or leaving a `with` block) only when it
    opened that log itself (`_owns_log`): a log the caller passed in stays the caller's."""

    log: Log
    _owns_log: bool

    def close(self) -> None:
        """Close the log if this object opened it."""
        if self._owns_log:
            self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
