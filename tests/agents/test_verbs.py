"""Every service verb from every agent state, against DevCycle's preconditions and return convention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from lifecycle_es import AgentLifecycleService, UnknownEntityError, UsageError
from tests.agents._devcycle import DEVCYCLE_TABLE, STATES, Place


def into(target: str, then: tuple[str, ...] = ()) -> Callable[[str], tuple[str, ...] | None]:
    """DevCycle's `transition_to(target)` (then further moves): valid wherever the table allows it."""
    return lambda state: (target, *then) if target in DEVCYCLE_TABLE[state] else None


def when(states: set[str], *hops: str) -> Callable[[str], tuple[str, ...] | None]:
    """A verb that checks a predicate first (DevCycle's assign, complete, resume)."""
    return lambda state: hops if state in states else None


EXPECTED: dict[str, Callable[[str], tuple[str, ...] | None]] = {
    "deploy_agent": into("deploying", ("deployed",)),
    "start_agent": into("starting", ("online",)),
    "stop_agent": into("stopping", ("offline",)),
    "assign_task": when({"online", "idle"}, "busy"),
    "complete_task": when({"busy"}, "idle"),
    "handle_error": into("error"),
    "put_in_maintenance": into("maintenance"),
    "resume_from_maintenance": when({"maintenance"}, "online"),
    "suspend_agent": into("suspended"),
    "update_agent": into("updating", ("online",)),
    "scale_agent": when({"scaling"}, "online"),
    "terminate_agent": lambda s: (
        ("stopping", "terminated")
        if "stopping" in DEVCYCLE_TABLE[s]
        else ("terminated",)
        if "terminated" in DEVCYCLE_TABLE[s]
        else None
    ),
    "delete_agent": into("deleted"),
}
"""Per verb: the moves it makes from a state, or None where DevCycle's service refuses it."""


def call(service: AgentLifecycleService, verb: str, agent: str) -> bool:
    """Call a verb of the sync API the way seeds/004 does."""
    if verb == "handle_error":
        return service.sync.handle_error(agent, "Network timeout")
    method: Callable[[str], bool] = getattr(service.sync, verb)
    return method(agent)


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_each_verb_applies_or_refuses_from_every_state_as_devcycle_does(
    service: AgentLifecycleService, place: Place, verb: str
) -> None:
    """From each of the 18 states a verb makes DevCycle's moves and returns True, or records the
    refusal with its reason, leaves the agent where it was and returns False."""
    for state in STATES:
        name = f"{verb}-{state}"
        place(name, state)
        seq = service.lifecycle.registry.seq
        moves = EXPECTED[verb](state)
        assert call(service, verb, name) is (moves is not None), state
        records = [r for r in service.lifecycle.log.read()[seq:] if r["entity"] == name]
        if moves is None:
            assert [r["kind"] for r in records] == ["TransitionRejected"], state
            assert records[0]["from_state"] == state and verb.split("_")[0] in records[0]["reasons"][0]
            assert service.sync.get_manager(name).current_state == state
        else:
            applied = [(r["from_state"], r["to_state"]) for r in records if r["kind"] == "TransitionApplied"]
            assert applied == list(zip((state, *moves), moves, strict=False)), state
            assert service.sync.get_manager(name).current_state == moves[-1]


def test_register_is_true_again_for_a_registered_agent_and_refused_elsewhere(
    service: AgentLifecycleService, place: Place
) -> None:
    """As DevCycle's register_agent: True, recording nothing, if already registered; else False, recorded."""
    sync = service.sync
    assert sync.register_agent("a")
    seq = service.lifecycle.registry.seq
    assert sync.register_agent("a") and service.lifecycle.registry.seq == seq
    place("b", "online")
    assert not sync.register_agent("b")
    assert service.lifecycle.log.read()[-1]["kind"] == "TransitionRejected"


def test_misuse_raises_typed_errors(service: AgentLifecycleService) -> None:
    """An unknown agent, an agent id of a wrong type or an unknown initial state raise, recording nothing."""
    with pytest.raises(UnknownEntityError):
        service.sync.deploy_agent("ghost")
    with pytest.raises(UnknownEntityError):
        service.get_manager("ghost")
    with pytest.raises(UsageError, match="agent_id must be a str"):
        service.sync.register_agent(3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="initial_state"):
        service.sync.register_agent("a", initial_state="online")
    with pytest.raises(UsageError, match="metadata"):
        service.sync.register_agent("a", metadata={"x": object()})
    assert service.lifecycle.log.read() == []


def test_the_async_verbs_follow_the_same_table(service: AgentLifecycleService) -> None:
    """Awaited, seeds/004's basic example runs: each verb True, and complete_task again is refused."""

    async def main() -> list[bool]:
        agent = "devcycle"
        return [
            await service.register_agent(agent),
            await service.deploy_agent(agent),
            await service.start_agent(agent),
            await service.assign_task(agent),
            await service.complete_task(agent),
            await service.complete_task(agent),
            await service.stop_agent(agent),
        ]

    assert asyncio.run(main()) == [True, True, True, True, True, False, True]
    assert service.sync.get_manager("devcycle").current_state == "offline"
