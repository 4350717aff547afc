"""Benchmark: the agent service's verbs per second on one Redis run with 1, 2 and 4 processes,
the retry rate of its optimistic appends, and a DevCycle-style in-memory manager as the peer.

Every process runs `tests/agents/_worker.py`: the same weighted random verbs (seeded by the
process number) on the same shared agents. The peer is written here after DevCycle's
`AgentLifecycleManager`/`AgentLifecycleService` (reference/seed-projects.md section 3): one
manager per agent holding its state and an in-memory history, the same verbs without the
sleeps, in one process; it runs process 0's verb sequence. Ours is also timed on an in-memory
log in one process, the like-for-like comparison with the peer.

Run: python tests/benchmarks/bench_agents.py [--verbs 1000] [--agents 50]
Uses LCES_REDIS_URL if set, else starts its own redis-server on a free port.
Targets (set here; issue 15 names none): 4 processes on Redis serve at least as many verbs/s
as 1; the retry rate at 4 processes stays under 1 retry per verb.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lifecycle_es import AgentLifecycleService  # noqa: E402
from lifecycle_es.agents import HF_SPACE_STATES  # noqa: E402
from tests.agents._devcycle import DEVCYCLE_TABLE, STATES  # noqa: E402
from tests.agents._worker import VERBS, agent_names, call  # noqa: E402
from tests.benchmarks.bench_append import redis_url  # noqa: E402


class PeerManager:
    """DevCycle's AgentLifecycleManager, in memory: a state, a valid-transition check, a history."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id, self.current_state = agent_id, "registered"
        self.state_history: list[dict[str, Any]] = []

    def can_transition_to(self, target: str) -> bool:
        return target in DEVCYCLE_TABLE[self.current_state]

    def transition_to(
        self, target: str, reason: str = "", triggered_by: str = "system", metadata: Any = None
    ) -> bool:
        if not self.can_transition_to(target):
            return False
        self.state_history.append(
            {
                "from_state": self.current_state,
                "to_state": target,
                "timestamp": datetime.now(UTC),
                "reason": reason,
                "metadata": metadata or {},
                "triggered_by": triggered_by,
            }
        )
        self.current_state = target
        return True


class PeerService:
    """DevCycle's AgentLifecycleService verbs over PeerManagers, without the sleeps."""

    def __init__(self, agents: list[str]) -> None:
        self.managers = {a: PeerManager(a) for a in agents}

    def run(self, verb: str, agent: str, rng: random.Random) -> bool:
        m = self.managers[agent]
        if verb == "transition_to":
            return m.transition_to(rng.choice(STATES))
        if verb == "sync_hf_space_status":
            target = HF_SPACE_STATES[rng.choice(sorted(HF_SPACE_STATES))].value
            return m.can_transition_to(target) and m.transition_to(target, triggered_by="hf_sync")
        if verb in ("assign_task", "complete_task", "resume_from_maintenance", "scale_agent"):
            needs, target = {
                "assign_task": ({"online", "idle"}, "busy"),
                "complete_task": ({"busy"}, "idle"),
                "resume_from_maintenance": ({"maintenance"}, "online"),
                "scale_agent": ({"scaling"}, "online"),
            }[verb]
            return m.current_state in needs and m.transition_to(target)
        hops = {
            "deploy_agent": ("deploying", "deployed"),
            "start_agent": ("starting", "online"),
            "stop_agent": ("stopping", "offline"),
            "update_agent": ("updating", "online"),
            "handle_error": ("error",),
            "put_in_maintenance": ("maintenance",),
            "suspend_agent": ("suspended",),
            "delete_agent": ("deleted",),
            "terminate_agent": ("stopping", "terminated")
            if m.current_state in ("online", "busy", "idle")
            else ("terminated",),
        }[verb]
        return all(m.transition_to(h) for h in hops)


