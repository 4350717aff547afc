"""`lifecycle-es verify LOG_URL --run RUN [--repair]`: compare a Redis log with its JSONL
mirror record by record, print what differs, and optionally rewrite the mirror.

Verify reads both sides and changes nothing; `--repair` rewrites a mirror that differs from
the primary, and rebuilds one too damaged to read (a missing, repeated or garbage line),
keeping the damaged file as `<run>.jsonl.damaged-<timestamp>`.

Exit status: 0 when they are equal (or were repaired), 1 when they differ and were not
repaired, 2 when the input is bad, the run exists nowhere or the log cannot be read (one
line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bus
from bus import BusError, CorruptLogError, JsonlLog, Log, MemoryLog, RedisLog, UnknownRunError

EXIT_EQUAL, EXIT_DIFFERENT, EXIT_BAD_INPUT = 0, 1, 2


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `verify` options to `parser`."""
    parser.add_argument("log_url", metavar="LOG_URL", help="a Redis URL with ?mirror=DIR")
    parser.add_argument("--run", required=True, metavar="RUN", help="the run id")
    parser.add_argument(
        "--repair", action="store_true", help="rewrite the mirror from the primary if they differ"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `verify` with parsed arguments; returns the exit status."""
    try:
        # A bare directory becomes jsonl://DIR first, so the error names it as a JSONL log.
        primary_url, mirror_dir = bus.split_mirror(bus.log_url(args.log_url))
        if mirror_dir is None:
            raise bus.InvalidUrlError("LOG_URL has no ?mirror=DIR to compare against")
        with RedisLog(primary_url, args.run) as primary:
            return _verify(primary, mirror_dir, args.repair)
    except BusError as e:
        print(f"lifecycle-es verify: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _verify(primary: Log, mirror_dir: str, repair: bool) -> int:
    path = Path(mirror_dir) / f"{primary.run_id}.jsonl"
    if not path.is_file() and primary.last_seq() == 0:
        raise UnknownRunError(primary.run_id, f"{primary.url} nor in {mirror_dir}")
    try:
        report = _compare(primary, mirror_dir, path)
    except CorruptLogError as e:
        return _damaged(primary, mirror_dir, path, e, repair)
    _print_report(report, primary.url, mirror_dir)
    if report.equal:
        return EXIT_EQUAL
    if not repair:
        print("the mirror differs from the primary; run again with --repair to rewrite it")
        return EXIT_DIFFERENT
    written = bus.repair(primary, mirror_dir)
    print(f"repaired: rewrote the mirror with {written} records from the primary")
    return EXIT_EQUAL


def _compare(primary: Log, mirror_dir: str, path: Path) -> bus.VerifyReport:
    """Compare without changing anything: a missing mirror compares as an empty one."""
    if not path.is_file():
        with MemoryLog(primary.run_id) as empty:
            return bus.verify(primary, empty)
    with JsonlLog(mirror_dir, primary.run_id, readonly=True) as mirror:
        return bus.verify(primary, mirror)


def _damaged(primary: Log, mirror_dir: str, path: Path, error: CorruptLogError, repair: bool) -> int:
    """Report a mirror too damaged to read, or rebuild it from the primary, keeping it aside."""
    if not repair:
        print(f"the mirror is damaged ({error}); run again with --repair to rebuild it from the primary")
        return EXIT_DIFFERENT
    aside = bus.set_aside(path)
    written = bus.repair(primary, mirror_dir)
    print(f"repaired: rebuilt the damaged mirror with {written} records from the primary (kept as {aside})")
    return EXIT_EQUAL


def _print_report(report: bus.VerifyReport, primary_url: str, mirror_dir: str) -> None:
    print(f"primary {primary_url}: last seq {report.primary_last}")
    print(f"mirror  {mirror_dir}: last seq {report.mirror_last}")
    for seq, what in report.differences:
        print(f"  seq {seq}: {what}")
    if len(report.differences) >= bus.MAX_DIFFERENCES:
        print(f"  (stopped after {bus.MAX_DIFFERENCES} differences)")
    print("equal" if report.equal else "DIFFERENT")
