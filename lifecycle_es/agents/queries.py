"""The service's read side: per-agent state info, the named queries and the lifecycle metrics.

Every answer is read from a `Registry` (the fold of the run's log), so a service that folded the
same log answers the same, after a restart or in another process. Wall-clock ages are the one
exception: `time_in_state` is measured from a recorded timestamp to now.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lifecycle_es.agents.states import AVAILABLE, IN_ERROR, IN_MAINTENANCE, OPERATIONAL
from lifecycle_es.errors import UsageError
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs import AGENT_SPEC

__all__ = [
    "REGISTERED_AT",
    "agent_ids",
    "agent_state",
    "agents",
    "lifecycle_metrics",
    "select",
    "state_info",
    "status",
]

REGISTERED_AT = "registered_at"
"""The attr a service records at registration: wall time, seconds since the epoch."""


def agents(registry: Registry) -> Iterator[EntityState]:
    """Iterate over the run's agents, in registration order."""
    return (e for e in registry if e.spec == AGENT_SPEC.name)


def agent_ids(registry: Registry) -> list[str]:
    """Return the ids of every agent of the run, in registration order."""
    return [e.entity for e in agents(registry)]


def agent_state(registry: Registry, agent_id: str) -> EntityState:
    """Return an agent, or raise `UnknownEntityError`; an entity of another spec is a `UsageError`."""
    e = registry.get(agent_id)
    if e.spec != AGENT_SPEC.name:
        raise UsageError(f"{agent_id!r} is a {e.spec}, not an agent")
    return e


def select(registry: Registry, states: frozenset[str]) -> list[str]:
    """Return the ids of the agents in any of `states`, in registration order."""
    return [e.entity for e in agents(registry) if e.state in states]


def state_info(registry: Registry, agent_id: str, *, now: float | None = None) -> dict[str, Any]:
    """DevCycle's `get_current_state_info`, plus time in state and the kept history."""
    e = agent_state(registry, agent_id)
    last = None if e.last_transition is None else {**e.last_transition, "ts": e.entered_ts}
    since = e.attrs.get(REGISTERED_AT) if e.entered_ts is None else e.entered_ts
    return {
        "agent_id": agent_id,
        "current_state": e.state,
        "valid_transitions": sorted(t.target for t in AGENT_SPEC.exits(e.state)),
        "state_history_count": e.transitions,
        "last_transition": last,
        "time_in_state": None if since is None else max(0.0, (time.time() if now is None else now) - since),
        "history": [{"step": s, "from_state": a, "to_state": b} for s, a, b in e.history],
    }


def status(registry: Registry, agent_id: str) -> dict[str, Any]:
    """One agent's status: its state, DevCycle's four predicates, and its counters."""
    e = agent_state(registry, agent_id)
    return {
        "agent_id": agent_id,
        "current_state": e.state,
        "is_operational": e.state in OPERATIONAL,
        "is_available_for_tasks": e.state in AVAILABLE,
        "is_in_error_state": e.state in IN_ERROR,
        "is_in_maintenance": e.state in IN_MAINTENANCE,
        "transitions": e.transitions,
        "rejections": e.rejections,
        "last_transition": None if e.last_transition is None else dict(e.last_transition),
    }


def lifecycle_metrics(registry: Registry) -> dict[str, Any]:
    """seeds/004's `get_lifecycle_metrics`: totals per predicate and the state distribution."""
    states = Counter(e.state for e in agents(registry))

    def total(wanted: frozenset[str]) -> int:
        return sum(n for state, n in states.items() if state in wanted)

    return {
        "total_agents": sum(states.values()),
        "operational_agents": total(OPERATIONAL),
        "available_agents": total(AVAILABLE),
        "error_agents": total(IN_ERROR),
        "maintenance_agents": total(IN_MAINTENANCE),
        "state_distribution": dict(sorted(states.items())),
    }
