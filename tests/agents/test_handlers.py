"""Sync and async transition handlers of the agent service: order against the append, and failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from lifecycle_es import AgentLifecycleService

Seen = list[tuple[str, str, str, int]]


def watcher(service: AgentLifecycleService, seen: Seen, name: str) -> Any:
    """An async handler noting its name, the point, the target state and the log's last seq then."""

    async def handler(point: str, data: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)  # yields to the loop: an unawaited handler would run late
        seen.append((name, point, data["to_state"], service.lifecycle.log.last_seq()))

    return handler


def test_async_pre_handlers_are_awaited_in_order_before_the_append(service: AgentLifecycleService) -> None:
    """An awaited verb runs each pre-handler in order before its events are on the log, then post-handlers."""
    seen: Seen = []
    service.sync.register_agent("a")
    manager = service.get_manager("a")
    manager.on_event("pre_transition", watcher(service, seen, "first"))
    manager.on_event("pre_transition", watcher(service, seen, "second"))
    manager.on_event("post_transition", watcher(service, seen, "post"))
    before = service.lifecycle.log.last_seq()
    assert asyncio.run(service.deploy_agent("a"))
    after = before + 2  # deploying, then deployed, in one append
    assert seen == [
        ("first", "pre_transition", "deploying", before),
        ("second", "pre_transition", "deploying", before),
        ("first", "pre_transition", "deployed", before),
        ("second", "pre_transition", "deployed", before),
        ("post", "post_transition", "deploying", after),
        ("post", "post_transition", "deployed", after),
    ]


def test_manager_transition_to_passes_devcycle_data_to_handlers(service: AgentLifecycleService) -> None:
    """transition_to(reason=, triggered_by=, metadata=) reaches the handlers and the last transition."""
    calls: list[tuple[str, dict[str, Any]]] = []
    service.sync.register_agent("a")
    manager = service.get_manager("a")
    manager.on_event("post_transition", lambda point, data: calls.append((point, dict(data))))
    moved = asyncio.run(
        manager.transition_to(
            "deploying", reason="ship it", triggered_by="admin", metadata={"window": "02:00"}
        )
    )
    assert moved
    [(point, data)] = calls
    assert point == "post_transition"
    wanted = {
        "from_state": "registered",
        "to_state": "deploying",
        "reason": "ship it",
        "triggered_by": "admin",
    }
    assert {k: data[k] for k in wanted} == wanted and data["metadata"] == {"window": "02:00"}
    last = manager.get_current_state_info()["last_transition"]
    assert (last["triggered_by"], last["metadata"]) == ("admin", {"window": "02:00"})


def test_sync_api_runs_async_handlers_to_their_end_without_a_loop(service: AgentLifecycleService) -> None:
    """The sync API runs a coroutine handler before the append, with no event loop of the caller's."""
    seen: Seen = []
    service.sync.register_agent("a")
    service.sync.get_manager("a").on_event("pre_transition", watcher(service, seen, "pre"))
    before = service.lifecycle.log.last_seq()
    assert service.sync.deploy_agent("a")
    assert seen == [
        ("pre", "pre_transition", "deploying", before),
        ("pre", "pre_transition", "deployed", before),
    ]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_failing_handler_is_logged_and_kept_and_never_blocks(
    service: AgentLifecycleService, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """A raising handler (sync or async) is logged and kept in hooks.failures; the verb still applies."""

    def broken(point: str, data: Mapping[str, Any]) -> None:
        raise RuntimeError("handler broke")

    async def broken_async(point: str, data: Mapping[str, Any]) -> None:
        raise RuntimeError("async handler broke")

    service.sync.register_agent("a")
    manager = service.get_manager("a")
    manager.on_event("pre_transition", broken)
    manager.on_event("post_transition", broken_async)
    with caplog.at_level(logging.ERROR, logger="lifecycle_es.hooks"):
        ok = service.sync.deploy_agent("a") if api == "sync" else asyncio.run(service.deploy_agent("a"))
    assert ok and manager.current_state == "deployed"
    failed = [r for r in caplog.records if r.name == "lifecycle_es.hooks"]
    assert len(failed) == 4 and all(r.exc_info for r in failed)
    assert [f.point for f in manager.handler_failures] == ["pre_transition"] * 2 + ["post_transition"] * 2


def test_service_wide_handlers_see_task_moves_too(service: AgentLifecycleService) -> None:
    """A handler on the lifecycle's hooks sees every move of a verb, the task's included, in order."""
    seen: list[tuple[str, str, str]] = []
    service.lifecycle.hooks.on(
        "post_transition", lambda p, d: seen.append((d["spec"], d["from_state"], d["to_state"]))
    )
    for verb in ("register_agent", "deploy_agent", "start_agent"):
        getattr(service.sync, verb)("a")
    seen.clear()
    assert service.sync.assign_task("a")
    assert seen == [("task", "pending", "running"), ("agent", "online", "busy")]


def test_concurrent_awaited_verbs_on_one_service_are_serialised(service: AgentLifecycleService) -> None:
    """Verbs gathered on one loop, whose pre-handlers yield, all apply; so do they on a second loop."""
    order: list[str] = []

    async def slow(point: str, data: Mapping[str, Any]) -> None:
        order.append(data["entity"])
        await asyncio.sleep(0)

    service.lifecycle.hooks.on("pre_transition", slow)
    names = [f"a{i}" for i in range(5)]

    async def main(verb: str) -> list[bool]:
        return list(await asyncio.gather(*(getattr(service, verb)(name) for name in names)))

    assert asyncio.run(main("register_agent")) == [True] * 5
    assert asyncio.run(main("deploy_agent")) == [True] * 5
    assert {service.sync.get_manager(n).current_state for n in names} == {"deployed"}
    assert len(order) == 10


def test_moves_are_logged_at_info_and_refusals_at_warning(
    service: AgentLifecycleService, caplog: pytest.LogCaptureFixture
) -> None:
    """As DevCycle's logging: each applied move an INFO line, each refused verb a WARNING with its reason."""
    with caplog.at_level(logging.INFO, logger="lifecycle_es.agents"):
        service.sync.register_agent("a")
        service.sync.deploy_agent("a")
        service.sync.complete_task("a")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "lifecycle_es.agents"]
    assert lines == [
        ("INFO", "agent 'a': registered -> deploying (Agent deployment, by system)"),
        ("INFO", "agent 'a': deploying -> deployed (Agent deployment, by system)"),
        (
            "WARNING",
            "complete_task of 'a' refused: complete_task needs the agent in one of: busy; it is deployed",
        ),
    ]
