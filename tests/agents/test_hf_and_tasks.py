"""The HF Space status mapping from every agent state, and the task entities of assign and complete."""

from __future__ import annotations

import pytest

from lifecycle_es import AgentLifecycleService, UsageError
from lifecycle_es.agents import HF_SPACE_STATES
from tests.agents._devcycle import DEVCYCLE_TABLE, STATES, Place

SEED_MAPPING = {
    "building": "deploying",
    "running": "online",
    "sleeping": "idle",
    "error": "error",
    "paused": "suspended",
    "stopped": "offline",
}
"""seeds/004's HF_SPACE_STATES, as the seed writes it."""

UNREACHABLE = {
    # Only states that can still deploy reach "building"; the final ones reach nothing.
    "building": set(STATES) - {"registered", "deploying", "failed"},
    **{status: {"terminated", "deleted"} for status in SEED_MAPPING if status != "building"},
}
"""Per HF status, the agent states from which no path of valid edges leads to its agent state."""


def test_the_mapping_is_the_seeds() -> None:
    """HF_SPACE_STATES maps the six HF Space statuses exactly as seeds/004 does."""
    assert {k: v.value for k, v in HF_SPACE_STATES.items()} == SEED_MAPPING


@pytest.mark.parametrize("hf_status", sorted(SEED_MAPPING))
def test_hf_sync_walks_valid_edges_from_every_state_or_refuses(
    service: AgentLifecycleService, place: Place, hf_status: str
) -> None:
    """From each state the agent reaches the mapped state along table edges, each move by "hf_sync",
    or the sync is refused, recorded with its reason, and the agent stays."""
    target = SEED_MAPPING[hf_status]
    for state in STATES:
        name = f"{hf_status}-{state}"
        place(name, state)
        seq = service.lifecycle.registry.seq
        moved = service.sync.sync_hf_space_status(name, hf_status)
        records = service.lifecycle.log.read()[seq:]
        if state in UNREACHABLE[hf_status]:
            assert not moved and [r["kind"] for r in records] == ["TransitionRejected"], state
            assert "no path" in records[0]["reasons"][0] and records[0]["triggered_by"] == "hf_sync"
            assert service.sync.get_manager(name).current_state == state
            continue
        assert moved, state
        hops = [(r["from_state"], r["to_state"]) for r in records if r["entity"] == name]
        assert all(b in DEVCYCLE_TABLE[a] for a, b in hops), hops
        assert all(r["triggered_by"] == "hf_sync" for r in records)
        assert service.sync.get_manager(name).current_state == target
        assert (hops == []) is (state == target)


def test_a_path_of_several_moves_is_recorded_move_by_move(service: AgentLifecycleService) -> None:
    """A registered agent told "running" goes deploying, deployed, starting, online: four hf_sync moves."""
    service.sync.register_agent("a")
    assert service.sync.sync_hf_space_status("a", "running")
    moves = [
        (r["to_state"], r["reason"]) for r in service.lifecycle.log.read() if r["kind"] == "TransitionApplied"
    ]
    assert moves == [(s, "HF space status: running") for s in ("deploying", "deployed", "starting", "online")]


def test_an_unknown_hf_status_is_a_typed_error(service: AgentLifecycleService) -> None:
    """A status outside the mapping raises UsageError naming the known ones, recording nothing."""
    service.sync.register_agent("a")
    with pytest.raises(UsageError, match="building, running"):
        service.sync.sync_hf_space_status("a", "crashed")
    assert len(service.lifecycle.log.read()) == 1


def task_states(service: AgentLifecycleService, agent: str) -> list[str]:
    """The states of the agent's tasks, in assignment order."""
    return [e.state for e in service.lifecycle.registry if e.spec == "task" and e.parent == agent]


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled", "timeout"])
def test_assign_creates_a_running_task_and_complete_ends_it(
    service: AgentLifecycleService, outcome: str
) -> None:
    """assign_task registers a running task under the agent (BUSY); complete_task ends it as told (IDLE)."""
    sync = service.sync
    for verb in (sync.register_agent, sync.deploy_agent, sync.start_agent, sync.assign_task):
        assert verb("a")
    assert task_states(service, "a") == ["running"]
    assert sync.complete_task("a", outcome=outcome)  # type: ignore[arg-type]
    assert task_states(service, "a") == [outcome]
    assert sync.get_manager("a").current_state == "idle"
    assert sync.assign_task("a") and task_states(service, "a") == [outcome, "running"]


@pytest.mark.parametrize(
    ("verb", "end"), [("stop_agent", "cancelled"), ("suspend_agent", "cancelled"), ("handle_error", "failed")]
)
def test_leaving_busy_otherwise_ends_the_running_task(
    service: AgentLifecycleService, verb: str, end: str
) -> None:
    """Stopping or suspending a busy agent cancels its task, an error fails it: no task runs unless BUSY."""
    sync = service.sync
    for step in (sync.register_agent, sync.deploy_agent, sync.start_agent, sync.assign_task):
        step("a")
    args = ("a", "boom") if verb == "handle_error" else ("a",)
    assert getattr(sync, verb)(*args)
    assert task_states(service, "a") == [end]


def test_complete_task_on_an_online_agent_is_refused(service: AgentLifecycleService) -> None:
    """As DevCycle: complete_task needs BUSY, so on an online agent it returns False and records why."""
    sync = service.sync
    for verb in (sync.register_agent, sync.deploy_agent, sync.start_agent):
        verb("a")
    assert not sync.complete_task("a")
    last = service.lifecycle.log.read()[-1]
    assert last["kind"] == "TransitionRejected" and "needs the agent in one of: busy" in last["reasons"][0]
    with pytest.raises(UsageError, match="outcome"):
        sync.complete_task("a", outcome="done")  # type: ignore[arg-type]
