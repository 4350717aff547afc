"""Comparing a primary log with its JSONL mirror, and rewriting the mirror from the primary."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus._jsonl import JsonlLog
from bus._jsonl_file import fsync_path
from bus._log import Log

MAX_DIFFERENCES = 100
"""`verify` stops listing differences after this many (it still says the logs differ)."""


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """What `verify` found when comparing a primary log with its mirror record by record."""

    equal: bool
    """True when both hold exactly the same records."""
    primary_last: int
    """The primary's last seq."""
    mirror_last: int
    """The mirror's last seq."""
    differences: list[tuple[int, str]] = field(default_factory=list)
    """(seq, what differs), in seq order, at most `MAX_DIFFERENCES` of them."""


def verify(primary: Log, mirror: Log, *, page: int = 10_000) -> VerifyReport:
    """Compare two logs record by record (in pages, so memory stays bounded)."""
    differences: list[tuple[int, str]] = []
    after = 0
    while len(differences) < MAX_DIFFERENCES:
        ours, theirs = primary.read(after, page), mirror.read(after, page)
        if not ours and not theirs:
            break
        differences.extend(_compare(after, ours, theirs))
        after += max(len(ours), len(theirs))
    p_last, m_last = primary.last_seq(), mirror.last_seq()
    return VerifyReport(
        equal=not differences and p_last == m_last,
        primary_last=p_last,
        mirror_last=m_last,
        differences=differences[:MAX_DIFFERENCES],
    )


def _compare(after: int, ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The differences between two pages that both start after seq `after`."""
    found = []
    for i in range(max(len(ours), len(theirs))):
        seq = after + 1 + i
        if i >= len(theirs):
            found.append((seq, "missing from the mirror"))
        elif i >= len(ours):
            found.append((seq, "only in the mirror"))
        elif ours[i] != theirs[i]:
            keys = ours[i].keys() | theirs[i].keys()
            fields = sorted(k for k in keys if ours[i].get(k) != theirs[i].get(k))
            found.append((seq, f"fields differ: {', '.join(fields)}"))
    return found


def repair(primary: Log, directory: str | os.PathLike[str], *, page: int = 10_000) -> int:
    """Rewrite the mirror `directory/<run_id>.jsonl` from the primary, atomically (a temp
    file in the same directory, fsynced, then `os.replace`); returns the records written.

    Run it while no process has the mirror open for writing: a writer holding the old file
    would go on appending to it.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".repair-{primary.run_id}-", dir=target))
    try:
        written = _copy(primary, scratch, page)
        name = f"{primary.run_id}.jsonl"
        os.replace(scratch / name, target / name)
        fsync_path(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def set_aside(path: str | os.PathLike[str]) -> Path:
    """Keep a damaged log file as `<name>.damaged-<UTC timestamp>` next to it (a hard link,
    so the original stays in place until `repair` replaces it atomically); returns the copy."""
    source = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        aside = source.with_name(f"{source.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        try:
            os.link(source, aside)
            return aside
        except FileExistsError:
            continue  # set aside twice within a second: take the next free name
    raise FileExistsError(f"no free name to set {source} aside")


def _copy(primary: Log, scratch: Path, page: int) -> int:
    """Write all of the primary into a fresh JSONL log in `scratch`; fsynced on close."""
    with JsonlLog(scratch, primary.run_id, fsync="never") as copy:
        while records := primary.read(copy.last_seq(), page):
            copy.append(records, expected_seq=copy.last_seq())
        fsync_path(copy.path)
        return copy.last_seq()
