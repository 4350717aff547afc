"""One collective per boundary: a boundary's digest is compared at the next boundary's sum, and
its `ActionsVerified` written in that boundary's batch; `verify_every` thins the digests out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from bus import MemoryLog
from bus.testing import free_port
from lifecycle_es import ConfigError, Lifecycle
from projections import Runner
from projections.moe import ModelSurgery
from projections.training import LifecycleSync, Replicated, SyncConfig, distributed
from replay.demo import DemoOptions, demo_config
from replay.demo.model import DemoModel
from tests._expert_actions import new_batch, spawn


@pytest.fixture
def one_rank() -> Iterator[None]:
    """A one-rank gloo group: the collectives run, as on every rank of a real world."""
    options = {"init_method": f"tcp://127.0.0.1:{free_port()}", "rank": 0, "world_size": 1}
    with distributed.process_group("gloo", **options):
        yield


def _sync(log: MemoryLog, config: SyncConfig | None = None) -> LifecycleSync:
    model = DemoModel(d_in=4, d_out=2, d_model=8, d_hidden=4, capacity=4, layers=1, top_k=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    replicated = Replicated(model)
    surgery = ModelSurgery(model.layers(), optimizer, model=model, on_rewrap=replicated.rewrap)
    lc = Lifecycle(log)
    return LifecycleSync(lc, Runner(log, [surgery]), surgery, replicated=replicated, config=config)


def _begin(lc: Lifecycle) -> None:
    lc.start(seed=0)
    for i in range(2):
        lc.register(f"L0_E{i}", "expert", state="active", layer=0, slot=i)


def _spawn(step: int) -> Callable[[Lifecycle], None]:
    """The leader's decide at `step`: one SPAWN, a clone of L0_E0, as the coordinator makes it."""
    config = demo_config(DemoOptions())

    def decide(lc: Lifecycle) -> None:
        batch = new_batch(lc, step, config)
        spawn(batch, config, 0, 4, parent="L0_E0")
        lc.append(batch.events)

    return decide


def _kinds(records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["kind"], r.get("step", -1)) for r in records if r["kind"] in ("ActionsVerified", "StepSealed")]


@pytest.mark.parametrize("every", [0, -5, True, 2.5, "3"])
def test_verify_every_refuses_what_is_no_step_count(every: Any) -> None:
    """A `verify_every` that is not an int >= 1 is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match="verify_every must be a number of steps >= 1"):
        SyncConfig(verify_every=every)


def test_a_decisions_verification_is_written_in_the_next_boundarys_batch(one_rank: None) -> None:
    """The boundary that applied a decision writes no ActionsVerified itself; the next one writes
    it, for the decision's step and with its digest, before its own seal."""
    log = MemoryLog("carried")
    sync = _sync(log)
    sync.at_boundary(0, _begin)
    decided = sync.at_boundary(10, _spawn(10))
    assert decided.decisions == 1 and decided.digest is not None
    assert _kinds(log.read())[-1] == ("StepSealed", 10)
    sync.at_boundary(20)
    after = log.read(after=decided.records[-1]["seq"])
    assert _kinds(after) == [("ActionsVerified", 10), ("StepSealed", 20)]
    assert after[0]["digest"] == decided.digest and after[0]["world_size"] == 1


def test_verify_digests_the_last_boundary_and_the_state_now(one_rank: None) -> None:
    """`verify` at the end compares the last boundary's pending digest (recording its decision)
    and then the state now, recording both."""
    log = MemoryLog("end")
    sync = _sync(log)
    sync.at_boundary(0, _begin)
    decided = sync.at_boundary(10, _spawn(10))
    final = sync.verify(15)
    verified = [r for r in log.read() if r["kind"] == "ActionsVerified"]
    assert [(r["step"], r["digest"]) for r in verified] == [(10, decided.digest), (15, final)]


def test_verify_every_skips_the_digest_of_boundaries_without_a_decision(one_rank: None) -> None:
    """With verify_every=20, a boundary at step 10 without a decision gets no digest; step 20
    and any boundary with a decision do."""
    sync = _sync(MemoryLog("every"), SyncConfig(verify_every=20))
    sync.at_boundary(0, _begin)
    assert sync.at_boundary(10).digest is None
    assert sync.at_boundary(20).digest is not None
    assert sync.at_boundary(30, _spawn(30)).digest is not None
