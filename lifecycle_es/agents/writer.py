"""The agent service's write path: each verb is one optimistic append at the expected seq.

A verb is planned against the registry (its precondition checked, its hops and task moves
built), its pre-transition handlers run, and its events are appended as one batch at the seq
the plan saw. If another service process appended first (`ConcurrencyError`), the batch is
rolled back, the other writers' events are folded, and the verb is planned again from the
fresh state, up to `max_retries` times: no update is lost and no move is made from a stale
state. On a retry the pre-handlers run again, for the new plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bus.errors import ConcurrencyError
from lifecycle_es._arguments import check_count, check_text
from lifecycle_es.agents.queries import REGISTERED_AT, agent_state
from lifecycle_es.agents.routes import Hops, Verb, destination, hf_path, route
from lifecycle_es.errors import ConfigError, LifecycleError
from lifecycle_es.events import TransitionRejected
from lifecycle_es.hooks import Hooks
from lifecycle_es.registry import EntityState
from lifecycle_es.session import Lifecycle, TransitionPlan
from lifecycle_es.specs import AGENT_SPEC, AgentState
from lifecycle_es.specs.task import TASK_SPEC, TaskState

__all__ = ["AgentConflictError", "AgentServiceConfig", "AgentWriter", "Op", "TaskEnd"]

TaskEnd = Literal["completed", "failed", "cancelled", "timeout"]
"""How `complete_task` ends the agent's running task."""

_log = logging.getLogger("lifecycle_es.agents")

TASK_KEY = "task_id"
"""The metadata key of an agent's move into BUSY that names the task it runs."""


class AgentConflictError(LifecycleError):
    """Raised when a verb still met a concurrent append after `max_retries` retries."""


@dataclass(frozen=True, kw_only=True)
class AgentServiceConfig:
    """How an agent service writes: who it names as the trigger, how often it retries a verb."""

    triggered_by: str = "system"
    """Recorded as `triggered_by` when a verb names none (DevCycle's default)."""
    max_retries: int = 1000
    """Retries of one verb after a concurrent append before `AgentConflictError`."""

    def __post_init__(self) -> None:
        check_text(self.triggered_by, "AgentServiceConfig(triggered_by=...)", ConfigError)
        check_count(self.max_retries, "AgentServiceConfig(max_retries=...)", ConfigError)


@dataclass(frozen=True, kw_only=True)
class Op:
    """One verb call: what to do to which agent, with the reason and metadata it records."""

    verb: Verb
    agent: str
    reason: str
    triggered_by: str
    metadata: Mapping[str, Any] | None = None
    target: str | None = None
    """The agent state a `transition` or `hf_sync` aims at; the initial state of a `register`."""
    hf_status: str = ""
    """The HF Space status an `hf_sync` maps to `target`."""
    task_end: TaskEnd = "completed"


@dataclass
class _Result:
    ok: bool
    plans: list[TransitionPlan] = field(default_factory=list)
    why: str = ""
    """The refusal's reason, when not ok."""


