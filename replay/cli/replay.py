"""`lifecycle-es replay LOG --run RUN [--until-seq N | --until-step N | --until-time ISO]
[--format table|json|csv]`: the registry as of a point; CSV has one row per entity, `run_id` first."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bus import Log
from replay._replay import Replay, Until, replay
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run
from replay.cli._rows import ROW_FORMATS, text_table, with_run_id, write_rows

__all__ = ["add_parser", "replay_json", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the replay options to `parser`."""
    add_log_arguments(parser)
    until = parser.add_mutually_exclusive_group()
    until.add_argument("--until-seq", type=int, metavar="N", help="replay through seq N")
    until.add_argument("--until-step", type=int, metavar="N", help="replay through step N")
    until.add_argument("--until-time", metavar="ISO8601", help="replay through a wall time")
    parser.add_argument(
        "--format",
        choices=ROW_FORMATS,
        default="table",
        help="table (default), the documented JSON document, or CSV: one row per entity, run_id first",
    )
    add_lenient_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry as of the chosen point."""
    until = _until(args)
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        result = replay(log, until, tensors=False)
        skipped = getattr(log, "skipped", 0)
        short = result.reached_end and not until.open_ended and _ends_before(log, until, result.last_seq)
    if short:
        sys.stderr.write(
            f"lifecycle-es replay: the log ends at seq {result.last_seq}, before the "
            "requested point; replayed to the end\n"
        )
    if skipped:
        sys.stderr.write(f"lifecycle-es replay: skipped {skipped} unreadable lines\n")
    doc = replay_json(result, args.run)
    if args.format == "json":
        print(json.dumps(doc))
    elif args.format == "csv":
        write_rows(sys.stdout, with_run_id(args.run, doc["entities"]), ["run_id", *_ENTITY_KEYS], "csv")
    else:
        print(_table(doc), end="")
    return 0


def _ends_before(log: Log, until: Until, last_seq: int) -> bool:
    """Tell whether the log's last record lies before the requested point."""
    last = log.read(after=last_seq - 1, limit=1) if last_seq else []
    return not last or until.beyond(last[0])


def _until(args: argparse.Namespace) -> Until:
    if args.until_time is not None:
        return Until.parse_time(args.until_time)
    return Until(seq=args.until_seq, step=args.until_step)


_ENTITY_KEYS = ("entity", "spec", "state", "layer", "slot", "parent", "entered_step")
"""The keys of every entity in the JSON document, and the CSV's columns after run_id."""


def replay_json(result: Replay, run_id: str) -> dict[str, Any]:
    """The documented JSON form of a replay: the run, where it stopped, and every entity."""
    registry = result.registry.registry
    entities = [
        {key: getattr(e, key) for key in _ENTITY_KEYS} for e in sorted(registry, key=lambda e: e.entity)
    ]
    return {"run_id": run_id, "seq": result.seq, "step": result.step, "entities": entities}


def _table(doc: dict[str, Any]) -> str:
    title = f"run {doc['run_id']} as of seq {doc['seq']}, step {doc['step']}: {len(doc['entities'])} entities"
    cells = [[("" if e[h] is None else str(e[h])) for h in _ENTITY_KEYS] for e in doc["entities"]]
    return f"{title}\n\n" + text_table(_ENTITY_KEYS, cells)
