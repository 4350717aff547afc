"""DevCycle's own transition table, as the agent tests' oracle, and the walk to any state."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tests.specs.test_builtin_specs import AGENT_ROWS

DEVCYCLE_TABLE: dict[str, set[str]] = AGENT_ROWS
"""DevCycle's `AgentLifecycleManager.VALID_TRANSITIONS` (reference/seed-projects.md 3.2), as the
spec tests copy it: the agent tests' own oracle rather than the spec under test read back."""

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