def run_peer(verbs: int, agents: int) -> float:
    """Verbs/s of the peer on process 0's verb sequence."""
    rng, names, weights = random.Random(0), list(VERBS), list(VERBS.values())
    pool = agent_names(agents)
    peer = PeerService(pool)
    start = time.perf_counter()
    for _ in range(verbs):
        verb, agent = rng.choices(names, weights)[0], rng.choice(pool)
        peer.run(verb, agent, rng)
    return verbs / (time.perf_counter() - start)


def run_ours_in_memory(verbs: int, agents: int) -> float:
    """Verbs/s of our service on an in-memory log, one process, process 0's verb sequence."""
    service = AgentLifecycleService(run_id="bench-memory")
    pool = agent_names(agents)
    for name in pool:
        service.sync.register_agent(name)
    rng, names, weights = random.Random(0), list(VERBS), list(VERBS.values())
    start = time.perf_counter()
    for n in range(verbs):
        verb, agent = rng.choices(names, weights)[0], rng.choice(pool)
        call(service.sync, rng, verb, agent, f"p0-{n}")
    return verbs / (time.perf_counter() - start)


def run_processes(url: str, processes: int, verbs: int, agents: int, tmp: Path) -> dict[str, float]:
    """Run `processes` workers on one fresh Redis run; return verbs/s overall and the retry rate."""
    run = f"bench-agents-{uuid.uuid4().hex[:12]}"
    service = AgentLifecycleService(url, run_id=run)
    for name in agent_names(agents):
        service.sync.register_agent(name)
    service.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [tmp / f"{run}-{i}.json" for i in range(processes)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.agents._worker",
                url,
                run,
                str(i),
                str(verbs),
                str(agents),
                str(out),
            ],
            cwd=ROOT,
            env=env,
        )
        for i, out in enumerate(outs)
    ]
    if [w.wait() for w in workers] != [0] * processes:
        sys.exit("a worker failed")
    reports = [json.loads(out.read_text()) for out in outs]
    seconds = max(r["seconds"] for r in reports)  # the workers run side by side; the slowest bounds them
    retries, attempts = sum(r["retries"] for r in reports), sum(r["attempts"] for r in reports)
    return {"verbs_s": processes * verbs / seconds, "retries_per_verb": retries / (attempts - retries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbs", type=int, default=1000, help="verbs per process")
    parser.add_argument("--agents", type=int, default=50, help="agents shared by the processes")
    args = parser.parse_args()
    peer = run_peer(args.verbs, args.agents)
    memory = run_ours_in_memory(args.verbs, args.agents)
    with redis_url() as url, tempfile.TemporaryDirectory() as directory:
        redis = {n: run_processes(url, n, args.verbs, args.agents, Path(directory)) for n in (1, 2, 4)}
    print(f"agent service benchmark: {args.verbs} random verbs per process on {args.agents} shared agents")
    print(f"{'scenario':<52} {'verbs/s':>10} {'retries/verb':>13}")
    for n, r in redis.items():
        print(f"{f'ours, Redis, {n} process(es)':<52} {r['verbs_s']:>10,.0f} {r['retries_per_verb']:>13.3f}")
    print(f"{'ours, in-memory log, 1 process':<52} {memory:>10,.0f}")
    print(f"{'peer: DevCycle-style in-memory manager, 1 process':<52} {peer:>10,.0f}")
    print()
    print(f"{'ratio':<52} {'value':>10} target")
    print(f"{'ours Redis 1 process / peer':<52} {redis[1]['verbs_s'] / peer:>10.4f} (none)")
    print(f"{'ours in-memory / peer':<52} {memory / peer:>10.4f} (none)")
    scale = redis[4]["verbs_s"] / redis[1]["verbs_s"]
    verdict = "met" if scale >= 1 else "NOT met"
    print(f"{'ours Redis 4 processes / 1 process':<52} {scale:>10.2f} >= 1: {verdict}")
    rate = redis[4]["retries_per_verb"]
    print(f"{'retries per verb, 4 processes':<52} {rate:>10.3f} < 1: {'met' if rate < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
