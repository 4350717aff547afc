"""The command line behaves like the tools its users know: `--version` and `python -m
lifecycle_es`, NO_COLOR and `--color`, a bare directory as a log, warnings for filters that
cannot match, `tail` waiting for a run and stopping by itself, `--last N`, and the registry and
analysis tables as JSON and CSV with a run_id column."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest
from _runs import GUARD_S, REPO, play

import bus
from lifecycle_es import CODEC, Action, DecisionMade, InvalidTransitionError, Lifecycle
from replay import decisions, gate_pass_rates, population_over_steps, replay, time_in_state
from replay.cli._colour import colour_for
from replay.cli._logging import logging_to_stderr
from replay.cli.tables import TABLES
from tests._cli import one_line
from tests._cli import run_cli as cli

# -- --version and python -m lifecycle_es -------------------------------------------------------------


def test_version_prints_the_installed_distributions_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`lifecycle-es --version` prints `lifecycle-es X.Y.Z` (from the package metadata) and exits 0."""
    status, out, err = cli(capsys, "--version")
    assert (status, err) == (0, "")
    assert out == f"lifecycle-es {importlib.metadata.version('lifecycle-es')}\n"


def test_python_m_lifecycle_es_runs_the_command_line() -> None:
    """`python -m lifecycle_es` is the same command line as the `lifecycle-es` script."""
    done = subprocess.run(
        [sys.executable, "-m", "lifecycle_es", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"lifecycle-es {importlib.metadata.version('lifecycle-es')}\n"


# -- colour: --color and NO_COLOR ---------------------------------------------------------------------


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("choice", "tty", "no_color", "expected"),
    [
        ("auto", True, None, True),
        ("auto", True, "", True),  # an empty NO_COLOR does not count (no-color.org)
        ("auto", True, "1", False),
        ("auto", False, None, False),
        ("always", False, "1", True),  # the flag overrides the environment
        ("never", True, None, False),
    ],
)
def test_colour_follows_the_flag_then_no_color_then_the_terminal(
    choice: Any, tty: bool, no_color: str | None, expected: bool
) -> None:
    """auto colours a terminal unless NO_COLOR is non-empty; always and never decide alone."""
    stream = _Terminal() if tty else io.StringIO()
    environ = {} if no_color is None else {"NO_COLOR": no_color}
    assert colour_for(choice, stream, environ) is expected


@pytest.fixture
def scripted(tmp_path: Path, run_id: str) -> tuple[Path, str]:
    """The replay tests' scripted run in a JSONL directory: (directory, run id)."""
    directory = tmp_path / "runs"
    with bus.open(f"jsonl://{directory}", run_id) as log:
        play(Lifecycle(log))
    return directory, run_id


@pytest.mark.parametrize(("flag", "coloured"), [("always", True), ("never", False), ("auto", False)])
@pytest.mark.parametrize("where", ["before", "after"])
def test_tail_colours_pretty_lines_as_color_says(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str], flag: str, coloured: bool, where: str
) -> None:
    """--color (before or after the command) decides the pretty lines' colour; auto off a terminal is none."""
    directory, run_id = scripted
    argv = ["tail", str(directory), "--run", run_id, "--count", "3"]
    argv = ["--color", flag, *argv] if where == "before" else [*argv, "--color", flag]
    status, out, err = cli(capsys, *argv)
    assert (status, err) == (0, "")
    assert len(out.splitlines()) == 3
    assert ("\x1b[" in out) is coloured


