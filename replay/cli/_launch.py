"""Running a command on N local ranks: the launcher `demo --ranks N` uses, torchrun-compatible.

A worker learns its place from torchrun's environment variables (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_RESTART_COUNT`), so the same entry
point runs under `torchrun --nproc-per-node N` or under `launch()` here, which spawns N copies
of the current command line with those variables set. Like torchrun's elastic agent, a worker
that dies makes the launcher stop the others and start them all again, up to `max_restarts`
times, with the restart count raised; the workers then resume from the log's last checkpoint,
because a process group cannot take one rank back in. Like torchrun's agent too, the launcher
passes SIGTERM, SIGINT and SIGHUP on to every rank and waits for them to stop (each rank's
preemption guard stops all of them at one boundary with a checkpoint); a second signal kills them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["FORWARDED", "SIGNALS_HELP", "Worker", "launch", "worker_from_env"]


@dataclass(frozen=True, slots=True)
class Worker:
    """This process's place in a multi-rank run, from the torchrun environment."""

    rank: int
    world_size: int
    restart: int
    """How many times the run was restarted before this attempt (0 on the first)."""


def worker_from_env(env: Mapping[str, str]) -> Worker | None:
    """Return the worker described by torchrun's variables in `env`, or None outside a launcher."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return Worker(
        rank=int(env["RANK"]),
        world_size=int(env["WORLD_SIZE"]),
        restart=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    argv: Sequence[str], ranks: int, *, max_restarts: int = 0, env: Mapping[str, str] | None = None
) -> int:
    """Run `python -m replay.cli ARGV` on `ranks` local processes; return the run's exit status.

    `env` adds variables to every rank's environment (what must not show in `ps`, as argv does).

    Rank 0 writes to this process's stdout, the others' stdout is dropped (their stderr is
    kept). Exit status 0 when every rank of an attempt exits 0, else the first failure's.
    SIGTERM, SIGINT or SIGHUP to the launcher goes on to every rank (SIGHUP as SIGTERM, which
    their preemption guard handles), the launcher waits for them to stop and returns their
    status (143 for SIGTERM) without a restart; a second signal kills the ranks.
    """
    status = 1
    with _Signals() as signals:
        for attempt in range(max_restarts + 1):
            status = _attempt(argv, ranks, attempt, env or {}, signals)
            if status == 0 or signals.received:
                return status
            if attempt < max_restarts:
                print(
                    f"lifecycle-es: a rank failed (exit {status}); restarting all {ranks} ranks "
                    f"from the last checkpoint ({attempt + 1}/{max_restarts})",
                    file=sys.stderr,
                )
    return status


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals the launcher passes on to its ranks, as torchrun's agent does."""


SIGNALS_HELP = (
    "SIGTERM or Ctrl-C to the command stops every rank at one boundary with a checkpoint "
    "(exit 143 or 130; --resume continues it); a second Ctrl-C kills the ranks without one"
)
"""What `--ranks N`'s help says of signals to the launcher."""


class _Signals:
    """The signals the launcher received while its block ran, in order (handlers only record)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        # signal.signal works on the main thread only; elsewhere the signals keep their handlers
        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)


def _attempt(
    argv: Sequence[str], ranks: int, attempt: int, extra: Mapping[str, str], signals: _Signals
) -> int:
    port = _free_port()
    procs = []
    for rank in range(ranks):
        env = {
            **os.environ,
            **extra,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(ranks),
            "LOCAL_WORLD_SIZE": str(ranks),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "TORCHELASTIC_RESTART_COUNT": str(attempt),
        }
        stdout = None if rank == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen([sys.executable, "-m", "replay.cli", *argv], env=env, stdout=stdout))
    try:
        return _wait_all(procs, signals)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], signals: _Signals) -> int:
    """Wait until all exit 0, or one fails: then stop the rest and return its status.

    After a signal to the launcher, wait for every rank to stop on its own instead."""
    forwarded = 0
    while True:
        if len(signals.received) > forwarded:
            _forward(procs, signals.received[forwarded:], first=forwarded == 0)
            forwarded = len(signals.received)
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return _status([c for c in codes if c is not None])
        failed = [c for c in codes if c not in (None, 0)]
        if failed and not signals.received:
            _stop_the_rest(procs)
            return _status(failed)
        time.sleep(0.05)


def _forward(procs: Sequence[subprocess.Popen[bytes]], received: Sequence[int], *, first: bool) -> None:
    """Pass the first signal on to every live rank; any later one kills them (a second Ctrl-C)."""
    for proc in procs:
        if proc.poll() is not None:
            continue
        if first and len(received) == 1:
            # SIGHUP's default would kill a rank before it saves: the guard stops on SIGTERM
            proc.send_signal(signal.SIGTERM if received[0] == signal.SIGHUP else received[0])
        else:
            proc.kill()


def _stop_the_rest(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every rank still running and give them 10 s to end; kill what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()


def _status(codes: Sequence[int]) -> int:
    """The run's exit status: 0, or the first failure's (a signal's as 128 + its number)."""
    first = next((c for c in codes if c != 0), 0)
    return first if first >= 0 else 128 - first
