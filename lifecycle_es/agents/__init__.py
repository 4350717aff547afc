"""seeds/004's agent lifecycle service on the event log (DESIGN.md section 7c).

`AgentLifecycleService` (async, DevCycle's verbs) and its `.sync` view, per-agent managers,
the queries and metrics, task entities, the HF Space mapping, and optimistic appends so that
several service processes can share one run.
"""

from __future__ import annotations

from lifecycle_es.agents.manager import AgentLifecycleManager
from lifecycle_es.agents.routes import ROUTES, Verb, hf_path
from lifecycle_es.agents.service import AgentId, AgentLifecycleService, SyncAgentLifecycleService
from lifecycle_es.agents.states import (
    AVAILABLE,
    HF_SPACE_STATES,
    IN_ERROR,
    IN_MAINTENANCE,
    OPERATIONAL,
    AgentLifecycleState,
    TaskState,
)
from lifecycle_es.agents.writer import AgentConflictError, AgentServiceConfig, TaskEnd

__all__ = [
    "AVAILABLE",
    "HF_SPACE_STATES",
    "IN_ERROR",
    "IN_MAINTENANCE",
    "OPERATIONAL",
    "ROUTES",
    "AgentConflictError",
    "AgentId",
    "AgentLifecycleManager",
    "AgentLifecycleService",
    "AgentLifecycleState",
    "AgentServiceConfig",
    "SyncAgentLifecycleService",
    "TaskEnd",
    "TaskState",
    "Verb",
    "hf_path",
]
