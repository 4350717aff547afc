"""Benchmark: time from SIGTERM to the demo process's exit with its checkpoint written.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_preemption.py
    [--steps 300] [--instants 10] [--seed 7]
One demo run (`lifecycle-es demo`, one process) is SIGTERMed at `--instants` seeded random
steps, each stop resumed with `--resume` (and that process SIGTERMed at the next instant), as
`tests/demo/test_resume.py` does. Each figure is the wall time from `kill(SIGTERM)` in this
process to the demo's exit: the wait for the next evaluation boundary (at most 10 steps), the
checkpoint (model, optimizer, projections; fsynced), its records, and the interpreter's exit.
Also shown: the part of it up to the `interrupted` record (its `ts`; the checkpoint is written
and fsynced before it), and how long a process that imported torch takes to exit normally (the
interpreter's and torch's teardown, which every clean exit pays). The peer is the same wait
for a process with no handler (Python's default: killed at once, nothing saved), the floor of
any "SIGTERM to exit". Target: within the grace a scheduler gives
between SIGTERM and SIGKILL: 30 s (Kubernetes' default terminationGracePeriodSeconds; SLURM's
KillWait defaults to 30 s; an AWS spot notice comes 120 s ahead).
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.demo._preempt import environment, records, sigterm_at

GRACE_S = 30.0


def guarded(directory: Path, steps: int, instants: int, seed: int) -> tuple[list[float], list[float]]:
    """Seconds from SIGTERM to exit, and to the `interrupted` record (the checkpoint written
    before it), at each instant; every stop is checked to have its checkpoint."""
    rng = random.Random(seed)
    stretch = (steps - 30) // instants
    log = directory / "bench.jsonl"
    fresh = ["demo", "--log", str(directory), "--run", "bench", "--steps", str(steps), "--quiet"]
    resume = ["demo", "--log", str(directory), "--resume", "bench", "--quiet"]
    seconds, recorded = [], []
    for n in range(instants):
        step = stretch * (n + 1) + rng.randrange(max(stretch - 20, 1))  # a stop comes <= 20 steps on
        done = sigterm_at(
            directory, log, resume if n else fresh, step=step, delay=rng.uniform(0, 0.02), name=f"p{n}"
        )
        last = [r for r in records(log) if r["kind"] == "RunStateChanged"][-1]
        assert done.returncode == 143 and last["attrs"]["checkpoint_saved"], done.stderr[-2000:]
        assert Path(last["attrs"]["checkpoint_path"]).exists()
        assert done.signalled_to_exit_s is not None and done.signalled_at is not None
        seconds.append(done.signalled_to_exit_s)
        recorded.append(last["ts"] - done.signalled_at)
    return seconds, recorded


def torch_exit(count: int) -> list[float]:
    """Seconds a Python process with torch imported takes to exit normally (its teardown)."""
    seconds = []
    for _ in range(count):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, torch; print(1, flush=True); sys.stdin.readline()"],
            env=environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None and proc.stdout.readline()
        t0 = time.monotonic()
        proc.stdin.close()
        proc.wait()
        seconds.append(time.monotonic() - t0)
    return seconds


def unguarded(count: int) -> list[float]:
    """Seconds from SIGTERM to exit of a Python process with torch imported and no handler."""
    seconds = []
    for _ in range(count):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, time, torch; print(1, flush=True); time.sleep(600)"],
            env=environment(),
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        seconds.append(time.monotonic() - t0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--instants", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        ours, recorded = guarded(Path(root), args.steps, args.instants, args.seed)
    peer = unguarded(args.instants)
    teardown = torch_exit(args.instants)
    print(f"SIGTERM -> exit, {args.instants} instants (seed {args.seed}), demo --steps {args.steps}")
    print(f"{'':44}{'p50':>10}{'max':>10}")
    for label, xs in (
        ("guarded demo: SIGTERM -> exit (checkpoint)", ours),
        ("  of it: SIGTERM -> checkpoint recorded", recorded),
        ("no handler: SIGTERM -> exit (nothing saved)", peer),
        ("torch process: normal exit (teardown)", teardown),
    ):
        print(f"{label:44}{statistics.median(xs) * 1e3:>8.0f}ms{max(xs) * 1e3:>8.0f}ms")
    print(
        f"ratio guarded/no handler: p50 {statistics.median(ours) / statistics.median(peer):.1f}x, "
        f"max {max(ours) / max(peer):.1f}x"
    )
    met = "met" if max(ours) < GRACE_S else "NOT met"
    print(f"target: max < {GRACE_S:g} s (a scheduler's SIGTERM-to-SIGKILL grace): {met}")


if __name__ == "__main__":
    main()
