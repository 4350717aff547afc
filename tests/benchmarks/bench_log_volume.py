"""Benchmark: bytes of log per evaluation checkpoint of the default demo, with the expert
coordinator's gate checks in the old single form (one `GateChecked` per gate) and in the
compact form (one `GatesChecked` per attempt).

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_log_volume.py
    [--steps 3000] [--seed 0] [--threads 1]
Target (issue 18, point 7): the gate checks' bytes at least 3 x smaller; every check kept.

The same demo trains twice on JSONL logs in temporary directories, first under
`tests._gate_forms.single_form()` (the old writer put back), then as it is. The demo is
deterministic on one machine, so both runs make the same decisions (checked). A checkpoint
is an evaluation step (a `StepSealed`); bytes are those of the JSONL file, line ends included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parents[2]))
import bus
from replay.demo import DemoOptions, DemoRun
from tests._gate_forms import single_form

_GATE_KINDS = ("GateChecked", "GatesChecked")
_IDS = ("event_id", "ts", "seq", "causation")


def measure(options: DemoOptions) -> dict[str, Any]:
    """Train the demo on a JSONL log; return its bytes by kind, checkpoints and decisions."""
    with tempfile.TemporaryDirectory() as directory:
        with bus.open(f"jsonl://{directory}", "volume") as log:
            DemoRun(options, log).run()
        lines = (Path(directory) / "volume.jsonl").read_bytes().splitlines(keepends=True)
    by_kind: Counter[str] = Counter()
    count: Counter[str] = Counter()
    decisions = []
    for line in lines:
        record = json.loads(line)
        by_kind[record["kind"]] += len(line)
        count[record["kind"]] += 1
        if record["kind"] == "DecisionMade":
            decisions.append({k: v for k, v in record.items() if k not in _IDS})
    return {"bytes": by_kind, "count": count, "decisions": decisions}


def row(name: str, m: dict[str, Any]) -> str:
    checkpoints = m["count"]["StepSealed"]
    total = sum(m["bytes"].values())
    gates = sum(m["bytes"][k] for k in _GATE_KINDS)
    events = sum(m["count"][k] for k in _GATE_KINDS)
    return (
        f"{name:<8} {total:>10,} {total / checkpoints:>10,.0f} {gates:>10,} {gates / checkpoints:>8,.0f} "
        f"{events:>7,} {m['bytes']['MetricsObserved']:>10,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = DemoOptions(steps=args.steps, seed=args.seed)
    with single_form():
        before = measure(options)
    after = measure(options)
    print(
        f"demo: {args.steps} steps, seed {args.seed}, {after['count']['StepSealed']} evaluation checkpoints"
    )
    header = ("form", "log B", "B/ckpt", "gate B", "gate/ck", "events", "metrics B")
    widths = (-8, 10, 10, 10, 8, 7, 10)
    print(" ".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    print(row("single", before))
    print(row("compact", after))
    gate_before = sum(before["bytes"][k] for k in _GATE_KINDS)
    gate_after = sum(after["bytes"][k] for k in _GATE_KINDS)
    total_before, total_after = sum(before["bytes"].values()), sum(after["bytes"].values())
    print(
        f"gate checks {gate_before / gate_after:.2f} x smaller; whole log {total_before / total_after:.2f} x"
    )
    print("decisions unchanged" if before["decisions"] == after["decisions"] else "DECISIONS DIFFER")


if __name__ == "__main__":
    main()
