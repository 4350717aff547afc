"""Transition metadata (issue 13 point 7): who asked for a move and what they attached, on the
log and in the registry, equal after a replay."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lifecycle_es import CODEC, InvalidTransitionError, Lifecycle, UsageError
from lifecycle_es.registry import Registry


def agent_lifecycle() -> Lifecycle:
    """A lifecycle with one registered agent `a`, in state registered."""
    lc = Lifecycle(run_id="meta")
    lc.register("a", "agent")
    return lc


def test_an_applied_move_records_triggered_by_and_metadata() -> None:
    """The applied event carries triggered_by and metadata, and the entity keeps them as its last move."""
    lc = agent_lifecycle()
    metadata = {"window": "02:00", "n": [1]}
    lc.transition("a", "deploying", reason="ship", triggered_by="admin", metadata=metadata)
    record = lc.log.read()[-1]
    assert (record["kind"], record["triggered_by"], record["metadata"]) == (
        "TransitionApplied",
        "admin",
        {"window": "02:00", "n": [1]},
    )
    last = lc.registry.get("a").last_transition
    assert last is not None
    assert {k: last[k] for k in ("from_state", "to_state", "step", "reason", "triggered_by", "metadata")} == {
        "from_state": "registered",
        "to_state": "deploying",
        "step": 0,
        "reason": "ship",
        "triggered_by": "admin",
        "metadata": {"window": "02:00", "n": [1]},
    }


def test_a_refused_move_records_triggered_by_and_metadata() -> None:
    """A refusal carries who asked and what they attached, and leaves the last applied move alone."""
    lc = agent_lifecycle()
    with pytest.raises(InvalidTransitionError):
        lc.transition("a", "online", triggered_by="hf_sync", metadata={"hf": "running"})
    record = lc.log.read()[-1]
    assert (record["kind"], record["triggered_by"], record["metadata"]) == (
        "TransitionRejected",
        "hf_sync",
        {"hf": "running"},
    )
    assert lc.registry.get("a").last_transition is None


def test_the_last_transition_is_equal_after_a_replay_and_a_snapshot() -> None:
    """A registry folded again from the log, and one rebuilt from a snapshot, equal the live one."""
    lc = agent_lifecycle()
    lc.transition("a", "deploying", triggered_by="ci", metadata={"sha": "abc"})
    lc.transition("a", "deployed", reason="done")
    replayed = Lifecycle(lc.log, run_id="meta")
    assert replayed.registry == lc.registry
    assert replayed.registry.get("a").last_transition == lc.registry.get("a").last_transition
    rebuilt = Registry.from_state(lc.registry.specs, lc.registry.to_state())
    assert rebuilt == lc.registry


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"metadata": {"when": object()}}, "metadata['when'] is of type object"),
        ({"metadata": {1: "x"}}, "has the key 1 of type int"),
        ({"metadata": {"x": float("nan")}}, "is nan"),
        ({"metadata": ["x"]}, "must be a mapping"),
        ({"triggered_by": 3}, "triggered_by must be a str"),
    ],
)
def test_bad_metadata_or_triggered_by_is_a_typed_error_and_records_nothing(
    kwargs: dict[str, Any], phrase: str
) -> None:
    """Non-JSON metadata or a non-str triggered_by raises UsageError naming it, and nothing is appended."""
    lc = agent_lifecycle()
    seq = lc.registry.seq
    with pytest.raises(UsageError, match=re.escape(phrase)):
        lc.transition("a", "deploying", **kwargs)
    assert lc.registry.seq == seq == len(lc.log.read())


def test_records_written_before_the_fields_existed_still_decode_and_fold() -> None:
    """An old TransitionApplied record without triggered_by and metadata decodes and folds to None and {}."""
    lc = agent_lifecycle()
    lc.transition("a", "deploying")
    old = [{k: v for k, v in r.items() if k not in ("triggered_by", "metadata")} for r in lc.log.read()]
    assert CODEC.from_record(old[-1]).triggered_by is None  # type: ignore[attr-defined]
    fresh = Lifecycle(run_id="meta")
    fresh.fold(old)
    last = fresh.registry.get("a").last_transition
    assert last is not None and (last["triggered_by"], last["metadata"]) == (None, {})
