"""A small training loop under `PreemptionGuard`, run as a child process by the guard's tests.

Usage: python _guarded_loop.py DIR [hold]. The run's log is DIR/guarded.jsonl; the loop touches
DIR/ready once it is guarded; with `hold` the save touches DIR/saving and waits for DIR/release,
so a test can signal it mid-save. The process exits with the guard's exit code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bus import JsonlLog
from lifecycle_es import Lifecycle
from projections.training import PreemptionGuard


def main(directory: Path, hold: bool) -> int:
    """Train until the guard stops the run; return the exit code it gives."""

    def save(step: int) -> Path:
        if hold:
            (directory / "saving").touch()
            while not (directory / "release").exists():
                time.sleep(0.01)
        path = directory / f"checkpoint-{step}.json"
        path.write_text(json.dumps({"step": step, "weights": list(range(1000))}))
        return path

    log = JsonlLog(directory, "guarded", fsync="always")
    lc = Lifecycle(log)
    lc.start()
    with PreemptionGuard(lc, save=save) as guard:
        step = 0
        while not guard.should_stop(step):
            step += 1
            if step == 3:
                (directory / "ready").touch()
            time.sleep(0.01)
    log.close()
    return guard.exit_code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), hold=sys.argv[2:] == ["hold"]))
