"""`AgentLifecycleService`: seeds/004's agent service over the event log, async and sync.

Every verb is DevCycle's: the same preconditions (`routes.ROUTES`), the same return convention
(True once applied; False when refused, the refusal recorded as `TransitionRejected` with its
reason), and a misuse (an unknown agent, a bad argument) raises a typed error. The service
keeps nothing but the log: queries fold what any service process appended, so several
processes may serve one run (`writer` says how their appends stay consistent).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any, Generic, TypeVar, get_args
from uuid import UUID

import bus
from bus import Log
from lifecycle_es._arguments import check_text
from lifecycle_es.agents import queries
from lifecycle_es.agents.manager import AgentLifecycleManager
from lifecycle_es.agents.routes import Verb
from lifecycle_es.agents.states import (
    AVAILABLE,
    HF_SPACE_STATES,
    IN_ERROR,
    IN_MAINTENANCE,
    OPERATIONAL,
)
from lifecycle_es.agents.writer import AgentServiceConfig, AgentWriter, Op, TaskEnd
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.session import Lifecycle, check_metadata
from lifecycle_es.specs import AGENT_SPEC, BUILTIN_SPECS

__all__ = ["AgentId", "AgentLifecycleService", "SyncAgentLifecycleService"]

AgentId = str | UUID
"""An agent id: a str, or a UUID as DevCycle uses (stored as its str)."""

R = TypeVar("R")
Meta = Mapping[str, Any] | None


class _Service(Generic[R]):
    """The verbs and queries, once; `_run` makes them awaitable or plain."""

    def __init__(self, writer: AgentWriter) -> None:
        self._writer = writer
        self._managers: dict[str, AgentLifecycleManager[R]] = {}

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle (log, registry, hooks for every agent and task) the service writes to."""
        return self._writer.lifecycle

    def _run(self, op: Op) -> R:
        raise NotImplementedError

    # -- verbs ---------------------------------------------------------------------------------

    def register_agent(
        self,
        agent_id: AgentId,
        *,
        initial_state: str = "registered",
        triggered_by: str | None = None,
        metadata: Meta = None,
    ) -> R:
        """Register an agent (in registered, or scaling); an agent already in that state is True."""
        if initial_state not in AGENT_SPEC.initial:
            raise UsageError(
                f"initial_state must be one of {list(AGENT_SPEC.initial)}, got {initial_state!r}"
            )
        return self._verb(
            Verb.REGISTER, agent_id, "Agent registered", triggered_by, metadata, target=initial_state
        )

    def deploy_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Deploy: DEPLOYING then DEPLOYED, from registered or failed."""
        return self._verb(Verb.DEPLOY, agent_id, "Agent deployment", triggered_by, metadata)

    def start_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Start: STARTING then ONLINE, from deployed, failed, timeout or offline."""
        return self._verb(Verb.START, agent_id, "Agent startup", triggered_by, metadata)

    def stop_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Stop: STOPPING then OFFLINE, from online, busy or idle (a running task is cancelled)."""
        return self._verb(Verb.STOP, agent_id, "Agent shutdown", triggered_by, metadata)

    def assign_task(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Give an available agent (online or idle) a new running task; the agent goes BUSY."""
        return self._verb(Verb.ASSIGN_TASK, agent_id, "Task assigned", triggered_by, metadata)

    def complete_task(
        self,
        agent_id: AgentId,
        *,
        outcome: TaskEnd = "completed",
        triggered_by: str | None = None,
        metadata: Meta = None,
    ) -> R:
        """End a busy agent's task with `outcome`; the agent goes IDLE (refused unless BUSY)."""
        if outcome not in get_args(TaskEnd):
            raise UsageError(f"outcome must be one of {list(get_args(TaskEnd))}, got {outcome!r}")
        return self._verb(
            Verb.COMPLETE_TASK, agent_id, "Task completed", triggered_by, metadata, task_end=outcome
        )

    def handle_error(
        self, agent_id: AgentId, error_message: str, *, triggered_by: str | None = None, metadata: Meta = None
    ) -> R:
        """Move the agent to ERROR, recording `error_message` (a running task fails)."""
        check_text(error_message, "error_message")
        extra = {**(check_metadata(metadata) or {}), "error_message": error_message}
        return self._verb(Verb.HANDLE_ERROR, agent_id, error_message, triggered_by, extra)

    def put_in_maintenance(
        self,
        agent_id: AgentId,
        reason: str = "Scheduled maintenance",
        *,
        triggered_by: str | None = None,
        metadata: Meta = None,
    ) -> R:
        """Move the agent to MAINTENANCE (from every state with an edge there)."""
        return self._verb(Verb.PUT_IN_MAINTENANCE, agent_id, reason, triggered_by, metadata)

    def resume_from_maintenance(
        self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None
    ) -> R:
        """Move an agent in MAINTENANCE back ONLINE."""
        return self._verb(
            Verb.RESUME_FROM_MAINTENANCE, agent_id, "Maintenance finished", triggered_by, metadata
        )

    def suspend_agent(
        self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None
    ) -> R:
        """Move the agent to SUSPENDED (from online, busy, idle or maintenance)."""
        return self._verb(Verb.SUSPEND, agent_id, "Agent suspended", triggered_by, metadata)

    def update_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Update: UPDATING then ONLINE, from deployed, online or idle."""
        return self._verb(Verb.UPDATE, agent_id, "Agent update", triggered_by, metadata)

    def scale_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Finish scaling: SCALING to ONLINE (no edge leads into SCALING; register an agent there)."""
        return self._verb(Verb.SCALE, agent_id, "Scaling finished", triggered_by, metadata)

    def terminate_agent(
        self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None
    ) -> R:
        """Terminate: via STOPPING from online, busy or idle; directly from stopping or offline."""
        return self._verb(Verb.TERMINATE, agent_id, "Agent terminated", triggered_by, metadata)

    def delete_agent(self, agent_id: AgentId, *, triggered_by: str | None = None, metadata: Meta = None) -> R:
        """Move the agent to DELETED, the final state (from every state with an edge there)."""
        return self._verb(Verb.DELETE, agent_id, "Agent deleted", triggered_by, metadata)

    def sync_hf_space_status(self, agent_id: AgentId, hf_status: str, *, metadata: Meta = None) -> R:
        """Follow an HF Space status (`HF_SPACE_STATES`) along the shortest path of valid edges,
        each move recorded with triggered_by "hf_sync"; True if already there, False (recorded)
        when no path leads there."""
        target = HF_SPACE_STATES.get(hf_status) if isinstance(hf_status, str) else None
        if target is None:
            raise UsageError(f"unknown HF Space status {hf_status!r}; known: {', '.join(HF_SPACE_STATES)}")
        why = f"HF space status: {hf_status}"
        return self._verb(
            Verb.HF_SYNC, agent_id, why, "hf_sync", metadata, target=target.value, hf_status=hf_status
        )

    def get_manager(self, agent_id: AgentId) -> AgentLifecycleManager[R]:
        """Return the manager of a registered agent (an unknown one raises `UnknownEntityError`)."""
        name = _agent_id(agent_id)
        self.lifecycle.catch_up()
        queries.agent_state(self.lifecycle.registry, name)
        if name not in self._managers:
            self._managers[name] = AgentLifecycleManager(self._writer, name, self._run, self._op)
        return self._managers[name]

    # -- queries -------------------------------------------------------------------------------

    def get_agent_status(self, agent_id: AgentId) -> dict[str, Any]:
        """One agent's state, DevCycle's four predicates and its counters."""
        return queries.status(self._fresh(), _agent_id(agent_id))

    def get_all_agent_statuses(self) -> dict[str, dict[str, Any]]:
        """Every agent's status, by agent id, in registration order."""
        registry = self._fresh()
        return {name: queries.status(registry, name) for name in queries.agent_ids(registry)}

    def get_operational_agents(self) -> list[str]:
        """The ids of the agents online, busy or idle."""
        return queries.select(self._fresh(), OPERATIONAL)

    def get_available_agents(self) -> list[str]:
        """The ids of the agents online or idle."""
        return queries.select(self._fresh(), AVAILABLE)

    def get_agents_in_error(self) -> list[str]:
        """The ids of the agents in error, failed or timeout."""
        return queries.select(self._fresh(), IN_ERROR)

    def get_agents_in_maintenance(self) -> list[str]:
        """The ids of the agents in maintenance, suspended or updating."""
        return queries.select(self._fresh(), IN_MAINTENANCE)

    def get_lifecycle_metrics(self) -> dict[str, Any]:
        """seeds/004's monitoring metrics: totals and the state distribution."""
        return queries.lifecycle_metrics(self._fresh())

    # -- plumbing ------------------------------------------------------------------------------

    def _fresh(self) -> Any:
        self.lifecycle.catch_up()
        return self.lifecycle.registry

    def _verb(
        self,
        verb: Verb,
        agent_id: AgentId,
        reason: str,
        triggered_by: str | None,
        metadata: Meta,
        **extra: Any,
    ) -> R:
        return self._run(self._op(verb, agent_id, reason, triggered_by, metadata, **extra))

    def _op(
        self,
        verb: Verb,
        agent_id: AgentId,
        reason: str,
        triggered_by: str | None,
        metadata: Meta,
        **extra: Any,
    ) -> Op:
        check_text(reason, "reason")
        who = (
            self._writer.config.triggered_by
            if triggered_by is None
            else check_text(triggered_by, "triggered_by")
        )
        return Op(
            verb=verb,
            agent=_agent_id(agent_id),
            reason=reason,
            triggered_by=who,
            metadata=check_metadata(metadata),
            **extra,
        )


