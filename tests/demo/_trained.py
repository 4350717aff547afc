"""Demo runs for the demo tests: trained on a JSONL log, returned with their records.

A run is emergent (the expert coordinator decides on the metrics training produces, which
differ between CPUs) or scheduled (`tests._expert_actions.SeededDecider` decides: all four
actions at fixed steps, on any machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bus
from replay.demo import DemoOptions, DemoRun
from tests._expert_actions import install

SHORT_STEPS = 2000
RUN_ID = "demo-test"
SCHEDULED_STEPS = 200
EVERY = 20
"""A scheduled run decides at steps 20, 40, ...: SPLIT, PRUNE, MERGE, SPAWN, SPLIT, ..."""


@dataclass(frozen=True)
class Trained:
    """A finished demo run: its options, the live run, and its log's records."""

    options: DemoOptions
    demo: DemoRun
    records: list[dict[str, Any]]
    url: str


def train(directory: Path, options: DemoOptions, run_id: str = RUN_ID, *, scheduled: bool = False) -> Trained:
    """Train a demo run with its log in a JSONL directory; return it with its records."""
    url = f"jsonl://{directory}"
    with bus.open(url, run_id) as log:
        demo = DemoRun(options, log)
        if scheduled:
            install(demo, every=EVERY)
        demo.run()
        records = log.read()
    return Trained(options, demo, records, url)
