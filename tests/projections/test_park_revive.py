"""Park and revive: a pruned expert's weights and moments are kept and come back bit for bit."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from bus import MemoryLog
from lifecycle_es import Action, DecisionMade, InconsistentEventError, Lifecycle, LifecycleConfig
from lifecycle_es.controllers import REVIVAL, ExpertCoordinator, ExpertCoordinatorConfig, expert_id
from lifecycle_es.controllers._revive import parked
from projections import Snapshot
from projections.moe import ModelSurgery, MoELayer, Strategy, revival_affinity
from projections.moe._parking import ParkedExpert
from projections.training import ExpertLifecycle
from tests.ddp._harness import Ranks

D_MODEL, D_HIDDEN, SLOTS, TOKENS = 8, 16, 4, 32
RUN = "park"
E = [expert_id(0, i) for i in range(SLOTS)]


pytestmark = pytest.mark.usefixtures("one_thread")


class Rig:
    """A layer of four experts, its Adam optimizer, a lifecycle log and the surgery folding it."""

    def __init__(self, strategy: Strategy) -> None:
        self.layer = MoELayer(D_MODEL, D_HIDDEN, SLOTS, generator=torch.Generator().manual_seed(0))
        self.optimizer = torch.optim.Adam(self.layer.parameters(), lr=1e-2)
        self.lc = Lifecycle(run_id=RUN)
        self.surgery = ModelSurgery(
            {0: self.layer}, self.optimizer, strategy=strategy, on_rewrap=lambda: None
        )
        for i, entity in enumerate(E):
            self.lc.register(entity, "expert", state="active", layer=0, slot=i)
        self.sync()
        self.g = torch.Generator().manual_seed(1)

    def sync(self) -> None:
        self.surgery.apply(self.lc.log.read(after=self.surgery.seq))

    def train(self, steps: int) -> None:
        for _ in range(steps):
            x = torch.randn(TOKENS, D_MODEL, generator=self.g)
            self.optimizer.zero_grad()
            self.layer(x).square().mean().backward()
            self.optimizer.step()

    def prune(self, entity: str, budget: int = 2) -> None:
        """Take an expert dormant -> pending_prune -> archived through a `confirmed_dead` PRUNE."""
        self.lc.transition(entity, "dormant")
        self.decide(Action.PRUNE, entity, "confirmed_dead", {"park_budget": budget})
        self.lc.transition(entity, "pending_prune")
        self.lc.transition(entity, "archived")
        self.sync()

    def park_basin_gone(self, entity: str, budget: int = 2) -> None:
        """Take an active expert (still routed) pending_prune -> archived through a `basin_gone` PRUNE."""
        self.decide(Action.PRUNE, entity, "basin_gone", {"park_budget": budget})
        self.lc.transition(entity, "pending_prune")
        self.lc.transition(entity, "archived")
        self.sync()

    def revive(self, entity: str) -> None:
        self.decide(Action.REVIVE, entity, "basin_returned", {})
        self.lc.transition(entity, "active")
        self.sync()

    def decide(self, action: Action, entity: str, reason: str, config: Mapping[str, int]) -> None:
        self.lc.append(
            [
                DecisionMade(
                    run_id=RUN,
                    action=action,
                    layer=0,
                    entity=entity,
                    reason=reason,
                    config_snapshot=dict(config),
                    seed=3,
                )
            ]
        )

    def rows(self, entity: str) -> dict[str, torch.Tensor]:
        """Copies of an expert's parameter rows and Adam moment rows, by name."""
        row = self.surgery.row(entity)
        assert row is not None
        out = {}
        for name, param in (self.layer.expert_parameters() | self.layer.router_parameters()).items():
            out[name] = param.detach()[row].clone()
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{name}.{key}"] = self.optimizer.state[param][key][row].clone()
        return out


@pytest.mark.parametrize("strategy", ["masked", "resize"])
@pytest.mark.parametrize("park", ["prune", "park_basin_gone"])
def test_a_revived_expert_gets_its_weights_and_moments_back_bit_for_bit(
    strategy: Strategy, park: str
) -> None:
    """Parked (dead, or routed but its inputs gone), trained past and revived, an expert's rows and
    Adam moments equal those it was parked with."""
    rig = Rig(strategy)
    rig.train(3)
    before = rig.rows(E[3])
    getattr(rig, park)(E[3])
    assert E[3] not in rig.surgery.routing_experts(0).values()
    rig.train(3)
    rig.revive(E[3])
    after = rig.rows(E[3])
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert E[3] in rig.surgery.routing_experts(0).values()
    assert E[3] not in rig.surgery.parking.parked


def test_the_park_budget_drops_the_oldest_expert_first() -> None:
    """With a budget of two, a third park drops the first; reviving it is refused as inconsistent."""
    rig = Rig("masked")
    rig.train(1)
    for entity in E[1:]:
        rig.prune(entity, budget=2)
    assert sorted(rig.surgery.parking.parked) == [E[2], E[3]]
    with pytest.raises(InconsistentEventError, match="not parked"):
        rig.revive(E[1])


