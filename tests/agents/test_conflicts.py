"""Two services on one log: a verb that loses the append race is re-planned from the fresh state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bus import MemoryLog
from lifecycle_es import AgentLifecycleService, AgentServiceConfig
from lifecycle_es.agents import AgentConflictError


def two_services(log: MemoryLog, retries: int = 1000) -> tuple[AgentLifecycleService, AgentLifecycleService]:
    """Two services writing the same in-memory log, with an online agent `a`."""
    first = AgentLifecycleService(log, run_id="race", config=AgentServiceConfig(max_retries=retries))
    for verb in ("register_agent", "deploy_agent", "start_agent"):
        assert getattr(first.sync, verb)("a")
    return first, AgentLifecycleService(log, run_id="race")


def interleave(service: AgentLifecycleService, other: AgentLifecycleService, times: int) -> None:
    """Make `other` stop-or-start agent `a` inside `service`'s first `times` pre-handler calls."""
    calls = {"n": 0}

    def meddle(point: str, data: Mapping[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            state = other.sync.get_manager("a").current_state
            assert other.sync.stop_agent("a") if state == "online" else other.sync.start_agent("a")

    service.get_manager("a").on_event("pre_transition", meddle)


def test_a_verb_that_lost_the_race_is_rechecked_against_the_new_state() -> None:
    """An assign planned on an online agent meets the other writer's stop; re-planned, it is refused."""
    log = MemoryLog("race")
    first, second = two_services(log)
    interleave(first, second, times=1)
    assert not first.sync.assign_task("a")
    assert first.retries == 1
    last = log.read()[-1]
    assert (last["kind"], last["from_state"]) == ("TransitionRejected", "offline")
    assert [r["to_state"] for r in log.read() if r["kind"] == "TransitionApplied"][-2:] == [
        "stopping",
        "offline",
    ]
    assert first.lifecycle.registry == AgentLifecycleService(log, run_id="race").lifecycle.registry


def test_retries_are_bounded_and_an_exhausted_verb_records_nothing() -> None:
    """With max_retries=2 a verb beaten three times raises AgentConflictError and is not on the log."""
    log = MemoryLog("race")
    first, second = two_services(log, retries=2)
    interleave(first, second, times=3)
    with pytest.raises(AgentConflictError, match="3 times in a row"):
        first.sync.put_in_maintenance("a")
    assert first.retries == 3
    assert all(r["to_state"] != "maintenance" for r in log.read() if "to_state" in r)