class AgentWriter:
    """Plans verbs against a lifecycle's registry and appends them optimistically (module doc)."""

    def __init__(self, lifecycle: Lifecycle, config: AgentServiceConfig) -> None:
        self.lifecycle = lifecycle
        self.config = config
        self.agent_hooks: dict[str, Hooks] = {}
        """Per agent, the handlers its managers registered (`on_event`)."""
        self.attempts = 0
        """Verb attempts made, retries included."""
        self.retries = 0
        """Attempts that met a concurrent append and were planned again."""
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        """One lock per event loop: an asyncio.Lock belongs to the loop it first waits on."""

    # -- running a verb ------------------------------------------------------------------------

    def run(self, op: Op) -> bool:
        """Apply `op` with sync handlers; return whether the verb was applied (False: refused)."""
        for _ in range(self.config.max_retries + 1):
            self.lifecycle.catch_up()
            self.attempts += 1
            try:
                with self.lifecycle.batch(rollback="copy"):
                    result = self._apply(op)
                    self._fire("pre", result.plans)
            except ConcurrencyError:
                self.retries += 1
                continue
            self._fire("post", result.plans)
            return _logged(op, result)
        raise self._exhausted(op)

    async def run_async(self, op: Op) -> bool:
        """`run` with awaited handlers: returns once the pre-handlers ran and the verb is on the log."""
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:  # the batch stays open across the pre-handlers' awaits
            for _ in range(self.config.max_retries + 1):
                self.lifecycle.catch_up()
                self.attempts += 1
                try:
                    with self.lifecycle.batch(rollback="copy"):
                        result = self._apply(op)
                        await self._fire_async("pre", result.plans)
                except ConcurrencyError:
                    self.retries += 1
                    continue
                await self._fire_async("post", result.plans)
                return _logged(op, result)
        raise self._exhausted(op)

    def _exhausted(self, op: Op) -> AgentConflictError:
        return AgentConflictError(
            f"{op.verb.value} of {op.agent!r} met a concurrent append {self.config.max_retries + 1} "
            "times in a row; nothing of it was recorded"
        )

    # -- hooks -------------------------------------------------------------------------------

    def _hooks_of(self, plan: TransitionPlan) -> list[Hooks]:
        own = self.agent_hooks.get(plan.data["entity"])
        return [self.lifecycle.hooks] if own is None else [self.lifecycle.hooks, own]

    def _fire(self, phase: Literal["pre", "post"], plans: list[TransitionPlan]) -> None:
        for plan in plans:
            for hooks in self._hooks_of(plan):
                hooks.fire(phase, plan.spec, plan.data)

    async def _fire_async(self, phase: Literal["pre", "post"], plans: list[TransitionPlan]) -> None:
        for plan in plans:
            for hooks in self._hooks_of(plan):
                await hooks.fire_async(phase, plan.spec, plan.data)

    # -- planning ------------------------------------------------------------------------------

    def _apply(self, op: Op) -> _Result:
        """Record the verb's events in the open batch (moves, or its refusal) and say which."""
        if op.verb is Verb.REGISTER:
            return self._register(op)
        agent = agent_state(self.lifecycle.registry, op.agent)
        hops = self._hops(op, agent)
        if isinstance(hops, str):
            self._refuse(op, agent, hops)
            return _Result(False, why=hops)
        result = _Result(True)
        metadata = op.metadata
        if op.verb is Verb.ASSIGN_TASK:
            task = f"{op.agent}/task/{self.lifecycle.registry.seq + 1}"
            self.lifecycle.register(task, TASK_SPEC.name, parent=op.agent, attrs=self._stamp_attrs())
            result.plans.append(self._move(task, TaskState.RUNNING, op, metadata))
            metadata = {**(metadata or {}), TASK_KEY: task}
        running = self._running_task(agent)
        for hop in hops:
            result.plans.append(self._move(op.agent, hop, op, metadata))
        if running is not None and hops:  # the agent leaves BUSY: its task ends with it
            result.plans.append(self._move(running, self._task_end(op), op, op.metadata))
        return result

    def _hops(self, op: Op, agent: EntityState) -> Hops | str:
        if op.verb is Verb.TRANSITION:
            assert op.target is not None
            if AGENT_SPEC.edge(agent.state, op.target) is not None:
                return (op.target,)
            return f"Invalid transition: {agent.state} -> {op.target}"
        if op.verb is Verb.HF_SYNC:
            assert op.target is not None
            path = hf_path(AGENT_SPEC, agent.state, op.target)
            if path is None:
                return (
                    f"no path of valid transitions leads from {agent.state} to {op.target} "
                    f"(HF Space status {op.hf_status!r})"
                )
            return path
        return route(op.verb, agent.state)

    def _register(self, op: Op) -> _Result:
        registry = self.lifecycle.registry
        initial = op.target or AgentState.REGISTERED.value
        if op.agent not in registry:
            self.lifecycle.register(op.agent, AGENT_SPEC.name, state=initial, attrs=self._stamp_attrs())
            return _Result(True)
        agent = agent_state(registry, op.agent)
        if agent.state == initial:
            return _Result(True)  # DevCycle: registering an agent already there is a no-op
        why = f"Invalid transition: {agent.state} -> {initial}"
        self._refuse(op, agent, why)
        return _Result(False, why=why)

    def _move(self, entity: str, to: str, op: Op, metadata: Mapping[str, Any] | None) -> TransitionPlan:
        lc = self.lifecycle
        plan = lc.plan(entity, to, None, None, op.reason, None, None, op.triggered_by, metadata)
        lc.record(plan)  # a gate's refusal raises here, and the batch records nothing
        return plan

    def _refuse(self, op: Op, agent: EntityState, why: str) -> None:
        lc = self.lifecycle
        lc.append(
            [
                # Unvalidated: every field is a registered agent's or was checked by the service.
                TransitionRejected.trusted(
                    run_id=lc.run_id,
                    step=lc.step,
                    rank=lc.rank,
                    entity=agent.entity,
                    from_state=agent.state,
                    to_state=op.target or destination(op.verb),
                    reasons=[why],
                    triggered_by=op.triggered_by,
                    metadata=None if op.metadata is None else dict(op.metadata),
                )
            ]
        )

    def _running_task(self, agent: EntityState) -> str | None:
        """The task an agent in BUSY runs: the one its move into BUSY named, if it still runs."""
        if agent.state != AgentState.BUSY or agent.last_transition is None:
            return None
        task = agent.last_transition.get("metadata", {}).get(TASK_KEY)
        found = self.lifecycle.registry.entities.get(task) if isinstance(task, str) else None
        ok = found is not None and found.spec == TASK_SPEC.name and found.parent == agent.entity
        return task if ok and found is not None and found.state == TaskState.RUNNING else None

    @staticmethod
    def _task_end(op: Op) -> str:
        if op.verb is Verb.COMPLETE_TASK:
            return str(op.task_end)
        return TaskState.FAILED.value if op.verb is Verb.HANDLE_ERROR else TaskState.CANCELLED.value

    @staticmethod
    def _stamp_attrs() -> dict[str, Any]:
        return {REGISTERED_AT: time.time()}


def _logged(op: Op, result: _Result) -> bool:
    """Log a verb once it is on the log (DevCycle's levels: moves INFO, refusals WARNING)."""
    if not result.ok:
        _log.warning("%s of %r refused: %s", op.verb.value, op.agent, result.why, extra={"agent": op.agent})
    for plan in result.plans:
        d = plan.data
        _log.info(
            "%s %r: %s -> %s (%s, by %s)",
            d["spec"],
            d["entity"],
            d["from_state"],
            d["to_state"],
            d["reason"],
            d["triggered_by"],
            extra={"agent": op.agent, "verb": op.verb.value},
        )
    return result.ok
