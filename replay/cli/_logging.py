"""The command line's log lines: on stderr only, as console text or JSON lines, from a level on.

The CLI is the one place that configures logging. The package's modules log through stdlib
`logging` and configure nothing; while a command runs, one stderr handler renders their
records and structlog's events alike through structlog's `ProcessorFormatter`, so both come
out in the one chosen format. stdout is left to the command's output. The level applies to the
package's own loggers; other libraries' stay at WARNING, so `--log-level debug` shows ours.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Literal, get_args

import structlog
from structlog.typing import Processor

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "LogFormat", "LogLevel", "logging_to_stderr"]

LogFormat = Literal["console", "json"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

_OUR_LOGGERS = ("bus", "lifecycle_es", "projections", "replay")
"""The package's top-level loggers: `--log-level` sets theirs."""

_SHARED: list[Processor] = [
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(),  # a record's `extra=` fields become keys of the event
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
"""What every line gets, whether it came from stdlib `logging` or from structlog."""


@contextlib.contextmanager
def logging_to_stderr(level: LogLevel, fmt: LogFormat, *, colour: bool = False) -> Iterator[None]:
    """Send every log line to stderr in `fmt` while the block runs, then restore what was there.

    `colour` colours console lines (the CLI decides it from `--color` and NO_COLOR).

    Restoring keeps `main()` callable many times in one process (tests do): no handler is left
    pointing at a stream that is gone, and structlog's configuration is put back.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt, colour=colour))
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in _OUR_LOGGERS]
    saved_levels = [(logger, logger.level) for logger in (root, *ours)]
    saved_structlog = structlog.get_config()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in ours:
        logger.setLevel(level.upper())
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        handler.flush()
        root.removeHandler(handler)
        for logger, saved in saved_levels:
            logger.setLevel(saved)
        structlog.configure(**saved_structlog)


def _formatter(fmt: LogFormat, *, colour: bool) -> logging.Formatter:
    render: list[Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=colour)]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )
