"""bus.open URLs, run id validation, and the public surface of the package."""

from __future__ import annotations

import os
from pathlib import Path

import fakeredis
import pytest

import bus
from bus import InvalidRunIdError, InvalidUrlError, JsonlLog, MemoryLog, RedisLog


def test_all_is_sorted_and_complete() -> None:
    """bus re-exports its API under a sorted __all__."""
    # isort style (ruff RUF022): CONSTANTS, then Classes, then functions, each alphabetical
    assert bus.__all__ == sorted(bus.__all__, key=lambda n: (not n.isupper(), n.islower(), n))
    for name in ("Log", "MemoryLog", "JsonlLog", "RedisLog", "MirroredLog", "open", "verify",
                 "VerifyReport", "validate_run_id", "BusError", "ConcurrencyError",
                 "BusUnavailableError", "CorruptLogError", "InvalidRunIdError",
                 "RecordTooLargeError", "FollowTimeoutError", "log_url"):  # fmt: skip
        assert name in bus.__all__


def test_errors_mix_in_the_builtins_they_are() -> None:
    """Callers can catch bus errors as the builtin they resemble."""
    assert issubclass(bus.BusUnavailableError, ConnectionError)
    assert issubclass(bus.CorruptLogError, ValueError)
    assert issubclass(bus.InvalidRunIdError, ValueError)
    assert issubclass(bus.InvalidArgumentError, ValueError)
    assert issubclass(bus.RecordTooLargeError, ValueError)
    assert issubclass(bus.FollowTimeoutError, TimeoutError)
    assert all(issubclass(getattr(bus, n), bus.BusError) for n in bus.__all__ if n.endswith("Error"))


def test_memory_url_gives_a_fresh_log_each_time() -> None:
    """memory:// logs are private to each open: no hidden process-wide registry."""
    one, two = bus.open("memory://", "r"), bus.open("memory://", "r")
    assert isinstance(one, MemoryLog)
    one.append([{"event_id": "a"}])
    assert two.last_seq() == 0


def test_jsonl_url_with_relative_dir_and_options(tmp_path: Path) -> None:
    """jsonl://DIR accepts relative paths and fsync/lenient options in the query."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with bus.open("jsonl://./runs?fsync=always&lenient=1", "r") as log:
            assert isinstance(log, JsonlLog)
            assert (log.fsync, log.lenient) == ("always", True)
            log.append([{"event_id": "a"}])
        assert (tmp_path / "runs" / "r.jsonl").exists()
    finally:
        os.chdir(cwd)


def test_default_url_is_jsonl_runs() -> None:
    """The embedded default needs no server."""
    assert bus.DEFAULT_URL == "jsonl://./runs"


@pytest.mark.parametrize(
    "url", ["nats://x", "runs", "", "jsonl://", "jsonl://d?color=red", "redis://h?mirror="]
)
def test_bad_urls_raise_invalid_url(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown scheme or option, or a bare path that is no directory, is a one-sentence
    InvalidUrlError (a ValueError)."""
    monkeypatch.chdir(tmp_path)  # no ./runs here, whatever the repository holds
    with pytest.raises(InvalidUrlError) as info:
        bus.open(url, "r")
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("form", ["relative", "dot-relative", "absolute"])
def test_a_bare_directory_is_a_jsonl_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """An existing directory without a scheme (runs, ./runs, /abs/runs) opens as jsonl://PATH."""
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    location = {"relative": "runs", "dot-relative": "./runs", "absolute": str(tmp_path / "runs")}[form]
    assert bus.log_url(location) == f"jsonl://{location}"
    with bus.open(location, "r") as log:
        assert isinstance(log, JsonlLog)
        log.append([{"event_id": "a"}])
    with bus.open(location, "r", create=False) as log:
        assert log.last_seq() == 1
    assert (tmp_path / "runs" / "r.jsonl").is_file()


@pytest.mark.parametrize("make", ["file", "missing"])
def test_a_bare_path_that_is_no_directory_is_refused_and_creates_nothing(tmp_path: Path, make: str) -> None:
    """A scheme-less path to a file or to nothing is an InvalidUrlError naming it; nothing is made."""
    target = tmp_path / "runs"
    if make == "file":
        target.write_text("not a log")
    with pytest.raises(InvalidUrlError, match="nor an existing directory") as info:
        bus.open(str(target), "r")
    assert str(target) in str(info.value)
    assert target.exists() == (make == "file") and not (tmp_path / "r.jsonl").exists()


def test_a_password_in_a_mistyped_url_is_not_echoed() -> None:
    """A URL missing its '//' is refused without printing the password it carries."""
    with pytest.raises(InvalidUrlError) as info:
        bus.open("redis:user:s3cret@host:6379", "r")
    assert "s3cret" not in str(info.value)


def test_urls_pass_through_log_url_unchanged() -> None:
    """A location with a scheme is left to the URL rules as it is."""
    for url in ("memory://", "jsonl://./runs?fsync=never", "redis://:pw@h:1/0?mirror=m"):
        assert bus.log_url(url) == url


BAD_RUN_IDS = ["", "../x", "..", ".", "a/b", "a b", "a\x00b", "x" * 129, "-lead", "_lead", "é"]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_invalid_run_ids_are_rejected_before_any_path_or_key(tmp_path: Path, run_id: str) -> None:
    """Every backend refuses a bad run id before it creates a file or touches a key."""
    client = fakeredis.FakeRedis()
    for attempt in (
        lambda: bus.validate_run_id(run_id),
        lambda: JsonlLog(tmp_path / "runs", run_id),
        lambda: bus.open(f"jsonl://{tmp_path}/runs", run_id),
        lambda: MemoryLog(run_id),
        lambda: RedisLog.from_client(client, run_id),
        lambda: bus.open("redis://127.0.0.1:1", run_id),
    ):
        with pytest.raises(InvalidRunIdError):
            attempt()
    assert not (tmp_path / "runs").exists()
    assert client.keys() == []


@pytest.mark.parametrize("run_id", ["a", "A-1_b.c", "a..b", "x" * 128, "0"])
def test_valid_run_ids_pass(run_id: str) -> None:
    """Letters, digits, '_', '.', '-' after an alphanumeric first character, up to 128."""
    assert bus.validate_run_id(run_id) == run_id


def test_non_string_run_id_is_rejected() -> None:
    """A run id must be a str."""
    with pytest.raises(InvalidRunIdError):
        bus.validate_run_id(42)
