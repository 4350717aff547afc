"""`lifecycle-es metrics`: the exposition printed, written as a textfile and served over HTTP,
read back by prometheus_client's Prometheus and OpenMetrics parsers and compared with the
metrics projection's rows; the HTTP server and the textfile follow a log another writer appends
to, in a real process, ended by SIGTERM or SIGINT with status 0."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from _runs import GUARD_S, REPO, append_late, late_records, play

import bus
from lifecycle_es import Lifecycle
from projections import MetricsProjection
from replay.cli.metrics import parse_listen
from tests._cli import one_line, run_cli
from tests._prometheus import Exposition, parse_openmetrics, parse_prometheus, row_samples

RUN = "metrics-run"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def written(log_url: str, run_id: str) -> tuple[str, str]:
    """The scripted run written to a JSONL directory or to Redis: the log URL and the run id."""
    with bus.open(log_url, run_id) as log:
        play(Lifecycle(log))
    return log_url, run_id


@pytest.fixture
def jsonl_run(tmp_path: Path) -> str:
    """The scripted run in a JSONL directory, for the commands that run as processes."""
    url = f"jsonl://{tmp_path / 'runs'}"
    with bus.open(url, RUN) as log:
        play(Lifecycle(log))
    return url


def expected(url: str, run: str = RUN) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples the metrics projection's rows call for, folded from the whole log now."""
    metrics = MetricsProjection()
    with bus.open(url, run, create=False) as log:
        metrics.apply(log.read())
    return row_samples(metrics, run=run)


# -- printed once ----------------------------------------------------------------------------------


