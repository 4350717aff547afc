"""`lifecycle-es tail`: every start point, filter and format on JSONL and real Redis logs, the
library pieces on a memory log, and --follow in a real process while another process writes,
ended by Ctrl-C with status 0."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from _runs import GUARD_S, HERE, REPO, Point, append_late, late_records, play

import bus
from bus import MemoryLog
from lifecycle_es import ConfigError, Lifecycle
from replay._tail import Filter, Printer, records_from, start_after, take
from replay.cli import main

Records = list[dict[str, Any]]
Tailed = tuple[str, str, Records, list[Point]]


def plain(records: Records) -> Records:
    """Records as a JSON reader sees them."""
    return [json.loads(json.dumps(r)) for r in records]


def write_run(log: bus.Log) -> list[Point]:
    """The scripted run by rank 0, then a few records by a second writer on rank 1."""
    points = play(Lifecycle(log))
    other = Lifecycle(log, rank=1)  # folds the log first, then appends after it
    other.advance(other.registry.step + 5)
    other.observe({"routed_tokens": 42.0}, layer=2)
    other.observe({"loss": 0.1}, entity="seed-3")
    other.seal()
    return points


@pytest.fixture
def tailed(log_url: str, run_id: str) -> Tailed:
    """A run written to JSONL or Redis: (url, run id, its records as JSON, recorded points)."""
    with bus.open(log_url, run_id) as log:
        points = write_run(log)
        records = plain(log.read())
    return log_url, run_id, records, points


def tail(capsys: pytest.CaptureFixture[str], url: str, run_id: str, *argv: str) -> tuple[int, list[str], str]:
    """Run `lifecycle-es tail URL --run RUN ARGV` in this process: exit status, stdout lines, stderr."""
    try:
        status = main(["tail", url, "--run", run_id, *argv])
    except SystemExit as e:  # argparse usage errors
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def tail_json(capsys: pytest.CaptureFixture[str], url: str, run_id: str, *argv: str) -> Records:
    """The records `tail --format json` prints, after checking it exits 0 with compact lines."""
    status, lines, err = tail(capsys, url, run_id, "--format", "json", *argv)
    assert (status, err) == (0, "")
    records = [json.loads(line) for line in lines]
    assert lines == [json.dumps(r, separators=(",", ":")) for r in records]  # compact, one per line
    return records


def one_line(err: str) -> str:
    """Assert stderr is exactly one line (no traceback) and return it."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


# -- where a tail starts ------------------------------------------------------------------------------


def test_from_beginning_prints_every_record_as_compact_json(
    capsys: pytest.CaptureFixture[str], tailed: Tailed
) -> None:
    """The default start is the beginning; json prints each record whole, one compact object per line."""
    url, run_id, records, _ = tailed
    assert tail_json(capsys, url, run_id) == records
    assert tail_json(capsys, url, run_id, "--from", "beginning") == records


@pytest.mark.parametrize("n", [0, 1, 10, 33])
def test_from_seq_n_starts_at_that_seq(capsys: pytest.CaptureFixture[str], tailed: Tailed, n: int) -> None:
    """--from seq:N shows seq N first (seq:0 is the beginning)."""
    url, run_id, records, _ = tailed
    assert tail_json(capsys, url, run_id, "--from", f"seq:{n}") == records[max(n - 1, 0) :]


@pytest.mark.parametrize("step", [0, 100, 101, 275])
def test_from_step_n_starts_at_the_first_record_of_that_step_or_later(
    capsys: pytest.CaptureFixture[str], tailed: Tailed, step: int
) -> None:
    """--from step:N starts at the first record whose step is at least N."""
    url, run_id, records, _ = tailed
    first = next(i for i, r in enumerate(records) if r["step"] >= step)
    shown = tail_json(capsys, url, run_id, "--from", f"step:{step}")
    assert shown == records[first:]
    assert shown[0]["step"] >= step and (first == 0 or records[first - 1]["step"] < step)


