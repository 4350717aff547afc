"""Robustness of the demo's lifecycle: every action taken, no thrashing, over many seeds.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_demo_robustness.py
    [--seeds 0-9] [--strategies masked,resize] [--ranks 1,2] [--steps 3000] [--jobs 2]
A script, not a CI test: emergent decisions differ between CPUs, so they are measured over many
seeds here rather than asserted for one seed in the suite.

Each run is the real command line (`lifecycle-es demo --quiet` on a JSONL log of its own,
`--ranks N` for several gloo ranks). From each run's log it counts the decisions of each action
applied before the run ended (`apply_at_step <= steps`) and the thrash among them:

- a prune of an expert within `cooling_period + prune_patience` checkpoints of its birth (a
  spawn or split that bought nothing: the expert never got past its grace and dormancy);
- a merge of a child with the expert it was split or cloned from within
  `split_cooldown_per_expert` steps of its birth (the split undone).

A merge of a child with its parent after the cooldown is not thrash (the split served a load
that has passed, as the demo's surge and calm intend, or it did not take), but it is counted
apart as "re-merge" so a reader sees how often it happens.
A prune is counted by its reason: a dead expert's (`confirmed_dead`, column PRUNE) apart from
the undo of a split or cloned spawn whose pair never divided the basin (`failed_split`, column
UNDO); both are PRUNE decisions in the log.
The thresholds are read from the run's own `RunStarted` config. It prints one row per run
(seed x strategy x ranks: actions, thrash, held-out loss at the end of each phase) and one per
(strategy, ranks): in how many runs each action was taken (and how often in all), thrash in all
and per run at most.
Target (issue "Green on every machine"): each action in at least 9 of 10 runs, thrash 0 in the
default demo and at most 1 per run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIONS = ("SPAWN", "PRUNE", "UNDO", "SPLIT", "MERGE")
"""The columns: decisions by action, a failed split's undo (a PRUNE, reason `failed_split`) apart."""
UNDO_REASON = "failed_split"
LOSS_ROW = re.compile(r"^\s*(\w+) \(step \d+\)\s+([0-9.]+)", re.MULTILINE)
MEAN_ROW = re.compile(r"^\s*mean training loss, all steps\s+([0-9.]+)", re.MULTILINE)


@dataclass
class Outcome:
    """What one demo run did."""

    seed: int
    strategy: str
    ranks: int
    status: int
    seconds: float
    applied: Counter[str] = field(default_factory=Counter)
    thrash: list[str] = field(default_factory=list)
    remerged: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    mean_loss: float = float("nan")
    error: str = ""


def _run(seed: int, strategy: str, ranks: int, steps: int, root: Path) -> Outcome:
    run_id = f"robust-{strategy}-{ranks}-{seed}"
    argv = [
        sys.executable,
        "-m",
        "replay.cli",
        "demo",
        "--log",
        f"jsonl://{root}",
        "--run",
        run_id,
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--strategy",
        strategy,
        "--quiet",
    ]
    if ranks > 1:
        argv += ["--ranks", str(ranks)]
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    outcome = Outcome(seed, strategy, ranks, done.returncode, time.monotonic() - started)
    if done.returncode != 0:
        outcome.error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"
        return outcome
    records = [json.loads(line) for line in (root / f"{run_id}.jsonl").read_text().splitlines()]
    outcome.applied, outcome.thrash, outcome.remerged = judge(records, steps)
    outcome.losses = {name: float(v) for name, v in LOSS_ROW.findall(done.stdout)}
    mean = MEAN_ROW.search(done.stdout)
    outcome.mean_loss = float(mean.group(1)) if mean else float("nan")
    return outcome


