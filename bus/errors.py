"""The bus's exceptions: one small hierarchy under `BusError`, builtins mixed in where they fit.

Every message is one sentence and never contains a password: URLs are redacted before they
reach an exception (see `bus._urls.redact_url`).
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "BusUnavailableError",
    "ConcurrencyError",
    "CorruptLogError",
    "DurabilityUnknownError",
    "FollowTimeoutError",
    "InvalidArgumentError",
    "InvalidRecordError",
    "InvalidRunIdError",
    "InvalidUrlError",
    "RecordTooLargeError",
    "UnknownRunError",
]


class BusError(Exception):
    """Base of every error the bus raises; catch it to handle any transport failure.

    Raised as such when a closed log is used.
    """


class ConcurrencyError(BusError):
    """Raised by `append` when `expected_seq` is not the log's last seq and the batch is not a
    retry of one that already landed; `.actual` is the last seq the log really has."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"expected the log's last seq to be {expected}, but it is {actual}")
        self.expected = expected
        self.actual = actual


class BusUnavailableError(BusError, ConnectionError):
    """Raised when the log's server cannot be reached after bounded retries; `.url` names it
    with any password redacted."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the log at {url}: {reason}")
        self.url = url


class CorruptLogError(BusError, ValueError):
    """Raised when a stored log holds a record that cannot be read back (a bad line in the
    middle of a JSONL file, a gap or repeat in its seqs), or when a mirror disagrees with its
    primary; `.path` and `.line` (1-based, 0 when no single line is at fault) say where."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        where = f"{path} line {line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class InvalidRunIdError(BusError, ValueError):
    """Raised before any key or path is built when a run id does not fullmatch
    `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`."""


class UnknownRunError(BusError, LookupError):
    """Raised by `bus.open(..., create=False)` when the run has no log at the URL (readers such
    as replay and tail must not create one)."""

    def __init__(self, run_id: str, url: str) -> None:
        super().__init__(f"run {run_id!r} has no log at {url}")
        self.run_id = run_id


class InvalidArgumentError(BusError, ValueError):
    """Raised, before anything is read, written or sent, when a log's constructor, one of its
    methods or a `RetryPolicy` gets a value out of range or of the wrong kind (an fsync policy,
    an `expected_seq`, a page size, a consumer group name or block time, a mirror of another run)."""


class InvalidUrlError(InvalidArgumentError):
    """Raised by `bus.open` and the log constructors for a log URL with an unknown scheme, a
    malformed host or port, an unknown or unusable option, or an option the server lacks."""


class DurabilityUnknownError(BusError):
    """Raised by `append` on a log opened with `wait=N` when fewer than N replicas (or no AOF,
    with `waitaof=1`) confirmed the batch in time: it is in the master's log but may not
    survive a failover, so it is not acknowledged; `.first_seq` and `.last_seq` say which."""

    def __init__(self, first_seq: int, last_seq: int, reason: str) -> None:
        super().__init__(f"seqs {first_seq}-{last_seq} are durable-unknown: {reason}")
        self.first_seq = first_seq
        self.last_seq = last_seq


class InvalidRecordError(BusError, ValueError):
    """Raised by `append`, before anything is written, when a record is not a mapping of
    JSON/msgpack-compatible plain values (str keys; None, bool, 64-bit int, finite float, str,
    list, tuple, mapping)."""


class RecordTooLargeError(InvalidRecordError):
    """Raised by `append`, before anything is written, when a record's encoding exceeds the
    log's `max_record_bytes`."""

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(f"record {index} of the batch encodes to {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class FollowTimeoutError(BusError, TimeoutError):
    """Raised by `follow`/`follow_batches` when no new record arrives within `timeout`
    seconds; `.after` is the last seq yielded (resume from it)."""

    def __init__(self, after: int, timeout: float) -> None:
        super().__init__(f"no record after seq {after} arrived within {timeout:g} s")
        self.after = after
        self.timeout = timeout
