"""Fixtures of the agent service tests: a service on an in-memory log, and agents walked to any state."""

from __future__ import annotations

import pytest

from lifecycle_es import AgentLifecycleService, SyncAgentLifecycleService
from tests.agents._devcycle import Place, path_to


@pytest.fixture
def service() -> AgentLifecycleService:
    """An agent service on an in-memory log."""
    return AgentLifecycleService(run_id="agents-test")


@pytest.fixture
def place(service: AgentLifecycleService) -> Place:
    """Register agent `name` and walk it to `state` with manager moves (no tasks involved)."""

    def put(name: str, state: str) -> None:
        sync: SyncAgentLifecycleService = service.sync
        initial, moves = path_to(state)
        assert sync.register_agent(name, initial_state=initial)
        manager = sync.get_manager(name)
        for move in moves:
            assert manager.transition_to(move, triggered_by="test")
        assert manager.current_state == state

    return put
