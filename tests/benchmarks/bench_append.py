"""Benchmark: batched append of lifecycle-shaped records, side by side in one run.

- RedisLog.append, batches of 1000 with expected_seq (the optimistic check on), against
  raw redis-py pipelined XADD of the same msgpack bytes (pre-encoded, and encoding included);
- the same with pydantic-validated events and the codec inside the timing, through the public
  append (a checking copy of every record) and with the records handed over (`plain=True`,
  how `Lifecycle` appends the events its commands build);
- against the eventsourcing library's in-memory (POPO) store saving 100 events per save;
- JsonlLog.append with each fsync policy, and MemoryLog for reference.

Run: python tests/benchmarks/bench_append.py [--n 100000] [--batch 1000]
Uses LCES_REDIS_URL if set, else starts its own redis-server on a free port.
Targets (DESIGN.md section 9): RedisLog / raw XADD >= 0.8; RedisLog / eventsourcing >= 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import redis
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from bus import FsyncPolicy, JsonlLog, MemoryLog, RedisLog
from bus._records import normalize_batch
from lifecycle_es import CODEC, GateChecked, MetricsObserved, TransitionApplied
from lifecycle_es.events import EventBase

sys.path.insert(0, str(Path(__file__).parent))
from run_all import report_row  # a sibling script

Record = dict[str, Any]

OURS = "RedisLog.append (expected_seq)"
OURS_VALIDATED = "validated events + codec + RedisLog.append"
OURS_HANDED_OVER = "validated events + codec + RedisLog.append(plain=True)"
RAW = "raw pipelined XADD, same bytes"
RAW_ENCODING = "raw pipelined XADD + msgpack encode"
ES_APP = "eventsourcing Application(POPO), 100/save"
ES_RECORDER = "eventsourcing POPO recorder, 100/insert"


def make_models(n: int, run_id: str = "bench", start: int = 0) -> list[EventBase]:
    """n typical lifecycle events, built with the validating pydantic constructors."""
    out: list[EventBase] = []
    for i in range(start, start + n):
        common = {"run_id": run_id, "step": i, "entity": f"seed-L{i % 12}-{i % 64}"}
        if i % 3 == 0:
            out.append(
                GateChecked(
                    **common,
                    from_state="TRAINING",
                    to_state="GRAFTING",
                    gate="kasmina.reconstruction",
                    category="performance",
                    passed=i % 5 != 0,
                    reason="reconstruction loss 0.004 <= 0.01",
                    observed={"reconstruction_loss": 0.004},
                    thresholds={"reconstruction_threshold": 0.01},
                )
            )
        elif i % 3 == 1:
            out.append(
                TransitionApplied(**common, from_state="TRAINING", to_state="GRAFTING", trigger="graft")
            )
        else:
            out.append(
                MetricsObserved(
                    **common, metrics={"loss": 0.1234 + i * 1e-6, "grad_norm": 1.5, "alpha": 0.25}
                )
            )
    return out


def make_events(n: int, run_id: str = "bench", start: int = 0) -> list[Record]:
    """n records of typical lifecycle events: validated events through the real codec."""
    return [CODEC.to_record(e) for e in make_models(n, run_id, start)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """LCES_REDIS_URL, or a redis-server started here (no persistence) for the run."""
    if os.environ.get("LCES_REDIS_URL"):
        yield os.environ["LCES_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed and LCES_REDIS_URL is not set")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
                "--save", "", "--appendonly", "no"]  # fmt: skip
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                with contextlib.suppress(redis.ConnectionError):
                    client.ping()
                    break
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def best_rates(
    n: int, scenarios: dict[str, Callable[[], object]], rounds: int, after_round: Callable[[], None]
) -> dict[str, float]:
    """Best records/s of each scenario over `rounds`; the scenarios take turns in every round,
    so a slow spell of a shared machine hits them alike instead of one of them."""
    best = dict.fromkeys(scenarios, 0.0)
    for _ in range(rounds):
        for name, fn in scenarios.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], n / (time.perf_counter() - start))
        after_round()
    return best


def bench_log(log: Any, events: list[Record], batch: int) -> None:
    """Append in batches with expected_seq, as the domain layer does."""
    last = log.last_seq()
    for chunk in chunks(events, batch):
        log.append(chunk, expected_seq=last)
        last += len(chunk)


def bench_raw_xadd(client: redis.Redis, key: str, payloads: list[bytes], batch: int) -> None:
    """redis-py pipelined XADD with explicit ids of pre-encoded payloads."""
    seq = 0
    for chunk in chunks(payloads, batch):
        pipe = client.pipeline(transaction=False)
        for payload in chunk:
            seq += 1
            pipe.xadd(key, {"d": payload}, id=f"{seq}-0")
        pipe.execute()


def bench_raw_xadd_encoding(client: redis.Redis, key: str, events: list[Record], batch: int) -> None:
    """The same, encoding each record (with its seq) with msgpack inside the timing."""
    seq = 0
    for chunk in chunks(events, batch):
        pipe = client.pipeline(transaction=False)
        for record in chunk:
            seq += 1
            pipe.xadd(key, {"d": msgpack.packb({**record, "seq": seq})}, id=f"{seq}-0")
        pipe.execute()


class Run(Aggregate):  # type: ignore[misc]  # eventsourcing's Aggregate is untyped here
    """An eventsourcing aggregate whose events carry one of our records."""

    @event("Recorded")  # type: ignore[misc]
    def record(self, payload: Record) -> None:
        """Nothing to apply: the benchmark measures storing events."""


def bench_es_application(events: list[Record], per_save: int) -> None:
    """eventsourcing Application (POPO persistence): record `per_save` events, then save."""
    app = Application()
    run = Run()
    app.save(run)
    for chunk in chunks(events, per_save):
        for record in chunk:
            run.record(record)
        app.save(run)


def bench_es_recorder(events: list[Record], per_save: int) -> None:
    """eventsourcing POPOApplicationRecorder.insert_events of stored events (JSON bytes)."""
    recorder = POPOApplicationRecorder()
    originator = uuid.uuid4()
    version = 0
    for chunk in chunks(events, per_save):
        stored = []
        for record in chunk:
            version += 1
            state = msgpack.packb(record)
            stored.append(StoredEvent(originator, version, "bench:Recorded", state))
        recorder.insert_events(stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records per scenario")
    parser.add_argument("--batch", type=int, default=1000, help="records per append")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (best one reported)")
    args = parser.parse_args()
    n, batch = args.n, args.batch
    events = make_events(n)
    payloads = [msgpack.packb({**r, "seq": i}) for i, r in enumerate(events, 1)]
    with redis_url() as url, tempfile.TemporaryDirectory() as directory:
        client = redis.Redis.from_url(url)
        keys: list[str] = []

        def fresh_key() -> str:
            keys.append(f"lces:{{raw-{uuid.uuid4().hex}}}:log")
            return keys[-1]

        def redis_log_validated(plain: bool = False) -> None:
            """Event construction with validation and the codec inside the timing; `plain`
            hands the codec's records over as `Lifecycle` does with its own (no checking copy)."""
            with RedisLog(url, f"bench-{uuid.uuid4().hex}") as log:
                keys.append(log.key)
                last = 0
                for start in range(0, n, batch):
                    models = make_models(min(batch, n - start), start=start)
                    records = [CODEC.to_record(m) for m in models]
                    if plain:
                        for record in records:
                            del record["seq"]  # the log assigns it
                    log.append(records, expected_seq=last, plain=plain)
                    last += len(models)

        def redis_log() -> None:
            with RedisLog(url, f"bench-{uuid.uuid4().hex}") as log:
                keys.append(log.key)
                bench_log(log, events, batch)

        def jsonl(policy: FsyncPolicy) -> None:
            with JsonlLog(Path(directory), f"j-{uuid.uuid4().hex}", fsync=policy) as log:
                bench_log(log, events, batch)

        def cleanup() -> None:
            client.delete(*keys)
            keys.clear()
            for path in Path(directory).iterdir():
                path.unlink()

        scenarios: dict[str, Callable[[], object]] = {
            OURS: redis_log,
            OURS_VALIDATED: redis_log_validated,
            OURS_HANDED_OVER: lambda: redis_log_validated(plain=True),
            RAW: lambda: bench_raw_xadd(client, fresh_key(), payloads, batch),
            RAW_ENCODING: lambda: bench_raw_xadd_encoding(client, fresh_key(), events, batch),
            ES_APP: lambda: bench_es_application(events, 100),
            ES_RECORDER: lambda: bench_es_recorder(events, 100),
            "JsonlLog.append fsync=never": lambda: jsonl("never"),
            "JsonlLog.append fsync=batch": lambda: jsonl("batch"),
            "JsonlLog.append fsync=always": lambda: jsonl("always"),
            "MemoryLog.append (reference)": lambda: bench_log(MemoryLog("m"), events, batch),
        }
        results = best_rates(n, scenarios, args.rounds, cleanup)
        client.close()
    report(n, batch, args.rounds, results)
    report_parts(min(n, 20_000), args.rounds, results)


