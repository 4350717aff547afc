"""One agent-service process of the concurrency test and the benchmark: random verbs on shared agents.

Run as `python -m tests.agents._worker URL RUN SEED VERBS AGENTS OUT`; it writes to OUT a JSON
object: `results` ([op id, verb, agent, returned bool] per verb, in call order), `registry`
(its registry after a last catch-up, `Registry.to_state()`), `attempts`, `retries` and
`seconds` (the wall time of the verbs alone).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from lifecycle_es import AgentLifecycleService, AgentServiceConfig, SyncAgentLifecycleService
from lifecycle_es.agents import HF_SPACE_STATES
from tests.agents._devcycle import STATES

VERBS: dict[str, int] = {
    "deploy_agent": 10,
    "start_agent": 10,
    "assign_task": 12,
    "complete_task": 12,
    "stop_agent": 5,
    "handle_error": 5,
    "put_in_maintenance": 4,
    "resume_from_maintenance": 6,
    "suspend_agent": 3,
    "update_agent": 4,
    "scale_agent": 1,
    "terminate_agent": 1,
    "delete_agent": 1,
    "transition_to": 15,
    "sync_hf_space_status": 10,
}
"""Each verb's weight in the random draw: ends (terminate, delete) are rare so agents stay in play."""


def agent_names(count: int) -> list[str]:
    """The shared agents' ids."""
    return [f"agent-{i:03d}" for i in range(count)]


def call(sync: SyncAgentLifecycleService, rng: random.Random, verb: str, agent: str, op: str) -> bool:
    """Call one verb with `{"op": op}` as its metadata, drawing its argument where it takes one."""
    meta = {"op": op}
    if verb == "transition_to":
        return sync.get_manager(agent).transition_to(rng.choice(STATES), reason="random", metadata=meta)
    if verb == "sync_hf_space_status":
        return sync.sync_hf_space_status(agent, rng.choice(sorted(HF_SPACE_STATES)), metadata=meta)
    if verb == "handle_error":
        return sync.handle_error(agent, "random error", metadata=meta)
    result: bool = getattr(sync, verb)(agent, metadata=meta)
    return result


def main(url: str, run: str, seed: int, verbs: int, agents: int, out: str) -> None:
    """Issue `verbs` random verbs on the run's agents and write what happened to `out`."""
    service = AgentLifecycleService(url, run_id=run, config=AgentServiceConfig(triggered_by=f"p{seed}"))
    rng = random.Random(seed)
    names, weights = list(VERBS), list(VERBS.values())
    pool = agent_names(agents)
    results: list[list[Any]] = []
    start = time.perf_counter()
    for n in range(verbs):
        verb, agent, op = rng.choices(names, weights)[0], rng.choice(pool), f"p{seed}-{n}"
        results.append([op, verb, agent, call(service.sync, rng, verb, agent, op)])
    seconds = time.perf_counter() - start
    service.lifecycle.catch_up()
    report = {
        "results": results,
        "registry": service.lifecycle.registry.to_state(),
        "attempts": service.attempts,
        "retries": service.retries,
        "seconds": seconds,
    }
    with open(out, "w") as f:
        json.dump(report, f)
    service.close()


if __name__ == "__main__":
    url, run, seed, verbs, agents, out = sys.argv[1:]
    main(url, run, int(seed), int(verbs), int(agents), out)
