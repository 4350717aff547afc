"""Starting rank processes the way torchrun does, and reading what they reported.

Every rank is a real process with torchrun's environment variables, its stdout and stderr in
files (no pipe can fill and block it), and a hard deadline: a test never waits longer than
`HARD_TIMEOUT_S` for a set of ranks; past it every rank is killed and the test fails with
their stderr. Ranks are started directly, not under torchrun, whose agent would SIGTERM the
survivors of a dead rank before they could report how they failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bus
from bus.testing import free_port

REPO = Path(__file__).resolve().parents[2]
HARD_TIMEOUT_S = 300.0
"""The most a test waits for one set of ranks; no healthy run here comes near it."""
WORKER = ("-m", "tests.ddp._worker")
CLI = ("-m", "replay.cli")
ERROR_EXIT_HINT = 3
"""The exit status of a worker whose run raised (`_worker.ERROR_EXIT`)."""


@dataclass(frozen=True)
class Finished:
    """How one process ended: its exit status, its JSON report (workers only) and its output."""

    rank: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The JSON line a worker printed last."""
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        assert lines, f"rank {self.rank} (exit {self.returncode}) reported nothing:\n{self.stderr[-3000:]}"
        report: dict[str, Any] = json.loads(lines[-1])
        return report


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with the repository importable and one intra-op thread."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


class Ranks:
    """`world_size` processes of one command, each with its rank's torchrun variables."""

    def __init__(
        self,
        argv: Sequence[str],
        world_size: int,
        directory: Path,
        *,
        restart: int = 0,
        cwd: Path | None = None,
    ) -> None:
        """Start `python ARGV` once per rank; output goes to files in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        port = str(free_port())
        self.directory, self.procs = directory, []
        for rank in range(world_size):
            env = environment(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world_size),
                LOCAL_WORLD_SIZE=str(world_size),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                TORCHELASTIC_RESTART_COUNT=str(restart),
            )
            with open(self._file(rank, "out"), "w") as out, open(self._file(rank, "err"), "w") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, *argv], env=env, stdout=out, stderr=err, cwd=cwd or REPO
                    )
                )

    def _file(self, rank: int, stream: str) -> Path:
        return self.directory / f"rank{rank}.{stream}"

    def wait(self, timeout: float = HARD_TIMEOUT_S) -> list[Finished]:
        """Wait until every rank exits on its own; kill them all and fail past `timeout`."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"ranks still running after {timeout:g} s:\n{self._stderr()}") from None
        return self.finished()

    def stop_survivors_after_failure(self, grace: float = 60.0) -> list[Finished]:
        """Wait for a rank to fail, give the others `grace` seconds to end, then SIGTERM them,
        as torchrun's agent does; return how every rank ended."""
        deadline = time.monotonic() + HARD_TIMEOUT_S
        while not any(p.poll() not in (None, 0) for p in self.procs):
            if time.monotonic() > deadline or all(p.poll() == 0 for p in self.procs):
                self.kill()
                raise AssertionError(f"no rank failed:\n{self._stderr()}")
            time.sleep(0.05)
        stop = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(stop - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        """SIGKILL every rank still running, and reap it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def finished(self) -> list[Finished]:
        """Return how every rank ended (all must have)."""
        return [
            Finished(
                rank, p.returncode, self._file(rank, "out").read_text(), self._file(rank, "err").read_text()
            )
            for rank, p in enumerate(self.procs)
        ]

    def _stderr(self) -> str:
        return "\n".join(
            f"--- rank {r} ---\n{self._file(r, 'err').read_text()[-2000:]}" for r in range(len(self.procs))
        )


def run_workers(args: Sequence[str], world_size: int, directory: Path, *, restart: int = 0) -> list[Finished]:
    """Run `tests.ddp._worker ARGS` on `world_size` ranks to the end; return how each ended."""
    return Ranks([*WORKER, *args], world_size, directory, restart=restart).wait()


def start_cli(args: Sequence[str], cwd: Path, *, module: Sequence[str] = CLI) -> subprocess.Popen[str]:
    """Start `python -m replay.cli ARGS` (or another module) in `cwd`, in a session of its own,
    so that one `os.killpg` ends it and every rank it started."""
    return subprocess.Popen(
        [sys.executable, *module, *args],
        cwd=cwd,
        env=environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def run_cli(
    args: Sequence[str], cwd: Path, *, timeout: float = HARD_TIMEOUT_S, module: Sequence[str] = CLI
) -> subprocess.CompletedProcess[str]:
    """Run `python -m replay.cli ARGS` (or another module) in `cwd` and return how it ended.

    It runs in a session of its own, so past `timeout` the launcher and every rank it started
    are killed together and the test fails.
    """
    with start_cli(args, cwd, module=module) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(args)} still running after {timeout:g} s:\n{err[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def read_log(url: str, run_id: str) -> list[dict[str, Any]]:
    """Return every record of a run's log."""
    with bus.open(url, run_id, create=False) as log:
        return log.read()


def sealed_batches(records: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """Group records by the `StepSealed` that closes them: step -> the records before its seal."""
    batches: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    pending: list[Mapping[str, Any]] = []
    for record in records:
        if record["kind"] == "StepSealed":
            batches[record["step"]].extend(pending)
            pending = []
        else:
            pending.append(record)
    return dict(batches)


def of_kind(records: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    """Return the records of one kind, in log order."""
    return [r for r in records if r["kind"] == kind]
