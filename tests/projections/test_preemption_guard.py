"""The preemption guard: real signals, real files and loopback metadata servers stop a run cleanly.

Signals go to this test process with `os.kill` (pytest runs tests on the main thread) or to a
child process running a small training loop (`_guarded_loop.py`). The cloud pollers only ever
talk to an `http.server` of the test's own on 127.0.0.1. Waits have generous deadlines that
fail the test if nothing happens; no assertion is about how long anything took.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bus import JsonlLog
from lifecycle_es import Lifecycle
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.specs import RunState
from projections.training import (
    REQUEUE_EXIT_CODE,
    AwsSpotNotice,
    CallableNotice,
    FileNotice,
    GceNotice,
    PreemptionGuard,
)

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_guarded_loop.py")
DEADLINE_S = 60.0


# -- helpers ---------------------------------------------------------------------------------


def _started() -> Lifecycle:
    lc = Lifecycle()
    lc.start()
    return lc


def _moves(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["from_state"], r["to_state"]) for r in records if r["kind"] == "RunStateChanged"]


def _last_move(lc: Lifecycle) -> dict[str, Any]:
    return [r for r in lc.log.read() if r["kind"] == "RunStateChanged"][-1]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _train_until_stopped(guard: PreemptionGuard, first: int = 0) -> int:
    """Step until the guard stops the run; return the step it stopped at."""
    step = first
    deadline = time.monotonic() + DEADLINE_S
    while not guard.should_stop(step):
        assert time.monotonic() < deadline, "the guard never stopped the run"
        step += 1
        time.sleep(0.01)
    return step


def _saver(directory: Path) -> Callable[[int], Path]:
    def save(step: int) -> Path:
        path = directory / f"checkpoint-{step}.json"
        path.write_text(json.dumps({"step": step}))
        return path

    return save


def _child(directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(CHILD), str(directory), *extra], env=env, cwd=ROOT)


def _child_log(directory: Path) -> list[dict[str, Any]]:
    log = JsonlLog(directory, "guarded", readonly=True)
    try:
        return log.read()
    finally:
        log.close()


class _Metadata(BaseHTTPRequestHandler):
    """A loopback stand-in for the AWS and GCE metadata servers; `server.notice` flips them."""

    server: _MetadataServer

    def do_PUT(self) -> None:
        self.server.seen.append(("PUT", self.path, dict(self.headers)))
        self._answer(200, "token-1" if self.path == "/latest/api/token" else "")

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path, dict(self.headers)))
        if self.path.endswith("/spot/instance-action"):
            if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                self._answer(401, "")
            elif self.server.notice:
                self._answer(200, json.dumps({"action": "terminate", "time": "2026-12-03T17:00:00Z"}))
            else:
                self._answer(404, "")
        elif self.path.endswith("/instance/preempted") and self.headers.get("Metadata-Flavor") == "Google":
            self._answer(200, "TRUE" if self.server.notice else "FALSE")
        else:
            self._answer(403, "")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output is not the place for a request log


class _MetadataServer(ThreadingHTTPServer):
    notice = False
    seen: list[tuple[str, str, dict[str, str]]]


@pytest.fixture
def metadata() -> Iterator[_MetadataServer]:
    """A metadata server on a free loopback port, serving on a thread of its own."""
    server = _MetadataServer(("127.0.0.1", 0), _Metadata)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- signals ---------------------------------------------------------------------------------


def test_sigterm_in_a_child_interrupts_with_the_checkpoint_on_disk(tmp_path: Path) -> None:
    """SIGTERM to a training process saves a checkpoint, records it in interrupted's attrs, exits 143."""
    child = _child(tmp_path)
    _wait_for(lambda: (tmp_path / "ready").exists() or child.poll() is not None, "the child to train")
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(timeout=DEADLINE_S) == REQUEUE_EXIT_CODE == 143
    records = _child_log(tmp_path)
    # The spec has no stopping -> interrupted edge: a preemption goes straight to interrupted.
    assert _moves(records) == [("pending", "running"), ("running", "interrupted")]
    final = records[-1]
    assert final["attrs"]["checkpoint_saved"] is True
    assert final["attrs"]["notice_source"] == "signal"
    assert final["attrs"]["notice_reason"] == final["reason"] == "SIGTERM"
    checkpoint = Path(final["attrs"]["checkpoint_path"])
    assert json.loads(checkpoint.read_text())["step"] == final["step"]


