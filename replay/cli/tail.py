"""`lifecycle-es tail LOG --run RUN [--from WHERE | --last N] [--follow [--wait-timeout S]]
[filters] [--until-kind KIND] [--until-step N] [--format] [--count N]`.

A tail stops by itself at the run's recorded end (`replay._tail.ends_run`), after the first
record of an `--until-kind`, or at the end of an `--until-step`. With `--follow` it waits for a
run that has no log yet (for ever, or `--wait-timeout` seconds); without it a missing run is an
error at once unless `--wait-timeout` is given. Filters that cannot match (an event kind no
codec knows, an entity glob that matches nothing so far) are a warning line, not an error: the
run may still write such an entity.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bus import Log
from bus.errors import UnknownRunError
from lifecycle_es.codec import CODEC
from lifecycle_es.errors import ConfigError
from replay._tail import Filter, Printer, Stop, entity_seen, parse_kinds, records_from, start_after, take
from replay._tail import unknown_kinds as find_unknown_kinds
from replay.cli._colour import colour_for
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run

__all__ = ["add_parser", "run"]

POLL_S = 0.2
"""How often a tail waiting for a run looks for its log."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tail options to `parser`."""
    add_log_arguments(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from",
        dest="start",
        default="beginning",
        metavar="WHERE",
        help="beginning (default), end, seq:N, last:N, step:N or time:ISO8601",
    )
    start.add_argument("--last", type=int, metavar="N", help="start N records before the end (kcat's -o -N)")
    parser.add_argument("--follow", action="store_true", help="keep printing records as they arrive")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="wait this long for a run that has no log yet (default: for ever with --follow, "
        "not at all without)",
    )
    parser.add_argument("--kind", help="comma-separated event kinds to show")
    parser.add_argument("--entity", metavar="GLOB", help="show records whose entity matches")
    parser.add_argument("--layer", type=int, metavar="N")
    parser.add_argument("--rank", type=int, metavar="N")
    parser.add_argument(
        "--until-kind",
        metavar="KIND",
        help="stop after the first record of this kind (e.g. StepSealed), shown or not",
    )
    parser.add_argument(
        "--until-step",
        type=int,
        metavar="N",
        help="stop once step N is over: at its StepSealed, or at the first record of a later step",
    )
    parser.add_argument("--format", choices=("pretty", "json"), default="pretty")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N records")
    add_lenient_argument(parser, help_text="skip unreadable JSONL lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the run's records from the chosen start, filtered, to a stop; follow if asked."""
    _check(args)
    kinds = parse_kinds(args.kind)
    flt = Filter(kinds=kinds, entity=args.entity, layer=args.layer, rank=args.rank)
    stop = Stop(kinds=parse_kinds(args.until_kind), step=args.until_step)
    _warn_of_unknown_kinds(kinds | stop.kinds)
    colour = args.format == "pretty" and colour_for(args.color, sys.stdout, os.environ)
    printer = Printer(sys.stdout, fmt=args.format, colour=colour)
    try:
        with _open(args) as log:
            if args.entity is not None and log.last_seq() and not entity_seen(log, args.entity):
                _say(f"warning: no entity matches {args.entity!r} in run {args.run} so far")
            after = start_after(log, args.start if args.last is None else f"last:{args.last}")
            for record in take(records_from(log, after, follow=args.follow), flt, args.count, stop):
                printer.write(record)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a follow ends
    return 0


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--count", args.count), ("--last", args.last), ("--until-step", args.until_step)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if args.wait_timeout is not None and not 0 <= args.wait_timeout < float("inf"):
        raise ConfigError(f"--wait-timeout must be a number of seconds >= 0, got {args.wait_timeout}")


def _open(args: argparse.Namespace) -> Log:
    """Open the run's log, waiting for it to appear when following or when asked to wait."""
    timeout = args.wait_timeout
    if timeout is None:
        timeout = float("inf") if args.follow else 0.0
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            return open_run(args.log_url, args.run, lenient=args.lenient)
        except UnknownRunError as e:
            if time.monotonic() >= deadline:
                raise
            if not waiting:
                waiting = True
                _say(f"{e} yet; waiting for it")  # the error names the URL without its password
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))


def _warn_of_unknown_kinds(kinds: frozenset[str]) -> None:
    unknown = find_unknown_kinds(kinds)
    if unknown:
        known = ", ".join(sorted(CODEC.kinds))
        _say(f"warning: unknown event kind {', '.join(map(repr, unknown))}; the known kinds are {known}")


def _say(message: str) -> None:
    sys.stderr.write(f"lifecycle-es tail: {message}\n")
    sys.stderr.flush()
