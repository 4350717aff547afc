"""Opening a run's log for the read-only commands: never created, `--lenient` only on JSONL."""

from __future__ import annotations

import bus
from bus import Log
from lifecycle_es.errors import ConfigError

__all__ = ["open_run"]


def open_run(url: str, run_id: str, *, lenient: bool) -> Log:
    """Open the existing log of `run_id`; `lenient` skips unreadable lines of a JSONL log.

    `url` is a log URL or a bare directory (`bus.log_url` reads it).
    """
    if not lenient:
        return bus.open(url, run_id, create=False)
    url = bus.log_url(url)
    if not url.lower().startswith("jsonl://"):
        # Only the JSONL backend has lines to skip; the others would fail on the option.
        raise ConfigError("--lenient applies only to jsonl:// logs")
    return bus.open(url, run_id, create=False, lenient=True)
