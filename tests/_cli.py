"""Running `lifecycle-es` in the test process, shared by the command-line tests."""

from __future__ import annotations

import pytest

from replay.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `lifecycle-es ARGV` in this process; return the exit status, stdout and stderr."""
    try:
        status = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str) -> str:
    """Assert stderr is exactly one line (no traceback) and return it."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err
