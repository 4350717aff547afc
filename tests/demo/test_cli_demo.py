"""`lifecycle-es demo`: progress on stderr, a summary and the file paths on stdout, one-line errors."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bus.testing import RedisServer
from replay.cli.demo import DEFAULT_STEPS
from replay.demo import DemoOptions, Tick
from replay.demo.report import ProgressBar
from tests._cli import one_line as _one_line
from tests._cli import run_cli as _cli

STEPS = "300"
REPO = Path(__file__).resolve().parents[2]
GUARD_S = 60.0
"""How long a test waits for a demo process before failing; never asserted."""


def test_a_short_demo_prints_its_summary_and_where_its_files_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary has the three tables; the log and the decisions export lie where it says."""
    url = f"jsonl://{tmp_path / 'runs'}"
    threads = torch.get_num_threads()
    status, out, err = _cli(capsys, "demo", "--steps", STEPS, "--log", url, "--run", "cli", "--quiet")
    assert (status, err) == (0, "")
    assert torch.get_num_threads() == threads  # the one-thread setting does not leak
    for heading in ("experts routing per layer over time", "lifecycle decisions by action", "loss"):
        assert heading in out
    log, decisions = tmp_path / "runs" / "cli.jsonl", tmp_path / "runs" / "cli" / "lifecycle_decisions.jsonl"
    assert f"log:       {log}, run cli" in out and f"decisions: {decisions}" in out
    assert f"files:     {tmp_path / 'runs' / 'cli'}{os.sep} " in out
    made = [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "DecisionMade"]
    assert len(decisions.read_text().splitlines()) == len(made)


def test_the_baseline_is_reported_beside_the_lifecycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--baseline` trains static models of the start, mean and maximum size with the lifecycle off,
    prints every loss side by side with the lowest named per phase, and says how the lifecycle fared."""
    status, out, _ = _cli(
        capsys,
        "demo",
        "--steps",
        STEPS,
        "--log",
        f"jsonl://{tmp_path}",
        "--run",
        "b",
        "--quiet",
        "--baseline",
    )
    assert status == 0
    header = next(line for line in out.splitlines() if "held-out loss at the end of" in line)
    labels = re.findall(r"lifecycle|static \d+ \([a-z/]+\)|lowest", header)
    assert labels[0] == "lifecycle" and labels[-1] == "lowest"
    sizes = [int(label.split()[1]) for label in labels[1:-1]]
    assert 4 in sizes and 16 in sizes and sizes == sorted(set(sizes), key=sizes.index)
    final = next(line for line in out.splitlines() if line.strip().startswith("calm (step 300)"))
    losses = [float(v) for v in re.findall(r"\b\d+\.\d{4}\b", final)]
    assert len(losses) == len(labels) - 1  # one loss per run
    assert final.rstrip().endswith(labels[losses.index(min(losses))])
    assert re.search(r"the lifecycle has the lowest held-out loss in [0-5] of 5 phases", out)


def test_progress_is_one_line_per_tenth_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written to a file, the progress bar gives about ten plain lines, without carriage returns."""
    status, _, err = _cli(capsys, "demo", "--steps", STEPS, "--log", f"jsonl://{tmp_path}", "--run", "p")
    assert status == 0
    lines = err.splitlines()
    assert 9 <= len(lines) <= 11 and "\r" not in err
    assert lines[-1].startswith("lifecycle [########################] 100% step 300/300")


def test_on_a_terminal_the_bar_redraws_one_line() -> None:
    """On a tty every tick rewrites the line with a carriage return; the last one ends it."""
    stream = io.StringIO()
    bar = ProgressBar(stream, label="lifecycle", tty=True)
    for step in (1, 2, 3):
        bar(Tick(step=step, steps=3, loss=0.5, experts={0: 4}, phase="settle"))
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "5"], "--steps must be at least 50"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--run", "../up"], "run id"),
        (["--log", "ftp://nowhere"], "unknown log URL scheme"),
        (["--strategy", "bogus"], "invalid choice"),
    ],
)
def test_demo_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options are one line on stderr and exit 2, before any training."""
    base = ["--log", f"jsonl://{tmp_path}", "--quiet"]
    status, out, err = _cli(capsys, "demo", *base, *argv)
    assert status == 2 and out == ""
    assert message in _one_line(err)


def test_a_run_that_exists_is_not_written_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reusing a run id that has a log is refused with one line; the log is left as it was."""
    url = f"jsonl://{tmp_path}"
    assert _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "once", "--quiet")[0] == 0
    before = (tmp_path / "once.jsonl").read_bytes()
    status, _, err = _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "once", "--quiet")
    assert status == 2 and "already has a log" in _one_line(err)
    assert (tmp_path / "once.jsonl").read_bytes() == before


def test_an_export_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting onto a directory fails with one line and exit 2."""
    url = f"jsonl://{tmp_path}"
    assert _cli(capsys, "demo", "--steps", "50", "--log", url, "--run", "x", "--quiet")[0] == 0
    (tmp_path / "taken").mkdir()
    status, _, err = _cli(capsys, "export-decisions", url, "--run", "x", "-o", str(tmp_path / "taken"))
    assert status == 2 and "cannot write" in _one_line(err)


def test_the_command_and_the_library_agree_on_the_default_length() -> None:
    """`--steps` defaults to the same run length as `DemoOptions`."""
    assert DemoOptions().steps == DEFAULT_STEPS


@pytest.mark.redis_server
def test_a_redis_run_writes_its_files_under_runs_slash_its_id(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,
    run_id: str,
) -> None:
    """A Redis log has no directory: the run's files go to runs/<run>/ as a JSONL run's do, never
    to ./lifecycle_decisions.jsonl, where the next run would write over them; the demo says where."""
    monkeypatch.chdir(tmp_path)
    status, out, _ = _cli(
        capsys, "demo", "--steps", "50", "--log", redis_server.url, "--run", run_id, "--quiet"
    )
    assert status == 0
    files = Path("runs") / run_id
    assert (files / "lifecycle_decisions.jsonl").is_file()
    assert (
        f"files:     {files}{os.sep} " in out and f"decisions: {files / 'lifecycle_decisions.jsonl'}" in out
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing beside it


def test_a_bare_directory_is_the_demos_jsonl_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --log DIR` with an existing directory writes DIR/<run>.jsonl and DIR/<run>/."""
    status, out, _ = _cli(capsys, "demo", "--steps", "50", "--log", str(tmp_path), "--run", "bare", "--quiet")
    assert status == 0 and f"replay it: lifecycle-es replay {tmp_path} --run bare" in out
    assert (tmp_path / "bare.jsonl").is_file() and (tmp_path / "bare" / "lifecycle_decisions.jsonl").is_file()


def _tick(step: int, steps: int = 3000) -> Tick:
    return Tick(step=step, steps=steps, loss=0.1234, experts={0: 12, 1: 9}, phase="surge")


@pytest.mark.parametrize("columns", [200, 80, 60, 40, 24, 12])
def test_on_a_terminal_no_drawn_line_is_as_wide_as_the_terminal(columns: int) -> None:
    """Every redraw fits in columns - 1 characters (a terminal wraps at the last column), shorter
    lines are padded over longer ones, and the ETA is shown while there is room for it."""
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, label="lifecycle", tty=True, columns=columns, clock=lambda: now[0])
    for step in (1, 10, 300, 1500, 2999, 3000):
        now[0] = step * 0.005
        bar(_tick(step))
    drawn = stream.getvalue().replace("\n", "\r").split("\r")
    assert max(len(line) for line in drawn) <= columns - 1
    if columns >= 40:
        assert all("eta " in line for line in drawn if line.strip())
    if columns >= 80:
        assert "loss 0.1234" in drawn[1] and "[" in drawn[1]
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_the_eta_is_the_rate_so_far_times_the_steps_left() -> None:
    """At step 1000 of 3000 after 10 s the ETA is 20 s; after an hour's pace it reads in h and m."""
    now = [10.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, label="x", tty=False, clock=lambda: now[0])
    now[0] = 20.0
    bar(_tick(1000))
    now[0] = 20.0 + 2 * 3600
    bar(_tick(2000))
    first, second = stream.getvalue().splitlines()
    assert first.endswith("eta 20s") and second.endswith("eta 1h00m")