def test_from_time_starts_at_the_first_record_stamped_at_or_after_it(
    capsys: pytest.CaptureFixture[str], tailed: Tailed
) -> None:
    """--from time:ISO starts at the first record stamped at or after it (with an offset, or naive UTC)."""
    url, run_id, records, points = tailed
    point = points[3]
    after_point = records[point.seq :]
    assert tail_json(capsys, url, run_id, "--from", f"time:{iso(point.time)}") == after_point
    naive = datetime.fromtimestamp(point.time, UTC).replace(tzinfo=None).isoformat()
    assert tail_json(capsys, url, run_id, "--from", f"time:{naive}") == after_point


def test_from_end_without_follow_prints_nothing(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """--from end shows only what arrives later, so without --follow it exits 0 at once, silent."""
    url, run_id, _, _ = tailed
    assert tail(capsys, url, run_id, "--from", "end") == (0, [], "")


# -- filters and count ---------------------------------------------------------------------------------


def test_kind_shows_only_the_listed_kinds(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """--kind K1,K2 keeps records of those kinds, in log order (spaces around names are ignored)."""
    url, run_id, records, _ = tailed
    kinds = {"TransitionApplied", "StepSealed"}
    expected = [r for r in records if r["kind"] in kinds]
    assert tail_json(capsys, url, run_id, "--kind", "TransitionApplied, StepSealed") == expected
    assert {r["kind"] for r in expected} == kinds


@pytest.mark.parametrize("glob", ["seed-*", "seed-[01]", "expert-?", "module-0"])
def test_entity_shows_records_whose_entity_matches_the_glob(
    capsys: pytest.CaptureFixture[str], tailed: Tailed, glob: str
) -> None:
    """--entity GLOB keeps records about a matching entity; run-level records have none and are left out."""
    url, run_id, records, _ = tailed
    expected = [r for r in records if r["entity"] is not None and fnmatch.fnmatchcase(r["entity"], glob)]
    assert expected
    assert tail_json(capsys, url, run_id, "--entity", glob) == expected


def test_layer_shows_the_records_that_carry_that_layer(
    capsys: pytest.CaptureFixture[str], tailed: Tailed
) -> None:
    """--layer N keeps the records whose layer field is N (registrations, layer metrics, decisions)."""
    url, run_id, records, _ = tailed
    expected = [r for r in records if r.get("layer") == 2]
    assert {r["kind"] for r in expected} == {"EntityRegistered", "MetricsObserved"}
    assert tail_json(capsys, url, run_id, "--layer", "2") == expected


def test_rank_shows_the_records_one_rank_wrote(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """--rank N keeps the records written by rank N; the ranks' records partition the log."""
    url, run_id, records, _ = tailed
    ones = tail_json(capsys, url, run_id, "--rank", "1")
    zeros = tail_json(capsys, url, run_id, "--rank", "0")
    assert [r["kind"] for r in ones] == ["MetricsObserved", "MetricsObserved", "StepSealed"]
    assert {r["rank"] for r in ones} == {1} and {r["rank"] for r in zeros} == {0}
    assert sorted(r["seq"] for r in ones + zeros) == [r["seq"] for r in records]


def test_count_stops_after_n_shown_records(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """--count N prints the first N records the filters admit, then exits 0."""
    url, run_id, records, _ = tailed
    assert tail_json(capsys, url, run_id, "--count", "5") == records[:5]
    applied = [r for r in records if r["kind"] == "TransitionApplied"]
    assert tail_json(capsys, url, run_id, "--kind", "TransitionApplied", "--count", "3") == applied[:3]
    assert tail_json(capsys, url, run_id, "--count", "0") == []


def test_start_filters_and_count_combine(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """--from, --kind, --entity and --count apply together."""
    url, run_id, records, _ = tailed
    expected = [
        r
        for r in records
        if r["step"] >= 100 and r["kind"] == "TransitionApplied" and r["entity"].startswith("seed-")
    ][:2]
    shown = tail_json(
        capsys,
        url,
        run_id,
        "--from",
        "step:100",
        "--kind",
        "TransitionApplied",
        "--entity",
        "seed-*",
        "--count",
        "2",
    )
    assert shown == expected and len(expected) == 2


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--kind", "NoSuchKind"], "unknown event kind 'NoSuchKind'"),
        (["--entity", "nobody-*"], "no entity matches 'nobody-*'"),
        (["--layer", "99"], None),
        (["--rank", "7"], None),
        (["--from", "step:1000000"], None),
        (["--from", "seq:1000000"], None),
        (["--from", "time:2100-01-01T00:00:00Z"], None),
        (["--kind", "StepSealed", "--entity", "seed-0"], None),
    ],
    ids=["kind", "entity", "layer", "rank", "step", "seq", "time", "kind-and-entity"],
)
@pytest.mark.parametrize("fmt", ["json", "pretty"])
def test_filters_that_match_nothing_exit_0_with_no_output(
    capsys: pytest.CaptureFixture[str], tailed: Tailed, argv: list[str], warning: str | None, fmt: str
) -> None:
    """A tail whose filters or start admit no record prints nothing and exits 0; an unknown kind or
    an entity glob that matches nothing so far is also one warning line on stderr."""
    url, run_id, _, _ = tailed
    status, lines, err = tail(capsys, url, run_id, "--format", fmt, *argv)
    assert (status, lines) == (0, [])
    if warning is None:
        assert err == ""
    else:
        assert one_line(err).startswith("lifecycle-es tail: warning: ") and warning in err


def test_pretty_has_no_escape_codes_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], tailed: Tailed
) -> None:
    """Pretty is one line per record with seq, step, kind and entity, and no colour off a terminal."""
    url, run_id, records, _ = tailed
    status, lines, err = tail(capsys, url, run_id)
    assert (status, err) == (0, "")
    assert len(lines) == len(records)
    assert not any("\x1b" in line for line in lines)
    for line, record in zip(lines, records, strict=True):
        seq, word, step, kind, *_ = line.split()
        assert (int(seq), word, int(step), kind) == (record["seq"], "step", record["step"], record["kind"])
        assert record["entity"] is None or record["entity"] in line


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    [
        "middle",
        "seq:",
        "seq:x",
        "seq:-1",
        "step:two",
        "time:yesterday",
        "line:3",
    ],
)
def test_a_malformed_from_is_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tailed: Tailed, start: str
) -> None:
    """--from must be beginning, end, seq:N, step:N or time:ISO; anything else is exit 2 with one line."""
    url, run_id, _, _ = tailed
    status, lines, err = tail(capsys, url, run_id, "--from", start)
    assert (status, lines) == (2, [])
    assert one_line(err).startswith("lifecycle-es tail: ")