def test_every_rank_folding_the_log_revives_to_the_same_bytes() -> None:
    """Two ranks' surgeries following one log (park, train the same, revive) end with equal digests."""
    ranks = [Rig("resize"), Rig("resize")]
    for rig in ranks:
        rig.train(2)
        rig.prune(E[2])
        rig.train(2)
        rig.revive(E[2])
    assert ranks[0].surgery.digest(event_ids=False) == ranks[1].surgery.digest(event_ids=False)


def test_affinity_counts_the_inputs_a_parked_row_would_win() -> None:
    """Inputs along a parked expert's router row are all won by it; inputs against it are not."""
    rig = Rig("masked")
    rig.prune(E[3])
    row = rig.surgery.parking.parked[E[3]].weights["router_weight"]
    toward = row.repeat(4, 1) * 100
    assert revival_affinity(rig.surgery, 0, toward) == {E[3]: 1.0}
    assert revival_affinity(rig.surgery, 0, -toward) == {E[3]: 0.0}


# -- the coordinator --------------------------------------------------------------------------

CONFIG = ExpertCoordinatorConfig.seeds_002(
    prune_patience=2,
    prune_init_grace=0,
    basin_window_size=10,
    park_budget=1,
    revive_patience=2,
    starvation_entropy_threshold=None,
    starvation_saturation_threshold=None,
)


