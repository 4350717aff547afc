"""Rows of a run as the commands print them: an aligned text table, CSV, or one JSON document.

Every row a command prints as CSV or JSON starts with the run's id (`run_id`), so the output
of several runs can be concatenated and still told apart. CSV cells hold scalars as text,
None as an empty cell, and lists and mappings as compact JSON.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO, get_args

__all__ = ["ROW_FORMATS", "RowFormat", "text_table", "with_run_id", "write_rows"]

RowFormat = Literal["table", "json", "csv"]
ROW_FORMATS: tuple[RowFormat, ...] = get_args(RowFormat)

Row = Mapping[str, Any]


def with_run_id(run_id: str, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows with `run_id` as their first key."""
    return [{"run_id": run_id, **{k: v for k, v in row.items() if k != "run_id"}} for row in rows]


def write_rows(out: TextIO, rows: Sequence[Row], columns: Sequence[str], fmt: RowFormat) -> None:
    """Write `rows` to `out` as an aligned table, CSV with a header line, or a JSON array."""
    if fmt == "json":
        out.write(json.dumps([{c: row.get(c) for c in columns} for row in rows]) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    else:
        out.write(text_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows]))


def text_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, with no trailing blanks."""
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (list(header), *cells)
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)  # round-trips exactly through float()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
