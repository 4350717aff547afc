"""Run the benchmarks one after another and write one markdown table of ours against the peers.

Run: python tests/benchmarks/run_all.py [--full] [--out results.md]
Small sizes by default (a few minutes on a laptop); `--full` uses the sizes of DESIGN.md
section 9 and issue 17. Each benchmark runs in its own process, one at a time, and reports its
rows through `report_row`: printed in its own output as it always was, and, when run from here,
also written as one JSON line to the file named by `LCES_BENCH_ROWS`, which this script reads
into the table (what, ours, peer, ratio, target, met). A benchmark that reports no row appears
with its exit status, so a failure is never a silent gap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS_ENV = "LCES_BENCH_ROWS"
"""The file a benchmark appends its rows to, one JSON object per line, when it is set."""


def report_row(what: str, ours: str, peer: str, ratio: float, target: str, met: bool) -> None:
    """Print one verdict of a benchmark and hand it to `run_all` when it is collecting."""
    verdict = "met" if met else "NOT met"
    print(f"{what}: ours {ours}, peer {peer}, ratio {ratio:.2f}, target {target} -> {verdict}")
    path = os.environ.get(ROWS_ENV)
    if path:
        row = {"what": what, "ours": ours, "peer": peer, "ratio": f"{ratio:.2f}", "target": target}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({**row, "met": verdict}) + "\n")


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its arguments at small and at full size."""

    script: str
    small: tuple[str, ...]
    full: tuple[str, ...]


BENCHES = (
    Bench("bench_transition.py", ("--n", "5000"), ("--n", "20000")),
    Bench("bench_append.py", ("--n", "5000", "--rounds", "3"), ("--n", "100000", "--rounds", "3")),
    Bench("bench_read.py", ("--n", "50000"), ("--n", "1000000")),
    Bench(
        "bench_replay.py",
        ("--n", "30000", "--small", "3000", "--repeats", "1"),
        ("--n", "1000000", "--small", "10000", "--repeats", "2"),
    ),
    Bench("bench_state_tensors.py", ("--repeat", "5"), ()),
    Bench("bench_seed_layer.py", ("--repeat", "10"), ()),
    Bench("bench_digest.py", ("--sizes", "1M,10M", "--repeat", "3", "--no-old"), ()),
    Bench("bench_ddp_step.py", ("--evals", "20", "--warmup-evals", "2"), ()),
)
"""The benchmarks of issue 17 and DESIGN.md section 9 that report rows, cheapest first (an empty
`full` is the script's own defaults, which are those sizes)."""


def run(bench: Bench, full: bool, rows_file: Path) -> tuple[int, float]:
    """Run one benchmark with this interpreter and the repository on its path; its exit status
    and seconds."""
    env = {**os.environ, ROWS_ENV: str(rows_file), "PYTHONPATH": str(HERE.parents[1])}
    argv = [sys.executable, str(HERE / bench.script), *(bench.full if full else bench.small)]
    print(f"\n=== {' '.join(argv[1:])}", flush=True)
    start = time.perf_counter()
    status = subprocess.run(argv, env=env, check=False).returncode
    return status, time.perf_counter() - start


def table(rows: list[dict[str, str]]) -> str:
    """The rows as one markdown table."""
    columns = ("what", "ours", "peer", "ratio", "target", "met")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the sizes of DESIGN.md section 9")
    parser.add_argument("--out", type=Path, default=Path("benchmarks.md"), help="markdown table file")
    args = parser.parse_args()
    rows: list[dict[str, str]] = []
    load = _load()
    with tempfile.TemporaryDirectory() as directory:
        for bench in BENCHES:
            rows_file = Path(directory) / f"{bench.script}.jsonl"
            status, seconds = run(bench, args.full, rows_file)
            found = rows_file.read_text().splitlines() if rows_file.exists() else []
            rows += [json.loads(line) for line in found]
            if status != 0 or not found:
                what = f"{bench.script} (exit status {status}, {seconds:.0f} s)"
                blank = dict.fromkeys(("ours", "peer", "ratio", "target", "met"), "-")
                rows.append({**blank, "what": what})
    size = "full" if args.full else "small"
    # Ratios measured on a loaded machine are not the code's: the load says how far to trust them.
    head = f"# Benchmarks ({size} sizes, one run each)\n\nload average before / after: {load} / {_load()}\n\n"
    args.out.write_text(head + table(rows))
    print(f"\n{table(rows)}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
