"""The expert lifecycle on real data, class-incrementally, against static MoEs (issue 18 point 5).

Run from the repository root, after `pip install -e ".[bench]"` (scikit-learn ships the data):
    PYTHONPATH=. python tests/benchmarks/bench_real_data.py [--seeds 10] [--steps-per-phase 300]
        [--config default|seeds_002] [--validation] [--quick]
A script, not a CI test: the lifecycle's decisions are emergent (float-driven), so they are
measured over seeds here rather than asserted in the suite. The full default run (10 seeds)
took 3.2 minutes on 2 CPU cores with another job beside it (every static model computes all 16
slots densely, as the lifecycle's does); `--quick` 13 seconds. A seed's differences between
models are a few test images (a dropped class has about 54), so fewer than 10 seeds decide
little.

The data is scikit-learn's digits (1797 8x8 images, 10 classes, inside the wheel), split 70/30
per seed. Training is class-incremental in five phases of `--steps-per-phase` steps: classes 0-3,
then 0-6, then 0-9, then 4-9 only (0-3 dropped), then 0-9 again (see `_real_data_task.py`). The
model is a user-written top-2 MoE classifier with a Switch load-balancing loss
(`_real_data_model.py`), its lifecycle wired in through `projections.training.ExpertLifecycle`
(`_real_data_runs.py`), which records each image's loss with its class (the need signal). The
lifecycle starts at 4 experts under the coordinator's defaults, the very settings the demo runs
under (`replay.demo.demo_config`), or seeds/002's with `--config seeds_002`. The static
baselines train the same model (the same 16 slots and initial weights per seed, routing to the
first n slots only), loss and batches with a fixed number of experts: the lifecycle's starting
count, its mean count over its runs' checkpoints (rounded) and its maximum
(`max_experts_per_layer`). Differences are paired by seed (mean ± standard error of the
per-seed differences).

It prints, per phase, test accuracy (mean and std over seeds) on the phase's own classes, on
all classes, and on the dropped classes 0-3 (forgetting, at the end of the drop phase and after
they return, and 10 and 30 steps into their return: what parking an expert whose classes left
is for; and, while they are away, with only their own four logits competing, which tells
forgetting in the features from the head's calibration across all ten classes); the experts
the lifecycle used (mean and max), its applied decisions by action, and its log bytes per
evaluation checkpoint. Target (issue 18): the lifecycle at least matches
the static model of its own mean size in every phase and beats it on the data that returns,
with fewer experts than the maximum; each is printed as met or NOT met, and marked "within 2
s.e." when the paired difference is smaller than twice its standard error (noise at this many
seeds, whichever way it points).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence

import torch
from _real_data_runs import EARLY, RunOptions, RunResult, train  # a sibling module
from _real_data_task import PHASES

from lifecycle_es.controllers import ExpertCoordinatorConfig
from replay.demo import DemoOptions, demo_config

START_EXPERTS = 4
MAX_EXPERTS = 16
ACTIONS = ("SPAWN", "PRUNE", "SPLIT", "MERGE", "REVIVE")
RETURN = len(PHASES) - 1
DROP = len(PHASES) - 2


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--steps-per-phase", type=int, default=300, help="training steps per phase")
    parser.add_argument(
        "--config", choices=("default", "seeds_002"), default="default", help="coordinator settings"
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="measure on a quarter of the training images held out, not the test split (to choose settings)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, 60 steps per phase (overrides both): a smoke run"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps_per_phase = 2, 60
    if args.seeds < 1 or args.steps_per_phase < 1:
        parser.error("--seeds and --steps-per-phase must be >= 1")
    return args


def _config(name: str) -> ExpertCoordinatorConfig:
    if name == "default":
        return demo_config(DemoOptions(max_experts=MAX_EXPERTS))  # the defaults, as the demo's
    return ExpertCoordinatorConfig.seeds_002(max_experts_per_layer=MAX_EXPERTS)


def _difference(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float]:
    """The mean per-seed difference, and its standard error (paired: one init per seed)."""
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return _mean(diffs), error


def _stat(values: Sequence[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):5.1f} ± {100 * spread:4.1f}"


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def _column(runs: list[RunResult], metric: str, phase: int) -> list[float]:
    """One value per run: `metric` at `phase`, or for "early", the mean of its `early_acc`."""
    if metric == "early":
        return [_mean(run.early_acc) for run in runs if run.early_acc]
    return [getattr(run, metric)[phase] for run in runs if len(getattr(run, metric)) > phase]


def _table(lifecycle: list[RunResult], static: dict[int, list[RunResult]], split: str) -> None:
    """Print accuracy per phase on `split` (test or validation): the lifecycle beside each baseline."""
    names = ["lifecycle", *(f"static {n}" for n in static)]
    every = [lifecycle, *static.values()]
    print(f"\n{split + ' accuracy % (mean ± std)':<40}" + "".join(f"{name:>16}" for name in names))
    rows = [(f"{p.name}: its classes", "phase_acc", i) for i, p in enumerate(PHASES)]
    rows.append((f"{PHASES[DROP].name}: all classes", "all_acc", DROP))
    forgetting = "dropped 0-3 (forgetting)"
    rows.append((f"{PHASES[DROP].name}: {forgetting}", "dropped_acc", DROP))
    rows.append((f"{PHASES[DROP].name}: 0-3 among themselves", "dropped_among_acc", DROP))
    rows.append((f"{PHASES[RETURN].name}: {forgetting}", "dropped_acc", RETURN))
    rows += [(f"{PHASES[RETURN].name}: 0-3 after {n} steps", "early_acc", i) for i, n in enumerate(EARLY)]
    for label, metric, phase in rows:
        columns = [_column(runs, metric, phase) for runs in every]
        if all(columns):  # early_acc is empty when a phase is shorter than its steps
            print(f"{label:<40}" + "".join(f"{_stat(column):>16}" for column in columns))
    print("\nlifecycle experts at each phase's end (mean, min-max over seeds)")
    for i, stage in enumerate(PHASES):
        counts = _column(lifecycle, "phase_experts", i)
        print(f"  {stage.name:<12} {_mean(counts):5.1f}  {min(counts):.0f}-{max(counts):.0f}")


def _lifecycle_summary(lifecycle: list[RunResult]) -> None:
    """Print the experts the lifecycle used, its decisions and its log bytes per checkpoint."""
    means = [_mean(run.experts) for run in lifecycle]
    top = max(max(run.experts) for run in lifecycle)
    each = ", ".join(f"{m:.1f}" for m in means)
    print(f"\nexperts used: mean {_mean(means):.2f} (per run {each}), max {top}")
    total: Counter[str] = Counter()
    for run in lifecycle:
        total.update(run.decisions)
    per_run = ", ".join(f"{a} {total[a]} ({total[a] / len(lifecycle):.1f}/run)" for a in ACTIONS)
    others = sorted(set(total) - set(ACTIONS))
    print(f"decisions applied, all runs: {per_run}" + (f", others {others}" if others else ""))
    parked = sum(run.parked for run in lifecycle)
    print(f"of the PRUNEs, parked because their basin's classes left (basin_gone): {parked}")
    per_checkpoint = [run.log_bytes / max(run.checkpoints, 1) for run in lifecycle]
    print(
        f"log: {_mean([r.log_bytes for r in lifecycle]) / 1e6:.2f} MB per run, "
        f"{_mean([r.checkpoints for r in lifecycle]):.0f} evaluation checkpoints, "
        f"{_mean(per_checkpoint) / 1e3:.1f} kB per checkpoint"
    )


def _target(lifecycle: list[RunResult], static: dict[int, list[RunResult]], mean_size: int) -> None:
    """Print the issue's target against the static model of the lifecycle's mean size."""
    peer = static[mean_size]
    print(f"\ntarget: lifecycle >= static {mean_size} (its mean size) in every phase, > on returning data,")
    print(f"        fewer experts than the maximum ({MAX_EXPERTS})")
    checks = [(phase.name, "phase_acc", i, False) for i, phase in enumerate(PHASES)]
    checks.append(("returning 0-3", "dropped_acc", RETURN, True))
    checks.append(("returning 0-3 early", "early", RETURN, True))
    for name, metric, i, must_beat in checks:
        ours, theirs = _column(lifecycle, metric, i), _column(peer, metric, i)
        if not ours:
            continue
        ratio = _mean(ours) / _mean(theirs) if _mean(theirs) else float("nan")
        met = _mean(ours) > _mean(theirs) if must_beat else _mean(ours) >= _mean(theirs)
        diff, error = _difference(ours, theirs)
        noise = "  (within 2 s.e.)" if abs(diff) < 2 * error else ""
        print(
            f"  {name:<19} {100 * _mean(ours):5.1f} vs {100 * _mean(theirs):5.1f}  ratio {ratio:.3f}  "
            f"{100 * diff:+5.1f} ± {100 * error:3.1f} s.e.  "
            f"{'(must beat) ' if must_beat else ''}{'met' if met else 'NOT met'}{noise}"
        )
    used = _mean([_mean(run.experts) for run in lifecycle])
    verdict = "met" if used < MAX_EXPERTS else "NOT met"
    print(f"  experts      {used:.2f} mean vs {MAX_EXPERTS} maximum  {verdict}")


def main() -> int:
    """Run the lifecycle and the static baselines over the seeds and print the comparison."""
    args = _arguments()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and cores are shared
    options = RunOptions(
        steps_per_phase=args.steps_per_phase, capacity=MAX_EXPERTS, validation=args.validation
    )
    config = _config(args.config)
    split = "validation" if args.validation else "test"
    seeds = range(args.seeds)
    began = time.perf_counter()
    lifecycle = [train(seed, options, experts=START_EXPERTS, config=config) for seed in seeds]
    middle = time.perf_counter()
    mean_size = round(_mean([_mean(run.experts) for run in lifecycle]))
    sizes = sorted({START_EXPERTS, mean_size, MAX_EXPERTS})
    static = {n: [train(seed, options, experts=n, config=None) for seed in seeds] for n in sizes}
    print(
        f"digits, {args.seeds} seeds, {len(PHASES)} phases x {args.steps_per_phase} steps, "
        f"--config {args.config} (eval every {config.lifecycle_eval_interval} steps), "
        f"measured on the {split} split; "
        f"lifecycle runs {middle - began:.0f} s, static runs {time.perf_counter() - middle:.0f} s"
    )
    _table(lifecycle, static, split)
    _lifecycle_summary(lifecycle)
    _target(lifecycle, static, mean_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
