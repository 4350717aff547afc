"""`demo --ranks 2 --max-restarts 1`: the command's own launcher restarts every rank after one is SIGKILLed.

The test watches the run's log and, once it holds a checkpoint and a later seal, SIGKILLs the
worker whose environment says `RANK=1` (found through /proc, as an operator would). The
launcher must stop the survivor, start both ranks again with `TORCHELASTIC_RESTART_COUNT=1`,
and the new ranks must resume from the log's last checkpoint and finish the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bus import UnknownRunError
from tests.ddp._harness import HARD_TIMEOUT_S, environment, of_kind, read_log

pytestmark = pytest.mark.slow

STEPS = 400
EVERY = 100
FINISHED = re.compile(r"^rank (\d+): finished step (\d+) with digest ([0-9a-f]{16})$", re.MULTILINE)


def _children(parent: int) -> list[int]:
    """Return the pids of `parent`'s child processes, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    """Return the pid of the first attempt's worker of `rank` under the launcher, if it runs."""
    for pid in _children(launcher):
        env = _environ(pid)
        if env.get("RANK") == str(rank) and env.get("TORCHELASTIC_RESTART_COUNT") == "0":
            return pid
    return None


def _checkpointed_and_moved_on(url: str, run_id: str) -> list[dict[str, Any]] | None:
    """Return the log once it holds a CheckpointSaved and a StepSealed after it, else None."""
    try:
        records = read_log(url, run_id)
    except UnknownRunError:
        return None  # rank 0 has not created the log yet
    saved = of_kind(records, "CheckpointSaved")
    if saved and any(r["step"] > saved[0]["step"] for r in of_kind(records, "StepSealed")):
        return records
    return None


def test_the_launcher_restarts_every_rank_from_the_last_checkpoint(tmp_path: Path) -> None:
    """After rank 1 is SIGKILLed the run restarts once, resumes from its checkpoint and ends agreed."""
    url, run_id = f"jsonl://{tmp_path / 'runs'}", "restarted"
    command = [
        sys.executable,
        "-m",
        "replay.cli",
        "demo",
        "--log",
        url,
        "--steps",
        str(STEPS),
        "--run",
        run_id,
        "--quiet",
        "--ranks",
        "2",
        "--max-restarts",
        "1",
        "--checkpoint-every",
        str(EVERY),
        "--sync-timeout",
        "60",
    ]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as launcher:
        try:
            killed_at = _kill_rank_one_after_a_checkpoint(launcher, url, run_id)
            out, err = launcher.communicate(timeout=HARD_TIMEOUT_S)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.communicate()
    assert launcher.returncode == 0, err[-3000:]
    assert "a rank failed (exit 137); restarting all 2 ranks from the last checkpoint (1/1)" in err

    finished = {int(r): (int(s), d) for r, s, d in FINISHED.findall(err)}
    assert sorted(finished) == [0, 1] and {s for s, _ in finished.values()} == {STEPS}, err
    digests = {d for _, d in finished.values()}
    assert len(digests) == 1
    digest = digests.pop()
    assert f"ranks:     2, every rank ended with digest {digest}" in out

    records = read_log(url, run_id)
    restored = of_kind(records, "CheckpointRestored")
    saved_before = of_kind(killed_at, "CheckpointSaved")
    assert len(restored) == 1 and restored[0]["step"] >= saved_before[-1]["step"]
    restored_path = tmp_path / restored[0]["path"]  # relative to the launcher's directory
    assert restored_path.is_file() and restored_path.is_relative_to(
        tmp_path / "runs" / run_id / "checkpoints"
    )
    sealed = [r["step"] for r in of_kind(records, "StepSealed")]
    assert sealed == list(range(0, STEPS + 1, 10)), "every step sealed exactly once, replays included"
    verified = of_kind(records, "ActionsVerified")
    assert verified[-1]["step"] == STEPS and verified[-1]["digest"] == digest
    assert not of_kind(records, "DivergenceDetected")


def _kill_rank_one_after_a_checkpoint(
    launcher: subprocess.Popen[str], url: str, run_id: str
) -> list[dict[str, Any]]:
    """Poll the log until it holds a checkpoint and a later seal, then SIGKILL rank 1's worker."""
    deadline = time.monotonic() + HARD_TIMEOUT_S
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "the run ended before rank 1 could be killed"
        records = _checkpointed_and_moved_on(url, run_id)
        pid = _worker_of_rank(launcher.pid, 1) if records is not None else None
        if records is not None and pid is not None:
            os.kill(pid, signal.SIGKILL)
            return records
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint and later seal in the log after {HARD_TIMEOUT_S:g} s")
