"""A log URL's password never leaves the command line: not on stdout or stderr, not in the
log's records, not in any file the CLI writes (issue 12)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import bus
from bus.testing import RedisFactory, RedisServer
from lifecycle_es import Lifecycle
from replay.cli import build_parser, demo
from tests._cli import one_line, run_cli

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-9c41-Secret"
RUN = "secret-demo"


@pytest.fixture
def acl_server(redis_factory: RedisFactory) -> Iterator[RedisServer]:
    """A redis-server whose user `lces` logs in with PASSWORD."""
    server = redis_factory.start()
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "lces", "on", f">{PASSWORD}", "~*", "+@all")  # type: ignore[no-untyped-call]
    admin.close()
    yield server


def _files_hold(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _records_hold(server: RedisServer, secret: str) -> bool:
    admin = server.admin()
    try:
        keys = admin.keys("*")
        dump = repr([admin.xrange(k) for k in keys if admin.type(k) == b"stream"])
    finally:
        admin.close()
    return secret in dump


@pytest.mark.redis_server
def test_the_demo_never_prints_or_stores_its_log_urls_password(
    acl_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A demo on a password URL, then a second one refused for its run id, and a replay of it:
    the password is in no output, no stream record and no file, and the URL shows as ***."""
    monkeypatch.chdir(tmp_path)  # a Redis log's files go under ./runs
    url = f"redis://lces:{PASSWORD}@127.0.0.1:{acl_server.port}/0?mirror={tmp_path / 'mirror'}"
    status, out, err = run_cli(capsys, "demo", "--log", url, "--run", RUN, "--steps", "50", "--quiet")
    assert status == 0, err
    assert "replay it: lifecycle-es replay redis://lces:***@" in out
    status, again, refused = run_cli(capsys, "demo", "--log", url, "--run", RUN, "--steps", "50", "--quiet")
    assert status == 2 and "already has a log at redis://lces:***@" in one_line(refused)
    status, replayed, replay_err = run_cli(capsys, "replay", url, "--run", RUN)
    assert status == 0, replay_err
    for text in (out, err, again, refused, replayed, replay_err):
        assert PASSWORD not in text
    assert _files_hold(tmp_path, PASSWORD) == []
    assert not _records_hold(acl_server, PASSWORD)


@pytest.mark.redis_server
@pytest.mark.parametrize(
    "argv",
    [
        ("replay", "{url}", "--run", "no-such-run"),
        ("replay", "{bad}", "--run", RUN),
        ("tail", "{url}", "--run", RUN, "--bogus"),
        ("verify", "{url}", "--run", RUN),
    ],
    ids=["unknown-run", "wrong-password", "usage-error", "no-mirror"],
)
def test_errors_name_a_log_url_without_its_password(
    acl_server: RedisServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """An unknown run, a refused login, a usage error and a bad verify URL print one line
    without the password."""
    url = f"redis://lces:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    bad = f"redis://lces:{PASSWORD}x@127.0.0.1:{acl_server.port}/0"
    status, out, err = run_cli(capsys, *(a.format(url=url, bad=bad) for a in argv))
    assert status != 0
    line = one_line(err)
    assert PASSWORD not in out + line
    assert "***" in line or "redis" not in line
    with redis.Redis(port=acl_server.port, username="lces", password=PASSWORD) as client:
        assert client.dbsize() == 0


def test_a_bare_directory_is_named_as_given_in_the_already_has_a_log_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redacting applies to URLs only: a bare log directory shows as typed, not as ':///DIR'."""
    with bus.open(f"jsonl://{tmp_path}", RUN) as log:
        Lifecycle(log).start()
    status, _, err = run_cli(capsys, "demo", "--log", str(tmp_path), "--run", RUN, "--steps", "50")
    assert status == 2
    assert one_line(err) == (
        f"lifecycle-es demo: run {RUN!r} already has a log at {tmp_path}; choose another --run\n"
    )


@pytest.mark.redis_server
def test_a_multi_rank_demo_hands_its_ranks_the_url_outside_their_argv(
    acl_server: RedisServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--ranks 2` puts the log URL in the ranks' environment, not in their command lines (which
    `ps` shows every local user); the ranks still find the log, and nothing shows the password."""
    monkeypatch.chdir(tmp_path)
    # The ranks are new interpreters: they must import this checkout, whatever the cwd.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    url = f"redis://lces:{PASSWORD}@127.0.0.1:{acl_server.port}/0?mirror={tmp_path / 'mirror'}"
    argv = ["demo", "--log", url, "--run", "ranks", "--steps", "50", "--quiet", "--ranks", "2"]
    rank_argv = demo._worker_argv(build_parser().parse_args(argv), "ranks")
    assert PASSWORD not in " ".join(rank_argv) and "--log" not in rank_argv
    status, out, err = run_cli(capfd, *argv)  # the ranks write to the file descriptors
    assert status == 0, err
    assert "every rank ended with digest" in out and "replay it: lifecycle-es replay redis://lces:***@" in out
    assert PASSWORD not in out + err
    assert _files_hold(tmp_path, PASSWORD) == []
    assert not _records_hold(acl_server, PASSWORD)
