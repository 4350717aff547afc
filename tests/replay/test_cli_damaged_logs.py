"""The reading commands on damaged or missing runs: they never create or change a file, and
every damage is one line on stderr with a non-zero exit (lenient tail and export skip it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bus
from lifecycle_es import Lifecycle
from tests._cli import one_line
from tests._cli import run_cli as cli

READERS = [["replay"], ["tail"], ["export-decisions"], ["report"], ["metrics"], ["what-if"]]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each command in tmp_path, where `report` writes its default report.html."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def run(tmp_path: Path, run_id: str) -> tuple[Path, Path]:
    """A short real run in a JSONL directory: (directory, the run's file)."""
    directory = tmp_path / "runs"
    with bus.open(f"jsonl://{directory}", run_id) as log:
        lc = Lifecycle(log)
        lc.start()
        lc.seal(1)
        lc.seal(2)
    return directory, directory / f"{run_id}.jsonl"


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_reader_leaves_a_torn_tail_as_it_found_it(
    capsys: pytest.CaptureFixture[str], run: tuple[Path, Path], run_id: str, argv: list[str]
) -> None:
    """A torn last line (a writer died mid-write) is ignored by every reading command and
    left in place: no byte of the file changes and no .corrupt file appears."""
    directory, path = run
    with path.open("ab") as f:
        f.write(b'{"seq":99,"kind":"StepSea')
    before = files(directory)
    cli(capsys, *argv, str(directory), "--run", run_id)
    assert files(directory) == before


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_missing_run_is_one_line_exit_2_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    """A run with no log (in a directory that does not exist either) is a typed one-line
    error with exit 2, and no directory or file is created."""
    status, out, err = cli(capsys, *argv, f"jsonl://{tmp_path / 'nowhere'}", "--run", "absent")
    assert (status, out) == (2, "")
    assert "has no log" in one_line(err)
    assert list(tmp_path.iterdir()) == []  # no directory, no file, no report.html


MISSHAPEN = {
    "str step": {"kind": "StepSealed", "step": "3"},
    "list metrics": {"kind": "MetricsObserved", "step": 2, "entity": "x", "metrics": [1, 2]},
    "list attrs": {
        "kind": "EntityRegistered",
        "entity": "x",
        "spec": "kasmina",
        "state": "DORMANT",
        "attrs": [1],
    },
    "list kind": {"kind": ["StepSealed"], "step": 2},
}
BAD_LINES = {
    "deep nesting": b'{"seq":%d,"kind":"StepSealed","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "NaN": b'{"seq":%d,"kind":"StepSealed","step":2,"x":NaN}',
    "Infinity": b'{"seq":%d,"kind":"StepSealed","step":2,"x":Infinity}',
}


def damage(path: Path, run_id: str, name: str) -> None:
    """Append the damaged record `name`, then one good record after it."""
    seq = path.read_bytes().count(b"\n") + 1
    if name in MISSHAPEN:
        line = json.dumps({"seq": seq, "run_id": run_id, **MISSHAPEN[name]}).encode()
    else:
        line = BAD_LINES[name] % seq
    after = json.dumps({"seq": seq + 1, "kind": "StepSealed", "step": 3, "run_id": run_id}).encode()
    with path.open("ab") as f:
        f.write(line + b"\n" + after + b"\n")


@pytest.mark.parametrize("name", [*MISSHAPEN, *BAD_LINES])
@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_damaged_record_is_one_line_and_a_non_zero_exit(
    capsys: pytest.CaptureFixture[str], run: tuple[Path, Path], run_id: str, argv: list[str], name: str
) -> None:
    """A record with a wrongly typed field, a too deeply nested line or a NaN/Infinity token
    is a typed one-line error (SchemaError or CorruptLogError), never a traceback."""
    directory, path = run
    damage(path, run_id, name)
    status, _, err = cli(capsys, *argv, str(directory), "--run", run_id)
    assert status != 0
    line = one_line(err)
    assert "must be a" in line or "unknown kind" in line or "not valid JSON" in line


@pytest.mark.parametrize("name", [*MISSHAPEN, *BAD_LINES])
def test_lenient_export_skips_and_counts_a_damaged_record(
    capsys: pytest.CaptureFixture[str], run: tuple[Path, Path], run_id: str, name: str
) -> None:
    """export-decisions --lenient skips the damaged record, goes on, and says it skipped one."""
    directory, path = run
    damage(path, run_id, name)
    status, _, err = cli(capsys, "export-decisions", str(directory), "--run", run_id, "--lenient")
    assert status == 0
    assert "skipped 1" in one_line(err)


@pytest.mark.parametrize("name", [*MISSHAPEN, *BAD_LINES])
def test_lenient_tail_skips_a_damaged_record_and_shows_the_next(
    capsys: pytest.CaptureFixture[str], run: tuple[Path, Path], run_id: str, name: str
) -> None:
    """tail --lenient shows every record but the damaged one, the one after it included."""
    directory, path = run
    damage(path, run_id, name)
    status, out, _ = cli(capsys, "tail", str(directory), "--run", run_id, "--lenient", "--format", "json")
    assert status == 0
    shown = [json.loads(line)["seq"] for line in out.splitlines()]
    last = path.read_bytes().count(b"\n")
    assert shown == [*range(1, last - 1), last]
