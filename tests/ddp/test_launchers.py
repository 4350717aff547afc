"""The entry points: torchrun runs the demo command as its ranks; the collectives on real ranks."""

from __future__ import annotations

import re
from pathlib import Path

from tests.ddp._harness import run_cli, run_workers


def test_the_demo_command_runs_under_torchrun(tmp_path: Path) -> None:
    """`torchrun -m replay.cli -- demo` makes torchrun's two processes the ranks of one run."""
    done = run_cli(["--standalone", "--nproc-per-node", "2", "-m", "replay.cli", "--", "demo",
                    "--steps", "100", "--log", f"jsonl://{tmp_path / 'runs'}", "--run", "tr", "--quiet"],
                   tmp_path, module=("-m", "torch.distributed.run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"ranks:     2, every rank ended with digest [0-9a-f]{16}", done.stdout)
    assert (tmp_path / "runs" / "tr.jsonl").is_file()


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
