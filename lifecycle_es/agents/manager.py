"""`AgentLifecycleManager`: DevCycle's per-agent view, over the service's registry and writer.

It holds no state of its own: every answer is read from the registry after folding what other
service processes appended, and `transition_to` goes through the service's optimistic writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from lifecycle_es.agents import queries
from lifecycle_es.agents.routes import Verb
from lifecycle_es.agents.states import AVAILABLE, IN_ERROR, IN_MAINTENANCE, OPERATIONAL
from lifecycle_es.agents.writer import AgentWriter, Op
from lifecycle_es.hooks import Handler, HookFailure, Hooks
from lifecycle_es.registry import EntityState
from lifecycle_es.specs import AGENT_SPEC

__all__ = ["AgentLifecycleManager"]

R = TypeVar("R")


class AgentLifecycleManager(Generic[R]):
    """One agent's lifecycle: checks, `transition_to`, state info, predicates and handlers.

    From an `AgentLifecycleService`, `transition_to` returns an awaitable; from its `.sync` view,
    the bool itself.
    """

    def __init__(
        self, writer: AgentWriter, agent_id: str, run: Callable[[Op], R], make: Callable[..., Op]
    ) -> None:
        self._writer = writer
        self._run = run
        self._make = make
        self.agent_id = agent_id

    @property
    def current_state(self) -> str:
        """The agent's state as of the latest fold of the log."""
        return self._read().state

    def get_valid_transitions(self) -> set[str]:
        """Return the states the agent may move to from where it is."""
        return {t.target for t in AGENT_SPEC.exits(self.current_state)}

    def can_transition_to(self, state: str) -> bool:
        """Tell whether the spec has an edge from the agent's state to `state` (unknown: raises)."""
        AGENT_SPEC.state(str(state))
        return str(state) in self.get_valid_transitions()

    def transition_to(
        self,
        state: str,
        reason: str = "State transition",
        triggered_by: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Move the agent to `state`: True once applied, False (recorded) if the spec refuses it."""
        AGENT_SPEC.state(str(state))
        op = self._make(Verb.TRANSITION, self.agent_id, reason, triggered_by, metadata, target=str(state))
        return self._run(op)

    def get_current_state_info(self) -> dict[str, Any]:
        """DevCycle's state info: current and valid next states, last transition, time in state, history."""
        self._writer.lifecycle.catch_up()
        return queries.state_info(self._writer.lifecycle.registry, self.agent_id)

    def get_state_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the kept transitions (step, from_state, to_state), oldest first; the last `limit`."""
        history: list[dict[str, Any]] = self.get_current_state_info()["history"]
        return history if limit is None else history[-limit:] if limit > 0 else []

    def is_operational(self) -> bool:
        """DevCycle's predicate: online, busy or idle."""
        return self.current_state in OPERATIONAL

    def is_available_for_tasks(self) -> bool:
        """DevCycle's predicate: online or idle."""
        return self.current_state in AVAILABLE

    def is_in_error_state(self) -> bool:
        """DevCycle's predicate: error, failed or timeout."""
        return self.current_state in IN_ERROR

    def is_in_maintenance(self) -> bool:
        """DevCycle's predicate: maintenance, suspended or updating."""
        return self.current_state in IN_MAINTENANCE

    def on_event(self, event_type: str, handler: Handler) -> None:
        """Call `handler(event_type, data)` at this agent's 'pre_transition' or 'post_transition'."""
        hooks = self._writer.agent_hooks.setdefault(self.agent_id, Hooks())
        hooks.on(event_type, handler)

    @property
    def handler_failures(self) -> list[HookFailure]:
        """The latest failures of this agent's handlers (each also logged), oldest first."""
        hooks = self._writer.agent_hooks.get(self.agent_id)
        return [] if hooks is None else list(hooks.failures)

    def _read(self) -> EntityState:
        self._writer.lifecycle.catch_up()
        return queries.agent_state(self._writer.lifecycle.registry, self.agent_id)
