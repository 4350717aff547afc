"""Transition hooks: sync and async handlers before and after a transition, never blocking it."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lifecycle_es import ConfigError, InvalidTransitionError, Lifecycle
from lifecycle_es.specs import RunHook

Calls = list[tuple[str, dict[str, Any]]]
REPO = Path(__file__).resolve().parents[2]


def hook_failures(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    """The records `lifecycle_es.hooks` logged whose message starts with `message`."""
    return [
        r for r in caplog.records if r.name == "lifecycle_es.hooks" and r.getMessage().startswith(message)
    ]


def recorder(calls: Calls, lc: Lifecycle | None = None) -> Any:
    """A sync handler that records its point and data (and the state the registry shows then)."""

    def handler(point: str, data: Mapping[str, Any]) -> None:
        seen = dict(data)
        if lc is not None and data["entity"] in lc.registry:
            seen["registry_state"] = lc.registry.get(data["entity"]).state
        if lc is not None and data["spec"] == "run":
            seen["registry_state"] = lc.registry.run_state
        calls.append((point, seen))

    return handler


def async_recorder(calls: Calls) -> Any:
    async def handler(point: str, data: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        calls.append((point, dict(data)))

    return handler


def failing(point: str, data: Mapping[str, Any]) -> None:
    raise RuntimeError("hook exploded")


async def failing_async(point: str, data: Mapping[str, Any]) -> None:
    await asyncio.sleep(0)
    raise RuntimeError("async hook exploded")


def expert_lifecycle() -> Lifecycle:
    lc = Lifecycle()
    lc.register("x", "expert", state="active", layer=0)
    lc.advance(7)
    return lc


def test_pre_and_post_handlers_get_the_transition_data() -> None:
    """Both handlers are called once with entity, spec, states, trigger, reason and step."""
    lc = expert_lifecycle()
    calls: Calls = []
    lc.hooks.on("pre_transition", recorder(calls))
    lc.hooks.on("post_transition", recorder(calls))
    lc.transition("x", to="dormant", reason="share fell to zero", triggered_by="admin", metadata={"k": 1})
    data = {
        "entity": "x",
        "spec": "expert",
        "from_state": "active",
        "to_state": "dormant",
        "trigger": "go_dormant",
        "reason": "share fell to zero",
        "step": 7,
        "triggered_by": "admin",
        "metadata": {"k": 1},
    }
    assert calls == [("pre_transition", data), ("post_transition", data)]


def test_a_pre_hook_sees_the_decided_transition_and_a_post_hook_sees_it_folded() -> None:
    """Before: gates passed but the registry still shows the old state; after: the new state."""
    lc = expert_lifecycle()
    calls: Calls = []
    seqs: list[int] = []
    lc.hooks.on("pre_transition", recorder(calls, lc))
    lc.hooks.on("pre_transition", lambda p, d: seqs.append(lc.log.last_seq()))
    lc.hooks.on("post_transition", recorder(calls, lc))
    lc.hooks.on("post_transition", lambda p, d: seqs.append(lc.log.last_seq()))
    before = lc.log.last_seq()
    lc.transition("x", to="dormant")
    (_, pre), (_, post) = calls
    assert (pre["to_state"], pre["registry_state"]) == ("dormant", "active")
    assert (post["to_state"], post["registry_state"]) == ("dormant", "dormant")
    assert seqs == [before, before + 1]


def test_hooks_do_not_fire_for_a_refused_transition() -> None:
    """A transition the spec refuses calls no handler."""
    lc = expert_lifecycle()
    calls: Calls = []
    lc.hooks.on("pre_transition", recorder(calls))
    lc.hooks.on("post_transition", recorder(calls))
    with pytest.raises(InvalidTransitionError):
        lc.transition("x", to="archived")
    assert calls == []


def test_async_handlers_are_awaited_without_a_running_loop() -> None:
    """Called from sync code, a coroutine handler runs to completion before transition returns."""
    lc = expert_lifecycle()
    calls: Calls = []
    lc.hooks.on("pre_transition", async_recorder(calls))
    lc.hooks.on("post_transition", async_recorder(calls))
    lc.transition("x", to="dormant")
    assert [(p, d["to_state"]) for p, d in calls] == [
        ("pre_transition", "dormant"),
        ("post_transition", "dormant"),
    ]


def test_async_handlers_run_to_their_end_inside_a_running_loop() -> None:
    """From sync code inside an event loop, a coroutine handler has finished when transition returns."""
    lc = expert_lifecycle()
    calls: Calls = []
    lc.hooks.on("pre_transition", async_recorder(calls))
    lc.hooks.on("post_transition", async_recorder(calls))

    async def main() -> None:
        lc.transition("x", to="dormant")
        assert [p for p, _ in calls] == ["pre_transition", "post_transition"]

    asyncio.run(main())


def test_transition_async_awaits_pre_handlers_before_the_append() -> None:
    """The async API awaits each pre-handler in order before the move is on the log, post-handlers after."""
    lc = expert_lifecycle()
    seen: list[tuple[str, int]] = []

    def at(name: str) -> Any:
        async def handler(point: str, data: Any) -> None:
            await asyncio.sleep(0)
            seen.append((name, lc.registry.seq))

        return handler

    lc.hooks.on("pre_transition", at("pre1"))
    lc.hooks.on("pre_transition", at("pre2"))
    lc.hooks.on("post_transition", at("post"))
    before = lc.registry.seq
    asyncio.run(lc.transition_async("x", to="dormant"))
    assert seen == [("pre1", before), ("pre2", before), ("post", before + 1)]


@pytest.mark.parametrize("handler", [failing, failing_async], ids=["sync", "async"])
def test_a_raising_handler_is_logged_and_does_not_block_the_transition(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The error is logged with its hook point; the transition and later handlers still happen."""
    lc = expert_lifecycle()
    calls: Calls = []
    lc.hooks.on("pre_transition", handler)
    lc.hooks.on("pre_transition", recorder(calls))
    lc.hooks.on("post_transition", handler)
    moved = lc.transition("x", to="dormant")
    assert moved.state == "dormant"
    assert lc.log.read()[-1]["kind"] == "TransitionApplied"
    assert [p for p, _ in calls] == ["pre_transition"]
    failures = hook_failures(caplog, "hook handler failed")
    assert [(r.point, r.entity, r.levelname) for r in failures] == [  # type: ignore[attr-defined]
        ("pre_transition", "x", "ERROR"),
        ("post_transition", "x", "ERROR"),
    ]
    assert all(r.exc_info is not None for r in failures)


