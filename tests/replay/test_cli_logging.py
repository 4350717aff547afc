"""The command line's logging: log lines go to stderr only, at the chosen level and in the chosen
format (console text or JSON lines), with the options before or after the command; at
`--log-level debug` every command's stdout still holds only its output; and `main()` leaves
logging as it found it."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from _runs import REPO, play

import bus
from bus.testing import RedisServer
from lifecycle_es import Lifecycle
from tests._cli import run_cli
from tests._prometheus import parse_prometheus

RUN = "logged"
CONSOLE_LOG_LINE = re.compile(r"\[\s*(debug|info|warning|error|critical)\s*\]")
"""What marks a line of the console renderer: its level in brackets."""


@dataclass(frozen=True)
class Demo:
    url: str
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """A 50-step demo run in a process of its own, at --log-level debug with JSON log lines."""
    url = f"jsonl://{tmp_path_factory.mktemp('logging') / 'runs'}"
    argv = ["--log-level", "debug", "--log-format", "json", "demo", "--steps", "50", "--log", url]
    done = subprocess.run(
        [sys.executable, "-m", "replay.cli", *argv, "--run", RUN, "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return Demo(url, done)


def json_log_lines(err: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON log event, after checking each is one."""
    events = [json.loads(line) for line in err.splitlines()]
    assert all({"event", "level", "logger", "timestamp"} <= e.keys() for e in events), events
    return events


def assert_no_log_lines(out: str) -> None:
    """No line of stdout looks like a console log line or a JSON log event."""
    for line in out.splitlines():
        assert not CONSOLE_LOG_LINE.search(line), line
        assert not (line.startswith("{") and '"level"' in line and '"logger"' in line), line


def test_demo_logs_json_to_stderr_and_only_its_report_to_stdout(demo: Demo) -> None:
    """The demo's stdout is its report; its debug lines (the sync's, the CLI's) are JSON on stderr."""
    assert "experts routing per layer over time" in demo.done.stdout
    assert_no_log_lines(demo.done.stdout)
    events = json_log_lines(demo.done.stderr)
    assert {"debug", "info"} <= {e["level"] for e in events}
    assert {"replay.cli", "projections.training.sync", "replay.demo"} <= {e["logger"] for e in events}
    assert {"event": "running demo", "logger": "replay.cli", "level": "debug"}.items() <= events[0].items()


def lines_are_json(out: str) -> None:
    for line in out.splitlines():
        assert isinstance(json.loads(line), dict), line


def is_prometheus(out: str) -> None:
    assert parse_prometheus(out).sample("lifecycle_seq", run=RUN) > 0


def is_replay_table(out: str) -> None:
    assert out.startswith(f"run {RUN} as of seq ")


def is_json(out: str) -> None:
    assert isinstance(json.loads(out), dict)


def is_what_if_table(out: str) -> None:
    assert "split_patience" in out


def is_spec_list(out: str) -> None:
    assert out.startswith("kasmina ")


COMMANDS: list[tuple[list[str], Callable[[str], None]]] = [
    (["tail", "{url}", "--run", RUN, "--format", "json"], lines_are_json),
    (["replay", "{url}", "--run", RUN], is_replay_table),
    (["replay", "{url}", "--run", RUN, "--format", "json"], is_json),
    (["what-if", "{url}", "--run", RUN, "--set", "split_patience=8"], is_what_if_table),
    (["export-decisions", "{url}", "--run", RUN, "-o", "-"], lines_are_json),
    (["metrics", "{url}", "--run", RUN], is_prometheus),
    (["spec", "list"], is_spec_list),
    (["spec", "show", "expert", "--format", "json"], is_json),
]


@pytest.mark.parametrize(("argv", "check"), COMMANDS, ids=[" ".join(a[:1] + a[4:]) for a, _ in COMMANDS])
def test_stdout_holds_only_the_output_at_debug_level(
    demo: Demo, argv: list[str], check: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """At --log-level debug the command logs on stderr (at least the CLI's own debug line), and
    its stdout is its output alone."""
    argv = [a.format(url=demo.url) for a in argv]
    status, out, err = run_cli(capsys, "--log-level", "debug", *argv)
    assert status == 0, err
    assert f"running {argv[0]}" in err and "[debug" in err
    assert_no_log_lines(out)
    check(out)


@pytest.mark.redis_server
def test_verify_stdout_holds_only_its_report(
    redis_server: RedisServer, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` of a mirrored Redis run at --log-level debug: its report on stdout, logs on stderr."""
    url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"
    with bus.open(url, run_id) as log:
        play(Lifecycle(log))
    status, out, err = run_cli(capsys, "--log-level", "debug", "verify", url, "--run", run_id)
    assert status == 0, err
    assert "running verify" in err
    assert_no_log_lines(out)
    assert out.splitlines()[-1] == "equal"


def test_logging_options_after_the_command(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """The options are taken after the command too: JSON lines on stderr, the table on stdout."""
    argv = ["replay", demo.url, "--run", RUN, "--log-level", "debug", "--log-format", "json"]
    status, out, err = run_cli(capsys, *argv)
    assert status == 0
    is_replay_table(out)
    assert [e["event"] for e in json_log_lines(err)] == ["running replay", "replay exited with status 0"]


def test_after_the_command_wins_over_before(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """An option given on both sides of the command takes the value given after it."""
    argv = ["--log-level", "debug", "replay", demo.url, "--run", RUN, "--log-level", "warning"]
    assert run_cli(capsys, *argv)[::2] == (0, "")


def test_default_level_is_warning(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """Without options, debug and info lines are not shown: a clean run leaves stderr empty."""
    status, out, err = run_cli(capsys, "replay", demo.url, "--run", RUN)
    assert (status, err) == (0, "")
    is_replay_table(out)


def test_an_error_is_still_one_line(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """A command's error stays one plain line on stderr at the default level, as before."""
    status, out, err = run_cli(capsys, "replay", demo.url, "--run", "no-such-run")
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("lifecycle-es replay: ")


def test_main_leaves_logging_as_it_found_it(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    """After main() the root logger's handlers and levels, and structlog's configuration, are back."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("bus").level, structlog.get_config())
    assert run_cli(capsys, "--log-level", "debug", "replay", demo.url, "--run", RUN)[0] == 0
    after = (list(root.handlers), root.level, logging.getLogger("bus").level, structlog.get_config())
    assert after == before
