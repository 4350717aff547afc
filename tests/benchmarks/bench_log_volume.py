"""Benchmark: bytes of log per evaluation checkpoint of the default demo, as the expert
coordinator wrote it before issue 18 (one `GateChecked` per gate, metrics at full float
precision) and as it writes now (one compact `GatesChecked` per attempt, metrics to 6
significant digits).

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_log_volume.py
    [--steps 3000] [--seed 0] [--threads 1]
Target (issue 18, point 7): the gate checks' bytes at least 3 x smaller; every check kept.

The same demo trains twice on JSONL logs in temporary directories, first under
`tests._gate_forms.old_form()` (the old writer put back), then as it is. Rounded metrics may
tip a float-driven decision, so the decisions of both runs are counted and compared, and the
gate figures are also given per check. A checkpoint is an evaluation step (a `StepSealed`);
bytes are those of the JSONL file, line ends included.
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
from lifecycle_es.events import gate_results
from replay.demo import DemoOptions, DemoRun
from tests._gate_forms import old_form

_GATE_KINDS = ("GateChecked", "GatesChecked")
_DECIDED = ("step", "action", "layer", "entity", "parent", "children", "apply_at_step", "seed")


def measure(options: DemoOptions) -> dict[str, Any]:
    """Train the demo on a JSONL log; return its bytes by kind, checkpoints, checks and decisions."""
    with tempfile.TemporaryDirectory() as directory:
        with bus.open(f"jsonl://{directory}", "volume") as log:
            DemoRun(options, log).run()
        lines = (Path(directory) / "volume.jsonl").read_bytes().splitlines(keepends=True)
    by_kind: Counter[str] = Counter()
    count: Counter[str] = Counter()
    decisions, checks = [], 0
    for line in lines:
        record = json.loads(line)
        by_kind[record["kind"]] += len(line)
        count[record["kind"]] += 1
        checks += sum(1 for _ in gate_results(record))
        if record["kind"] == "DecisionMade":  # what was decided; its recorded metrics are rounded now
            decisions.append([record[k] for k in _DECIDED])
    return {"bytes": by_kind, "count": count, "decisions": decisions, "checks": checks}


def _gate_bytes(m: dict[str, Any]) -> int:
    return sum(m["bytes"][k] for k in _GATE_KINDS)


def row(name: str, m: dict[str, Any]) -> str:
    checkpoints = m["count"]["StepSealed"]
    total = sum(m["bytes"].values())
    gates = _gate_bytes(m)
    events = sum(m["count"][k] for k in _GATE_KINDS)
    metrics = m["bytes"]["MetricsObserved"]
    return (
        f"{name:<8} {total:>10,} {total / checkpoints:>8,.0f} {gates:>9,} {gates / checkpoints:>7,.0f} "
        f"{m['checks']:>6,} {gates / m['checks']:>7,.0f} {events:>6,} {metrics / checkpoints:>9,.0f} "
        f"{len(m['decisions']):>5}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = DemoOptions(steps=args.steps, seed=args.seed)
    with old_form():
        before = measure(options)
    after = measure(options)
    print(
        f"demo: {args.steps} steps, seed {args.seed}, {after['count']['StepSealed']} evaluation checkpoints"
    )
    print("form        log B   B/ckpt    gate B gate/ck checks  B/check events metric/ck decis")
    print(row("before", before))
    print(row("after", after))
    per_check = (_gate_bytes(before) / before["checks"]) / (_gate_bytes(after) / after["checks"])
    total_before, total_after = sum(before["bytes"].values()), sum(after["bytes"].values())
    ckpt = (total_before / before["count"]["StepSealed"]) / (total_after / after["count"]["StepSealed"])
    metrics = before["bytes"]["MetricsObserved"] / after["bytes"]["MetricsObserved"]
    gates = _gate_bytes(before) / _gate_bytes(after)
    print(
        f"gate checks: {gates:.2f} x smaller in all, {per_check:.2f} x per check (target 3 x: "
        f"{'met' if min(gates, per_check) >= 3 else 'NOT met'})"
    )
    print(f"metrics {metrics:.2f} x smaller; whole log per checkpoint {ckpt:.2f} x smaller")
    same = before["decisions"] == after["decisions"]
    print(
        "decisions unchanged" if same else "decisions differ (rounded metrics tipped a float-driven choice)"
    )


if __name__ == "__main__":
    main()
