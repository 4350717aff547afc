"""The state sets of seeds/004's agent service: DevCycle's predicates and the HF Space mapping.

The predicate sets are DevCycle's `AgentLifecycleManager` predicates member by member; they cut
across the spec's categories (operational leaves out STARTING, in-maintenance takes UPDATING
but not OFFLINE), so they are data here, not derived from categories.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lifecycle_es.specs import AgentState
from lifecycle_es.specs.task import TaskState

__all__ = [
    "AVAILABLE",
    "HF_SPACE_STATES",
    "IN_ERROR",
    "IN_MAINTENANCE",
    "OPERATIONAL",
    "AgentLifecycleState",
    "TaskState",
]

AgentLifecycleState = AgentState
"""DevCycle's name for the agent state enum (same members, same lowercase values)."""

_A = AgentState

OPERATIONAL = frozenset({_A.ONLINE.value, _A.BUSY.value, _A.IDLE.value})
"""DevCycle's `is_operational`: online, busy or idle."""
AVAILABLE = frozenset({_A.ONLINE.value, _A.IDLE.value})
"""DevCycle's `is_available_for_tasks`: online or idle."""
IN_ERROR = frozenset({_A.ERROR.value, _A.FAILED.value, _A.TIMEOUT.value})
"""DevCycle's `is_in_error_state`: error, failed or timeout."""
IN_MAINTENANCE = frozenset({_A.MAINTENANCE.value, _A.SUSPENDED.value, _A.UPDATING.value})
"""DevCycle's `is_in_maintenance`: maintenance, suspended or updating."""

HF_SPACE_STATES: Mapping[str, AgentState] = MappingProxyType(
    {
        "building": _A.DEPLOYING,
        "running": _A.ONLINE,
        "sleeping": _A.IDLE,
        "error": _A.ERROR,
        "paused": _A.SUSPENDED,
        "stopped": _A.OFFLINE,
    }
)
"""The Hugging Face Space status -> agent state mapping of seeds/004."""
