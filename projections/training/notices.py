"""Notice sources for `PreemptionGuard`: things polled for "this machine is about to go away".

A source is anything with a `name` and a `check()` that returns a reason (a notice) or None.
Four are here: a file that appears (a scheduler's or an operator's touch file), a callable, the
AWS spot instance-action endpoint and the GCE preempted endpoint. The cloud pollers use only
urllib with a short timeout; their URL is configurable so tests point them at a loopback
server, and they contact nothing until a guard's poller thread calls `check()`.

`Poller` is that thread: it checks every source every `interval` seconds and hands the first
notice to a callback. A source that fails (a metadata server that does not answer, a callable
that raises) is logged and polled again: a notice source must never end the run.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from lifecycle_es.errors import ConfigError

__all__ = [
    "AWS_SPOT_URL",
    "GCE_PREEMPTED_URL",
    "AwsSpotNotice",
    "CallableNotice",
    "FileNotice",
    "GceNotice",
    "NoticeSource",
    "Poller",
    "cloud_sources",
]

AWS_SPOT_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
"""EC2's spot interruption notice: 404 until an interruption is scheduled, then a JSON action."""
GCE_PREEMPTED_URL = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"
"""GCE's preemption flag: the body is TRUE once the instance is being preempted."""

_log = logging.getLogger("projections.training.notices")


@runtime_checkable
class NoticeSource(Protocol):
    """Something polled for a preemption notice."""

    @property
    def name(self) -> str:
        """Short name recorded as the notice's source ('file', 'aws', ...)."""
        ...

    def check(self) -> str | None:
        """Return the notice's reason if one has arrived, else None."""
        ...


@dataclass(frozen=True, kw_only=True)
class FileNotice:
    """A notice when a file appears at `path` (e.g. a scheduler's or operator's touch file)."""

    path: str | os.PathLike[str]
    """The file whose appearance is the notice."""
    name: str = "file"

    def check(self) -> str | None:
        """Return a reason naming the file if it exists."""
        return f"notice file {os.fspath(self.path)} appeared" if Path(self.path).exists() else None


@dataclass(frozen=True, kw_only=True)
class CallableNotice:
    """A notice when `poll()` returns a true value: a reason string, or True."""

    poll: Callable[[], str | bool | None]
    """Called on the poller thread; returns a reason, True, or a false value for no notice."""
    name: str = "callable"

    def check(self) -> str | None:
        """Return the callable's reason (or a generic one for True), or None."""
        got = self.poll()
        if not got:
            return None
        return got if isinstance(got, str) else "notice callable returned True"


def _check_url(url: str, timeout: float) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"a metadata URL must be http(s)://..., got {url!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 30:
        raise ConfigError(f"timeout must be a number of seconds in (0, 30], got {timeout!r}")


def _get(request: urllib.request.Request, timeout: float) -> str | None:
    """The body of a 2xx answer, or None for 404 (no notice); other failures raise OSError."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return str(answer.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


@dataclass(frozen=True, kw_only=True)
class AwsSpotNotice:
    """EC2's spot instance-action endpoint, with an IMDSv2 token when the server gives one."""

    url: str = AWS_SPOT_URL
    """The instance-action URL; the token URL is the same host's `/latest/api/token`."""
    timeout: float = 1.0
    """Seconds per HTTP request; the metadata server answers locally or not at all."""
    name: str = "aws"

    def __post_init__(self) -> None:
        _check_url(self.url, self.timeout)

    def check(self) -> str | None:
        """Return the scheduled action (the endpoint's JSON body) if there is one."""
        headers = {}
        token = self._token()
        if token:
            headers["X-aws-ec2-metadata-token"] = token
        body = _get(urllib.request.Request(self.url, headers=headers), self.timeout)
        return None if body is None else f"aws spot instance-action: {body.strip()}"

    def _token(self) -> str | None:
        base = self.url.split("/latest/", 1)[0]
        request = urllib.request.Request(
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        try:
            return _get(request, self.timeout)
        except urllib.error.HTTPError:
            # IMDSv1-only servers refuse the token request; the notice is read without one.
            return None


@dataclass(frozen=True, kw_only=True)
class GceNotice:
    """GCE's `instance/preempted` flag, read with the `Metadata-Flavor: Google` header."""

    url: str = GCE_PREEMPTED_URL
    """The preempted URL."""
    timeout: float = 1.0
    """Seconds per HTTP request."""
    name: str = "gce"

    def __post_init__(self) -> None:
        _check_url(self.url, self.timeout)

    def check(self) -> str | None:
        """Return a reason once the flag reads TRUE."""
        request = urllib.request.Request(self.url, headers={"Metadata-Flavor": "Google"})
        body = _get(request, self.timeout)
        return "gce instance preempted" if body is not None and body.strip().upper() == "TRUE" else None


def cloud_sources() -> tuple[NoticeSource, ...]:
    """The AWS and GCE pollers at their real metadata addresses (for runs on spot instances)."""
    return (AwsSpotNotice(), GceNotice())


class Poller:
    """A daemon thread that polls sources until one gives a notice or it is stopped."""

    def __init__(
        self,
        sources: Sequence[NoticeSource],
        on_notice: Callable[[str, str], None],
        *,
        interval: float,
    ) -> None:
        self._sources = tuple(sources)
        self._on_notice = on_notice
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preemption-notices", daemon=True)

    def start(self) -> None:
        """Start polling (nothing is contacted before this)."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wait for its current round (bounded by the HTTP timeouts)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for source in self._sources:
                reason = self._check(source)
                if reason is not None:
                    self._on_notice(source.name, reason)
                    return
            self._stop.wait(self._interval)

    def _check(self, source: NoticeSource) -> str | None:
        try:
            return source.check()
        except OSError as e:  # urllib's URLError, timeouts, refused connections
            _log.warning("notice source %s did not answer: %s; polling again", source.name, e)
        except Exception:
            # A user's callable may raise anything; a notice source must not end the run, and
            # the failure is logged with its traceback every time, not lost.
            _log.exception("notice source %s failed; polling again", source.name)
        return None
