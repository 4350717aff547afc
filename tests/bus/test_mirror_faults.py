"""A mirrored run cannot be bricked: every check of both sides runs before either stores a
byte, and `verify` reads without writing, says when a run exists nowhere, and rebuilds a
damaged mirror from the primary."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import bus
from bus import JsonlLog, Log, MirroredLog, RecordTooLargeError, RedisLog
from bus.testing import RedisServer
from tests._cli import one_line
from tests._cli import run_cli as cli

# 300 KB of a control character: about 300 KB of msgpack (under the 1 MiB limit) but 1.8 MB
# of JSON, where each one is written as \u0001 (over it).
SWOLLEN = {"event_id": "big", "blob": "\x01" * 300_000}


@pytest.fixture(params=["fakeredis", pytest.param("redis-server", marks=pytest.mark.redis_server)])
def mirrored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MirroredLog]:
    """A mirrored log on fakeredis or on a real redis-server, mirror in tmp_path/mirror."""
    run_id = f"t-{uuid.uuid4().hex}"
    if request.param == "fakeredis":
        pytest.importorskip("lupa")
        primary = RedisLog.from_client(fakeredis.FakeRedis(), run_id)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        primary = RedisLog(server.url, run_id)
    with MirroredLog(primary, JsonlLog(tmp_path / "mirror", run_id)) as log:
        yield log


def same(primary: Log, mirror: Log) -> bool:
    return bus.verify(primary, mirror).equal


def test_a_record_too_large_for_the_mirror_stores_nothing_anywhere(mirrored: MirroredLog) -> None:
    """A record under Redis's limit but over the mirror's raises before the primary stores it,
    and the pair goes on appending, equal on both sides."""
    mirrored.append([{"event_id": "a"}])
    with pytest.raises(RecordTooLargeError):
        mirrored.append([{"event_id": "b"}, SWOLLEN])
    assert (mirrored.primary.last_seq(), mirrored.mirror.last_seq()) == (1, 1)
    assert mirrored.append([{"event_id": "c"}]) == 2
    assert mirrored.catch_up() == 0
    assert same(mirrored.primary, mirrored.mirror)


@pytest.mark.parametrize(
    "bad",
    [
        {"s": "\ud800"},
        {"x": float("nan")},
        {"x": float("-inf")},
        {"x": {1, 2}},
        {"x": b"bytes"},
        {1: "int key"},
        {"x": 2**64},
        {"_batch": 2},
        "not a mapping",
    ],
    ids=["lone-surrogate", "nan", "inf", "set", "bytes", "int-key", "int-too-big", "reserved-key", "str"],
)
def test_a_bad_value_stores_nothing_anywhere(mirrored: MirroredLog, bad: Any) -> None:
    """A value either side refuses raises before anything is stored on either, and the pair
    goes on appending, equal on both sides."""
    mirrored.append([{"event_id": "a"}])
    with pytest.raises(bus.InvalidRecordError):
        mirrored.append([{"event_id": "b"}, bad])
    assert (mirrored.primary.last_seq(), mirrored.mirror.last_seq()) == (1, 1)
    assert mirrored.append([{"event_id": "c"}]) == 2
    assert same(mirrored.primary, mirrored.mirror)


@pytest.fixture
def mirrored_run(redis_server: RedisServer, tmp_path: Path) -> tuple[str, str, Path]:
    """A real-Redis mirrored URL, a run holding 5 records on both sides, and its mirror file."""
    run_id = f"t-{uuid.uuid4().hex}"
    url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"
    with bus.open(url, run_id) as log:
        for i in range(5):
            log.append([{"event_id": f"e{i}"}])
    return url, run_id, tmp_path / "mirror" / f"{run_id}.jsonl"


def damage(path: Path, how: str) -> None:
    """Drop line 3, or replace it with garbage, or repeat line 2 at the end."""
    lines = path.read_text().splitlines(keepends=True)
    if how == "missing":
        del lines[2]
    elif how == "garbage":
        lines[2] = "garbage\n"
    else:
        lines.append(lines[1])
    path.write_text("".join(lines))


@pytest.mark.redis_server
@pytest.mark.parametrize("how", ["missing", "garbage", "repeated"])
def test_verify_repair_rebuilds_a_damaged_mirror_and_keeps_it_aside(
    mirrored_run: tuple[str, str, Path], how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mirror with a missing, garbage or repeated line fails the pair's open with a hint;
    verify reports it (exit 1, file untouched); --repair rebuilds it from the primary in one
    line, keeping the damaged file as <run>.jsonl.damaged-<timestamp>."""
    url, run_id, path = mirrored_run
    damage(path, how)
    damaged = path.read_bytes()
    if how != "garbage":  # a garbage middle line fails the read that reaches it, not the open
        with pytest.raises(bus.CorruptLogError, match="--repair"):
            bus.open(url, run_id)
    status, out, _ = cli(capsys, "verify", url, "--run", run_id)
    assert status == 1 and "--repair" in out
    assert path.read_bytes() == damaged
    status, out, _ = cli(capsys, "verify", url, "--run", run_id, "--repair")
    assert status == 0 and out.count("\n") == 1 and "damaged" in out
    (aside,) = path.parent.glob(f"{run_id}.jsonl.damaged-*")
    assert aside.read_bytes() == damaged
    assert cli(capsys, "verify", url, "--run", run_id)[0] == 0
    with bus.open(url, run_id) as log:
        assert log.append([{"event_id": "next"}]) == 6


@pytest.mark.redis_server
def test_verify_of_a_run_that_exists_nowhere_is_one_line_exit_2_and_creates_nothing(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No records in Redis and no mirror file: a typed one-line error, exit 2, no file made."""
    url = f"{redis_server.url}?mirror={tmp_path / 'mirror'}"
    status, out, err = cli(capsys, "verify", url, "--run", f"t-{uuid.uuid4().hex}")
    assert (status, out) == (2, "")
    assert "has no log" in one_line(err)
    assert not (tmp_path / "mirror").exists()


@pytest.mark.redis_server
def test_verify_without_repair_never_writes_the_mirror(
    mirrored_run: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """verify of a mirror with a torn tail leaves the file byte for byte as it was."""
    url, run_id, path = mirrored_run
    with path.open("ab") as f:
        f.write(b'{"seq":6,"ev')
    before = path.read_bytes()
    assert cli(capsys, "verify", url, "--run", run_id)[0] == 0
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
