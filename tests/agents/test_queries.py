"""The service's queries, state info and metrics: right after the verbs, and equal after a replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lifecycle_es import AgentLifecycleService
from tests._cli import run_cli
from tests.agents._devcycle import DEVCYCLE_TABLE


def populate(service: AgentLifecycleService) -> None:
    """Nine agents in distinct states, through the service's verbs."""
    sync = service.sync
    for name in ("online", "busy", "idle", "error", "maint", "susp", "updating", "offline", "fresh"):
        sync.register_agent(name)
        if name != "fresh":
            sync.deploy_agent(name)
            sync.start_agent(name)
    sync.assign_task("busy")
    sync.assign_task("idle")
    sync.complete_task("idle")
    sync.handle_error("error", "Network timeout")
    sync.put_in_maintenance("maint")
    sync.suspend_agent("susp")
    sync.get_manager("updating").transition_to("updating", reason="new image")
    sync.stop_agent("offline")


def answers(service: AgentLifecycleService) -> dict[str, Any]:
    """Every query's answer; state info without the wall-clock age."""
    sync = service.sync
    infos = {a: sync.get_manager(a).get_current_state_info() for a in sync.get_all_agent_statuses()}
    return {
        "statuses": sync.get_all_agent_statuses(),
        "operational": sync.get_operational_agents(),
        "available": sync.get_available_agents(),
        "error": sync.get_agents_in_error(),
        "maintenance": sync.get_agents_in_maintenance(),
        "metrics": sync.get_lifecycle_metrics(),
        "info": {a: {k: v for k, v in info.items() if k != "time_in_state"} for a, info in infos.items()},
    }


def test_the_queries_answer_devcycle_predicates(service: AgentLifecycleService) -> None:
    """Each query lists exactly the agents DevCycle's predicate holds for, and the metrics count them."""
    populate(service)
    got = answers(service)
    assert got["operational"] == ["online", "busy", "idle"]
    assert got["available"] == ["online", "idle"]
    assert got["error"] == ["error"]
    assert got["maintenance"] == ["maint", "susp", "updating"]
    assert got["metrics"] == {
        "total_agents": 9,
        "operational_agents": 3,
        "available_agents": 2,
        "error_agents": 1,
        "maintenance_agents": 3,
        "state_distribution": {
            "busy": 1,
            "error": 1,
            "idle": 1,
            "maintenance": 1,
            "offline": 1,
            "online": 1,
            "registered": 1,
            "suspended": 1,
            "updating": 1,
        },
    }


def test_state_info_has_current_and_next_states_last_transition_and_history(
    service: AgentLifecycleService,
) -> None:
    """get_current_state_info gives DevCycle's keys plus time in state and the kept history."""
    populate(service)
    info = service.sync.get_manager("error").get_current_state_info()
    assert info["current_state"] == "error"
    assert set(info["valid_transitions"]) == DEVCYCLE_TABLE["error"]
    assert info["last_transition"]["metadata"] == {"error_message": "Network timeout"}
    assert info["last_transition"]["reason"] == "Network timeout"
    assert [h["to_state"] for h in info["history"]] == [
        "deploying",
        "deployed",
        "starting",
        "online",
        "error",
    ]
    assert info["state_history_count"] == 5 and info["time_in_state"] >= 0.0
    fresh = service.sync.get_manager("fresh").get_current_state_info()
    assert fresh["last_transition"] is None and fresh["time_in_state"] >= 0.0


def test_the_answers_are_equal_after_a_replay(tmp_path: Path) -> None:
    """A service opened later on the same log answers every query as the one that wrote it."""
    url = f"jsonl://{tmp_path}"
    writer = AgentLifecycleService(url, run_id="replayed")
    populate(writer)
    before = answers(writer)
    writer.close()
    reader = AgentLifecycleService(url, run_id="replayed")
    assert answers(reader) == before
    assert reader.lifecycle.registry == writer.lifecycle.registry
    reader.close()


def test_the_agents_command_prints_the_same_statuses_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agents LOG --run RUN --format json` prints the statuses and metrics; the text names each agent."""
    service = AgentLifecycleService(f"jsonl://{tmp_path}", run_id="cli")
    populate(service)
    status, out, _ = run_cli(capsys, "agents", str(tmp_path), "--run", "cli", "--format", "json")
    assert status == 0
    printed = json.loads(out)
    assert printed["agents"] == list(service.sync.get_all_agent_statuses().values())
    assert printed["metrics"] == service.sync.get_lifecycle_metrics()
    status, out, _ = run_cli(capsys, "agents", str(tmp_path), "--run", "cli")
    assert status == 0 and "total_agents: 9" in out
    assert all(f"\n{name} " in out for name in ("online", "busy", "maint", "fresh"))
    service.close()
