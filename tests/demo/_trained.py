"""Demo runs for the demo tests: trained on a JSONL log, returned with their records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bus
from replay.demo import DemoOptions, DemoRun

SHORT_STEPS = 2000
RUN_ID = "demo-test"


@dataclass(frozen=True)
class Trained:
    """A finished demo run: its options, the live run, and its log's records."""

    options: DemoOptions
    demo: DemoRun
    records: list[dict[str, Any]]
    url: str


def train(directory: Path, options: DemoOptions, run_id: str = RUN_ID) -> Trained:
    """Train a demo run with its log in a JSONL directory; return it with its records."""
    url = f"jsonl://{directory}"
    with bus.open(url, run_id) as log:
        demo = DemoRun(options, log)
        demo.run()
        records = log.read()
    return Trained(options, demo, records, url)
