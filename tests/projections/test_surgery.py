"""Model surgery applies SPAWN, PRUNE, SPLIT and MERGE to MoE weights and Adam state, deterministically."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from lifecycle_es import (
    Action,
    ConfigError,
    DecisionMade,
    InconsistentEventError,
    Lifecycle,
    UsageError,
)
from projections import Snapshot
from projections.moe import ModelSurgery, MoELayer, Strategy, optimizer_params_match

D_MODEL, D_HIDDEN, CAPACITY, TOKENS = 8, 16, 8, 64
STRATEGIES: tuple[Strategy, ...] = ("masked", "resize")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
SLOT_PARAMS = ("b1", "b2", "router_weight", "w1", "w2")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tensors here are tiny: one intra-op thread, so a busy 2-core machine does not make OpenMP spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ToyMoE(nn.Module):
    """An input projection and one MoE layer, built from a seeded generator only."""

    def __init__(self, seed: int, capacity: int, device: str = "cpu") -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.eye(D_MODEL) + 0.1 * torch.randn(D_MODEL, D_MODEL, generator=g))
        self.moe = MoELayer(D_MODEL, D_HIDDEN, capacity, top_k=2, generator=g)
        self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.moe(x @ self.proj)
        return out


@dataclass
class Rig:
    """A model, its Adam optimizer, a lifecycle writing the run's log, and the surgery folding it."""

    model: ToyMoE
    optimizer: torch.optim.Optimizer
    lc: Lifecycle
    surgery: ModelSurgery
    rewraps: list[int] = field(default_factory=list)

    def decide(self, action: Action, **fields: Any) -> None:
        """Append one decision to the log and fold everything new into the surgery."""
        self.lc.append([DecisionMade(run_id=self.lc.run_id, action=action, layer=0, **fields)])
        self.sync()

    def sync(self) -> None:
        """Fold the log's new records, as a rank does at a step boundary."""
        self.surgery.apply(self.lc.log.read(after=self.surgery.seq))

    def moments(self, entity: str) -> dict[str, torch.Tensor]:
        """Return copies of an expert's Adam moment rows, by parameter and key."""
        row = self.surgery.row(entity)
        assert row is not None
        out = {}
        for name, param in _slot_params(self.model).items():
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{name}.{key}"] = self.optimizer.state[param][key][row].clone()
        return out

    def weights(self, entity: str) -> dict[str, torch.Tensor]:
        """Return copies of an expert's rows of every slot-major parameter."""
        row = self.surgery.row(entity)
        assert row is not None
        return {name: p.detach()[row].clone() for name, p in _slot_params(self.model).items()}


def _slot_params(model: ToyMoE) -> dict[str, nn.Parameter]:
    return model.moe.expert_parameters() | model.moe.router_parameters()