def report_parts(n: int, rounds: int, results: dict[str, float]) -> None:
    """Where the validated append's time goes, per record, next to the raw XADD's whole cost:
    the steps run alone on the same records, best of `rounds` (CPU time of this process)."""
    models = make_models(n)
    records = [CODEC.to_record(m) for m in models]
    parts: dict[str, Callable[[], object]] = {
        "pydantic-validated event constructors": lambda: make_models(n),
        "codec.to_record": lambda: [CODEC.to_record(m) for m in models],
        "the log's checking copy (what plain=True skips)": lambda: normalize_batch(records),
    }
    print(f"\nwhere {OURS_VALIDATED!r} spends its time, per record ({n} records):")
    for name, fn in parts.items():
        best = min(_cpu_seconds(fn) for _ in range(rounds))
        print(f"  {name:<52} {best / n * 1e6:>7.2f} us")
    print(f"  {'RedisLog.append of the finished records (above)':<52} {1e6 / results[OURS]:>7.2f} us")
    print(f"  {'raw pipelined XADD, whole (above)':<52} {1e6 / results[RAW]:>7.2f} us")


def _cpu_seconds(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


def report(n: int, batch: int, rounds: int, results: dict[str, float]) -> None:
    print(f"append benchmark: {n} records, batches of {batch} (eventsourcing: 100 per save), "
          f"best of {rounds} interleaved rounds")  # fmt: skip
    print(f"{'scenario':<44} {'records/s':>12} {'us/record':>10}")
    for name, value in results.items():
        print(f"{name:<44} {value:>12,.0f} {1e6 / value:>10.2f}")
    print()
    for ours, peers in (
        (OURS, ((RAW, 0.8), (RAW_ENCODING, 0.8), (ES_APP, 2.0), (ES_RECORDER, 2.0))),
        (OURS_VALIDATED, ((RAW, 0.8), (ES_APP, 2.0))),
        (OURS_HANDED_OVER, ((RAW, 0.8), (ES_APP, 2.0))),
    ):
        for name, target in peers:
            ratio = results[ours] / results[name]
            rates = (f"{results[ours]:,.0f} records/s", f"{results[name]:,.0f} records/s")
            report_row(f"append: {ours} / {name}", *rates, ratio, f">= {target:g}", ratio >= target)


if __name__ == "__main__":
    main()