class Run:
    """A lifecycle with its coordinator over one four-slot layer, driven by checkpoints."""

    def __init__(self) -> None:
        self.lc = Lifecycle(run_id=RUN, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
        self.lc.start()
        self.coordinator = ExpertCoordinator(CONFIG, {0: SLOTS})
        self.coordinator.register_initial(self.lc, 0, SLOTS)
        self.step = 0
        self.decided: list[DecisionMade] = []

    def checkpoint(self, shares: Mapping[str, float], revival: Mapping[str, float] | None = None) -> None:
        self.step += 10
        routing = [e.entity for e in self.lc.registry.live() if e.state in ("cooling", "active", "dormant")]
        experts = {e: {"share": shares.get(e, 0.0)} for e in routing}
        layer = {"entropy": 1.0, "n_eff": 2.7, "top2_share": 0.7, "dead_count": 0.0, "n_active": 3.0}
        layer |= {REVIVAL + e: v for e, v in (revival or {}).items()}
        self.lc.append(
            self.coordinator.observations(run_id=RUN, step=self.step, experts=experts, layers={0: layer})
        )
        events = self.coordinator.decide(self.lc.registry, run_id=RUN, step=self.step)
        self.lc.append(events)
        self.lc.seal(self.step)
        self.decided += [e for e in events if isinstance(e, DecisionMade)]


ALIVE = {E[0]: 0.4, E[1]: 0.3, E[2]: 0.3}


def _parked_run() -> Run:
    """A run whose expert E3 went dormant, was pruned as dead and archived (parked)."""
    run = Run()
    while run.lc.registry.get(E[3]).state != "archived":
        run.checkpoint(ALIVE)
    assert [(d.action, d.entity, d.reason) for d in run.decided] == [(Action.PRUNE, E[3], "confirmed_dead")]
    return run


def test_a_parked_expert_is_revived_when_inputs_like_its_basin_return() -> None:
    """Affinity at the threshold for revive_patience checkpoints revives it to active, with its evidence."""
    run = _parked_run()
    assert [e.entity for e in parked(run.lc.registry, 0, CONFIG.park_budget)] == [E[3]]
    run.checkpoint(ALIVE, {E[3]: 0.05})
    run.checkpoint(ALIVE, {E[3]: 0.5})
    assert run.decided[-1].action == Action.PRUNE
    run.checkpoint(ALIVE, {E[3]: 0.5})
    revive = run.decided[-1]
    assert (revive.action, revive.entity, revive.reason) == (Action.REVIVE, E[3], "basin_returned")
    assert revive.metrics_at_decision == {"affinity": 0.5, "checkpoints_returned": 2, "slot": 3}
    assert run.lc.registry.get(E[3]).state == "active"


def test_an_expert_dropped_from_the_park_is_never_revived() -> None:
    """Beyond park_budget the oldest parked expert is no revival candidate, however high its affinity."""
    run = _parked_run()
    shares = {E[0]: 0.5, E[1]: 0.5}
    while run.lc.registry.get(E[2]).state != "archived":
        run.checkpoint(shares)
    assert [e.entity for e in parked(run.lc.registry, 0, CONFIG.park_budget)] == [E[2]]
    for _ in range(3):
        run.checkpoint(shares, {E[3]: 0.9})
    assert not [d for d in run.decided if d.action == Action.REVIVE]


def test_replaying_a_revival_rebuilds_the_live_registry() -> None:
    """A registry folded from the log of a park and a revival equals the live one."""
    run = _parked_run()
    for _ in range(2):
        run.checkpoint(ALIVE, {E[3]: 0.5})
    assert run.decided[-1].action == Action.REVIVE
    rebuilt = Lifecycle(run.lc.log, config=LifecycleConfig(metric_window=CONFIG.basin_window_size))
    assert rebuilt.registry == run.lc.registry


def test_the_expert_lifecycle_records_revival_affinity_on_the_layer() -> None:
    """after_step(revival=...) records each parked expert's affinity as the layer metric revival:<id>."""
    model = torch.nn.Sequential(
        MoELayer(D_MODEL, D_HIDDEN, SLOTS, generator=torch.Generator().manual_seed(0))
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    log = MemoryLog(RUN)
    lifecycle = ExpertLifecycle(model, optimizer, log, num_types=2, initial_experts=SLOTS)
    lifecycle.start(seed=0)
    row = 10 * model[0].router_weight.detach()[3]  # scores its own direction above every routing row
    lifecycle.surgery.parking.parked["L0_E9"] = ParkedExpert(0, 3, (0, 9), {"router_weight": row}, {})
    x = torch.randn(TOKENS, D_MODEL, generator=torch.Generator().manual_seed(2))
    model(x)
    lifecycle.record(torch.zeros(TOKENS, dtype=torch.long))
    lifecycle.evaluate(5, revival=lambda: {0: row.repeat(4, 1)})
    layer = [r for r in log.read() if r["kind"] == "MetricsObserved" and r["entity"] is None][-1]
    assert layer["metrics"][REVIVAL + "L0_E9"] == 1.0


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_parked_experts_survive_a_surgery_snapshot(strategy: Strategy) -> None:
    """A surgery restored from a snapshot (through torch weights_only) revives a parked expert bit for bit."""
    rig = Rig(strategy)
    rig.train(2)
    before = rig.rows(E[1])
    rig.prune(E[1])
    buffer = io.BytesIO()
    torch.save(rig.surgery.snapshot().state, buffer)
    buffer.seek(0)
    rig.surgery.restore(
        Snapshot(kind="surgery", seq=rig.surgery.seq, state=torch.load(buffer, weights_only=True))
    )
    rig.revive(E[1])
    after = rig.rows(E[1])
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_an_expert_lifecycle_parks_an_idle_expert_and_revives_it_when_its_inputs_return(
    strategy: Strategy,
) -> None:
    """End to end through ExpertLifecycle: an expert no input reaches is pruned and parked, and
    revived with the very rows it was parked with once inputs on its side of the router return."""
    layer = MoELayer(D_MODEL, D_HIDDEN, SLOTS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.router_weight[3] = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), -10.0)
    model = torch.nn.Sequential(layer)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    config = ExpertCoordinatorConfig.seeds_002(
        prune_patience=2,
        revive_patience=2,
        split_share_threshold=0.99,
        starvation_entropy_threshold=None,
        starvation_saturation_threshold=None,
        basin_window_size=10,
        max_experts_per_layer=SLOTS,  # a masked layer of SLOTS slots
    )
    lifecycle = ExpertLifecycle(
        model, optimizer, MemoryLog(RUN), num_types=1, config=config, strategy=strategy
    )
    lifecycle.start(seed=0)
    g = torch.Generator().manual_seed(4)
    home = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), 3.0)  # E3 scores -30 here
    parked_rows: dict[str, torch.Tensor] = {}
    for step in range(1, 61):
        if E[3] in lifecycle.surgery.parking.parked and not parked_rows:
            parked_rows = dict(lifecycle.surgery.parking.parked[E[3]].weights)
        side = -1.0 if parked_rows else 1.0  # once it is parked, its kind of input returns
        x = side * home + 0.3 * torch.randn(TOKENS, D_MODEL, generator=g)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        lifecycle.record(torch.zeros(TOKENS, dtype=torch.long))
        boundary = lifecycle.after_step(step, revival=lambda x=x: {0: x})
        if boundary and parked_rows and lifecycle.lc.registry.get(E[3]).state == "active":
            break
    made = [(r["action"], r["entity"]) for r in lifecycle.lc.log.read() if r["kind"] == "DecisionMade"]
    assert made == [(Action.PRUNE, E[3]), (Action.REVIVE, E[3])]
    assert lifecycle.lc.registry.get(E[3]).state == "active"
    row = lifecycle.surgery.row(E[3])  # compared right after the revival, before it trains again
    params = layer.expert_parameters() | layer.router_parameters()
    assert row is not None and all(torch.equal(params[k].detach()[row], v) for k, v in parked_rows.items())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_two_gloo_ranks_park_and_revive_at_the_same_step_to_the_same_bytes(
    strategy: Strategy, tmp_path: Path
) -> None:
    """Under DDP both ranks apply the PRUNE and the REVIVE at the same boundary and end with one digest."""
    url = f"jsonl://{tmp_path / 'runs'}"
    finished = Ranks(["-m", "tests.ddp._revive_worker", url, strategy], 2, tmp_path / "ranks").wait()
    assert all(f.returncode == 0 for f in finished), [f.stderr[-2000:] for f in finished]
    reports = [f.report for f in finished]
    assert [[a, e] for a, e, _ in reports[0]["made"]] == [["PRUNE", E[3]], ["REVIVE", E[3]]]
    assert reports[0]["made"] == reports[1]["made"]
    assert reports[0]["digest"] is not None and reports[0]["digest"] == reports[1]["digest"]
    assert reports[0]["model"] == reports[1]["model"]