def test_an_unknown_run_is_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], tailed: Tailed) -> None:
    """A run with no log at the URL is exit 2 with one line naming it."""
    url, _, _, _ = tailed
    status, lines, err = tail(capsys, url, "no-such-run")
    assert (status, lines) == (2, [])
    assert "no-such-run" in one_line(err)


@pytest.mark.parametrize("argv", [["--count", "-1"], ["--layer", "x"], ["--format", "xml"]])
def test_malformed_options_are_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tailed: Tailed, argv: list[str]
) -> None:
    """A negative count, a non-integer layer or an unknown format is exit 2 with one line."""
    url, run_id, _, _ = tailed
    status, lines, err = tail(capsys, url, run_id, *argv)
    assert (status, lines) == (2, [])
    one_line(err)


# -- the library on a memory log --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memory_run() -> tuple[MemoryLog, list[Point]]:
    """The scripted run on a memory log, with its recorded points."""
    log = MemoryLog("tail-lib")
    return log, write_run(log)


def test_start_after_names_the_seq_before_the_first_record_shown(
    memory_run: tuple[MemoryLog, list[Point]],
) -> None:
    """start_after returns the seq after which each kind of start begins."""
    log, points = memory_run
    records = log.read()
    assert start_after(log, "beginning") == 0
    assert start_after(log, "end") == log.last_seq()
    assert start_after(log, "seq:7") == 6
    assert start_after(log, "seq:0") == 0
    first_150 = next(r["seq"] for r in records if r["step"] >= 150)
    assert start_after(log, "step:150") == start_after(log, "step:101") == first_150 - 1
    assert start_after(log, f"time:{iso(points[2].time)}") == points[2].seq
    assert start_after(log, "step:99999") == start_after(log, "time:2100-01-01T00:00:00") == log.last_seq()
    with pytest.raises(ConfigError, match="--from"):
        start_after(log, "sometime")