def _rig(strategy: Strategy = "masked", *, seed: int = 0, initial: int = 4, device: str = "cpu") -> Rig:
    """Build a rig whose layer 0 has `initial` active experts L0_E0.. in slots 0.."""
    capacity = CAPACITY if strategy == "masked" else initial
    model = ToyMoE(seed, capacity, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    lc = Lifecycle(run_id="surgery")
    rewraps: list[int] = []
    surgery = ModelSurgery(
        {0: model.moe},
        optimizer,
        strategy=strategy,
        model=model,
        on_rewrap=lambda: rewraps.append(model.moe.capacity),
    )
    for i in range(initial):
        lc.register(f"L0_E{i}", "expert", state="active", layer=0, slot=i)
    rig = Rig(model, optimizer, lc, surgery, rewraps)
    rig.sync()
    return rig


def _follower(leader: Rig, *, seed: int = 0) -> Rig:
    """Build another rank: a fresh model, optimizer and surgery following the leader's log."""
    model = ToyMoE(seed, leader.model.moe.capacity)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    surgery = ModelSurgery({0: model.moe}, optimizer, strategy=leader.surgery.strategy, model=model)
    rig = Rig(model, optimizer, leader.lc, surgery)
    rig.sync()
    return rig


def _data(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A toy regression: four token clusters, each mapped by its own linear map."""
    g = torch.Generator().manual_seed(7)
    centres = 3 * torch.randn(4, D_MODEL, generator=g)
    maps = torch.randn(4, D_MODEL, D_MODEL, generator=g) / D_MODEL**0.5
    cluster = torch.arange(TOKENS) % 4
    x = centres[cluster] + torch.randn(TOKENS, D_MODEL, generator=g)
    y = torch.einsum("td,tde->te", x, maps[cluster])
    return x.to(device), y.to(device)


def _train(rig: Rig, steps: int) -> list[float]:
    """Run Adam steps on the toy task, ending at a step boundary with gradients cleared."""
    x, y = _data(str(rig.model.proj.device))
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(rig.model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        rig.optimizer.step()
        rig.optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _spawn_child(rig: Rig, child: str, slot: int) -> None:
    rig.lc.register(child, "expert", layer=0, slot=slot)


def _lifecycle_sequence(rig: Rig, *, seed: int = 11) -> Iterator[str]:
    """Drive a spawn, a prune, a split and a merge through the log, yielding after each."""
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(
        Action.SPAWN,
        entity="L0_E4",
        parent="L0_E0",
        children=["L0_E4"],
        seed=seed,
        config_snapshot={"spawn_init_strategy": "clone_and_perturb"},
    )
    rig.lc.transition("L0_E4", "cooling")
    rig.sync()
    yield "spawn"
    rig.lc.transition("L0_E1", "dormant")
    rig.lc.transition("L0_E1", "pending_prune")
    rig.decide(Action.PRUNE, entity="L0_E1", seed=seed + 1)
    rig.lc.transition("L0_E1", "archived")
    rig.sync()
    yield "prune"
    _spawn_child(rig, "L0_E5", 5)
    rig.decide(
        Action.SPLIT,
        entity="L0_E2",
        parent="L0_E2",
        children=["L0_E5"],
        seed=seed + 2,
        config_snapshot={"split_perturbation_scale": 0.01},
    )
    rig.lc.transition("L0_E5", "cooling")
    rig.sync()
    yield "split"
    rig.lc.transition("L0_E3", trigger="merge_away")
    rig.decide(
        Action.MERGE,
        entity="L0_E0",
        children=["L0_E3"],
        seed=seed + 3,
        metrics_at_decision={"shares": {"L0_E0": 0.6, "L0_E3": 0.2}},
    )
    rig.lc.transition("L0_E0", trigger="absorb")
    rig.sync()
    yield "merge"


def _run_all(rig: Rig, *followers: Rig, seed: int = 11, steps_between: int = 3) -> None:
    """Train the leader and its followers in lockstep through the lifecycle sequence."""
    ranks = (rig, *followers)
    for rank in ranks:
        _train(rank, steps_between)
    for _ in _lifecycle_sequence(rig, seed=seed):
        for rank in ranks:
            rank.sync()
            _train(rank, steps_between)


def _state_equal(a: Rig, b: Rig) -> bool:
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    if pa.keys() != pb.keys() or not all(torch.equal(pa[n], pb[n]) for n in pa):
        return False
    for n in pa:
        sa, sb = a.optimizer.state[pa[n]], b.optimizer.state[pb[n]]
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


# -- routing follows the expert states --------------------------------------------------------


def test_initial_experts_route_and_empty_slots_do_not() -> None:
    """Registering four active experts in a capacity-8 layer makes exactly slots 0-3 route."""
    rig = _rig()
    assert rig.model.moe.active.tolist() == [True] * 4 + [False] * 4
    assert rig.surgery.routing_rows(0) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("path", "routes"),
    [
        ([], False),
        (["cooling"], True),
        (["cooling", "active"], True),
        (["cooling", "active", "dormant"], True),
        (["cooling", "active", "dormant", "pending_prune"], False),
        (["cooling", "active", "dormant", "pending_prune", "archived"], False),
    ],
)
def test_a_spawned_expert_routes_in_cooling_active_and_dormant_only(path: list[str], routes: bool) -> None:
    """pending_spawn, pending_prune and archived experts are masked; cooling, active and dormant route."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(Action.SPAWN, entity="L0_E4", parent="L0_E0", children=["L0_E4"], seed=1)
    for state in path:
        rig.lc.transition("L0_E4", state)
    rig.sync()
    assert bool(rig.model.moe.active[4]) is routes


def test_a_pruned_expert_stops_routing_even_before_its_transition() -> None:
    """PRUNE masks the expert at once, whatever order the leader wrote the transition in."""
    rig = _rig()
    rig.decide(Action.PRUNE, entity="L0_E2", seed=1)
    assert rig.model.moe.active.tolist()[:4] == [True, True, False, True]


# -- optimizer state --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pruning_a_middle_expert_leaves_every_neighbour_its_own_moments(strategy: Strategy) -> None:
    """After pruning E1 of four, E0, E2 and E3 keep their weights and Adam moments bit for bit."""
    rig = _rig(strategy)
    _train(rig, 5)
    before = {e: (rig.weights(e), rig.moments(e)) for e in ("L0_E0", "L0_E2", "L0_E3")}
    rig.decide(Action.PRUNE, entity="L0_E1", seed=1)
    for entity, (weights, moments) in before.items():
        assert all(torch.equal(v, rig.weights(entity)[k]) for k, v in weights.items())
        assert all(torch.equal(v, rig.moments(entity)[k]) for k, v in moments.items())
    if strategy == "resize":
        assert rig.model.moe.capacity == 3 and rig.surgery.row("L0_E2") == 1
        assert rig.surgery.row("L0_E1") is None
        assert rig.rewraps == [3]
    else:
        assert rig.surgery.row("L0_E2") == 2
        zeroed = [rig.optimizer.state[p]["exp_avg"][1] for p in _slot_params(rig.model).values()]
        assert all(torch.count_nonzero(m) == 0 for m in zeroed)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("action", [Action.SPAWN, Action.SPLIT])
def test_a_clone_inherits_its_parents_moments_and_step(strategy: Strategy, action: Action) -> None:
    """A cloned or split-off child gets its parent's exact moment rows under the shared mature step."""
    rig = _rig(strategy)
    _train(rig, 5)
    parent_moments = rig.moments("L0_E2")
    parent_weights = rig.weights("L0_E2")
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(action, entity="L0_E4", parent="L0_E2", children=["L0_E4"], seed=3)
    child = rig.moments("L0_E4")
    assert all(torch.equal(v, child[k]) for k, v in parent_moments.items())
    assert all(rig.optimizer.state[p]["step"] == 5 for p in rig.model.parameters())
    for name, value in rig.weights("L0_E4").items():
        drift = (value - parent_weights[name]).norm()
        assert drift <= 0.05 * parent_weights[name].norm() + 1e-12, name
    assert not torch.equal(rig.weights("L0_E4")["w1"], parent_weights["w1"])


def test_split_noise_is_scaled_to_the_parents_weight_norm() -> None:
    """The child's offset from its parent has about `split_perturbation_scale` times the parent's norm."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(
        Action.SPLIT,
        parent="L0_E1",
        children=["L0_E4"],
        seed=5,
        config_snapshot={"split_perturbation_scale": 0.1},
    )
    parent, child = rig.weights("L0_E1"), rig.weights("L0_E4")
    ratio = (child["w1"] - parent["w1"]).norm() / parent["w1"].norm()
    assert 0.08 < ratio < 0.12


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_random_spawn_gets_no_zero_second_moment_under_a_mature_step(strategy: Strategy) -> None:
    """Random init at step 1000: zero first moment, a nonzero second moment, and no first-update kick."""
    rig = _rig(strategy)
    _train(rig, 1000)
    siblings = [rig.moments(f"L0_E{i}") for i in range(4)]
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(
        Action.SPAWN,
        entity="L0_E4",
        children=["L0_E4"],
        seed=9,
        config_snapshot={"spawn_init_strategy": "random"},
    )
    rig.lc.transition("L0_E4", "cooling")
    rig.sync()
    for key, value in rig.moments("L0_E4").items():
        if key.endswith("exp_avg_sq"):  # one value: the siblings' mean over all their entries
            expected = torch.stack([s[key] for s in siblings]).mean()
            assert torch.equal(value, expected.expand_as(value)) and expected > 0, key
        else:
            assert torch.count_nonzero(value) == 0, key
    before = rig.weights("L0_E4")
    _train(rig, 1)
    lr = rig.optimizer.param_groups[0]["lr"]
    steps = torch.cat([((rig.weights("L0_E4")[k] - v).abs() / lr).flatten() for k, v in before.items()])
    # Zero moments at step 1000 move every entry with a gradient by ~2.5 lr (reference section 2).
    assert float(steps.mean()) < 0.5


def test_a_random_spawn_is_on_the_scale_of_its_siblings() -> None:
    """A random child's weights spread like the routing experts' weights, with zero mean."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(Action.SPAWN, entity="L0_E4", seed=2, config_snapshot={"spawn_init_strategy": "random"})
    w1 = rig.model.moe.w1.detach()
    assert 0.7 < float(w1[4].std() / w1[:4].std()) < 1.3


def test_a_mean_cluster_spawn_starts_at_its_clusters_mean() -> None:
    """mean_cluster: the child is the members' mean plus small noise, with their mean moments."""
    rig = _rig()
    _train(rig, 3)
    members = ["L0_E0", "L0_E3"]
    mean_w1 = torch.stack([rig.weights(m)["w1"] for m in members]).mean(dim=0)
    mean_m = torch.stack([rig.moments(m)["w1.exp_avg"] for m in members]).mean(dim=0)
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(
        Action.SPAWN,
        entity="L0_E4",
        seed=2,
        metrics_at_decision={"cluster": members},
        config_snapshot={"spawn_init_strategy": "mean_cluster"},
    )
    assert torch.allclose(rig.weights("L0_E4")["w1"], mean_w1, atol=0.05 * float(mean_w1.abs().max()))
    assert torch.equal(rig.moments("L0_E4")["w1.exp_avg"], mean_m)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_merge_averages_by_share_and_the_survivor_keeps_its_moments(strategy: Strategy) -> None:
    """The survivor becomes the share-weighted mean, keeps its own moments, and the absorbed expert goes."""
    rig = _rig(strategy)
    _train(rig, 4)
    a, b = rig.weights("L0_E0"), rig.weights("L0_E3")
    survivor_moments = rig.moments("L0_E0")
    rig.decide(
        Action.MERGE,
        entity="L0_E0",
        children=["L0_E3"],
        seed=1,
        metrics_at_decision={"shares": {"L0_E0": 0.75, "L0_E3": 0.25}},
    )
    merged = rig.weights("L0_E0")
    for name in SLOT_PARAMS:
        torch.testing.assert_close(merged[name], 0.75 * a[name] + 0.25 * b[name])
    assert all(torch.equal(v, rig.moments("L0_E0")[k]) for k, v in survivor_moments.items())
    assert rig.surgery.routing_rows(0) == [0, 1, 2]
    assert (rig.surgery.row("L0_E3") is None) == (strategy == "resize")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_optimizer_holds_exactly_the_models_parameters_after_every_action(strategy: Strategy) -> None:
    """After each of spawn, prune, split and merge the optimizer's parameter set is the model's."""
    rig = _rig(strategy)
    _train(rig, 2)
    capacities = []
    for _ in _lifecycle_sequence(rig):
        assert optimizer_params_match(rig.model, rig.optimizer)
        capacities.append(rig.model.moe.capacity)
        _train(rig, 1)
    assert capacities == ([CAPACITY] * 4 if strategy == "masked" else [5, 4, 5, 4])
    assert rig.rewraps == ([] if strategy == "masked" else [5, 4, 5, 4])


def test_a_stale_optimizer_is_refused_at_construction() -> None:
    """An optimizer that misses one of the model's parameters is a configuration error."""
    model = ToyMoE(0, CAPACITY)
    optimizer = torch.optim.Adam([model.proj], lr=1e-2)
    assert not optimizer_params_match(model, optimizer)
    with pytest.raises(ConfigError, match="differ"):
        ModelSurgery({0: model.moe}, optimizer, model=model)


# -- training through the changes -------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_both_strategies_keep_training_through_spawn_prune_split_and_merge(strategy: Strategy) -> None:
    """Fifty Adam steps with all four actions in between still lower the loss on the toy task."""
    rig = _rig(strategy)
    losses = _train(rig, 8)
    for _ in _lifecycle_sequence(rig):
        losses += _train(rig, 6)
    losses += _train(rig, 18)
    assert len(losses) == 50
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


# -- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_equal_models_fed_equal_records_end_bit_identical(strategy: Strategy) -> None:
    """Two ranks built alike and folding the same log agree on every byte and on the digest."""
    a = _rig(strategy)
    b = _follower(a)
    _run_all(a, b)
    assert _state_equal(a, b)
    assert a.surgery.digest() == b.surgery.digest()
    assert len(a.surgery.digest()) == 16
    assert a.surgery.applied == 4


def test_a_different_event_seed_gives_a_different_model_and_digest() -> None:
    """The noise follows the decision's seed: another seed moves the parameters and the digest."""
    a, b = _rig(), _rig()
    _run_all(a, seed=11)
    _run_all(b, seed=12)
    assert not _state_equal(a, b)
    assert a.surgery.digest() != b.surgery.digest()


def test_the_digest_covers_the_applied_event_ids() -> None:
    """Same bytes with different applied ids give different digests."""
    a, b = _rig(), _rig()
    for rig in (a, b):  # the same decision, seeded alike, under a fresh event id in each run
        _spawn_child(rig, "L0_E4", 4)
        rig.decide(Action.SPLIT, parent="L0_E0", children=["L0_E4"], seed=1)
    assert a.surgery.digest(event_ids=False) == b.surgery.digest(event_ids=False)
    assert a.surgery.digest() != b.surgery.digest()


def test_the_applied_ids_survive_a_snapshot_and_one_written_as_a_list() -> None:
    """A restored surgery hashes the applied ids as the original does, from either snapshot form."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(Action.SPLIT, parent="L0_E0", children=["L0_E4"], seed=1)
    snapshot = rig.surgery.snapshot()
    ids = [r["event_id"] for r in rig.lc.log.read() if r["kind"] == "DecisionMade"]
    listed = {k: v for k, v in snapshot.state.items() if k not in ("applied", "applied_chain")}
    for state in (snapshot.state, {**listed, "applied_ids": ids}):
        other = _rig()  # has applied nothing
        other.surgery.restore(Snapshot(kind=snapshot.kind, seq=snapshot.seq, state=state))
        assert (other.surgery.applied, other.surgery.applied_chain) == (1, rig.surgery.applied_chain)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_batch_or_many_give_the_same_model(strategy: Strategy) -> None:
    """A rank catching up on the whole log in one batch ends where the record-by-record leader did."""
    leader = _rig(strategy)
    for _ in _lifecycle_sequence(leader):
        pass
    late = _follower(leader)
    assert late.surgery.digest() == leader.surgery.digest()
    assert torch.equal(late.model.moe.active, leader.model.moe.active)


class SharedWeightLayer(nn.Module):
    """A user's own MoE layer: one slot-major expert weight and router, other names than ours."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.proj_by_slot = nn.Parameter(torch.randn(capacity, D_MODEL, generator=g))
        self.gate = nn.Parameter(torch.randn(capacity, D_MODEL, generator=g))
        self.register_buffer("on", torch.ones(capacity, dtype=torch.bool))

    @property
    def capacity(self) -> int:
        return int(self.gate.shape[0])

    def expert_parameters(self) -> dict[str, nn.Parameter]:
        return {"proj_by_slot": self.proj_by_slot}

    def router_parameters(self) -> dict[str, nn.Parameter]:
        return {"gate": self.gate}

    def set_active(self, mask: torch.Tensor) -> None:
        self.on = mask.clone()

    def replace_parameters(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, param in params.items():
            setattr(self, name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax((x @ self.gate.t()).masked_fill(~self.on, float("-inf")), dim=-1)
        return x * (probs @ self.proj_by_slot)


def test_a_layer_of_the_users_own_goes_through_the_protocol() -> None:
    """Surgery splits and prunes any `ExpertLayer`, knowing nothing of its names or forward."""
    layer = SharedWeightLayer(3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    lc = Lifecycle(run_id="own-layer")
    for i in range(3):
        lc.register(f"E{i}", "expert", state="active", layer=2, slot=i)
    surgery = ModelSurgery({2: layer}, optimizer, strategy="resize", model=layer)
    layer(torch.randn(4, D_MODEL, generator=torch.Generator().manual_seed(3))).sum().backward()
    optimizer.step()
    lc.register("E3", "expert", layer=2, slot=3)
    lc.append(
        [
            DecisionMade(
                run_id="own-layer", action=Action.SPLIT, layer=2, parent="E0", children=["E3"], seed=1
            ),
            DecisionMade(run_id="own-layer", action=Action.PRUNE, layer=2, entity="E1", seed=2),
        ]
    )
    lc.transition("E3", "cooling")
    surgery.apply(lc.log.read())
    assert layer.capacity == 3 and layer.on.tolist() == [True, True, True]
    assert [surgery.row(e) for e in ("E0", "E1", "E2", "E3")] == [0, None, 1, 2]
    assert torch.equal(optimizer.state[layer.gate]["exp_avg"][2], optimizer.state[layer.gate]["exp_avg"][0])
    assert optimizer_params_match(layer, optimizer)


def test_surgery_never_touches_the_global_rng() -> None:
    """Spawning (random and clone), splitting, pruning and merging leave the global RNG state as it was."""
    rig = _rig()
    _train(rig, 2)
    before = torch.get_rng_state()
    for _ in _lifecycle_sequence(rig):
        pass
    _spawn_child(rig, "L0_E6", 6)
    rig.decide(Action.SPAWN, entity="L0_E6", seed=4, config_snapshot={"spawn_init_strategy": "random"})
    assert torch.equal(torch.get_rng_state(), before)


# -- the projection contract ------------------------------------------------------------------


def test_applying_the_same_records_twice_changes_nothing() -> None:
    """The surgery skips records it has applied, so a re-delivered batch is not applied twice."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    rig.decide(Action.SPLIT, parent="L0_E0", children=["L0_E4"], seed=1)
    digest = rig.surgery.digest()
    assert rig.surgery.apply(rig.lc.log.read()) == 0
    assert rig.surgery.digest() == digest and rig.surgery.applied == 1


def test_decisions_about_other_layers_and_other_actions_are_ignored() -> None:
    """A layer the surgery does not manage, and non-expert actions, leave the model alone."""
    rig = _rig()
    digest = rig.surgery.digest()
    rig.lc.register("L1_E0", "expert", state="active", layer=1, slot=0)
    rig.lc.append(
        [
            DecisionMade(run_id="surgery", action=Action.PRUNE, entity="L1_E0", layer=1),
            DecisionMade(run_id="surgery", action=Action.GERMINATE, entity="L0_E0"),
        ]
    )
    rig.sync()
    assert rig.surgery.digest() == digest and rig.surgery.applied == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda rig: rig.decide(
                Action.SPAWN,
                entity="L0_E4",
                children=["L0_E4"],
                config_snapshot={"spawn_init_strategy": "clone_and_perturb"},
            ),
            "no parent",
        ),
        (
            lambda rig: rig.decide(
                Action.SPAWN, entity="L0_E4", config_snapshot={"spawn_init_strategy": "magic"}
            ),
            "init",
        ),
        (lambda rig: rig.decide(Action.PRUNE, entity="L0_E9"), "not an expert"),
        (lambda rig: rig.decide(Action.MERGE, entity="L0_E0", children=[]), "survivor"),
        (
            lambda rig: rig.decide(
                Action.MERGE,
                entity="L0_E0",
                children=["L0_E1"],
                metrics_at_decision={"shares": {"L0_E0": 1.0}},
            ),
            "share",
        ),
    ],
)
def test_a_malformed_decision_raises_and_leaves_seq_before_it(
    make: Callable[[Rig], None], match: str
) -> None:
    """A decision the surgery cannot apply raises `InconsistentEventError`; the seq stops before it."""
    rig = _rig()
    _spawn_child(rig, "L0_E4", 4)
    with pytest.raises(InconsistentEventError, match=match):
        make(rig)
    assert rig.surgery.seq == rig.lc.registry.seq - 1


def test_an_expert_outside_the_masked_capacity_is_refused() -> None:
    """Under the masked strategy an expert must name a slot of the layer's fixed capacity."""
    rig = _rig()
    rig.lc.register("L0_E99", "expert", layer=0, slot=CAPACITY)
    with pytest.raises(InconsistentEventError, match="not a free slot"):
        rig.sync()


def _through_torch(snapshot: Snapshot) -> Snapshot:
    buffer = io.BytesIO()
    torch.save({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state}, buffer)
    buffer.seek(0)
    return Snapshot(**torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_restored_surgery_continues_like_the_original(strategy: Strategy) -> None:
    """Model, optimizer and a snapshot through torch.load(weights_only=True) resume to the same digest."""
    live = _rig(strategy)
    steps = _lifecycle_sequence(live)
    next(steps), next(steps)
    snapshot = _through_torch(live.surgery.snapshot())
    model = ToyMoE(99, live.model.moe.capacity)
    model.load_state_dict(live.model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.load_state_dict(live.optimizer.state_dict())
    restored = ModelSurgery({0: model.moe}, optimizer, strategy=strategy, model=model)
    restored.restore(snapshot)
    assert restored.seq == live.surgery.seq and restored.digest() == live.surgery.digest()
    assert torch.equal(model.moe.active, live.model.moe.active)
    list(steps)  # the live rig takes the split and the merge
    restored.apply(live.lc.log.read(after=restored.seq))
    assert restored.digest() == live.surgery.digest()


def test_restore_reshapes_a_resized_model_to_the_snapshot_capacity() -> None:
    """Under resize, restore gives a fresh model the snapshot's shapes, so its checkpoint loads into it."""
    live = _rig("resize")
    _train(live, 2)
    live.decide(Action.PRUNE, entity="L0_E1", seed=1)
    other = _rig("resize")
    other.surgery.restore(live.surgery.snapshot())
    assert other.model.moe.capacity == live.model.moe.capacity == 3
    assert other.rewraps == [3]
    other.model.load_state_dict(live.model.state_dict())
    other.optimizer.load_state_dict(live.optimizer.state_dict())
    assert other.surgery.digest() == live.surgery.digest()


def test_restore_refuses_a_masked_model_of_another_capacity() -> None:
    """Under masked, the slots are fixed: a snapshot of other capacities is refused."""
    live = _rig("masked")
    model = ToyMoE(0, CAPACITY + 1, "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    other = ModelSurgery({0: model.moe}, optimizer, strategy="masked", model=model)
    with pytest.raises(UsageError, match="capacities"):
        other.restore(live.surgery.snapshot())


# -- CUDA ---------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_surgery_on_cuda_draws_the_same_noise_as_on_the_cpu(strategy: Strategy) -> None:
    """On CUDA the lifecycle sequence trains, keeps the optimizer in step, and matches the CPU's noise."""
    gpu, cpu = _rig(strategy, device="cuda"), _rig(strategy)
    for rig in (gpu, cpu):
        _spawn_child(rig, "L0_E6", 6)
        rig.decide(Action.SPLIT, parent="L0_E1", children=["L0_E6"], seed=8)
    for name in SLOT_PARAMS:
        torch.testing.assert_close(gpu.weights("L0_E6")[name].cpu(), cpu.weights("L0_E6")[name])
    losses = _train(gpu, 3)
    for _ in _lifecycle_sequence(gpu, seed=21):
        assert optimizer_params_match(gpu.model, gpu.optimizer)
        losses += _train(gpu, 3)
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    assert losses[-1] < losses[0]