class AgentLifecycleService(_Service[Coroutine[Any, Any, bool]]):
    """seeds/004's service, async as DevCycle's: `await service.deploy_agent(agent_id)`.

    An awaited verb returns after its pre-transition handlers were awaited in order and its
    events are on the log; post-handlers have run too. `.sync` is the same service without an
    event loop. Built on any log (`log`: a `bus.Log` or a URL; an in-memory one by default).
    """

    def __init__(
        self,
        log: Log | str | None = None,
        *,
        run_id: str = "agents",
        config: AgentServiceConfig | None = None,
    ) -> None:
        if config is not None and not isinstance(config, AgentServiceConfig):
            raise ConfigError(f"config must be an AgentServiceConfig, got {type(config).__name__}")
        opened = bus.open(log, run_id) if isinstance(log, str) else log
        lifecycle = Lifecycle(opened, run_id=run_id, specs=BUILTIN_SPECS)
        super().__init__(AgentWriter(lifecycle, config or AgentServiceConfig()))
        self.sync = SyncAgentLifecycleService(self._writer)
        """The same service (same log, writer and handlers) with plain, blocking verbs."""

    def _run(self, op: Op) -> Coroutine[Any, Any, bool]:
        return self._writer.run_async(op)

    @property
    def attempts(self) -> int:
        """Verb attempts made by this service, retries after concurrent appends included."""
        return self._writer.attempts

    @property
    def retries(self) -> int:
        """Attempts that met another process's append and were planned again."""
        return self._writer.retries

    def close(self) -> None:
        """Close the log the service opened from a URL."""
        self.lifecycle.log.close()


class SyncAgentLifecycleService(_Service[bool]):
    """The agent service with blocking verbs (`service.sync`): each returns the bool itself."""

    def _run(self, op: Op) -> bool:
        return self._writer.run(op)


def _agent_id(agent_id: object) -> str:
    if isinstance(agent_id, UUID):
        return str(agent_id)
    return check_text(agent_id, "agent_id")
