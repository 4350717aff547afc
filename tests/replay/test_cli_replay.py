"""`lifecycle-es replay`: the registry as of a seq, a step or a wall time, as a table or the
documented JSON, on JSONL and real Redis logs; bad input is one line on stderr and exit 2,
a log that cannot be read is exit 1, and --lenient skips unreadable JSONL lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _runs import GUARD_S, REPO, Point, play

import bus
from bus.testing import RedisServer
from lifecycle_es import Lifecycle
from tests._cli import one_line
from tests._cli import run_cli as cli

Written = tuple[str, str, list[Point]]
ENTITY_KEYS = ["entity", "spec", "state", "layer", "slot", "parent", "entered_step"]


@pytest.fixture
def written(log_url: str, run_id: str) -> Written:
    """The scripted run written to a JSONL directory or Redis: (url, run id, recorded points)."""
    with bus.open(log_url, run_id) as log:
        points = play(Lifecycle(log))
    return log_url, run_id, points


def documented(point: Point, run_id: str) -> dict[str, Any]:
    """The JSON document the issue specifies for the registry recorded at `point`."""
    entities = [
        {
            "entity": e.entity,
            "spec": e.spec,
            "state": e.state,
            "layer": e.layer,
            "slot": e.slot,
            "parent": e.parent,
            "entered_step": e.entered_step,
        }
        for e in sorted(point.registry, key=lambda e: e.entity)
    ]
    return {"run_id": run_id, "seq": point.seq, "step": point.step, "entities": entities}


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def until_args(how: str, point: Point) -> list[str]:
    """The --until option that names `point` by seq, step or wall time."""
    value = {"seq": str(point.seq), "step": str(point.step), "time": iso(point.time)}[how]
    return [f"--until-{how}", value]


# -- the two forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["seq", "step", "time"])
def test_json_at_each_recorded_point_is_the_documented_registry_of_that_point(
    capsys: pytest.CaptureFixture[str], written: Written, how: str
) -> None:
    """--until-seq, --until-step and --until-time print exactly the live registry of that point as JSON."""
    url, run_id, points = written
    for point in points:
        status, out, err = cli(
            capsys, "replay", url, "--run", run_id, *until_args(how, point), "--format", "json"
        )
        assert status == 0
        # The moment recorded after the last step lies past the last record, and so is reported.
        assert ("replayed to the end" in err) == (how == "time" and point is points[-1])
        doc = json.loads(out)
        assert doc == documented(point, run_id)
        assert list(doc) == ["run_id", "seq", "step", "entities"]
        assert all(list(e) == ENTITY_KEYS for e in doc["entities"])
        assert out.count("\n") == 1


def test_without_until_the_whole_run_is_replayed_silently(
    capsys: pytest.CaptureFixture[str], written: Written
) -> None:
    """With no --until the registry at the log's end is printed and stderr stays empty."""
    url, run_id, points = written
    status, out, err = cli(capsys, "replay", url, "--run", run_id, "--format", "json")
    assert (status, err) == (0, "")
    assert json.loads(out) == documented(points[-1], run_id)


def test_the_table_lists_every_entity_sorted_under_a_header(
    capsys: pytest.CaptureFixture[str], written: Written
) -> None:
    """The default table names the point, then one row per entity in entity order."""
    url, run_id, points = written
    point = points[3]
    status, out, err = cli(capsys, "replay", url, "--run", run_id, "--until-step", str(point.step))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        f"run {run_id} as of seq {point.seq}, step {point.step}: {len(point.registry)} entities"
    )
    assert lines[1] == ""
    assert lines[2].split() == ENTITY_KEYS
    expected = sorted(point.registry, key=lambda e: e.entity)
    assert [line.split()[:3] for line in lines[3:]] == [[e.entity, e.spec, e.state] for e in expected]
    assert "\x1b" not in out


# -- bad input -------------------------------------------------------------------------------------


def test_an_unknown_run_is_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], written: Written, tmp_path: Path
) -> None:
    """A run with no log at the URL is bad input: exit 2, one line naming it, no output, nothing created."""
    url, _, _ = written
    status, out, err = cli(capsys, "replay", url, "--run", "no-such-run")
    assert (status, out) == (2, "")
    assert "no-such-run" in one_line(err)
    assert not (tmp_path / "runs" / "no-such-run.jsonl").exists()


@pytest.mark.parametrize("how", ["seq", "step", "time"])
def test_an_until_past_the_end_replays_to_the_end_and_says_so(
    capsys: pytest.CaptureFixture[str], written: Written, how: str
) -> None:
    """A point after the last record replays the whole log, exit 0, with one line on stderr saying so."""
    url, run_id, points = written
    beyond = {"seq": str(10**6), "step": str(10**6), "time": "2100-01-01T00:00:00+00:00"}[how]
    status, out, err = cli(
        capsys, "replay", url, "--run", run_id, f"--until-{how}", beyond, "--format", "json"
    )
    assert status == 0
    assert json.loads(out) == documented(points[-1], run_id)
    line = one_line(err)
    assert "replayed to the end" in line and f"seq {points[-1].seq}" in line


@pytest.mark.parametrize("how", ["seq", "step"])
def test_an_until_exactly_at_the_last_record_is_not_past_the_end(
    capsys: pytest.CaptureFixture[str], written: Written, how: str
) -> None:
    """Naming the last seq or step replays everything without claiming the log ended early."""
    url, run_id, points = written
    status, out, err = cli(
        capsys, "replay", url, "--run", run_id, *until_args(how, points[-1]), "--format", "json"
    )
    assert (status, err) == (0, "")
    assert json.loads(out) == documented(points[-1], run_id)