def test_color_always_overrides_no_color_and_json_is_never_coloured(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NO_COLOR set, --color always still colours pretty lines; --format json stays plain."""
    directory, run_id = scripted
    monkeypatch.setenv("NO_COLOR", "1")
    _, pretty, _ = cli(capsys, "--color", "always", "tail", str(directory), "--run", run_id, "--count", "1")
    _, plain, _ = cli(
        capsys, "--color", "always", "tail", str(directory), "--run", run_id, "--format", "json"
    )
    assert "\x1b[" in pretty and "\x1b" not in plain


@pytest.mark.parametrize("colour", [True, False])
def test_console_log_lines_are_coloured_only_when_told(
    capsys: pytest.CaptureFixture[str], colour: bool
) -> None:
    """The console log renderer takes the CLI's colour decision, not the terminal's."""
    with logging_to_stderr("warning", "console", colour=colour):
        logging.getLogger("replay.probe").warning("a warning")
    err = capsys.readouterr().err
    assert "a warning" in err and ("\x1b[" in err) is colour


def test_a_terminal_gets_colour_unless_no_color_is_set(tmp_path: Path, run_id: str) -> None:
    """In a pseudo-terminal, `tail` colours by default, and NO_COLOR=1 turns it off."""
    directory = tmp_path / "runs"
    with bus.open(f"jsonl://{directory}", run_id) as log:
        play(Lifecycle(log))
    argv = ["tail", str(directory), "--run", run_id, "--count", "2"]
    assert "\x1b[" in _in_a_terminal(argv, {})
    assert "\x1b[" not in _in_a_terminal(argv, {"NO_COLOR": "1"})


def _in_a_terminal(argv: list[str], extra_env: dict[str, str]) -> str:
    """Run `python -m replay.cli ARGV` with stdout and stderr on a pseudo-terminal; return what it wrote."""
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "replay.cli", *argv],
        cwd=REPO,
        env={**env, **extra_env},
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=GUARD_S) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return b"".join(chunks).decode()


# -- a bare directory is a JSONL log --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["relative", "dot-relative", "absolute"])
def test_a_bare_directory_names_a_jsonl_log(
    capsys: pytest.CaptureFixture[str],
    scripted: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    """`replay runs --run X` reads jsonl://runs, whether the path is relative, ./relative or absolute."""
    directory, run_id = scripted
    monkeypatch.chdir(directory.parent)
    location = {"relative": "runs", "dot-relative": "./runs", "absolute": str(directory)}[form]
    status, out, err = cli(capsys, "replay", location, "--run", run_id, "--format", "json")
    _, expected, _ = cli(capsys, "replay", f"jsonl://{directory}", "--run", run_id, "--format", "json")
    assert (status, err) == (0, "")
    assert out == expected


def test_a_path_that_is_no_directory_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A scheme-less location that is not a directory is refused with one line, exit 2."""
    (tmp_path / "afile").write_text("")
    for location in (str(tmp_path / "afile"), str(tmp_path / "missing")):
        status, out, err = cli(capsys, "replay", location, "--run", "r")
        assert (status, out) == (2, "")
        assert "nor an existing directory" in one_line(err)


def test_a_runs_jsonl_file_names_its_directory_and_run(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """`replay DIR/RUN.jsonl` reads run RUN of DIR, with or without a matching `--run`."""
    directory, run_id = scripted
    file = str(directory / f"{run_id}.jsonl")
    _, expected, _ = cli(capsys, "replay", str(directory), "--run", run_id, "--format", "json")
    for extra in ((), ("--run", run_id)):
        status, out, err = cli(capsys, "replay", file, *extra, "--format", "json")
        assert (status, err) == (0, "")
        assert out == expected
    status, out, _ = cli(capsys, "tables", file, "--table", "time-in-state", "--format", "json")
    assert status == 0 and json.loads(out)


def test_a_runs_file_with_another_run_or_a_directory_without_run_is_exit_2(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """A `--run` that contradicts LOG's file, no `--run` for a directory, or a run's file that is
    not there, is one line and exit 2."""
    directory, run_id = scripted
    status, out, err = cli(capsys, "replay", str(directory / f"{run_id}.jsonl"), "--run", "other")
    assert (status, out) == (2, "")
    assert f"LOG is the file of run {run_id!r} but --run names 'other'" in one_line(err)
    status, out, err = cli(capsys, "replay", str(directory))
    assert (status, out) == (2, "")
    assert "--run RUN is needed" in one_line(err)
    missing = str(directory / "no-such-run.jsonl")  # a mistyped file is named, not a missing --run
    status, out, err = cli(capsys, "replay", missing)
    assert (status, out) == (2, "")
    assert one_line(err).strip().endswith(f"no log file at {missing}")


# -- replay and the analysis tables as JSON and CSV ----------------------------------------------------


def test_replay_as_csv_is_one_row_per_entity_with_run_id_first(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """`replay --format csv` has a header line and one row per entity, the same as the JSON's."""
    directory, run_id = scripted
    _, doc, _ = cli(capsys, "replay", str(directory), "--run", run_id, "--format", "json")
    status, out, err = cli(capsys, "replay", str(directory), "--run", run_id, "--format", "csv")
    assert (status, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    entities = json.loads(doc)["entities"]
    assert out.splitlines()[0] == "run_id,entity,spec,state,layer,slot,parent,entered_step"
    assert len(rows) == len(entities)
    for row, entity in zip(rows, entities, strict=True):
        assert row["run_id"] == run_id
        assert row == {"run_id": run_id, **{k: "" if v is None else str(v) for k, v in entity.items()}}


@pytest.fixture
def analysed(tmp_path: Path) -> tuple[Path, Lifecycle]:
    """A small JSONL run with a refused transition and a decision: (directory, its writer)."""
    directory = tmp_path / "runs"
    lc = Lifecycle(bus.open(f"jsonl://{directory}", "tables"))
    lc.start()
    lc.register("x", "expert", state="active", layer=0, slot=0, step=1)
    lc.register("s", "kasmina", layer=1, step=1)
    lc.transition("s", "GERMINATED", step=2)
    lc.transition("x", "dormant", step=3)
    lc.transition("s", "TRAINING", step=3)
    with pytest.raises(InvalidTransitionError):
        lc.transition("s", "GRAFTING", step=4, metrics={"reconstruction_loss": 0.5})
    decision = DecisionMade(
        run_id="tables", step=5, action=Action.PRUNE, entity="x", layer=0, reason="idle", apply_at_step=6
    )
    lc.append([decision])
    lc.seal(5)
    return directory, lc


def _expected_rows(name: str, lc: Lifecycle) -> list[dict[str, Any]]:
    result = replay(lc.log, tensors=False)
    return {
        "time-in-state": lambda: time_in_state(result),
        "gate-pass-rates": lambda: gate_pass_rates(result),
        "populations": lambda: population_over_steps(lc.log),
        "decisions": lambda: decisions(lc.log),
    }[name]()


@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_as_json_is_the_analysis_rows_with_run_id(
    capsys: pytest.CaptureFixture[str], analysed: tuple[Path, Lifecycle], name: str
) -> None:
    """`tables --format json` is an array of the analysis API's rows, each with run_id first."""
    directory, lc = analysed
    status, out, err = cli(
        capsys, "tables", str(directory), "--run", "tables", "--table", name, "--format", "json"
    )
    assert (status, err) == (0, "")
    rows = json.loads(out)
    expected = _expected_rows(name, lc)
    assert rows and len(rows) == len(expected)
    columns, _ = TABLES[name]
    for row, want in zip(rows, expected, strict=True):
        assert list(row) == ["run_id", *columns]
        assert row == {"run_id": "tables", **{c: want[c] for c in columns}}


@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_as_csv_and_as_text_has_a_row_per_analysis_row(
    capsys: pytest.CaptureFixture[str], analysed: tuple[Path, Lifecycle], name: str
) -> None:
    """CSV has a header with run_id first and a row per analysis row; the text table has a title,
    a header and the same rows."""
    directory, lc = analysed
    expected = _expected_rows(name, lc)
    columns, _ = TABLES[name]
    _, out, _ = cli(capsys, "tables", str(directory), "--run", "tables", "--table", name, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0].split(",") == ["run_id", *columns]
    assert len(rows) == len(expected) and {r["run_id"] for r in rows} == {"tables"}
    status, text, err = cli(capsys, "tables", str(directory), "--run", "tables", "--table", name)
    assert (status, err) == (0, "")
    lines = text.splitlines()
    assert lines[0] == f"{name} of run tables: {len(expected)} rows" and lines[1] == ""
    assert lines[2].split() == list(columns) and len(lines) == 3 + len(expected)


def test_csv_cells_hold_lists_as_json_and_none_as_empty(
    capsys: pytest.CaptureFixture[str], analysed: tuple[Path, Lifecycle]
) -> None:
    """A decision's children list is a JSON cell, its missing parent an empty one."""
    directory, _ = analysed
    _, out, _ = cli(
        capsys, "tables", str(directory), "--run", "tables", "--table", "decisions", "--format", "csv"
    )
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["children"], row["parent"], row["apply_at_step"], row["action"]) == ("[]", "", "6", "PRUNE")


def test_an_unknown_table_or_run_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], analysed: tuple[Path, Lifecycle]
) -> None:
    """A table name the command lacks, or a run with no log, is one line on stderr and exit 2."""
    directory, _ = analysed
    for argv in (["--run", "tables", "--table", "nope"], ["--run", "absent", "--table", "decisions"]):
        status, out, err = cli(capsys, "tables", str(directory), *argv)
        assert (status, out) == (2, "")
        one_line(err)