def judge(records: list[dict[str, Any]], steps: int) -> tuple[Counter[str], list[str], int]:
    """Return the actions applied before the end of a run, a line for each thrash, and the re-merges."""
    config = next(r for r in records if r["kind"] == "RunStarted")["config"]["lifecycle"]
    interval = config["lifecycle_eval_interval"]
    grace = (config["cooling_period"] + config["prune_patience"]) * interval
    born: dict[str, tuple[int, str | None]] = {}  # expert -> (step of birth, the expert it copies)
    applied: Counter[str] = Counter()
    thrash: list[str] = []
    remerged = 0
    for r in records:
        if r["kind"] != "DecisionMade" or r["apply_at_step"] > steps:
            continue
        action, step = r["action"], r["step"]
        applied["UNDO" if action == "PRUNE" and r["reason"] == UNDO_REASON else action] += 1
        if action in ("SPAWN", "SPLIT"):
            for child in r["children"]:
                born[child] = (step, r["parent"])
        elif action == "PRUNE" and r["entity"] in born and step - born[r["entity"]][0] <= grace:
            thrash.append(f"{r['entity']} pruned {step - born[r['entity']][0]} steps after its birth")
        elif action == "MERGE":
            survivor, absorbed = r["entity"], r["children"][0]
            for child, other in ((absorbed, survivor), (survivor, absorbed)):
                when, parent = born.get(child, (None, None))
                if parent != other or when is None:
                    continue
                if step - when < config["split_cooldown_per_expert"]:
                    thrash.append(f"{child} merged with its parent {other} {step - when} steps after birth")
                else:
                    remerged += 1
    return applied, thrash, remerged


def _range(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--strategies", default="masked,resize")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (a 2-rank run counts as one)")
    parser.add_argument("--keep", metavar="DIR", help="keep the runs' logs in DIR (default: a temporary one)")
    args = parser.parse_args()
    combos = [
        (seed, strategy, int(ranks))
        for ranks in args.ranks.split(",")
        for strategy in args.strategies.split(",")
        for seed in _range(args.seeds)
    ]
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        root = Path(args.keep or tmp)
        futures = [
            pool.submit(_run, seed, strategy, ranks, args.steps, root) for seed, strategy, ranks in combos
        ]
        outcomes = [f.result() for f in futures]
    _print_runs(outcomes)
    _print_summary(outcomes)


def _print_runs(outcomes: list[Outcome]) -> None:
    phases = sorted(
        {p for o in outcomes for p in o.losses},
        key=list(outcomes[0].losses).index if outcomes[0].losses else str,
    )
    print(
        "| seed | strategy | ranks | "
        + " | ".join(ACTIONS)
        + " | thrash | re-merge | "
        + " | ".join(f"loss {p}" for p in phases)
        + " | mean loss | s |"
    )
    print("|---" * (7 + len(ACTIONS) + len(phases)) + "|")
    for o in outcomes:
        if o.status != 0:
            print(f"| {o.seed} | {o.strategy} | {o.ranks} | exit {o.status}: {o.error} |")
            continue
        losses = " | ".join(f"{o.losses.get(p, float('nan')):.4f}" for p in phases)
        print(
            f"| {o.seed} | {o.strategy} | {o.ranks} | "
            + " | ".join(str(o.applied[a]) for a in ACTIONS)
            + f" | {len(o.thrash)} | {o.remerged} | {losses} | {o.mean_loss:.4f} | {o.seconds:.0f} |"
        )
    for o in outcomes:
        for line in o.thrash:
            print(f"  thrash: seed {o.seed} {o.strategy} ranks {o.ranks}: {line}")


def _print_summary(outcomes: list[Outcome]) -> None:
    print(
        "\n| strategy | ranks | runs | " + " | ".join(ACTIONS) + " | thrash total | thrash max/run "
        "| re-merge total | mean loss |"
    )
    print("|---" * (7 + len(ACTIONS)) + "|")
    groups = sorted({(o.strategy, o.ranks) for o in outcomes})
    for strategy, ranks in groups:
        group = [o for o in outcomes if (o.strategy, o.ranks) == (strategy, ranks)]
        ok = [o for o in group if o.status == 0]
        took = " | ".join(
            f"{sum(1 for o in ok if o.applied[a])}/{len(group)} ({sum(o.applied[a] for o in ok)})"
            for a in ACTIONS
        )
        thrash = [len(o.thrash) for o in ok]
        mean = sum(o.mean_loss for o in ok) / len(ok) if ok else float("nan")
        print(
            f"| {strategy} | {ranks} | {len(group)} | {took} | {sum(thrash)} | {max(thrash, default=0)} "
            f"| {sum(o.remerged for o in ok)} | {mean:.4f} |"
        )


if __name__ == "__main__":
    main()
