"""Benchmark: does the demo slow down or grow over a long run? A 30,000-step run against a
3,000-step one, each in its own process.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_long_demo.py
    [--long 30000] [--short 3000] [--strategy masked|resize] [--threads 1]
Targets (DESIGN.md section 9): a 30,000-step demo's last boundaries within 1.2 x of its first;
registry and projection memory grow with live entities, not events (peak RSS of the long run
within 1.1 x of the short one's).

Each child trains `DemoRun(DemoOptions(steps=n))` with its lifecycle on a JSONL log in a
temporary directory (the log lives on disk, as a run's would; an in-memory log would hold
every event by design). The demo's phases are fractions of `steps`, so the long run has
phases ten times as long, not ten times as many. `DemoRun.run`'s `after_step` callback stamps
the end of every step; a boundary's time is the whole evaluation step (its training step,
basin readout, observations, decisions, seal, surgery and digest), and the other steps are
timed alike for reference; their ratio cancels a drift in the machine's speed (other
processes). Peak RSS is `ru_maxrss` of the child, and its current RSS is sampled at each tenth
of the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _growth import first_last  # a sibling module

import bus
from lifecycle_es import Registry
from replay.demo import DemoOptions, DemoRun, demo_config


def child(steps: int, strategy: str, threads: int) -> dict[str, Any]:
    """Train one demo run; return its step times, peak RSS and what its state holds at the end."""
    import torch

    torch.set_num_threads(threads)
    options = DemoOptions(steps=steps, strategy="resize" if strategy == "resize" else "masked")
    interval = demo_config(options).lifecycle_eval_interval
    stamps: list[float] = []
    rss: list[int] = []  # current RSS at each tenth of the run
    tenth = max(1, steps // 10)

    def after_step(step: int) -> None:
        stamps.append(time.perf_counter())
        if step % tenth == 0:
            rss.append(_rss_kb())

    with (
        tempfile.TemporaryDirectory() as directory,
        bus.open(f"jsonl://{directory}", f"long-{uuid.uuid4().hex[:8]}") as log,
    ):
        run = DemoRun(options, log)
        stamps.append(time.perf_counter())
        run.run(after_step=after_step)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert run.lifecycle is not None
        registry = run.lifecycle.lc.registry  # the log is not read back: that would take memory
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "steps": steps,
        "boundary": durations[interval - 1 :: interval],
        "other": [d for i, d in enumerate(durations, start=1) if i % interval],
        "rss_kb": peak,
        "rss_tenths_kb": rss,
        "records": registry.seq,
        "registry": _registry_size(registry),
        "experts": run.experts(),
        "routing": [sum(n.values()) for _, n in run.timeline.experts],
    }


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def _registry_size(registry: Registry) -> dict[str, int]:
    state = registry.to_state()
    return {
        "entities": len(state["entities"]),
        "live": sum(registry.is_live(e.entity) for e in registry),
        "windows": len(state["windows"]),
        "values": sum(len(w[3]) for w in state["windows"]),
    }


def run_child(steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run `child` in a fresh interpreter, so each run's peak RSS is its own."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(steps),
        "--strategy",
        args.strategy,
        "--threads",
        str(args.threads),
    ]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def describe(r: dict[str, Any]) -> None:
    boundary, other = r["boundary"], r["other"]
    print(
        f"{r['steps']} steps: {r['wall_s']:.0f} s wall, {len(boundary)} boundaries, {r['records']} "
        f"records, peak RSS {r['rss_kb'] / 1024:.1f} MiB, experts routing at the end {r['experts']}"
    )
    print(f"  {first_last(boundary, 'evaluation step')}")
    print(f"  {first_last(other, 'other step')}")
    k, j = max(1, len(boundary) // 10), max(1, len(other) // 10)
    first = statistics.median(boundary[:k]) / statistics.median(other[:j])
    last = statistics.median(boundary[-k:]) / statistics.median(other[-j:])
    print(
        f"  evaluation step in other steps (median; cancels the machine's drift): first 10% "
        f"{first:.2f}, last 10% {last:.2f} (x{last / first:.2f})"
    )
    print("  RSS at each tenth of the run, MiB: " + " ".join(f"{kb / 1024:.0f}" for kb in r["rss_tenths_kb"]))
    print(
        f"  median evaluation step {statistics.median(boundary) * 1e3:.2f} ms, other step "
        f"{statistics.median(other) * 1e3:.2f} ms; registry at the end: {r['registry']}"
    )
    k = max(1, len(r["routing"]) // 10)  # a boundary's work grows with the experts that route
    print(
        f"  routing experts, mean over the first vs last 10% of boundaries: "
        f"{statistics.fmean(r['routing'][:k]):.1f} -> {statistics.fmean(r['routing'][-k:]):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=30_000)
    parser.add_argument("--short", type=int, default=3_000)
    parser.add_argument("--strategy", choices=("masked", "resize"), default="masked")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.strategy, args.threads)))
        return
    print(
        f"long demo: {args.strategy} strategy, {args.threads} torch thread(s) per run, JSONL log; "
        f"runs one after the other"
    )
    short, long = run_child(args.short, args), run_child(args.long, args)
    for r in (short, long):
        describe(r)
    print(
        f"peak RSS {args.long} vs {args.short} steps: x{long['rss_kb'] / short['rss_kb']:.3f} (target <= 1.1)"
    )


if __name__ == "__main__":
    main()