def test_the_codec_names_every_built_in_kind() -> None:
    """CODEC.kinds, which tail's --kind is checked against, holds each built-in event kind."""
    assert {"DecisionMade", "StepSealed", "RunStarted", "TransitionApplied"} <= CODEC.kinds
    assert "DecisonMade" not in CODEC.kinds


# -- tail: warnings, --last, stopping by itself, waiting for a run --------------------------------------


def _tail_json(
    capsys: pytest.CaptureFixture[str], where: tuple[Path, str], *argv: str
) -> list[dict[str, Any]]:
    """The records `tail --format json` prints, after checking it exits 0 with nothing on stderr."""
    directory, run_id = where
    status, out, err = cli(capsys, "tail", str(directory), "--run", run_id, "--format", "json", *argv)
    assert (status, err) == (0, "")
    return [json.loads(line) for line in out.splitlines()]


def _records(where: tuple[Path, str]) -> list[dict[str, Any]]:
    directory, run_id = where
    with bus.open(f"jsonl://{directory}", run_id, create=False) as log:
        return [json.loads(json.dumps(r)) for r in log.read()]


def test_an_unknown_kind_is_a_warning_naming_the_known_kinds_and_the_tail_runs(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """A typo in --kind (DecisonMade) is one warning line listing the known kinds; the other kinds
    listed are still shown and the exit status is 0."""
    directory, run_id = scripted
    argv = ["tail", str(directory), "--run", run_id, "--format", "json", "--kind", "DecisonMade,StepSealed"]
    status, out, err = cli(capsys, *argv)
    assert status == 0
    line = one_line(err)
    assert line.startswith("lifecycle-es tail: warning: unknown event kind 'DecisonMade'")
    assert all(kind in line for kind in CODEC.kinds)
    seals = [r for r in _records(scripted) if r["kind"] == "StepSealed"]
    assert [json.loads(x) for x in out.splitlines()] == seals


def test_an_entity_glob_that_matches_nothing_yet_is_a_warning(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """--entity with a glob no record's entity matches so far warns once; a matching glob is silent."""
    directory, run_id = scripted
    status, out, err = cli(capsys, "tail", str(directory), "--run", run_id, "--entity", "sead-*")
    assert (status, out) == (0, "")
    assert "warning: no entity matches 'sead-*'" in one_line(err)
    assert _tail_json(capsys, scripted, "--entity", "seed-*")  # matches: no warning


@pytest.mark.parametrize("n", [0, 1, 5, 10_000])
def test_last_n_starts_n_records_before_the_end(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str], n: int
) -> None:
    """--last N (and --from last:N) shows the log's last N records, before filters (kcat's -o -N)."""
    records = _records(scripted)
    expected = records[len(records) - n :] if n else []
    assert _tail_json(capsys, scripted, "--last", str(n)) == expected
    assert _tail_json(capsys, scripted, "--from", f"last:{n}") == expected
    seals = [r for r in expected if r["kind"] == "StepSealed"]
    assert _tail_json(capsys, scripted, "--last", str(n), "--kind", "StepSealed") == seals


def test_last_and_from_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """--last and --from both name the start: giving both is one line and exit 2."""
    directory, run_id = scripted
    status, _, err = cli(capsys, "tail", str(directory), "--run", run_id, "--last", "3", "--from", "end")
    assert status == 2 and "not allowed with" in one_line(err)


def test_until_kind_stops_after_the_first_record_of_that_kind_shown_or_not(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str]
) -> None:
    """--until-kind StepSealed ends the tail after the first seal, whether the filters show it or not."""
    records = _records(scripted)
    first_seal = next(i for i, r in enumerate(records) if r["kind"] == "StepSealed")
    assert _tail_json(capsys, scripted, "--until-kind", "StepSealed") == records[: first_seal + 1]
    applied = [r for r in records[:first_seal] if r["kind"] == "TransitionApplied"]
    shown = _tail_json(capsys, scripted, "--kind", "TransitionApplied", "--until-kind", "StepSealed")
    assert shown == applied