def test_a_second_sigterm_during_the_save_is_recorded_not_acted_on(tmp_path: Path) -> None:
    """A SIGTERM that arrives mid-save neither interrupts nor corrupts it, and is recorded."""
    child = _child(tmp_path, "hold")
    _wait_for(lambda: (tmp_path / "ready").exists() or child.poll() is not None, "the child to train")
    os.kill(child.pid, signal.SIGTERM)
    _wait_for(lambda: (tmp_path / "saving").exists() or child.poll() is not None, "the save to begin")
    os.kill(child.pid, signal.SIGTERM)
    (tmp_path / "release").touch()
    assert child.wait(timeout=DEADLINE_S) == 143
    final = _child_log(tmp_path)[-1]
    assert (final["from_state"], final["to_state"]) == ("running", "interrupted")
    assert final["attrs"]["checkpoint_saved"] is True
    assert final["attrs"]["signals_during_save"] == ["SIGTERM"]
    saved = json.loads(Path(final["attrs"]["checkpoint_path"]).read_text())
    assert saved == {"step": final["step"], "weights": list(range(1000))}


def test_sigint_is_a_manual_stop_through_stopping(tmp_path: Path) -> None:
    """SIGINT stops the run through stopping to stopped, with the checkpoint saved, and exit code 130."""
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path)) as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.should_stop(2)
    assert _moves(lc.log.read()) == [("pending", "running"), ("running", "stopping"), ("stopping", "stopped")]
    attrs = _last_move(lc)["attrs"]
    assert attrs["checkpoint_saved"] is True and attrs["notice_reason"] == "SIGINT"
    assert (tmp_path / "checkpoint-2.json").exists()
    assert guard.outcome is RunState.STOPPED and guard.exit_code == 130


def test_request_stop_is_manual_and_exits_zero(tmp_path: Path) -> None:
    """An explicit request_stop ends the run stopped, recorded as a manual notice, with exit code 0."""
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path)) as guard:
        guard.request_stop("operator asked")
        assert guard.should_stop(4)
    final = _last_move(lc)
    assert final["to_state"] == "stopped" and final["reason"] == "operator asked"
    assert final["attrs"]["notice_source"] == "manual"
    assert guard.exit_code == 0


def test_a_save_that_raises_is_recorded_and_the_run_still_ends(caplog: pytest.LogCaptureFixture) -> None:
    """A failing pre-stop save is recorded (checkpoint_saved false, its error) and the run still ends."""

    def save(step: int) -> None:
        raise OSError("disk full")

    lc = _started()
    with PreemptionGuard(lc, save=save) as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop(7)
    attrs = _last_move(lc)["attrs"]
    assert attrs["checkpoint_saved"] is False
    assert (attrs["save_error_type"], attrs["save_error"]) == ("OSError", "disk full")
    assert lc.registry.run_state == "interrupted" and guard.exit_code == 143
    assert "pre-stop checkpoint at step 7 failed" in caplog.text


def test_leaving_the_block_records_completion() -> None:
    """A loop that ends without a notice records running -> terminated, the end a follower waits for."""
    lc = _started()
    with PreemptionGuard(lc) as guard:
        for step in range(5):
            assert not guard.should_stop(step)
    final = _last_move(lc)
    assert (final["from_state"], final["to_state"]) == ("running", "terminated")
    assert final["attrs"] == {"completed": True}
    assert guard.outcome is RunState.TERMINATED and guard.exit_code == 0


