"""The entry points: torchrun runs the demo as its ranks, bad rank options are refused, collectives work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests._cli import one_line
from tests._cli import run_cli as run_in_process
from tests.ddp._harness import of_kind, read_log, run_cli, run_workers


def test_the_demo_command_runs_under_torchrun(tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m replay.cli -- demo` makes torchrun's processes one run's ranks.

    The `--` is needed: without it torchrun's own parser reads `--log` as an abbreviation of its
    `--log-dir` and refuses the command line as ambiguous.
    """
    url = f"jsonl://{tmp_path / 'runs'}"
    done = run_cli(
        [
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "replay.cli",
            "--",
            "demo",
            "--steps",
            "100",
            "--log",
            url,
            "--run",
            "tr",
            "--quiet",
        ],
        tmp_path,
        module=("-m", "torch.distributed.run"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    agreed = re.findall(
        r"^ranks:     2, every rank ended with digest ([0-9a-f]{16})$", done.stdout, re.MULTILINE
    )
    assert len(agreed) == 1
    finished = re.findall(r"rank (\d): finished step 100 with digest ([0-9a-f]{16})", done.stderr)
    assert sorted(finished) == [("0", agreed[0]), ("1", agreed[0])]
    records = read_log(url, "tr")
    assert [r["world_size"] for r in of_kind(records, "RunStarted")] == [2]
    final = of_kind(records, "ActionsVerified")[-1]
    assert (final["step"], final["digest"], final["world_size"]) == (100, agreed[0], 2)


def test_collectives_sum_compare_gather_and_broadcast_on_two_ranks(tmp_path: Path) -> None:
    """Sums cover every dtype, digest ranges and gathers hold above 2**63, a broadcast equalises state."""
    finished = run_workers(["collectives"], 2, tmp_path)
    reports = [f.report for f in finished]
    for report in reports:
        summed = report["summed"]
        assert summed["float32"]["values"] == [[3.0] * 3] * 2
        assert summed["float64"]["values"] == [1.5]
        assert summed["int64"]["values"] == [0, 3, 6, 9]
        assert summed["int32"] == {"dtype": "torch.int32", "values": [[1, 10]]}
        assert summed["float32_b"]["values"] == [1.5]
        assert report["ranges"]["low"] == ["0000000000000001", "0000000000000002"]
        assert report["ranges"]["high"] == ["fffffffffffffffe", "ffffffffffffffff"]
        # Ordered as signed int64: only equality matters, and 0x8000... is the smallest.
        assert report["ranges"]["mixed"] == ["8000000000000000", "7fffffffffffffff"]
        assert report["ranges"]["equal"] == ["8000000000000001"] * 2
        assert report["gathered"]["high"] == ["ffffffffffffffff", "fffffffffffffffe"]
    before = [r["broadcast"]["before"] for r in reports]
    after = [r["broadcast"]["after"] for r in reports]
    assert before[0] != before[1]
    assert after[0] == after[1] == before[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ranks", "0"], "--ranks must be >= 1"),
        (["--max-restarts", "-1"], "--max-restarts and --checkpoint-every >= 0"),
        (["--checkpoint-every", "15"], "--checkpoint-every must be a multiple of 10"),
        (["--sync-timeout", "0"], "--sync-timeout must be a number of seconds > 0"),
        (["--sync-timeout", "inf"], "--sync-timeout must be a number of seconds > 0"),
        (["--baseline", "--ranks", "2"], "--baseline runs in one process"),
    ],
)
def test_bad_rank_options_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad multi-rank options are refused before any rank starts: one line on stderr, exit status 2."""
    status, out, err = run_in_process(capsys, "demo", "--log", f"jsonl://{tmp_path}", "--quiet", *argv)
    assert (status, out) == (2, "")
    assert one_line(err).startswith("lifecycle-es demo: ") and message in err
    assert not list(tmp_path.iterdir())  # nothing was started or written