def test_a_raising_async_handler_inside_a_loop_is_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    """A coroutine handler failing under the async API is logged and kept in `hooks.failures`."""
    lc = expert_lifecycle()
    lc.hooks.on("post_transition", failing_async)
    asyncio.run(lc.transition_async("x", to="dormant"))
    assert lc.registry.get("x").state == "dormant"
    failures = hook_failures(caplog, "hook handler failed")
    assert [(r.point, r.levelname) for r in failures] == [("post_transition", "ERROR")]  # type: ignore[attr-defined]
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)
    assert [(f.point, f.entity) for f in lc.hooks.failures] == [("post_transition", "x")]


def test_a_failing_hook_writes_nothing_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    """In library use the failure is a log record, never a line on stdout (file descriptor 1)."""
    lc = expert_lifecycle()
    lc.hooks.on("post_transition", failing)
    lc.transition("x", to="dormant")
    out, _ = capfd.readouterr()
    assert out == ""


def test_a_failing_hook_in_an_unconfigured_process_goes_to_stderr_only() -> None:
    """A program that configures no logging sees the failure and its traceback on stderr (logging's
    last resort), and nothing on stdout."""
    script = textwrap.dedent(
        """
        from lifecycle_es import Lifecycle

        def failing(point, data):
            raise RuntimeError("hook exploded")

        lc = Lifecycle()
        lc.register("x", "expert", state="active", layer=0)
        lc.hooks.on("post_transition", failing)
        lc.transition("x", to="dormant")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == ""
    assert "hook handler failed at post_transition for 'x'" in done.stderr
    assert "RuntimeError: hook exploded" in done.stderr


def test_a_handler_registered_for_a_spec_fires_only_for_that_spec() -> None:
    """The spec filter restricts a handler to transitions of entities of that spec."""
    lc = expert_lifecycle()
    lc.register("m", "module")
    expert_calls: Calls = []
    all_calls: Calls = []
    lc.hooks.on("post_transition", recorder(expert_calls), spec="expert")
    lc.hooks.on("post_transition", recorder(all_calls))
    lc.transition("m", to="INSTANTIATED", metrics={"available_slots": 1})
    lc.transition("x", to="dormant")
    assert [d["entity"] for _, d in expert_calls] == ["x"]
    assert [d["entity"] for _, d in all_calls] == ["m", "x"]


def test_a_non_callable_handler_is_refused() -> None:
    """Hooks.on raises ConfigError for a handler that cannot be called."""
    lc = Lifecycle()
    with pytest.raises(ConfigError, match="must be callable"):
        lc.hooks.on("pre_transition", "not a function")  # type: ignore[arg-type]
    assert not lc.hooks


def run_hooks(lc: Lifecycle) -> Calls:
    calls: Calls = []
    for hook in RunHook:
        lc.hooks.on(hook.value, recorder(calls, lc))
    return calls


def test_run_hooks_fire_through_set_run_state() -> None:
    """post_start on entering running, pre_stop on stopping and interrupted, pre_terminate last."""
    lc = Lifecycle(run_id="hooked")
    calls = run_hooks(lc)
    lc.start()
    lc.set_run_state("stopping", step=10)
    lc.set_run_state("stopped", step=11)
    lc.set_run_state("running", step=12)
    lc.set_run_state("interrupted", step=13)
    lc.set_run_state("running", step=14)
    lc.set_run_state("terminated", step=15)
    assert [(p, d["from_state"], d["to_state"], d["step"]) for p, d in calls] == [
        ("post_start", "pending", "running", 0),
        ("pre_stop", "running", "stopping", 10),
        ("post_start", "stopped", "running", 12),
        ("pre_stop", "running", "interrupted", 13),
        ("post_start", "interrupted", "running", 14),
        ("pre_terminate", "running", "terminated", 15),
    ]
    assert {d["entity"] for _, d in calls} == {"hooked"}
    assert lc.registry.run_state == "terminated"


def test_run_state_attrs_are_recorded_and_read_back() -> None:
    """set_run_state's attrs are on the RunStateChanged record, and empty when none are given."""
    lc = Lifecycle()
    lc.start()
    lc.set_run_state("interrupted", step=3, attrs={"checkpoint_saved": True, "notice_source": "signal"})
    moves = [r for r in lc.log.read() if r["kind"] == "RunStateChanged"]
    assert [m["attrs"] for m in moves] == [{}, {"checkpoint_saved": True, "notice_source": "signal"}]


def test_run_pre_hooks_see_the_old_run_state_and_post_hooks_the_new_one() -> None:
    """pre_stop runs before RunStateChanged is appended; post_start after it is folded."""
    lc = Lifecycle()
    calls = run_hooks(lc)
    lc.start()
    lc.set_run_state("stopping")
    (start, start_data), (stop, stop_data) = calls
    assert (start, start_data["registry_state"]) == ("post_start", "running")
    assert (stop, stop_data["registry_state"]) == ("pre_stop", "running")


def test_a_raising_run_hook_does_not_stop_the_run_changing_state(caplog: pytest.LogCaptureFixture) -> None:
    """A failing pre_terminate handler is logged and the run is terminated anyway."""
    lc = Lifecycle()
    lc.hooks.on(RunHook.PRE_TERMINATE.value, failing)
    lc.start()
    lc.set_run_state("terminated")
    assert lc.registry.run_state == "terminated"
    failures = hook_failures(caplog, "hook handler failed")
    assert [r.point for r in failures] == ["pre_terminate"]  # type: ignore[attr-defined]


def test_an_invalid_run_transition_fires_no_hook() -> None:
    """A refused run transition raises before any handler is called."""
    lc = Lifecycle()
    calls = run_hooks(lc)
    lc.start()
    calls.clear()
    with pytest.raises(InvalidTransitionError, match="Invalid run transition: running -> stopped"):
        lc.set_run_state("stopped")
    assert calls == []
    assert lc.registry.run_state == "running"
