"""Two gloo ranks running the seed layer under LifecycleSync end with identical digests, both strategies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ddp._harness import Ranks


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_two_ranks_fold_the_same_seed_lifecycle_into_identical_models(strategy: str, tmp_path: Path) -> None:
    """Every boundary's digest check passes and both ranks end with the same digest, rows and modes."""
    url = f"jsonl://{tmp_path / 'runs'}"
    args = ["-m", "tests.seeds._ranks", url, f"seeds-{strategy}", strategy, str(tmp_path / "ckpt")]
    finished = Ranks(args, 2, tmp_path / "out").wait()
    assert [f.returncode for f in finished] == [0, 0], finished[0].stderr[-3000:] + finished[1].stderr[-3000:]
    a, b = (f.report for f in finished)
    assert a["digest"] == b["digest"]
    assert a["verified"] == b["verified"] and None not in a["verified"]
    assert a["modes"] == b["modes"] == [5, 0, 0, 0]
    assert a["rows"] == b["rows"]
