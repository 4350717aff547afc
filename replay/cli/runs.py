"""`lifecycle-es runs LOG [--run RUN ...] [--format table|json]`: every run of a log with its state,
last step and last checkpoint, to see at a glance which runs ended and which to resume.

A run's state is its `run` spec state as the log last recorded it, with `terminated` shown as
`completed` when training finished (the guard's `complete`): `running` (or a process that died
without recording a stop), `interrupted` (preempted: resume it), `stopped` (stopped by hand),
`completed`, `terminated` or `pending`. The last step is the last sealed step (else the last
record's step); the last checkpoint is the last `CheckpointSaved`, or a checkpoint manager's
last `CheckpointRecorded` save (the seeds demo's). The runs of a JSONL
directory are its `RUN.jsonl` files; those of a Redis server are its log streams.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import bus
from bus import Log, RedisLog
from bus.errors import InvalidRunIdError
from replay.cli._open import add_lenient_argument, open_run
from replay.cli._rows import write_rows

__all__ = ["COLUMNS", "add_parser", "run", "run_ids", "summarise"]

COLUMNS = ("run", "state", "last_step", "checkpoint_step", "checkpoint", "records")
"""The columns of the listing, in order (the JSON objects' keys)."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the runs options to `parser`."""
    parser.add_argument("log_url", metavar="LOG", help="a directory, jsonl://DIR or a redis:// URL")
    parser.add_argument(
        "--run", action="append", metavar="RUN", help="list only this run (repeatable; default: every run)"
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="aligned text (default) or a JSON array"
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print every run of the log (or those named) with its state, last step and checkpoint."""
    ids = args.run or run_ids(args.log_url)
    rows = []
    for run_id in ids:
        with open_run(args.log_url, run_id, lenient=args.lenient) as log:
            rows.append(summarise(log))
    if args.format == "table":
        count = f"{len(rows)} run" + ("" if len(rows) == 1 else "s")
        print(f"{count} in {bus.redact_url(bus.log_url(args.log_url))}\n")
    write_rows(sys.stdout, rows, COLUMNS, args.format)
    return 0


def run_ids(url: str) -> list[str]:
    """The ids of every run in the log at `url`, sorted."""
    url = bus.log_url(url)
    if url.lower().startswith("jsonl://"):
        directory = url.split("://", 1)[1].partition("?")[0]
        return _valid(p.stem for p in Path(directory).glob("*.jsonl"))
    primary, _ = bus.split_mirror(url)
    with RedisLog(primary, "runs") as probe:  # no key is touched until a read or an append
        keys = probe.client.scan_iter(match="lces:{*}:log", count=1000)
        return _valid(_text(key).split("{", 1)[1].rsplit("}", 1)[0] for key in keys)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _valid(names: Iterable[str]) -> list[str]:
    """The names that are valid run ids, sorted (a directory may hold other .jsonl files)."""
    valid = []
    for name in names:
        try:
            valid.append(bus.validate_run_id(name))
        except InvalidRunIdError:
            continue
    return sorted(valid)


def summarise(log: Log) -> dict[str, Any]:
    """One row of the listing: the run's state, last step, last checkpoint and record count."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(run=log.run_id, state="pending", records=0)
    last_record_step = None
    for batch in log.pages():
        for record in batch:
            row["records"] += 1
            last_record_step = record.get("step")
            kind = record["kind"]
            if kind == "StepSealed":
                row["last_step"] = record["step"]
            elif kind == "RunStateChanged":
                row["state"] = _shown_state(record)
            elif kind == "CheckpointSaved" or (kind == "CheckpointRecorded" and record["action"] == "save"):
                row.update(checkpoint_step=record["step"], checkpoint=record["path"])
    if row["last_step"] is None:
        row["last_step"] = last_record_step
    return row


def _shown_state(record: dict[str, Any]) -> str:
    completed = record["to_state"] == "terminated" and (record.get("attrs") or {}).get("completed")
    return "completed" if completed else str(record["to_state"])