def test_leaving_the_bar_ends_an_open_line_on_ctrl_c() -> None:
    """A KeyboardInterrupt through the bar's block leaves the cursor on a fresh line, once."""
    stream = io.StringIO()
    with (
        pytest.raises(KeyboardInterrupt),
        ProgressBar(stream, label="lifecycle", tty=True, columns=80) as bar,
    ):
        bar(_tick(5))
        raise KeyboardInterrupt
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    quiet = io.StringIO()
    with ProgressBar(quiet, label="lifecycle", tty=True, columns=80):
        pass  # nothing drawn: nothing to end
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_in_an_80_column_terminal_the_demo_never_wraps_and_ctrl_c_ends_the_line(tmp_path: Path) -> None:
    """The demo's bar in a pseudo-terminal of 80 columns: every redraw is under 80 characters with
    an ETA; Ctrl-C ends the command with status 130 and the cursor on a new line, no traceback."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "replay.cli", "demo", "--log", f"jsonl://{tmp_path}", "--run", "pty"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        while seen.count(b"\r") < 5:  # a few redraws, then Ctrl-C
            chunk = _read(leader)
            assert chunk, f"the demo closed its terminal after {seen!r}"
            seen += chunk
        process.send_signal(signal.SIGINT)
        while chunk := _read(leader):
            seen += chunk
        assert process.wait(timeout=GUARD_S) == 130
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = seen.decode()
    drawn = [line for line in text.replace("\n", "\r").split("\r") if line]
    assert drawn and max(len(line) for line in drawn) <= 79
    assert all("eta " in line for line in drawn)
    assert text.endswith("\n") and "Traceback" not in text


def _read(fd: int) -> bytes:
    """One read from a pseudo-terminal; b"" once the child has closed it. Fails (not hangs) on silence."""
    import select

    ready, _, _ = select.select([fd], [], [], GUARD_S)
    assert ready, f"no output within {GUARD_S:g} s"
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: every writer closed the terminal
        return b""
