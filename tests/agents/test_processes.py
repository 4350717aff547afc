"""Several agent-service processes on one Redis run: no lost update, no duplicate, no stale move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from bus.testing import RedisServer
from lifecycle_es import BUILTIN_SPECS, AgentLifecycleService
from lifecycle_es.registry import Registry, fold_record
from tests.agents._worker import agent_names

ROOT = Path(__file__).resolve().parents[2]
PROCESSES, VERBS, AGENTS = 4, 1000, 50


def run_workers(
    url: str, run: str, tmp: Path, processes: int, verbs: int, agents: int
) -> list[dict[str, Any]]:
    """Register the agents, then run `processes` worker processes at once; return their reports."""
    service = AgentLifecycleService(url, run_id=run)
    for name in agent_names(agents):
        assert service.sync.register_agent(name)
    service.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [tmp / f"worker-{i}.json" for i in range(processes)]
    args = [url, run, "", str(verbs), str(agents), ""]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.agents._worker", *args[:2], str(i), *args[3:5], str(out)],
            cwd=ROOT,
            env=env,
        )
        for i, out in enumerate(outs)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0] * processes
    return [json.loads(out.read_text()) for out in outs]


def fold_upto(records: list[dict[str, Any]], seq: int) -> Registry:
    """A fresh registry folded from the log's records up to `seq`."""
    registry = Registry(BUILTIN_SPECS)
    for record in records[:seq]:
        fold_record(registry, record)
    return registry


def by_op(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The log's transition records grouped by the op id their metadata carries."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        op = (r.get("metadata") or {}).get("op")
        if op is not None:
            found[op].append(r)
    return found


@pytest.mark.slow
@pytest.mark.redis_server
def test_four_processes_of_random_verbs_keep_one_consistent_log(
    redis_server: RedisServer, run_id: str, tmp_path: Path
) -> None:
    """4 processes x 1000 random verbs on 50 agents: every registry equals the log's fold, every
    acknowledged verb is on the log once (refusals once too), and every move is a spec edge."""
    reports = run_workers(redis_server.url, run_id, tmp_path, PROCESSES, VERBS, AGENTS)
    reader = AgentLifecycleService(redis_server.url, run_id=run_id)  # folds the whole log, strictly
    folded, records = reader.lifecycle.registry, reader.lifecycle.log.read()
    for report in reports:  # each worker's registry is the fold of the log up to its last seq
        mine = Registry.from_state(BUILTIN_SPECS, report["registry"])
        assert mine == fold_upto(records, mine.seq)
    assert fold_upto(records, len(records)) == folded
    grouped = by_op(records)
    results = [r for report in reports for r in report["results"]]
    assert set(grouped) <= {op for op, *_ in results}  # nothing on the log that no caller was told of
    for op, verb, _, ok in results:
        kinds = [r["kind"] for r in grouped.get(op, [])]
        if not ok:
            assert kinds == ["TransitionRejected"], (op, verb, kinds)
            continue
        assert set(kinds) <= {"TransitionApplied"} and (kinds or verb == "sync_hf_space_status"), (op, verb)
        seqs = [r["seq"] for r in grouped.get(op, [])]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, (op, seqs)
    for r in records:
        if r["kind"] == "TransitionApplied":
            spec = BUILTIN_SPECS[folded.get(r["entity"]).spec]
            assert spec.edge(r["from_state"], r["to_state"]) is not None, r
    running = {e.parent for e in folded if e.spec == "task" and e.state == "running"}
    assert running <= {e.entity for e in folded if e.spec == "agent" and e.state == "busy"}
    assert all(report["attempts"] == VERBS + report["retries"] for report in reports)
    reader.close()
