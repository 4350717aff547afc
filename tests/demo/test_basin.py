"""Basin tracking turns recorded routing into the coordinator's metrics, exactly."""

from __future__ import annotations

import math

import pytest
import torch

from lifecycle_es import ConfigError, UsageError
from lifecycle_es.controllers import BREADTH, ExpertCoordinator, ExpertCoordinatorConfig
from projections.moe import BasinTracker, MoELayer, basin_breadth, layer_metrics

IDS = {0: "L0_E0", 1: "L0_E1", 2: "L0_E2", 3: "L0_E3"}
# Four tokens of types 0, 0, 1, 1. Token 3 has one routing slot only (-1: fewer than top_k route).
INDICES = torch.tensor([[0, 1], [0, 1], [0, 2], [1, -1]])
WEIGHTS = torch.tensor([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
TYPES = torch.tensor([0, 0, 1, 1])


def _layer(capacity: int = 4) -> MoELayer:
    return MoELayer(4, 8, capacity, top_k=2, generator=torch.Generator().manual_seed(0))


def _routed(layer: MoELayer, indices: torch.Tensor = INDICES, weights: torch.Tensor = WEIGHTS) -> None:
    """Set the layer's last routing by hand, as its forward would."""
    layer.last_indices, layer.last_weights = indices, weights


def _entropy(shares: list[float]) -> float:
    return -sum(s * math.log(s) for s in shares if s > 0)


def test_dispatch_shares_and_layer_metrics_follow_chronomoe_v2() -> None:
    """With v2's dispatch shares: 3, 3 and 1 of 7 dispatches, one dead expert, n_eff = exp(H)."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2, share="dispatch")
    _routed(layer)
    tracker.record(TYPES)
    out = tracker.collect({0: IDS})
    shares = [3 / 7, 3 / 7, 1 / 7, 0.0]
    assert [out.experts[e]["share"] for e in IDS.values()] == pytest.approx(shares, abs=1e-15)
    # E0's basin holds gate weight 1.25 of type 0 and 1.0 of type 1, E1's 0.75 and 1.0; E2 was
    # dispatched with weight 0, so it has no basin and no say in the breadth.
    breadth = (math.exp(_entropy([5 / 9, 4 / 9])) + math.exp(_entropy([3 / 7, 4 / 7]))) / 2
    assert out.layers[0] == pytest.approx(
        {
            "entropy": _entropy(shares),
            "n_eff": math.exp(_entropy(shares)),
            "top2_share": 6 / 7,
            "dead_count": 1.0,
            "n_active": 3.0,
            "basin_breadth": breadth,
        },
        abs=1e-12,
    )
    assert out.experts["L0_E2"]["entropy_contribution"] == pytest.approx(-(1 / 7) * math.log(1 / 7))
    assert out.experts["L0_E3"]["entropy_contribution"] == 0.0
    assert out.tokens == 4


def test_gate_shares_split_each_token_by_its_gate_weights() -> None:
    """Gate shares: E0 gets 2.25 of 4 tokens' weight, E1 1.75, E2 (weight 0) and E3 nothing."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)
    out = tracker.collect({0: IDS})
    shares = [2.25 / 4, 1.75 / 4, 0.0, 0.0]
    assert [out.experts[e]["share"] for e in IDS.values()] == shares
    assert [out.experts[e]["dispatch_share"] for e in IDS.values()] == pytest.approx([3 / 7, 3 / 7, 1 / 7, 0])
    assert out.layers[0]["dead_count"] == 2.0 and out.layers[0]["n_active"] == 2.0
    assert out.layers[0]["top2_share"] == 1.0
    assert out.layers[0]["entropy"] == pytest.approx(_entropy(shares))


def test_token_types_coactivation_and_weights_of_a_hand_built_pattern() -> None:
    """The basin is gate-weighted per type; co-activation counts shared top-k; cosine is 1 for twins."""
    layer = _layer()
    with torch.no_grad():
        for param in layer.expert_parameters().values():
            param[3] = param[0]  # E3 is an exact copy of E0
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)
    e = tracker.collect({0: IDS}).experts
    assert (e["L0_E0"]["token_type.0"], e["L0_E0"]["token_type.1"]) == (1.25 / 2.25, 1.0 / 2.25)
    assert (e["L0_E1"]["token_type.0"], e["L0_E1"]["token_type.1"]) == (0.75 / 1.75, 1.0 / 1.75)
    assert (e["L0_E3"]["token_type.0"], e["L0_E3"]["token_type.1"]) == (0.0, 0.0)
    assert e["L0_E0"]["coact.L0_E1"] == e["L0_E1"]["coact.L0_E0"] == 2 / 4
    assert e["L0_E0"]["coact.L0_E2"] == 1 / 4 and e["L0_E1"]["coact.L0_E2"] == 0.0
    assert e["L0_E0"]["cosine.L0_E3"] == pytest.approx(1.0, abs=1e-6)
    assert e["L0_E0"]["weight_norm"] == pytest.approx(e["L0_E3"]["weight_norm"])
    flat = torch.cat([p.detach()[0].reshape(-1) for _, p in sorted(layer.expert_parameters().items())])
    assert e["L0_E0"]["weight_norm"] == pytest.approx(float(flat.norm()), rel=1e-6)


def test_weight_delta_is_the_change_since_the_previous_checkpoint() -> None:
    """An expert whose weights moved reports the norm of the move; one first seen reports 0."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)
    first = tracker.collect({0: {0: "L0_E0", 1: "L0_E1"}}).experts
    assert first["L0_E0"]["weight_delta"] == 0.0
    with torch.no_grad():
        layer.b2[0] += 3.0  # b2 has d_model = 4 entries: the change has norm 3 * 2
    tracker.record(TYPES)
    second = tracker.collect({0: {0: "L0_E0", 1: "L0_E1", 2: "L0_E2"}}).experts
    assert second["L0_E0"]["weight_delta"] == pytest.approx(6.0)
    assert second["L0_E1"]["weight_delta"] == 0.0
    assert second["L0_E2"]["weight_delta"] == 0.0  # first seen at this checkpoint


def test_folding_in_batches_gives_the_same_metrics_as_one_fold() -> None:
    """Counters are exact integers: folding every batch or all at once gives identical numbers."""
    gen = torch.Generator().manual_seed(3)
    batches = [
        (
            torch.randint(0, 4, (64, 2), generator=gen),
            torch.rand(64, 2, generator=gen),
            torch.randint(0, 3, (64,), generator=gen),
        )
        for _ in range(5)
    ]
    results = []
    for fold_every in (1, 100):
        layer = _layer()
        tracker = BasinTracker({0: layer}, num_types=3, fold_every=fold_every)
        for indices, weights, types in batches:
            _routed(layer, indices, weights / weights.sum(1, keepdim=True))
            tracker.record(types)
        results.append(tracker.collect({0: IDS}))
    assert results[0] == results[1]


def test_collect_starts_a_new_interval() -> None:
    """After a checkpoint the counters are empty: an interval with no token has zero shares."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)
    tracker.collect({0: IDS})
    out = tracker.collect({0: IDS})
    assert out.tokens == 0 and all(m["share"] == 0.0 for m in out.experts.values())
    assert out.layers[0] == {**layer_metrics([0.0] * 4), BREADTH: 0.0}


def test_basin_breadth_counts_the_token_types_each_expert_serves() -> None:
    """Breadth is the share-weighted mean of exp(basin entropy): 1 for one type, k for k even types."""
    one = {"share": 0.5, "token_type.0": 1.0, "token_type.1": 0.0}
    two = {"share": 0.25, "token_type.0": 0.5, "token_type.1": 0.5}
    idle = {"share": 0.25, "token_type.0": 0.0, "token_type.1": 0.0}
    assert basin_breadth([one], 2) == 1.0
    assert basin_breadth([two], 2) == pytest.approx(2.0)
    assert basin_breadth([one, two, idle], 2) == pytest.approx((0.5 * 1 + 0.25 * 2) / 0.75)
    assert basin_breadth([idle], 2) == basin_breadth([], 2) == 0.0


def test_only_the_routing_experts_named_are_reported() -> None:
    """Rows left out of the expert map take no part in shares or pairwise metrics."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2, share="dispatch")
    _routed(layer)
    tracker.record(TYPES)
    out = tracker.collect({0: {0: "L0_E0", 1: "L0_E1"}})
    assert set(out.experts) == {"L0_E0", "L0_E1"}
    assert out.experts["L0_E0"]["share"] == 0.5 and "coact.L0_E2" not in out.experts["L0_E0"]


def test_the_coordinator_accepts_the_readout() -> None:
    """The readout validates as the expert coordinator's observations, one event per expert and layer."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)
    out = tracker.collect({0: IDS})
    coordinator = ExpertCoordinator(ExpertCoordinatorConfig.seeds_002(), capacity={0: 4})
    events = coordinator.observations(run_id="r", step=5, experts=out.experts, layers=out.layers)
    assert len(events) == 5


def test_a_real_forward_gives_gate_weights_the_tracker_can_read() -> None:
    """After a forward the layer exposes each selection's gate weight; a token's weights sum to 1."""
    layer = _layer(capacity=4)
    layer.set_active(torch.tensor([True, True, True, False]))
    layer(torch.randn(32, 4, generator=torch.Generator().manual_seed(1)))
    assert layer.last_weights.shape == layer.last_indices.shape == (32, 2)
    assert torch.allclose(layer.last_weights.sum(dim=1), torch.ones(32))
    tracker = BasinTracker({0: layer}, num_types=1)
    tracker.record(torch.zeros(32, dtype=torch.long))
    out = tracker.collect({0: {0: "L0_E0", 1: "L0_E1", 2: "L0_E2"}})
    assert math.fsum(m["share"] for m in out.experts.values()) == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    """Bad options are ConfigErrors; wrong sizes and a resized layer between checkpoints, UsageErrors."""
    layer = _layer()
    with pytest.raises(ConfigError, match="num_types"):
        BasinTracker({0: layer}, num_types=0)
    with pytest.raises(ConfigError, match="share"):
        BasinTracker({0: layer}, num_types=2, share="probability")  # type: ignore[arg-type]
    tracker = BasinTracker({0: layer}, num_types=2, fold_every=1)
    _routed(layer)
    with pytest.raises(UsageError, match="3 token types"):
        tracker.record(TYPES[:3])
    tracker.record(TYPES)
    small = _layer(capacity=3)
    tracker.layers[0] = small
    _routed(small, INDICES.clamp(max=2))
    with pytest.raises(UsageError, match="changed capacity"):
        tracker.record(TYPES)


@pytest.mark.parametrize("bad", [2, 7, -1])
def test_a_token_type_outside_num_types_is_refused_at_the_checkpoint(bad: int) -> None:
    """A type id >= num_types or < 0 is counted as it is folded (no host read per step) and `collect`
    refuses the interval with a UsageError before any metric is read; the next interval is clean."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2, fold_every=2)
    _routed(layer)
    tracker.record(torch.tensor([0, 0, 1, bad]))
    tracker.record(TYPES)
    with pytest.raises(UsageError) as caught:
        tracker.collect({0: IDS})
    assert str(caught.value) == (
        "token type ids must lie in [0, 2) (num_types=2), but 1 of the 8 tokens recorded since the "
        "last checkpoint had ids outside it"
    )
    tracker.record(TYPES)
    assert tracker.collect({0: IDS}).tokens == 4


def test_a_token_type_out_of_range_on_any_rank_is_refused_on_every_rank() -> None:
    """The count of bad type ids is summed across ranks with the counters, so every rank refuses."""
    layer = _layer()
    tracker = BasinTracker({0: layer}, num_types=2)
    _routed(layer)
    tracker.record(TYPES)

    def another_rank_had_one(shared: dict[str, torch.Tensor]) -> None:  # what a 2-rank sum returns
        for tensor in shared.values():
            tensor.mul_(2)
        shared["outside_types"].add_(1)

    tracker.sum_across(another_rank_had_one)
    with pytest.raises(UsageError, match="but 1 of the 8 tokens"):
        tracker.collect({0: IDS})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_recording_and_folding_on_cuda_never_wait_on_the_host() -> None:
    """On a GPU, steps between checkpoints (record, and the batched fold) make no host sync."""
    layer = MoELayer(8, 16, 6, top_k=2, generator=torch.Generator().manual_seed(0), device="cuda")
    tracker = BasinTracker({0: layer}, num_types=3, fold_every=4)
    types = torch.randint(0, 3, (64,), device="cuda")
    x = torch.randn(64, 8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(8):  # two folds
            layer(x)
            tracker.record(types)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out = tracker.collect({0: {i: f"L0_E{i}" for i in range(6)}})
    assert out.tokens == 8 * 64
    assert sum(m["share"] for m in out.experts.values()) == pytest.approx(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_token_types_out_of_range_on_cuda_fold_without_a_sync_and_are_refused_at_collect() -> None:
    """On a GPU, bad type ids are counted and clamped in the fold (no device assert, no host
    sync), and collect refuses the interval."""
    layer = MoELayer(8, 16, 6, top_k=2, generator=torch.Generator().manual_seed(0), device="cuda")
    tracker = BasinTracker({0: layer}, num_types=3, fold_every=2)
    types = torch.tensor([0, 1, 2, 3] * 16, device="cuda")  # 16 ids of 3
    x = torch.randn(64, 8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):  # two folds
            layer(x)
            tracker.record(types)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(UsageError, match="but 64 of the 256 tokens"):
        tracker.collect({0: {i: f"L0_E{i}" for i in range(6)}})
