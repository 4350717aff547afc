"""Benchmark: reading a run back, side by side in one run.

- RedisLog.read of N records against raw redis-py XRANGE in pages + msgpack decode of the
  same stream;
- JsonlLog.read of the same N records (msgspec), and the parse alone with orjson for
  reference when it is installed;
- per-record cost at 10k records and at N (the growth target).

Run: python tests/benchmarks/bench_read.py [--n 1000000]
Uses LCES_REDIS_URL if set, else starts its own redis-server on a free port.
Targets (DESIGN.md section 9): RedisLog / raw >= 0.8; per-record cost at N within 1.3x of
that at 10k. (The 400k events/s JSONL replay target includes the fold, measured elsewhere.)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_append import make_events, redis_url  # a sibling script
from run_all import report_row  # a sibling script

from bus import JsonlLog, RedisLog

SMALL = 10_000
PAGE = 10_000
FILL_BATCH = 10_000


def fill(log: Any, n: int) -> None:
    """Append n lifecycle-shaped records in large batches (not timed)."""
    for start in range(0, n, FILL_BATCH):
        log.append(make_events(min(FILL_BATCH, n - start), start=start))


def measure(scenarios: dict[str, Callable[[], int]], repeats: int) -> list[tuple[str, float, int]]:
    """(name, best seconds, records) per scenario; the scenarios take turns in every round,
    so a slow spell of a shared machine hits them alike instead of one of them."""
    best = dict.fromkeys(scenarios, float("inf"))
    counts = dict.fromkeys(scenarios, 0)
    for _ in range(repeats):
        for name, fn in scenarios.items():
            gc.collect()
            start = time.perf_counter()
            counts[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return [(name, best[name], counts[name]) for name in scenarios]


def raw_xrange(client: redis.Redis, key: str, keep: bool, page: int = PAGE) -> int:
    """Plain redis-py XRANGE in pages plus msgpack decode of each entry's d field; `keep`
    holds every record (like read()), else each page is dropped (like a streaming replay)."""
    kept: list[Any] = []
    count, start = 0, "-"
    while True:
        entries: Any = client.xrange(key, start, "+", count=page)
        records = [msgpack.unpackb(fields[b"d"]) for _, fields in entries]
        count += len(records)
        if keep:
            kept.extend(records)
        if len(entries) < page:
            return count
        start = "(" + entries[-1][0].decode()


def streamed(log: Any) -> int:
    """Read the whole log page by page, dropping each page (how a replay folds a run)."""
    count, after = 0, 0
    while page := log.read(after, PAGE):
        count += len(page)
        after = page[-1]["seq"]
    return count


def orjson_parse(path: Path) -> int:
    """Reference only: the JSONL file parsed line by line with orjson."""
    import orjson

    with open(path, "rb") as f:
        return len([orjson.loads(line) for line in f])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records in the large run")
    args = parser.parse_args()
    rows: list[tuple[str, float, int]] = []
    with redis_url() as url:
        client = redis.Redis.from_url(url)
        keys = []
        for n in (SMALL, args.n):
            with RedisLog(url, f"bench-{uuid.uuid4().hex}") as log:
                keys.append(log.key)
                fill(log, n)
                scenarios = {
                    "raw XRANGE + msgpack, streamed": lambda k=log.key: raw_xrange(client, k, False),
                    "RedisLog.read, streamed": lambda g=log: streamed(g),
                    "raw XRANGE + msgpack, all kept": lambda k=log.key: raw_xrange(client, k, True),
                    "RedisLog.read, all kept": lambda g=log: len(g.read()),
                }
                rows += measure(scenarios, repeats=5 if n <= SMALL else 2)
        client.delete(*keys)
        client.close()
    with tempfile.TemporaryDirectory() as directory:
        for n in (SMALL, args.n):
            with JsonlLog(Path(directory), f"j{n}", fsync="never") as log:
                fill(log, n)
            path = Path(directory) / f"j{n}.jsonl"
            with JsonlLog(Path(directory), f"j{n}") as fresh:
                scenarios = {
                    "JsonlLog.read, streamed": lambda f=fresh: streamed(f),
                    "JsonlLog.read, all kept": lambda f=fresh: len(f.read()),
                }
                if importlib.util.find_spec("orjson"):
                    scenarios["orjson parse, all kept (ref)"] = lambda p=path: orjson_parse(p)
                rows += measure(scenarios, repeats=5 if n <= SMALL else 2)
    report(rows, args.n)


def report(rows: list[tuple[str, float, int]], n: int) -> None:
    print(f"read benchmark: {SMALL} and {n} lifecycle-shaped records (best of 5 / 2 runs)")
    print(f"{'scenario':<34} {'records':>9} {'seconds':>8} {'records/s':>11} {'us/record':>10}")
    cost: dict[tuple[str, int], float] = {}
    for name, seconds, count in rows:
        cost[(name, count)] = seconds / count * 1e6
        print(f"{name:<34} {count:>9} {seconds:>8.3f} {count / seconds:>11,.0f} "
              f"{cost[(name, count)]:>10.2f}")  # fmt: skip
    print()
    for how in ("streamed", "all kept"):
        for size in (SMALL, n):
            ours, raw = cost[(f"RedisLog.read, {how}", size)], cost[(f"raw XRANGE + msgpack, {how}", size)]
            what = f"RedisLog.read / raw XRANGE + msgpack, {how}, {size} records"
            costs = (f"{ours:.2f} us/record", f"{raw:.2f} us/record")
            report_row(what, *costs, raw / ours, ">= 0.8", raw / ours >= 0.8)
    for name in ("RedisLog.read", "JsonlLog.read"):
        for how in ("streamed", "all kept"):
            big, small = cost[(f"{name}, {how}", n)], cost[(f"{name}, {how}", SMALL)]
            what = f"{name}, {how}: cost per record at {n} / at {SMALL}"
            report_row(what, f"{big:.2f} us", f"{small:.2f} us", big / small, "<= 1.3", big / small <= 1.3)


if __name__ == "__main__":
    main()
