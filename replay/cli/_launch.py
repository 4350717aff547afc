"""Running a command on N local ranks: the launcher `demo --ranks N` uses, torchrun-compatible.

A worker learns its place from torchrun's environment variables (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_RESTART_COUNT`), so the same entry
point runs under `torchrun --nproc-per-node N` or under `launch()` here, which spawns N copies
of the current command line with those variables set. Like torchrun's elastic agent, a worker
that dies makes the launcher stop the others and start them all again, up to `max_restarts`
times, with the restart count raised; the workers then resume from the log's last checkpoint,
because a process group cannot take one rank back in.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Worker", "launch", "worker_from_env"]


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
    """
    status = 1
    for attempt in range(max_restarts + 1):
        status = _attempt(argv, ranks, attempt, env or {})
        if status == 0:
            return 0
        if attempt < max_restarts:
            print(
                f"lifecycle-es: a rank failed (exit {status}); restarting all {ranks} ranks "
                f"from the last checkpoint ({attempt + 1}/{max_restarts})",
                file=sys.stderr,
            )
    return status


def _attempt(argv: Sequence[str], ranks: int, attempt: int, extra: Mapping[str, str]) -> int:
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
        return _wait_all(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_all(procs: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait until all exit 0, or one fails: then stop the rest and return its status."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for proc in procs:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    proc.kill()
            first = failed[0]
            return first if first > 0 else 128 - first  # a signal: 128 + its number
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.05)
