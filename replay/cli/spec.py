"""`lifecycle-es spec list|show NAME --format table|json|mermaid`."""

from __future__ import annotations

import argparse
import json
import sys

from lifecycle_es.spec import Spec
from lifecycle_es.specs import BUILTIN_SPECS

__all__ = ["add_parser", "run"]


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `spec` subcommands to `parser`."""
    sub = parser.add_subparsers(dest="spec_command", required=True, parser_class=type(parser))
    sub.add_parser("list", help="list the built-in specs")
    show = sub.add_parser("show", help="show one spec")
    show.add_argument("name", help="a spec name, as printed by `spec list`")
    show.add_argument("--format", choices=("table", "json", "mermaid"), default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the list of specs, or one spec in the chosen format."""
    if args.spec_command == "list":
        for each in BUILTIN_SPECS.values():
            first_line = (each.description or "").strip().splitlines()[:1]
            print(
                f"{each.name:<10} {len(each.states):>3} states {len(each.transitions):>4} edges  "
                f"{first_line[0] if first_line else ''}".rstrip()
            )
        return 0
    spec = BUILTIN_SPECS.get(args.name)
    if spec is None:
        known = ", ".join(BUILTIN_SPECS)
        sys.stderr.write(f"lifecycle-es spec: unknown spec {args.name!r}; known: {known}\n")
        return 2
    if args.format == "json":
        print(json.dumps(spec.to_json(), indent=2))
    elif args.format == "mermaid":
        print(spec.to_mermaid(), end="")
    else:
        print(_table(spec), end="")
    return 0


def _table(spec: Spec) -> str:
    rows = [
        f"spec {spec.name}: initial {', '.join(spec.initial)}",
        "",
        f"{'code':>4}  {'state':<16} {'category':<13} {'terminal':<8} min_time",
    ]
    for s in spec.states:
        rows.append(
            f"{s.code:>4}  {s.name:<16} {s.category.value:<13} {'yes' if s.terminal else '':<8} "
            f"{s.min_time_in_state or ''}".rstrip()
        )
    rows += ["", f"{'from':<16} {'to':<16} {'trigger':<18} gates"]
    for t in spec.to_json()["transitions"]:
        rows.append(f"{t['from']:<16} {t['to']:<16} {t['trigger']:<18} {', '.join(t['gates'])}".rstrip())
    return "\n".join(rows) + "\n"