@pytest.mark.parametrize("step", [0, 50, 60, 175])
def test_until_step_stops_once_that_step_is_over(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str], step: int
) -> None:
    """--until-step N shows the records of steps up to N: it ends at a seal of step N or later, or
    before the first record of a later step."""
    records = _records(scripted)
    assert _tail_json(capsys, scripted, "--until-step", str(step)) == [
        r for r in records if r["step"] <= step
    ]


def test_a_tail_stops_at_the_runs_recorded_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run moved to its terminal state ends every tail there, a following one too, even if a
    stray record comes later."""
    directory = tmp_path / "runs"
    with bus.open(f"jsonl://{directory}", "ended") as log:
        lc = Lifecycle(log)
        lc.start()
        lc.seal(1)
        lc.set_run_state("terminated", reason="done", step=2)
        log.append([{"kind": "StepSealed", "step": 3, "run_id": "ended"}])  # a stray writer, after the end
    records = _records((directory, "ended"))
    shown = _tail_json(capsys, (directory, "ended"))
    assert shown == records[:-1] and shown[-1]["to_state"] == "terminated"
    follow = _run_tail(directory, "ended", "--follow", "--format", "json")
    assert (follow.returncode, follow.stderr) == (0, "")
    assert [json.loads(x) for x in follow.stdout.splitlines()] == records[:-1]


def _run_tail(directory: Path, run_id: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m replay.cli tail DIR --run RUN ARGV` to its end; fail (not hang) after GUARD_S."""
    return subprocess.run(
        [sys.executable, "-m", "replay.cli", "tail", str(directory), "--run", run_id, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )


STARTER = (
    "import sys, bus; from lifecycle_es import Lifecycle;"
    "lc = Lifecycle(bus.open(sys.argv[1], sys.argv[2])); lc.start(); lc.seal(1); lc.close()"
)
"""Starts run argv[2] at URL argv[1]: RunStarted, RunStateChanged, StepSealed."""


@pytest.mark.slow
def test_follow_waits_for_a_run_that_does_not_exist_yet(tmp_path: Path) -> None:
    """tail --follow on a run with no log says it waits, then prints the run once it starts (here
    up to its first seal, where --until-kind ends it)."""
    directory = tmp_path / "runs"
    directory.mkdir()
    argv = [
        "tail",
        str(directory),
        "--run",
        "later",
        "--follow",
        "--until-kind",
        "StepSealed",
        "--format",
        "json",
    ]
    tail = subprocess.Popen(
        [sys.executable, "-m", "replay.cli", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        waiting = _first_line(tail.stderr)  # the run is started only once the tail waits for it
        assert "has no log" in waiting and "waiting for it" in waiting
        writer = subprocess.run(
            [sys.executable, "-c", STARTER, f"jsonl://{directory}", "later"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=GUARD_S,
            check=False,
        )
        assert writer.returncode == 0, writer.stderr
        out, err = tail.communicate(timeout=GUARD_S)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert (tail.returncode, err) == (0, "")
    assert [json.loads(x)["kind"] for x in out.splitlines()] == [
        "RunStarted",
        "RunStateChanged",
        "StepSealed",
    ]


def _first_line(stream: IO[str]) -> str:
    """The first line of a child's stream; fail (not hang) if none comes within GUARD_S."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=GUARD_S)
    except queue.Empty:
        pytest.fail(f"no line within {GUARD_S:g} s")


@pytest.mark.parametrize("follow", [True, False])
def test_wait_timeout_bounds_the_wait_then_the_missing_run_is_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, follow: bool
) -> None:
    """--wait-timeout S waits S seconds for the run, with or without --follow, then exits 2 saying
    the run has no log; without it and without --follow the error comes at once (as before)."""
    directory = tmp_path / "runs"
    directory.mkdir()
    argv = ["tail", str(directory), "--run", "never", "--wait-timeout", "0.3"]
    status, out, err = cli(capsys, *argv, *(["--follow"] if follow else []))
    assert (status, out) == (2, "")
    waiting, error = err.splitlines()
    assert "waiting for it" in waiting and error.startswith("lifecycle-es tail: run 'never' has no log")
    status, _, err = cli(capsys, "tail", str(directory), "--run", "never")
    assert status == 2 and "waiting" not in one_line(err)


@pytest.mark.parametrize(
    "argv", [["--last", "-1"], ["--until-step", "-2"], ["--wait-timeout", "-1"], ["--wait-timeout", "inf"]]
)
def test_negative_last_until_step_or_wait_timeout_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], scripted: tuple[Path, str], argv: list[str]
) -> None:
    """Counts and timeouts must be >= 0 (and a timeout finite): one line, exit 2."""
    directory, run_id = scripted
    status, out, err = cli(capsys, "tail", str(directory), "--run", run_id, *argv)
    assert (status, out) == (2, "")
    one_line(err)


# -- a reader that goes away ---------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 3000], ids=["output-in-one-buffer", "output-past-the-pipe"])
def test_a_reader_that_stops_after_one_line_ends_the_command_quietly(tmp_path: Path, extra: int) -> None:
    """`... | head -1`: exit 0 and nothing on stderr, whether the output still sat in stdout's
    buffer when the reader left (the interpreter's last flush) or had filled the pipe before."""
    directory, run_id = tmp_path / "runs", "piped"
    with bus.open(f"jsonl://{directory}", run_id) as log:
        lc = Lifecycle(log)
        play(lc)
        for i in range(extra):
            lc.observe({"loss": float(i)})
    for command in (["tail", str(directory), "--run", run_id], ["replay", str(directory), "--run", run_id]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "replay.cli", *command],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()  # head -1
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert (proc.wait(timeout=GUARD_S), stderr) == (0, b""), command
