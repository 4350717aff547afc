"""The `run` spec: a preemption-safe training run's lifecycle (seeds/003), with its three hooks.

The edges follow the source's "Lifecycle Transitions" list and its two state chains
(pending -> running -> stopping -> stopped -> terminated, and pending -> running -> interrupted
-> terminated):

- pending -> running (`start`): "Start Training".
- running -> interrupted (`interrupt`): "Spot Interruption" (a checkpoint is saved).
- interrupted -> running (`resume`): "Optionally auto-resume".
- running -> stopping (`stop`) and stopping -> stopped (`halt`): "Manual Stop", then "Stop
  instance -> Stopped".
- stopped -> running (`start`): "Start (from Stopped)", resuming from the checkpoint.
- pending, running, stopped, interrupted -> terminated (`terminate`): "Terminate" names no source
  state; it is the end of every state that is not mid-stop, including a run that never started.

Hooks: `pre_stop` fires before entering stopping and interrupted, because the source saves a
checkpoint before a manual stop and on a spot interruption alike; `pre_terminate` before
entering terminated ("save checkpoint (if training active)"); `post_start` after entering
running from any state ("resume from checkpoint after start").
"""

from __future__ import annotations

from enum import StrEnum

from lifecycle_es.spec import HookPoint, Spec, StateCategory
from lifecycle_es.specs._base import SpecState, edge, state

__all__ = ["RUN_SPEC", "RunHook", "RunState"]


class RunState(SpecState):
    """A training run's state, in the declaration order of the source's `LifecycleState`."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    TERMINATED = "terminated"


class RunHook(StrEnum):
    """The names of the run spec's hook points."""

    PRE_STOP = "pre_stop"
    PRE_TERMINATE = "pre_terminate"
    POST_START = "post_start"


_S = RunState
_C = StateCategory

_STATES = (
    state(_S.PENDING, _C.INITIAL, description="created, training not started"),
    state(_S.RUNNING, _C.ACTIVE, description="training"),
    state(_S.STOPPING, _C.TRANSITIONAL, description="a stop was requested; checkpoint, then shut down"),
    state(_S.STOPPED, _C.MAINTENANCE, description="stopped; can be started again and resume"),
    state(_S.INTERRUPTED, _C.ERROR, description="preempted (spot interruption) with its checkpoint saved"),
    state(_S.TERMINATED, _C.SUCCESS, terminal=True, description="ended; resources cleaned up"),
)

_TERMINATE = "terminate: save a checkpoint if training is active, then clean up resources"

_TRANSITIONS = (
    edge(_S.PENDING, _S.RUNNING, "start", description="start training"),
    edge(
        _S.PENDING,
        _S.TERMINATED,
        "terminate",
        description="a run that never started is terminated and cleaned up",
    ),
    edge(_S.RUNNING, _S.STOPPING, "stop", description="manual stop begins"),
    edge(
        _S.RUNNING,
        _S.INTERRUPTED,
        "interrupt",
        description="spot interruption: checkpoint saved and uploaded",
    ),
    edge(_S.RUNNING, _S.TERMINATED, "terminate", description=_TERMINATE),
    edge(_S.STOPPING, _S.STOPPED, "halt", description="the instance has stopped"),
    edge(_S.STOPPED, _S.RUNNING, "start", description="start again, resuming from the checkpoint"),
    edge(_S.STOPPED, _S.TERMINATED, "terminate", description=_TERMINATE),
    edge(
        _S.INTERRUPTED,
        _S.RUNNING,
        "resume",
        description="auto-resume from the checkpoint saved at the interruption",
    ),
    edge(
        _S.INTERRUPTED,
        _S.TERMINATED,
        "terminate",
        description="the interrupted instance is gone; end the run",
    ),
)

_HOOKS = (
    HookPoint(name=RunHook.PRE_STOP.value, phase="pre", targets=(_S.STOPPING.value, _S.INTERRUPTED.value)),
    HookPoint(name=RunHook.PRE_TERMINATE.value, phase="pre", targets=(_S.TERMINATED.value,)),
    HookPoint(name=RunHook.POST_START.value, phase="post", targets=(_S.RUNNING.value,)),
)

RUN_SPEC = Spec(
    name="run",
    states=_STATES,
    transitions=_TRANSITIONS,
    initial=(_S.PENDING.value,),
    hooks=_HOOKS,
    description="seeds/003 training-run lifecycle: start, stop, spot interruption, resume and "
    "terminate, with pre-stop, pre-terminate and post-start hooks",
)
"""The training-run lifecycle of seeds/003."""
