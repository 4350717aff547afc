"""The Redis primary + JSONL mirror pair: catching up, refusing divergence, verify, repair,
and the `lifecycle-es verify` subcommand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

import bus
from bus import CorruptLogError, InvalidArgumentError, JsonlLog, MirroredLog, RedisLog
from bus.testing import RedisServer
from replay import cli


@pytest.fixture
def primary() -> Iterator[RedisLog]:
    """An empty fakeredis-backed primary."""
    pytest.importorskip("lupa")
    with RedisLog.from_client(fakeredis.FakeRedis(), f"t-{uuid.uuid4().hex}") as log:
        yield log


def pair(primary: RedisLog, directory: Path) -> MirroredLog:
    """A mirrored log on its own handle of `primary`'s stream (closing it leaves `primary`)."""
    handle = RedisLog.from_client(primary.client, primary.run_id)
    return MirroredLog(handle, JsonlLog(directory, primary.run_id))


def records(n: int, start: int = 1) -> list[dict[str, object]]:
    return [{"event_id": f"e{i}", "i": i} for i in range(start, start + n)]


def test_mirror_gets_every_append(primary: RedisLog, tmp_path: Path) -> None:
    """Both sides hold the same records after appends through the pair."""
    with pair(primary, tmp_path) as log:
        log.append(records(3))
        log.append(records(2, 4), expected_seq=3)
        assert bus.verify(primary, log.mirror).equal


def test_a_mirror_of_another_run_is_refused(primary: RedisLog, tmp_path: Path) -> None:
    """A pair must hold one run on both sides; a mirror of another run is refused."""
    with (
        RedisLog.from_client(primary.client, primary.run_id) as handle,
        JsonlLog(tmp_path, "another-run") as mirror,
        pytest.raises(InvalidArgumentError, match="differ"),
    ):
        MirroredLog(handle, mirror)


def test_mirror_behind_after_a_crash_is_caught_up_on_open(primary: RedisLog, tmp_path: Path) -> None:
    """Records that reached only the primary (a crash between the writes) are copied over."""
    with pair(primary, tmp_path) as log:
        log.append(records(2))
    primary.append(records(3, 3))  # the crash: the mirror write never happened
    with JsonlLog(tmp_path, primary.run_id) as mirror:
        assert mirror.last_seq() == 2
    with pair(primary, tmp_path) as log:
        assert log.mirror.last_seq() == 5
        assert bus.verify(primary, log.mirror).equal


def test_mirror_ahead_of_primary_refuses_to_open(primary: RedisLog, tmp_path: Path) -> None:
    """A mirror holding records the primary lacks is an error naming verify --repair."""
    with JsonlLog(tmp_path, primary.run_id) as mirror:
        mirror.append(records(2))
    primary.append(records(1))
    with pytest.raises(CorruptLogError, match="--repair") as info:
        pair(primary, tmp_path)
    assert "ahead" in str(info.value)


def test_mirror_that_differs_refuses_to_open(primary: RedisLog, tmp_path: Path) -> None:
    """A mirror whose last record differs from the primary's is an error."""
    primary.append(records(2))
    with JsonlLog(tmp_path, primary.run_id) as mirror:
        mirror.append([*records(1), {"event_id": "other"}])
    with pytest.raises(CorruptLogError, match="differs"):
        pair(primary, tmp_path)


def test_verify_lists_differences_and_repair_fixes_them(primary: RedisLog, tmp_path: Path) -> None:
    """verify names each differing seq; repair rewrites the mirror atomically."""
    primary.append(records(4))
    with JsonlLog(tmp_path, primary.run_id) as mirror:
        mirror.append([*records(1), {"event_id": "e2", "i": 99}, *records(1, 3)])
        report = bus.verify(primary, mirror)
    assert not report.equal
    assert report.differences == [(2, "fields differ: i"), (4, "missing from the mirror")]
    assert (report.primary_last, report.mirror_last) == (4, 3)
    assert bus.repair(primary, tmp_path) == 4
    with JsonlLog(tmp_path, primary.run_id) as mirror:
        assert bus.verify(primary, mirror).equal
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{primary.run_id}.jsonl"]


@pytest.fixture
def mirrored_url(redis_server: RedisServer, tmp_path: Path) -> tuple[str, str]:
    """A real-Redis mirrored URL and a run id holding 3 records on both sides."""
    run_id = f"t-{uuid.uuid4().hex}"
    url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"
    with bus.open(url, run_id) as log:
        log.append(records(3))
    return url, run_id


def run_verify(*argv: str) -> int:
    """Run `lifecycle-es verify ARGV` through the real command-line entry point."""
    return cli.main(["verify", *argv])


@pytest.mark.redis_server
def test_verify_command_exit_codes(
    mirrored_url: tuple[str, str], redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 when equal, 1 when different, 0 after --repair, and the differences are printed."""
    url, run_id = mirrored_url
    assert run_verify(url, "--run", run_id) == 0
    with RedisLog(redis_server.url, run_id) as primary:
        primary.append(records(1, 4))  # only the primary: the mirror is now behind
    assert run_verify(url, "--run", run_id) == 1
    assert "seq 4: missing from the mirror" in capsys.readouterr().out
    assert run_verify(url, "--run", run_id, "--repair") == 0
    assert run_verify(url, "--run", run_id) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["memory://", "--run", "r"],
        ["redis://127.0.0.1:1/0", "--run", "r"],
        ["redis://127.0.0.1:1/0?mirror=/tmp/x", "--run", "../etc"],
    ],
)
def test_verify_command_bad_input_is_one_line_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL without a mirror, or a bad run id: exit 2 with one line on stderr."""
    assert run_verify(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lifecycle-es verify: ")
