"""The `task` spec: DevCycle's task execution states (`AgentExecutionState`, seeds/004).

DevCycle declares the six states but no table; the edges here are the ones the names imply: a
pending task starts running or is cancelled, a running task ends completed, failed, cancelled
or timed out, and every end is final. The agent service registers one task per `assign_task`,
with the agent as its parent, and moves the agent between BUSY and IDLE with it.
"""

from __future__ import annotations

from lifecycle_es.spec import Spec, StateCategory, TransitionDef
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["TASK_SPEC", "TaskState"]


class TaskState(SpecState):
    """A task's state, in the declaration order of DevCycle's `AgentExecutionState`."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


_S = TaskState
_C = StateCategory

_STATES = (
    state(_S.PENDING, _C.INITIAL, description="assigned, not yet running"),
    state(_S.RUNNING, _C.ACTIVE, description="running on its agent"),
    state(_S.COMPLETED, _C.SUCCESS, terminal=True, description="finished with a result"),
    state(_S.FAILED, _C.FAILURE, terminal=True, description="finished with an error"),
    state(_S.CANCELLED, _C.SUCCESS, terminal=True, description="stopped before it finished"),
    state(_S.TIMEOUT, _C.FAILURE, terminal=True, description="ran out of time"),
)

_EXITS: tuple[tuple[TaskState, tuple[TaskState, ...]], ...] = (
    (_S.PENDING, (_S.RUNNING, _S.CANCELLED)),
    (_S.RUNNING, (_S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.TIMEOUT)),
)


def _transitions() -> tuple[TransitionDef, ...]:
    return tuple(
        edge(source, target, f"to_{target.value}", description="DevCycle AgentExecutionState")
        for source, targets in _EXITS
        for target in targets
    )


TASK_SPEC = Spec(
    name="task",
    states=_STATES,
    transitions=_transitions(),
    initial=(_S.PENDING.value,),
    description="seeds/004 DevCycle task execution states: pending, running and four ends",
)
"""The task execution lifecycle of seeds/004."""
