"""Benchmark: time per training step of the demo with the lifecycle on against off, split into
evaluation steps (basin readout, observations, decisions, seal, surgery) and the other steps.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_demo_step.py
    [--steps 3000] [--warmup 100] [--strategy masked|resize] [--log memory://] [--threads 1]
Target (DESIGN.md section 7): no measurable cost on steps that are not evaluations.

Three runs of the same demo train in lockstep, one step each in turn (the order rotating every
step), so drift in the machine's speed hits them alike: the lifecycle run, the same run with
the lifecycle off, and a second lifecycle-off run whose gap to the first is the noise floor.
Under the masked strategy every run computes all expert slots, so the runs differ only by the
lifecycle's own work. Every step is timed on its own; steps before `--warmup` are dropped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

import bus
from replay.demo import DemoOptions, DemoRun, demo_config


def timed_lockstep(runs: Sequence[DemoRun], steps: int) -> list[list[float]]:
    """Train every run for `steps` steps in turn; return each run's seconds per step."""
    for run in runs:
        run.start()
    times: list[list[float]] = [[] for _ in runs]
    for step in range(1, steps + 1):
        order = [(step + k) % len(runs) for k in range(len(runs))]
        for i in order:
            started = time.perf_counter()
            runs[i].train_step(step)
            times[i].append(time.perf_counter() - started)
    return times


def row(label: str, on: list[float], off: list[float], floor: list[float]) -> str:
    """One line of the table: medians and means in ms, the on/off ratio and the noise floor."""
    med_on, med_off, med_floor = (statistics.median(x) for x in (on, off, floor))
    mean_on, mean_off = statistics.fmean(on), statistics.fmean(off)
    return (
        f"{label:<22} {len(on):>6} {med_on * 1e3:>9.3f} {med_off * 1e3:>9.3f} "
        f"{med_on / med_off:>8.3f} {med_floor / med_off:>8.3f} "
        f"{mean_on * 1e3:>9.3f} {mean_off * 1e3:>9.3f} {mean_on / mean_off:>8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--strategy", choices=("masked", "resize"), default="masked")
    parser.add_argument("--log", default="memory://", help="the lifecycle run's log URL")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = DemoOptions(steps=args.steps, strategy=args.strategy)
    baseline = DemoOptions(steps=args.steps, strategy=args.strategy, lifecycle=False)
    with bus.open(args.log, f"bench-{time.strftime('%Y%m%d-%H%M%S')}") as log:
        runs = [DemoRun(options, log), DemoRun(baseline), DemoRun(baseline)]
        on, off, floor = timed_lockstep(runs, args.steps)
        decided = sum(1 for r in log.read() if r["kind"] == "DecisionMade")
    interval = demo_config(options).lifecycle_eval_interval
    kept = range(args.warmup, args.steps)  # index i is step i + 1
    evaluation = [i for i in kept if (i + 1) % interval == 0]
    other = [i for i in kept if (i + 1) % interval]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.strategy} strategy, log {args.log}, "
        f"{args.steps} steps (first {args.warmup} dropped), evaluation every {interval} steps, "
        f"{decided} decisions"
    )
    print(
        f"{'steps':<22} {'n':>6} {'on ms':>9} {'off ms':>9} {'on/off':>8} {'floor':>8} "
        f"{'mean on':>9} {'mean off':>9} {'on/off':>8}"
    )
    print(
        f"{'':<22} {'':>6} {'median':>9} {'median':>9} {'median':>8} {'median':>8} "
        f"{'ms':>9} {'ms':>9} {'mean':>8}"
    )
    for label, picked in (
        ("non-evaluation steps", other),
        ("evaluation steps", evaluation),
        ("all steps", list(kept)),
    ):
        print(row(label, [on[i] for i in picked], [off[i] for i in picked], [floor[i] for i in picked]))
    ratio = statistics.median(on[i] for i in other) / statistics.median(off[i] for i in other)
    noise = abs(statistics.median(floor[i] for i in other) / statistics.median(off[i] for i in other) - 1)
    verdict = "met" if abs(ratio - 1) <= max(noise, 0.02) else "NOT met"
    print(
        f"floor = second lifecycle-off run / first: the noise between two identical runs.\n"
        f"target: non-evaluation on/off within the noise (|ratio - 1| <= max(floor gap, 2%)): "
        f"{ratio:.3f} -> {verdict}"
    )


if __name__ == "__main__":
    main()