def test_handlers_are_restored_on_exit_even_after_an_error() -> None:
    """The handlers that were installed before the guard are back after it, also when the block raised."""

    def mine(signum: int, frame: object) -> None:
        pass  # a stand-in for the application's own handler

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        for s in before:
            signal.signal(s, mine)
        lc = _started()
        with pytest.raises(ZeroDivisionError), PreemptionGuard(lc, sigusr1=True):
            assert signal.getsignal(signal.SIGUSR1) is not mine
            _ = 1 / 0
        assert all(signal.getsignal(s) is mine for s in before)
        assert lc.registry.run_state == "running"  # a block that raised did not complete
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_sigusr1_is_opt_in_and_interrupts(tmp_path: Path) -> None:
    """With sigusr1=True, SLURM's warning signal interrupts the run and the exit code is 128 + SIGUSR1."""
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path), sigusr1=True) as guard:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert guard.should_stop(3)
    assert _last_move(lc)["reason"] == "SIGUSR1"
    assert guard.exit_code == 128 + signal.SIGUSR1


def test_entering_outside_the_main_thread_is_a_usage_error() -> None:
    """Entering the guard on another thread raises UsageError and installs nothing."""
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            with PreemptionGuard(_started()):
                pass
        except BaseException as e:  # handed to the test's thread to assert on
            errors.append(e)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], UsageError)
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_run_not_running_or_a_guard_entered_twice_is_a_usage_error() -> None:
    """A guard needs a running run, and one guard is entered once at a time."""
    with pytest.raises(UsageError, match="must be running"), PreemptionGuard(Lifecycle()):
        pass
    guard = PreemptionGuard(_started())
    with guard, pytest.raises(UsageError, match="already entered"):
        guard.__enter__()


# -- notice sources --------------------------------------------------------------------------


def test_a_notice_file_interrupts_the_run(tmp_path: Path) -> None:
    """A file appearing at the notice path interrupts the run at the next boundary."""
    notice = tmp_path / "preempt"
    lc = _started()
    with PreemptionGuard(
        lc, save=_saver(tmp_path), sources=[FileNotice(path=notice)], poll_interval=0.01
    ) as guard:
        assert not guard.should_stop(1)
        notice.touch()
        _train_until_stopped(guard, first=2)
    attrs = _last_move(lc)["attrs"]
    assert (attrs["notice_source"], attrs["checkpoint_saved"]) == ("file", True)
    assert str(notice) in attrs["notice_reason"]
    assert guard.exit_code == REQUEUE_EXIT_CODE


def test_a_polled_callable_interrupts_the_run(tmp_path: Path) -> None:
    """A callable that starts returning a reason interrupts the run with that reason."""
    flag = threading.Event()
    source = CallableNotice(poll=lambda: "maintenance window" if flag.is_set() else None)
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path), sources=[source], poll_interval=0.01) as guard:
        flag.set()
        _train_until_stopped(guard)
    final = _last_move(lc)
    assert final["to_state"] == "interrupted" and final["reason"] == "maintenance window"


def test_the_aws_poller_reads_a_loopback_instance_action(tmp_path: Path, metadata: _MetadataServer) -> None:
    """The AWS poller, pointed at a loopback server, interrupts the run once an instance-action appears."""
    url = f"http://127.0.0.1:{metadata.server_port}/latest/meta-data/spot/instance-action"
    lc = _started()
    with PreemptionGuard(
        lc, save=_saver(tmp_path), sources=[AwsSpotNotice(url=url)], poll_interval=0.01
    ) as guard:
        _wait_for(lambda: any(m == "GET" for m, _, _ in metadata.seen), "a first poll")
        assert not guard.should_stop(1)  # a 404 is no notice
        metadata.notice = True
        _train_until_stopped(guard, first=2)
    attrs = _last_move(lc)["attrs"]
    assert attrs["notice_source"] == "aws" and attrs["checkpoint_saved"] is True
    assert '"action": "terminate"' in attrs["notice_reason"]
    assert ("PUT", "/latest/api/token") in [(m, p) for m, p, _ in metadata.seen]


