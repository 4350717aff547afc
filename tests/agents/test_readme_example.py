"""The README's agent service section runs seeds/004's usage example and prints what the seed implies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_runs_the_seeds_example(capsys: pytest.CaptureFixture[str]) -> None:
    """It refuses the second complete_task, finds the agent in error, and ends online before stopping."""
    [block] = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL) if "uuid4" in b]
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "False",
        "Current state: maintenance",
        "Valid transitions: ['offline', 'online', 'suspended']",
    ]
    assert "True" in lines and "{'online': 1}" in lines
    assert lines[-2:] == [
        "Event: post_transition, online -> stopping",
        "Event: post_transition, stopping -> offline",
    ]
