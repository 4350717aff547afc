"""A generic, schema-agnostic append-only log of records, one log per run.

Backends: memory (the reference), a JSONL file, Redis Streams, and a Redis primary with a
JSONL mirror. `bus.open(url, run_id)` picks one from a URL. This package imports nothing
else of lifecycle-es.
"""

from bus._gc import gc_paused
from bus._jsonl import FsyncPolicy, JsonlLog
from bus._log import Log
from bus._memory import MemoryLog
from bus._mirror import MirroredLog
from bus._open import DEFAULT_URL, LogOwner, log_url, open, split_mirror
from bus._records import DEFAULT_MAX_RECORD_BYTES, Record
from bus._redis import RedisLog
from bus._redis_client import RetryPolicy
from bus._redis_group import GroupWorker, Pending
from bus._runid import validate_run_id
from bus._urls import redact_url
from bus._verify import MAX_DIFFERENCES, VerifyReport, repair, set_aside, verify
from bus.errors import (
    BusError,
    BusUnavailableError,
    ConcurrencyError,
    CorruptLogError,
    DurabilityUnknownError,
    FollowTimeoutError,
    InvalidArgumentError,
    InvalidRecordError,
    InvalidRunIdError,
    InvalidUrlError,
    RecordTooLargeError,
    UnknownRunError,
)

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_URL",
    "MAX_DIFFERENCES",
    "BusError",
    "BusUnavailableError",
    "ConcurrencyError",
    "CorruptLogError",
    "DurabilityUnknownError",
    "FollowTimeoutError",
    "FsyncPolicy",
    "GroupWorker",
    "InvalidArgumentError",
    "InvalidRecordError",
    "InvalidRunIdError",
    "InvalidUrlError",
    "JsonlLog",
    "Log",
    "LogOwner",
    "MemoryLog",
    "MirroredLog",
    "Pending",
    "Record",
    "RecordTooLargeError",
    "RedisLog",
    "RetryPolicy",
    "UnknownRunError",
    "VerifyReport",
    "gc_paused",
    "log_url",
    "open",
    "redact_url",
    "repair",
    "set_aside",
    "split_mirror",
    "validate_run_id",
    "verify",
]