def test_the_gce_poller_reads_a_loopback_preempted_flag(tmp_path: Path, metadata: _MetadataServer) -> None:
    """The GCE poller, pointed at a loopback server, interrupts the run once preempted reads TRUE."""
    url = f"http://127.0.0.1:{metadata.server_port}/computeMetadata/v1/instance/preempted"
    lc = _started()
    with PreemptionGuard(
        lc, save=_saver(tmp_path), sources=[GceNotice(url=url)], poll_interval=0.01
    ) as guard:
        _wait_for(lambda: bool(metadata.seen), "a first poll")
        assert not guard.should_stop(1)  # FALSE is no notice
        metadata.notice = True
        _train_until_stopped(guard, first=2)
    attrs = _last_move(lc)["attrs"]
    assert (attrs["notice_source"], attrs["notice_reason"]) == ("gce", "gce instance preempted")
    assert all(headers.get("Metadata-Flavor") == "Google" for _, _, headers in metadata.seen)


def test_a_poller_at_a_closed_port_logs_and_keeps_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A metadata URL nobody answers is logged and polled again, and a later notice still stops the run."""
    url = f"http://127.0.0.1:{_closed_port()}/latest/meta-data/spot/instance-action"
    notice = tmp_path / "preempt"
    sources = [AwsSpotNotice(url=url, timeout=0.5), FileNotice(path=notice)]
    caplog.set_level(logging.WARNING, logger="projections.training.notices")
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path), sources=sources, poll_interval=0.01) as guard:
        _wait_for(lambda: caplog.text.count("notice source aws did not answer") >= 2, "two failed polls")
        assert not guard.should_stop(1)
        notice.touch()
        _train_until_stopped(guard, first=2)
    assert _last_move(lc)["attrs"]["notice_source"] == "file"


# -- DDP ranks: a rank that does not write, and a stop learnt from another rank ------------------


def test_a_guard_that_does_not_record_stops_and_saves_but_appends_nothing(tmp_path: Path) -> None:
    """`record=False` (a DDP rank that is not the log's writer) saves and ends on a notice, with
    the requeue exit code, and leaves the log as it was."""
    lc = _started()
    before = lc.log.last_seq()
    with PreemptionGuard(lc, save=_saver(tmp_path), record=False) as guard:
        guard.stop(7)
    assert guard.outcome is RunState.INTERRUPTED and guard.exit_code == REQUEUE_EXIT_CODE
    assert (tmp_path / "checkpoint-7.json").exists() and lc.log.last_seq() == before


def test_a_stop_learnt_from_another_rank_records_the_other_ranks_notice(tmp_path: Path) -> None:
    """`stop(step)` without a notice of this rank's own records `interrupted` at that step with
    the source 'rank' and the checkpoint saved; a second stop or a completion is a UsageError."""
    lc = _started()
    with PreemptionGuard(lc, save=_saver(tmp_path)) as guard:
        guard.stop(12)
        with pytest.raises(UsageError, match="already ended interrupted"):
            guard.stop(13)
        with pytest.raises(UsageError, match="cannot complete"):
            guard.complete(13)
    move = _last_move(lc)
    assert (move["to_state"], move["step"]) == ("interrupted", 12)
    assert move["attrs"]["notice_source"] == "rank" and move["attrs"]["checkpoint_saved"] is True


def test_a_guard_refuses_a_record_flag_that_is_no_bool() -> None:
    """`record` must be a bool: a ConfigError otherwise."""
    with pytest.raises(ConfigError, match="record must be a bool"):
        PreemptionGuard(_started(), record="no")  # type: ignore[arg-type]


def test_a_stop_behind_the_logs_latest_step_is_recorded_there_with_its_own(tmp_path: Path) -> None:
    """A resumed run replaying sealed steps stops behind the log's latest step: the move is
    recorded at the latest step (the log's steps never go back) with the stop's step in attrs."""
    lc = _started()
    lc.seal(20)
    with PreemptionGuard(lc, save=_saver(tmp_path)) as guard:
        guard.stop(10)
    move = _last_move(lc)
    assert (move["to_state"], move["step"], move["attrs"]["training_step"]) == ("interrupted", 20, 10)
    assert (tmp_path / "checkpoint-10.json").exists()
