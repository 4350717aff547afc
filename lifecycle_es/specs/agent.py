"""The `agent` spec: DevCycle's 18-state agent lifecycle and its 66 edges (seeds/004).

The table is `AgentLifecycleManager.VALID_TRANSITIONS` of `devcycle/core/agents/lifecycle.py`.
The source names no triggers, so each edge's trigger is `to_<target>`. Categories follow the
source's comment groups (initial, active, transitional, error, maintenance); its "final" group
is SUCCESS, since the faults have their own error group and ending or deleting an agent is its
lifecycle finishing as designed. Only DELETED has no exit, so only it is terminal.

No edge leads into SCALING, which DevCycle reaches only as a manager's `initial_state`; so the
spec's initial states are REGISTERED (the default) and SCALING. The source's pre- and
post-transition handlers need no hook points: every spec fires the generic ones.
"""

from __future__ import annotations

from lifecycle_es.spec import Spec, StateCategory, TransitionDef
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["AGENT_SPEC", "AgentState"]


class AgentState(SpecState):
    """An agent's state, in the declaration order of DevCycle's `AgentLifecycleState`."""

    REGISTERED = "registered"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    STARTING = "starting"
    ONLINE = "online"
    BUSY = "busy"
    IDLE = "idle"
    STOPPING = "stopping"
    UPDATING = "updating"
    SCALING = "scaling"
    ERROR = "error"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MAINTENANCE = "maintenance"
    SUSPENDED = "suspended"
    OFFLINE = "offline"
    TERMINATED = "terminated"
    DELETED = "deleted"


_S = AgentState
_C = StateCategory

_STATES = (
    state(_S.REGISTERED, _C.INITIAL, description="registered but not deployed"),
    state(_S.DEPLOYING, _C.INITIAL, description="being deployed"),
    state(_S.DEPLOYED, _C.INITIAL, description="deployed but not active"),
    state(_S.STARTING, _C.ACTIVE, description="starting up"),
    state(_S.ONLINE, _C.ACTIVE, description="online and ready"),
    state(_S.BUSY, _C.ACTIVE, description="processing tasks"),
    state(_S.IDLE, _C.ACTIVE, description="online but with no active tasks"),
    state(_S.STOPPING, _C.TRANSITIONAL, description="shutting down"),
    state(_S.UPDATING, _C.TRANSITIONAL, description="being updated"),
    state(_S.SCALING, _C.TRANSITIONAL, description="being scaled"),
    state(_S.ERROR, _C.ERROR, description="in error"),
    state(_S.FAILED, _C.ERROR, description="failed to start or operate"),
    state(_S.TIMEOUT, _C.ERROR, description="timed out"),
    state(_S.MAINTENANCE, _C.MAINTENANCE, description="in maintenance mode"),
    state(_S.SUSPENDED, _C.MAINTENANCE, description="suspended"),
    state(_S.OFFLINE, _C.MAINTENANCE, description="offline"),
    state(_S.TERMINATED, _C.SUCCESS, description="terminated; can still be deleted"),
    state(_S.DELETED, _C.SUCCESS, terminal=True, description="deleted (final)"),
)

# DevCycle's VALID_TRANSITIONS, row by row in the source's order.
_EXITS: tuple[tuple[AgentState, tuple[AgentState, ...]], ...] = (
    (_S.REGISTERED, (_S.DEPLOYING, _S.DELETED)),
    (_S.DEPLOYING, (_S.DEPLOYED, _S.FAILED, _S.ERROR)),
    (_S.DEPLOYED, (_S.STARTING, _S.UPDATING, _S.DELETED)),
    (_S.STARTING, (_S.ONLINE, _S.FAILED, _S.ERROR, _S.TIMEOUT)),
    (
        _S.ONLINE,
        (_S.BUSY, _S.IDLE, _S.STOPPING, _S.UPDATING, _S.MAINTENANCE, _S.SUSPENDED, _S.OFFLINE, _S.ERROR),
    ),
    (_S.BUSY, (_S.IDLE, _S.ONLINE, _S.STOPPING, _S.MAINTENANCE, _S.SUSPENDED, _S.OFFLINE, _S.ERROR)),
    (
        _S.IDLE,
        (_S.BUSY, _S.ONLINE, _S.STOPPING, _S.UPDATING, _S.MAINTENANCE, _S.SUSPENDED, _S.OFFLINE, _S.ERROR),
    ),
    (_S.STOPPING, (_S.OFFLINE, _S.TERMINATED, _S.ERROR)),
    (_S.UPDATING, (_S.ONLINE, _S.FAILED, _S.ERROR)),
    (_S.SCALING, (_S.ONLINE, _S.BUSY, _S.IDLE, _S.ERROR)),
    (_S.ERROR, (_S.ONLINE, _S.OFFLINE, _S.MAINTENANCE, _S.FAILED)),
    (_S.FAILED, (_S.STARTING, _S.DEPLOYING, _S.DELETED)),
    (_S.TIMEOUT, (_S.OFFLINE, _S.ERROR, _S.STARTING)),
    (_S.MAINTENANCE, (_S.ONLINE, _S.OFFLINE, _S.SUSPENDED)),
    (_S.SUSPENDED, (_S.ONLINE, _S.MAINTENANCE, _S.OFFLINE)),
    (_S.OFFLINE, (_S.STARTING, _S.MAINTENANCE, _S.TERMINATED, _S.DELETED)),
    (_S.TERMINATED, (_S.DELETED,)),
)


def _transitions() -> tuple[TransitionDef, ...]:
    return tuple(
        edge(
            source,
            target,
            f"to_{target.value}",
            description="DevCycle AgentLifecycleManager.VALID_TRANSITIONS",
        )
        for source, targets in _EXITS
        for target in targets
    )


AGENT_SPEC = Spec(
    name="agent",
    states=_STATES,
    transitions=_transitions(),
    initial=(_S.REGISTERED.value, _S.SCALING.value),
    description="seeds/004 DevCycle agent lifecycle: 18 states and the 66 edges of "
    "AgentLifecycleManager.VALID_TRANSITIONS",
)
"""The agent lifecycle of seeds/004."""
