"""The README's quickstart is code this test executes, so the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_quickstart_runs(capsys: object) -> None:
    """Every python block of the README runs as written, and the quickstart prints the refusal."""
    blocks = _python_blocks(README.read_text())
    assert blocks, "the README has no python quickstart"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "Insufficient time in TRAINING: 49 < 100 epochs" in out
    assert "reconstruction loss 0.2 > 0.01" in out
    assert "slot is embargoed until step 220" in out  # the seed controllers' section


def test_readme_names_both_commands() -> None:
    """The README gives the main-job command and the test command a new user runs."""
    text = README.read_text()
    assert "lifecycle-es " in text and "bash .ci/run" in text