@pytest.mark.parametrize(
    "argv",
    [
        ["--until-seq", "3", "--until-step", "2"],
        ["--until-seq", "-1"],
        ["--until-step", "x"],
        ["--until-time", "last tuesday"],
        ["--format", "yaml"],
    ],
    ids=["two-bounds", "negative-seq", "step-not-int", "time-not-iso", "bad-format"],
)
def test_malformed_options_are_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], written: Written, argv: list[str]
) -> None:
    """Conflicting or malformed options are usage errors: exit 2, one line, nothing printed."""
    url, run_id, _ = written
    status, out, err = cli(capsys, "replay", url, "--run", run_id, *argv)
    assert (status, out) == (2, "")
    one_line(err)


@pytest.mark.parametrize("url", ["ftp://example/runs", "runs-without-scheme"])
def test_a_url_that_is_no_log_url_is_exit_2(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """An unknown scheme is bad input: exit 2 and one line."""
    status, out, err = cli(capsys, "replay", url, "--run", "r1")
    assert (status, out) == (2, "")
    one_line(err)


def test_an_unusable_log_option_is_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], jsonl_run: tuple[str, Path, list[Point]], run_id: str
) -> None:
    """A log URL option the backend refuses (an unknown fsync policy) is bad input: exit 2, one line."""
    url, _, _ = jsonl_run
    status, out, err = cli(capsys, "replay", f"{url}?fsync=sometimes", "--run", run_id)
    assert (status, out) == (2, "")
    assert "fsync" in one_line(err)


# -- corrupt JSONL ------------------------------------------------------------------------------------


@pytest.fixture
def jsonl_run(tmp_path: Path, run_id: str) -> tuple[str, Path, list[Point]]:
    """The scripted run in a JSONL file: (url, path of the file, recorded points)."""
    url = f"jsonl://{tmp_path / 'runs'}"
    with bus.open(url, run_id) as log:
        points = play(Lifecycle(log))
    return url, tmp_path / "runs" / f"{run_id}.jsonl", points


def test_a_corrupt_line_in_the_middle_is_exit_1_naming_the_line(
    capsys: pytest.CaptureFixture[str], jsonl_run: tuple[str, Path, list[Point]], run_id: str
) -> None:
    """A garbage line between records stops the replay: exit 1, one line naming the file and line."""
    url, path, _ = jsonl_run
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:20], "{not json at all\n", *lines[20:]]))
    status, out, err = cli(capsys, "replay", url, "--run", run_id)
    assert (status, out) == (1, "")
    line = one_line(err)
    assert str(path) in line and "line 21" in line


def test_lenient_skips_a_corrupt_line_and_reports_the_count(
    capsys: pytest.CaptureFixture[str], jsonl_run: tuple[str, Path, list[Point]], run_id: str
) -> None:
    """--lenient skips unreadable lines, replays everything else, and says how many it skipped."""
    url, path, points = jsonl_run
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:20], "{not json at all\n", *lines[20:40], "\x00\x01\n", *lines[40:]]))
    status, out, err = cli(capsys, "replay", url, "--run", run_id, "--lenient", "--format", "json")
    assert status == 0
    assert json.loads(out) == documented(points[-1], run_id)
    assert "skipped 2 unreadable lines" in one_line(err)


def test_lenient_cannot_bridge_a_record_lost_to_corruption(
    capsys: pytest.CaptureFixture[str], jsonl_run: tuple[str, Path, list[Point]], run_id: str
) -> None:
    """A garbled line that held a record leaves a gap in the seqs: exit 1 and one line, even if lenient."""
    url, path, _ = jsonl_run
    lines = path.read_text().splitlines(keepends=True)
    lines[20] = "{garbled" + lines[20][9:]  # seq 21 becomes unreadable
    path.write_text("".join(lines))
    status, out, err = cli(capsys, "replay", url, "--run", run_id, "--lenient")
    assert (status, out) == (1, "")
    assert "seq 22" in one_line(err)


@pytest.mark.redis_server
def test_lenient_on_a_redis_log_is_refused_as_bad_input(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer, run_id: str
) -> None:
    """--lenient means skipping JSONL lines; on Redis it is exit 2 with one line, not a traceback."""
    with bus.open(redis_server.url, run_id) as log:
        play(Lifecycle(log))
    status, out, err = cli(capsys, "replay", redis_server.url, "--run", run_id, "--lenient")
    assert (status, out) == (2, "")
    assert "--lenient" in one_line(err)


# -- as a process ------------------------------------------------------------------------------------


def start_cli(*argv: str) -> subprocess.Popen[str]:
    """Start `python -m replay.cli ARGV` from the repository root, its output piped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "replay.cli", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for a command-line process (killed after GUARD_S); return its status, stdout and stderr."""
    try:
        out, err = process.communicate(timeout=GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the command did not exit within {GUARD_S:g} s")
    return process.returncode, out, err


@pytest.mark.slow
def test_the_command_line_process_prints_json_and_fails_without_a_traceback(
    jsonl_run: tuple[str, Path, list[Point]], run_id: str
) -> None:
    """As a process: exit 0 with the JSON on stdout; an unknown run is exit 2, one line, no traceback."""
    url, _, points = jsonl_run
    good = start_cli("replay", url, "--run", run_id, "--until-seq", str(points[1].seq), "--format", "json")
    missing = start_cli("replay", url, "--run", "not-a-run")

    status, out, err = finish(good)
    assert (status, err) == (0, "")
    assert json.loads(out) == documented(points[1], run_id)

    status, out, err = finish(missing)
    assert (status, out) == (2, "")
    assert one_line(err).startswith("lifecycle-es replay: ")