def test_filter_admits_what_every_set_criterion_admits() -> None:
    """An unset criterion admits everything; set ones must all hold."""
    record = {"seq": 3, "kind": "EntityRegistered", "entity": "seed-1", "layer": 0, "rank": 2}
    assert Filter().admits(record)
    assert Filter(kinds=frozenset({"EntityRegistered"}), entity="seed-*", layer=0, rank=2).admits(record)
    assert not Filter(kinds=frozenset({"StepSealed"})).admits(record)
    assert not Filter(entity="expert-*").admits(record)
    assert not Filter(layer=1).admits(record)
    assert not Filter(rank=0).admits(record)
    assert not Filter(entity="*").admits({"seq": 4, "kind": "StepSealed", "entity": None})
    assert not Filter(layer=0).admits({"seq": 5, "kind": "StepSealed"})


def test_records_from_reads_to_the_end_or_follows_live_appends() -> None:
    """Without follow the records stop at the end; with follow a record appended later is yielded next."""
    log = MemoryLog("follow-lib")
    log.append([{"kind": "StepSealed", "n": n} for n in range(5)])
    assert [r["seq"] for r in records_from(log, 2, follow=False)] == [3, 4, 5]
    live = records_from(log.attach(), 3, follow=True)
    assert [next(live)["seq"], next(live)["seq"]] == [4, 5]
    log.append([{"kind": "StepSealed", "n": 5}])  # appended after the follower reached the end
    assert next(live) == {"seq": 6, "kind": "StepSealed", "n": 5}


def test_take_never_asks_for_a_record_past_the_count() -> None:
    """take returns after the Nth admitted record, so a follow with --count never waits for one more."""

    def then_nothing() -> Iterator[dict[str, Any]]:
        yield from ({"seq": n, "kind": "StepSealed" if n % 2 else "GateChecked"} for n in range(1, 6))
        raise AssertionError("take asked for a record past the count")

    assert [r["seq"] for r in take(then_nothing(), Filter(kinds=frozenset({"StepSealed"})), 3)] == [1, 3, 5]
    assert list(take(then_nothing(), Filter(), 0)) == []


def test_printer_colours_kinds_only_when_asked_and_writes_compact_json(
    memory_run: tuple[MemoryLog, list[Point]],
) -> None:
    """colour=True wraps the kind in ANSI escapes, colour=False writes none, json is compact and whole."""
    log, _ = memory_run
    record = log.read(after=13, limit=1)[0]
    for colour, fmt in ((True, "pretty"), (False, "pretty"), (False, "json"), (True, "json")):
        out = io.StringIO()
        Printer(out, fmt=fmt, colour=colour).write(record)
        text = out.getvalue()
        assert text.endswith("\n") and text.count("\n") == 1
        assert ("\x1b[" in text) == (colour and fmt == "pretty")
        if fmt == "json":
            assert json.loads(text) == record and text == json.dumps(record, separators=(",", ":")) + "\n"
        else:
            assert record["kind"] in text and str(record["seq"]) in text
    with pytest.raises(ConfigError, match="format"):
        Printer(io.StringIO(), fmt="yaml", colour=False)


