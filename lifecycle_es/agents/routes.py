"""Which states each service verb starts from and which hops it takes (DevCycle's service).

A verb is refused, not an error, when the agent is in a state it does not start from: the
service records the refusal with the sentence `route` returns and answers False.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from lifecycle_es.agents.states import IN_ERROR
from lifecycle_es.spec import Spec
from lifecycle_es.specs import AGENT_SPEC, AgentState

__all__ = ["ROUTES", "Verb", "destination", "hf_path", "route"]


class Verb(StrEnum):
    """The service's verbs; `transition` is a manager's `transition_to`, `hf_sync` an HF Space sync."""

    REGISTER = "register"
    DEPLOY = "deploy"
    START = "start"
    ASSIGN_TASK = "assign_task"
    COMPLETE_TASK = "complete_task"
    STOP = "stop"
    HANDLE_ERROR = "handle_error"
    PUT_IN_MAINTENANCE = "put_in_maintenance"
    RESUME_FROM_MAINTENANCE = "resume_from_maintenance"
    SUSPEND = "suspend"
    UPDATE = "update"
    SCALE = "scale"
    TERMINATE = "terminate"
    DELETE = "delete"
    TRANSITION = "transition"
    HF_SYNC = "hf_sync"


_A = AgentState
Hops = tuple[str, ...]


def _from(states: Iterable[AgentState], *hops: AgentState) -> dict[str, Hops]:
    return {s.value: tuple(h.value for h in hops) for s in states}


def _into(target: AgentState) -> dict[str, Hops]:
    """One hop into `target` from every state with an edge there (DevCycle's single transition_to)."""
    return {t.source: (target.value,) for t in AGENT_SPEC.transitions if t.target == target.value}


ROUTES: Mapping[Verb, Mapping[str, Hops]] = MappingProxyType(
    {
        # DevCycle: DEPLOYING, sleep, DEPLOYED; STARTING, sleep, ONLINE; STOPPING, sleep, OFFLINE.
        Verb.DEPLOY: _from((_A.REGISTERED, _A.FAILED), _A.DEPLOYING, _A.DEPLOYED),
        Verb.START: _from((_A.DEPLOYED, _A.FAILED, _A.TIMEOUT, _A.OFFLINE), _A.STARTING, _A.ONLINE),
        Verb.STOP: _from((_A.ONLINE, _A.BUSY, _A.IDLE), _A.STOPPING, _A.OFFLINE),
        Verb.ASSIGN_TASK: _from((_A.ONLINE, _A.IDLE), _A.BUSY),  # needs is_available_for_tasks
        Verb.COMPLETE_TASK: _from((_A.BUSY,), _A.IDLE),
        Verb.HANDLE_ERROR: _into(_A.ERROR),
        Verb.PUT_IN_MAINTENANCE: _into(_A.MAINTENANCE),
        Verb.RESUME_FROM_MAINTENANCE: _from((_A.MAINTENANCE,), _A.ONLINE),
        Verb.SUSPEND: _into(_A.SUSPENDED),
        Verb.UPDATE: _from((_A.DEPLOYED, _A.ONLINE, _A.IDLE), _A.UPDATING, _A.ONLINE),
        # No edge leads into SCALING: an agent is registered there, and scaling ends online.
        Verb.SCALE: _from((_A.SCALING,), _A.ONLINE),
        Verb.TERMINATE: {
            **_from((_A.ONLINE, _A.BUSY, _A.IDLE), _A.STOPPING, _A.TERMINATED),
            **_from((_A.STOPPING, _A.OFFLINE), _A.TERMINATED),
        },
        Verb.DELETE: _into(_A.DELETED),
    }
)
"""Per verb with a fixed table: start state -> the states it passes through, last one last."""


def destination(verb: Verb) -> str:
    """The state a table verb ends in (its refusals name it as the state not reached)."""
    return next(iter(ROUTES[verb].values()))[-1]


def route(verb: Verb, state: str) -> Hops | str:
    """Return the hops `verb` takes from `state`, or the sentence saying why it is refused."""
    hops = ROUTES[verb].get(state)
    if hops is not None:
        return hops
    allowed = ", ".join(sorted(ROUTES[verb]))
    return f"{verb.value} needs the agent in one of: {allowed}; it is {state}"


_DETOURS = frozenset({*IN_ERROR, _A.BUSY.value, _A.TERMINATED.value, _A.DELETED.value})
"""States a path found for an HF Space status never passes through: an error, a task or an
end the Space did not report would be made up."""


def hf_path(spec: Spec, state: str, target: str) -> Hops | None:
    """Return the shortest path of valid edges from `state` to `target` that passes through no
    made-up error, task or end (`_DETOURS`), `()` if already there, or None if there is none."""
    parent: dict[str, str | None] = {state: None}
    todo = deque([state])
    while todo:
        here = todo.popleft()
        if here == target:
            path: list[str] = []
            step: str | None = here
            while step is not None and step != state:
                path.append(step)
                step = parent[step]
            return tuple(reversed(path))
        for t in spec.exits(here):
            if t.target not in parent and (t.target == target or t.target not in _DETOURS):
                parent[t.target] = here
                todo.append(t.target)
    return None
