"""DevCycle's own transition table, as the agent tests' oracle, and the walk to any state."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

DEVCYCLE_TABLE: dict[str, set[str]] = {
    "registered": {"deploying", "deleted"},
    "deploying": {"deployed", "failed", "error"},
    "deployed": {"starting", "updating", "deleted"},
    "starting": {"online", "failed", "error", "timeout"},
    "online": {"busy", "idle", "stopping", "updating", "maintenance", "suspended", "offline", "error"},
    "busy": {"idle", "online", "stopping", "maintenance", "suspended", "offline", "error"},
    "idle": {"busy", "online", "stopping", "updating", "maintenance", "suspended", "offline", "error"},
    "stopping": {"offline", "terminated", "error"},
    "updating": {"online", "failed", "error"},
    "scaling": {"online", "busy", "idle", "error"},
    "error": {"online", "offline", "maintenance", "failed"},
    "failed": {"starting", "deploying", "deleted"},
    "timeout": {"offline", "error", "starting"},
    "maintenance": {"online", "offline", "suspended"},
    "suspended": {"online", "maintenance", "offline"},
    "offline": {"starting", "maintenance", "terminated", "deleted"},
    "terminated": {"deleted"},
    "deleted": set(),
}
"""DevCycle's `AgentLifecycleManager.VALID_TRANSITIONS` (reference/seed-projects.md 3.2), copied
here as the tests' own oracle rather than read back from the spec under test."""

STATES = tuple(DEVCYCLE_TABLE)

Place = Callable[[str, str], None]


def path_to(state: str) -> tuple[str, list[str]]:
    """Return the initial state an agent is registered in and the moves that take it to `state`."""
    if state == "scaling":
        return "scaling", []
    parent: dict[str, str | None] = {"registered": None}
    todo = deque(["registered"])
    while todo:
        here = todo.popleft()
        for there in sorted(DEVCYCLE_TABLE[here]):
            if there not in parent:
                parent[there] = here
                todo.append(there)
    path: list[str] = []
    at: str | None = state
    while at is not None and at != "registered":
        path.append(at)
        at = parent[at]
    return "registered", path[::-1]