# -- following in a real process ----------------------------------------------------------------------------

LATE = 3
"""Experts the writer process registers while the tails follow."""
WRITER = f"import sys, _runs; _runs.{append_late.__name__}(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
"""The writer process: `_runs.append_late(url, run_id, LATE)`."""


def env() -> dict[str, str]:
    """The environment of a child process: this repository and the shared test run on its path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def start_tail(url: str, run_id: str, *argv: str) -> subprocess.Popen[str]:
    """Start `python -m replay.cli tail URL --run RUN ARGV` with its output piped.

    SIGINT starts at its default in the child, so Python turns it into KeyboardInterrupt there
    even when this test runs from a background job, whose children inherit SIGINT ignored (a
    shell without job control starts `cmd &` so): Ctrl-C is what the tests send.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "replay.cli", "tail", url, "--run", run_id, *argv],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stdout_lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """A queue filled with the process's stdout lines by a reader thread; None marks the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def read_lines(lines: queue.Queue[str | None], count: int, what: str) -> list[str]:
    """Take `count` lines from the queue; fail (not hang) if they do not all come within GUARD_S."""
    got: list[str] = []
    try:
        while len(got) < count:
            line = lines.get(timeout=GUARD_S)
            assert line is not None, f"{what} closed its stdout after {len(got)} of {count} lines"
            got.append(line)
    except queue.Empty:
        pytest.fail(f"{what} printed {len(got)} of {count} lines within {GUARD_S:g} s")
    return got


def wait(process: subprocess.Popen[str], what: str) -> int:
    """Wait for a process to exit; kill it and fail (not hang) after GUARD_S."""
    try:
        return process.wait(timeout=GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"{what} did not exit within {GUARD_S:g} s")


@pytest.mark.slow
def test_follow_prints_what_another_process_appends_and_ctrl_c_exits_0(tailed: Tailed) -> None:
    """A following tail prints every record another process appends; SIGINT ends it with status 0.

    A second tail with --count stops by itself once its N records (the writer's last included)
    are shown, without waiting for one more that never comes.
    """
    url, run_id, records, _ = tailed
    start = f"seq:{len(records) + 1}"  # only what the writer adds: no race with the tail starting
    follower = start_tail(url, run_id, "--from", start, "--follow", "--format", "json")
    counter = start_tail(
        url,
        run_id,
        "--from",
        start,
        "--follow",
        "--kind",
        "EntityRegistered,StepSealed",
        "--count",
        str(LATE + 1),
        "--format",
        "json",
    )
    try:
        lines = stdout_lines(follower)
        writer = subprocess.run(
            [sys.executable, "-c", WRITER, url, run_id, str(LATE)],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=GUARD_S,
            check=False,
        )
        assert writer.returncode == 0, writer.stderr

        shown = [json.loads(line) for line in read_lines(lines, late_records(LATE), "the follower")]
        with bus.open(url, run_id, create=False) as log:
            assert shown == plain(log.read(after=len(records)))
        registered = [r["entity"] for r in shown if r["kind"] == "EntityRegistered"]
        assert registered == [f"late-{n}" for n in range(LATE)]

        follower.send_signal(signal.SIGINT)  # Ctrl-C
        assert wait(follower, "the follower after SIGINT") == 0
        assert lines.get(timeout=GUARD_S) is None  # nothing printed past the records
        assert follower.stderr is not None and follower.stderr.read() == ""

        assert wait(counter, "the tail with --count") == 0
        assert counter.stdout is not None and counter.stderr is not None
        counted = [json.loads(line) for line in counter.stdout.read().splitlines()]
        assert counted == [r for r in shown if r["kind"] in ("EntityRegistered", "StepSealed")]
        assert counted[-1]["kind"] == "StepSealed" and len(counted) == LATE + 1
        assert counter.stderr.read() == ""
    finally:
        for process in (follower, counter):
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
