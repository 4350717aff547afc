"""Files that appear whole or not at all: written aside, fsynced, renamed into place."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(target: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `target` so a reader sees the old file, or the new one whole.

    `durable=False` skips the fsync: the file is still never torn for a reader, but a power
    loss may lose it (for metadata that can be rebuilt, or benchmarks of the format itself).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per call, not per process: two threads saving one path must not share a temp file.
    aside = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex}")
    try:
        with open(aside, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(aside, target)
    except BaseException:
        aside.unlink(missing_ok=True)
        raise
