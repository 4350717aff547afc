"""Benchmark: `CheckpointManager` save and restore of one checkpoint holding state for 10k seeds.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_checkpoint_manager.py
    [--seeds 10000] [--repeat 15] [--root DIR]
Targets (seeds/001 table, DESIGN.md section 9): save < 10 ms and restore < 20 ms at 10k seeds,
with 128 bytes of Kasmina-layout tensor state per seed (the rows `StateTensors` snapshots) and
the seeds' ids. A save is the whole path: serialise, SHA-256, the `.pt` and its JSON sidecar
each written aside, fsynced and renamed, and retention's scan of `active/`. A restore is a
lookup, the SHA-256 check and `torch.load(weights_only=True)`. Medians of `--repeat` runs, with
the default durable saves and with `durable=False` (on a shared virtual disk the fsync of the
1.4 MB file alone takes 4-9 ms, so the durable figure measures the disk more than the code).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from projections.state_tensors import BYTES_PER_ROW
from projections.training import CheckpointManager, RetentionConfig


def seeds_state(seeds: int) -> dict[str, Any]:
    """State for `seeds` seeds in the Kasmina layout: 32 + 80 + 16 bytes of tensors per seed."""
    return {
        "state": torch.randint(0, 11, (seeds, 8), dtype=torch.int32),
        "history": torch.randint(0, 11, (seeds, 10, 2), dtype=torch.int32),
        "metrics": torch.rand(seeds, 4),
        "entities": json.dumps([f"seed-{i}" for i in range(seeds)]),
    }


def measure(root: str, seeds: int, repeat: int, *, durable: bool) -> tuple[list[float], list[float], int]:
    """Seconds of each save and each restore, and the checkpoint's size in bytes."""
    # Retention as a run would keep it: a handful per seed, so `active/` stays small.
    manager = CheckpointManager(root, retention=RetentionConfig(per_seed=5), durable=durable)
    state = seeds_state(seeds)
    saves, restores, ids = [], [], []
    for step in range(repeat + 2):  # the first two warm up the allocator and the page cache
        t0 = time.perf_counter()
        info = manager.save(state, layer=0, seed=0, step=step)
        saves.append(time.perf_counter() - t0)
        ids.append(info.id)
        t0 = time.perf_counter()
        loaded = manager.load(info.id)
        restores.append(time.perf_counter() - t0)
        assert torch.equal(loaded.state_data["metrics"], state["metrics"])
    return saves[2:], restores[2:], info.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--root", default=None, help="directory to write in (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load}, {args.seeds} seeds, "
        f"{BYTES_PER_ROW} bytes of tensor state per seed, {args.repeat} runs\n"
    )
    title = f"CheckpointManager, {args.seeds} seeds"
    print(f"{title:<40} {'median ms':>10} {'min ms':>8} {'target ms':>10}")
    for durable in (True, False):
        with tempfile.TemporaryDirectory(dir=args.root) as root:
            saves, restores, size = measure(root, args.seeds, args.repeat, durable=durable)
        how = "durable: fsync + rename" if durable else "durable=False: rename only"
        for what, times, target in (
            (f"save ({how})", saves, 1e-2),
            ("restore (verify + load)", restores, 2e-2),
        ):
            median = statistics.median(times)
            verdict = "PASS" if median < target else "FAIL"
            bound = "< " + format(target * 1e3, "g")
            print(f"{what:<40} {median * 1e3:>10.3f} {min(times) * 1e3:>8.3f} {bound:>10}  {verdict}")
    print(f"\ncheckpoint size {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