def test_no_option_prints_prometheus_text_once(
    written: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without an option the Prometheus text goes to stdout: every row, each sample with the run."""
    url, run = written
    status, out, err = run_cli(capsys, "metrics", url, "--run", run)
    assert (status, err) == (0, "")
    read = parse_prometheus(out)
    assert read.samples == expected(url, run)
    assert all(("run", run) in labels for _, labels in read.samples)


def test_format_openmetrics_prints_what_the_openmetrics_parser_reads(
    written: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format openmetrics` prints OpenMetrics text (with `# EOF`), holding the same samples."""
    url, run = written
    status, out, err = run_cli(capsys, "metrics", url, "--run", run, "--format", "openmetrics")
    assert (status, err) == (0, "")
    assert out.endswith("# EOF\n")
    assert parse_openmetrics(out).samples == expected(url, run)


# -- textfile ----------------------------------------------------------------------------------------


def test_textfile_is_written_once(
    written: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--textfile` writes the Prometheus text to the file, prints nothing and leaves no temporary file."""
    url, run = written
    out_dir = tmp_path / "textfiles"
    out_dir.mkdir()
    path = out_dir / "lifecycle.prom"
    status, out, err = run_cli(capsys, "metrics", url, "--run", run, "--textfile", str(path))
    assert (status, out, err) == (0, "", "")
    assert parse_prometheus(path.read_text()).samples == expected(url, run)
    assert [p.name for p in out_dir.iterdir()] == ["lifecycle.prom"]


def test_textfile_follow_rewrites_it_as_records_arrive(jsonl_run: str, tmp_path: Path, spawn: Spawn) -> None:
    """With --follow the file is rewritten after each batch another writer appends; SIGTERM ends it."""
    path = tmp_path / "lifecycle.prom"
    proc = spawn(["metrics", jsonl_run, "--run", RUN, "--textfile", str(path), "--follow"])
    first = wait_for(lambda: read_file(path), lambda read: read is not None)
    assert first is not None and first.samples == expected(jsonl_run)
    last = first.sample("lifecycle_seq", run=RUN) + late_records(2)
    append_late(jsonl_run, RUN, 2)
    final = wait_for(lambda: read_file(path), lambda read: at_seq(read, last))
    assert final is not None and final.samples == expected(jsonl_run)
    assert stop(proc, signal.SIGTERM) == (0, "", "")


def read_file(path: Path) -> Exposition | None:
    """The textfile's samples, or None before it exists; an atomic write is never half a file."""
    return parse_prometheus(path.read_text()) if path.exists() else None


# -- served over HTTP ---------------------------------------------------------------------------------


def test_listen_serves_both_formats_and_follows_the_log(jsonl_run: str, spawn: Spawn) -> None:
    """A scrape over loopback gets Prometheus text, or OpenMetrics when it asks; both parse to the
    projection's rows with the run label; records appended later show in the next scrapes."""
    proc = spawn(["metrics", jsonl_run, "--run", RUN, "--listen", "127.0.0.1:0"])
    url = served_url(proc)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    text, content_type = scrape(url)
    assert content_type.startswith("text/plain")
    assert parse_prometheus(text).samples == expected(jsonl_run)
    om_text, om_type = scrape(url, accept=OPENMETRICS)
    assert om_type.startswith("application/openmetrics-text")
    assert parse_openmetrics(om_text).samples == expected(jsonl_run)

    last = parse_prometheus(text).sample("lifecycle_seq", run=RUN) + late_records(3)
    append_late(jsonl_run, RUN, 3)
    wait_for(lambda: parse_prometheus(scrape(url)[0]), lambda read: at_seq(read, last))
    assert parse_prometheus(scrape(url)[0]).samples == expected(jsonl_run)
    assert parse_openmetrics(scrape(url, accept=OPENMETRICS)[0]).samples == expected(jsonl_run)
    assert stop(proc, signal.SIGTERM) == (0, "", "")


def test_listen_ends_on_ctrl_c_with_status_0(jsonl_run: str, spawn: Spawn) -> None:
    """SIGINT (Ctrl-C) stops the server as SIGTERM does: status 0, nothing more printed."""
    proc = spawn(["metrics", jsonl_run, "--run", RUN, "--listen", "0"])
    url = served_url(proc)
    assert url.startswith("http://127.0.0.1:")  # a bare port binds to loopback
    assert parse_prometheus(scrape(url)[0]).samples == expected(jsonl_run)
    assert stop(proc, signal.SIGINT) == (0, "", "")


def test_listen_on_a_port_in_use_is_one_line(jsonl_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A port another socket holds: one line naming the address, exit status 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run_cli(
            capsys, "metrics", jsonl_run, "--run", RUN, "--listen", f"127.0.0.1:{port}"
        )
    assert (status, out) == (2, "")
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(err)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_listen_addresses(value: str, address: tuple[str, int]) -> None:
    """HOST:PORT, a bare PORT (loopback) and a bracketed IPv6 host are read as written."""
    assert parse_listen(value) == address


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--follow"], "--follow goes with --textfile"),
        (["--listen", "127.0.0.1:http"], "--listen takes HOST:PORT"),
        (["--listen", "127.0.0.1:70000"], "--listen takes HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--format", "openmetrics"], "--format applies to printing"),
    ],
)
def test_bad_options_are_one_line(
    jsonl_run: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options that do not fit together, or a bad address: one line, exit status 2, nothing printed."""
    status, out, err = run_cli(capsys, "metrics", jsonl_run, "--run", RUN, *argv)
    assert (status, out) == (2, "")
    assert message in one_line(err)


def test_unknown_run_is_one_line(jsonl_run: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A run the log does not hold: one line, exit status 2."""
    status, out, err = run_cli(capsys, "metrics", jsonl_run, "--run", "no-such-run")
    assert (status, out) == (2, "")
    one_line(err)


# -- helpers -------------------------------------------------------------------------------------------

Spawn = Callable[[list[str]], subprocess.Popen[str]]
T = TypeVar("T")


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `python -m replay.cli ARGV` as a process of its own (a signal reaches its main
    thread); whatever a failed test left running is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(argv: list[str]) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "replay.cli", *argv]
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def served_url(proc: subprocess.Popen[str]) -> str:
    """The URL of the server's first stdout line, `serving URL` (port 0 picks a free one)."""
    stdout = proc.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=GUARD_S)
    except queue.Empty:
        raise AssertionError("the server printed no URL") from None
    assert line.startswith("serving "), f"not a URL line: {line!r} (exit status {proc.poll()})"
    return line.split()[1]


def scrape(url: str, *, accept: str | None = None) -> tuple[str, str]:
    """GET the URL over loopback; return the body and its content type."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=GUARD_S) as response:
        return response.read().decode("utf-8"), response.headers["Content-Type"]


def at_seq(read: Exposition | None, seq: float) -> bool:
    """Whether the exposition has folded the log through `seq`."""
    return read is not None and read.sample("lifecycle_seq", run=RUN) == seq


def wait_for(get: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Call `get` until `done` holds for what it returned; fail after GUARD_S."""
    deadline = time.monotonic() + GUARD_S
    while True:
        value = get()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {GUARD_S} s: last saw {value!r}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, str]:
    """Send `sig`; return the exit status and what stdout and stderr held past what was read."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=GUARD_S)
    return proc.returncode, out, err
