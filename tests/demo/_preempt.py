"""The demo command as a real process, SIGTERMed at a chosen step and resumed: shared by the
preemption tests and `bench_preemption.py`.

`Demo` starts `python -m replay.cli demo ...` (this worktree's code) in a directory of its own,
watches the run's JSONL log grow, and sends SIGTERM once a step at or past a target is sealed
by this process (a resumed run's log already holds earlier seals). Every wait has a deadline
that fails the caller; nothing here asserts how long anything took.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ddp._harness import environment

DEADLINE_S = 300.0
DIGEST = re.compile(r"^digest:\s+([0-9a-f]{16}) ", re.MULTILINE)
STOPPED = re.compile(r"^stopped:\s+at step (\d+) of", re.MULTILINE)


@dataclass(frozen=True)
class Ended:
    """How one demo process ended."""

    returncode: int
    stdout: str
    stderr: str
    signalled_to_exit_s: float | None = None
    """Seconds from the SIGTERM to the process's exit (None if it was not signalled)."""
    signalled_at: float | None = None
    """The wall time (`time.time()`) the SIGTERM was sent, to compare with records' `ts`."""

    @property
    def digest(self) -> str:
        """The run's final digest, as the command printed it."""
        found = DIGEST.search(self.stdout)
        assert found, f"no digest (exit {self.returncode}):\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}"
        return found[1]

    @property
    def stopped_at(self) -> int:
        """The step the command said it stopped at."""
        found = STOPPED.search(self.stdout)
        assert found, f"no stop (exit {self.returncode}):\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}"
        return int(found[1])


def records(log: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL log."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class Seals:
    """Reads a growing JSONL log from where it ended at construction, for new StepSealed steps."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        self.pending = b""
        self.latest = -1

    def poll(self) -> int:
        """The latest step sealed since construction (-1 if none yet)."""
        if self.log.exists():
            with self.log.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            self.offset += len(chunk)
            *lines, self.pending = (self.pending + chunk).split(b"\n")
            for line in lines:
                if b'"StepSealed"' in line:
                    self.latest = max(self.latest, json.loads(line)["step"])
        return self.latest


def start(directory: Path, argv: Sequence[str], *, name: str) -> subprocess.Popen[bytes]:
    """Start `python -m replay.cli ARGV` in `directory`, its output in files named after `name`."""
    with open(directory / f"{name}.out", "wb") as out, open(directory / f"{name}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "replay.cli", *argv],
            cwd=directory,
            env=environment(),
            stdout=out,
            stderr=err,
        )


def ended(
    directory: Path,
    proc: subprocess.Popen[bytes],
    name: str,
    seconds: float | None = None,
    signalled_at: float | None = None,
) -> Ended:
    """Wait for `proc` (killing it past the deadline) and read what it wrote."""
    try:
        proc.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{name} still running after {DEADLINE_S:g} s") from None
    out = (directory / f"{name}.out").read_text()
    err = (directory / f"{name}.err").read_text()
    return Ended(proc.returncode, out, err, seconds, signalled_at)


def run(directory: Path, argv: Sequence[str], *, name: str) -> Ended:
    """Run the command to its end."""
    return ended(directory, start(directory, argv, name=name), name)


def sigterm_at(
    directory: Path, log: Path, argv: Sequence[str], *, step: int, delay: float, name: str
) -> Ended:
    """Run the command and SIGTERM it `delay` seconds after it seals a step at or past `step`."""
    seals = Seals(log)
    proc = start(directory, argv, name=name)
    deadline = time.monotonic() + DEADLINE_S
    while seals.poll() < step:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            done = ended(directory, proc, name)
            raise AssertionError(f"{name} ended before step {step} (exit {done.returncode}):\n{done.stderr}")
        time.sleep(0.002)
    time.sleep(delay)
    signalled, wall = time.monotonic(), time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(DEADLINE_S)
    return ended(directory, proc, name, time.monotonic() - signalled, wall)
