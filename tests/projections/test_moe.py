"""The reference MoE layer routes only to active slots and records routing on the device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lifecycle_es import ConfigError, UsageError
from projections.moe import BasinTracker, ExpertLayer, ModelSurgery, MoELayer

D_MODEL, D_HIDDEN, CAPACITY, TOKENS = 8, 16, 6, 64
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _layer(*, top_k: int = 2, seed: int = 0, device: str = "cpu") -> MoELayer:
    return MoELayer(
        D_MODEL, D_HIDDEN, CAPACITY, top_k=top_k, device=device, generator=torch.Generator().manual_seed(seed)
    )


def _tokens(seed: int = 1, device: str = "cpu") -> torch.Tensor:
    return torch.randn(TOKENS, D_MODEL, generator=torch.Generator().manual_seed(seed)).to(device)


def _mask(*active: int) -> torch.Tensor:
    mask = torch.zeros(CAPACITY, dtype=torch.bool)
    mask[list(active)] = True
    return mask


def test_reference_layer_implements_the_protocol() -> None:
    """`MoELayer` is an `ExpertLayer`, and its slot-major parameters all have capacity rows."""
    layer = _layer()
    assert isinstance(layer, ExpertLayer)
    params = layer.expert_parameters() | layer.router_parameters()
    assert sorted(params) == ["b1", "b2", "router_weight", "w1", "w2"]
    assert {p.shape[0] for p in params.values()} == {CAPACITY}
    assert {id(p) for p in params.values()} == {id(p) for p in layer.parameters()}


def test_construction_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    """Two layers built from equal generators are equal, and building draws nothing from the global RNG."""
    before = torch.get_rng_state()
    a, b = _layer(seed=3), _layer(seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert torch.equal(a(_tokens()), b(_tokens()))


def test_masked_slots_get_no_token_and_a_zero_gradient() -> None:
    """A slot outside the mask is never selected, and every row of it gets an exactly zero gradient."""
    layer = _layer()
    layer.set_active(_mask(0, 2, 3, 5))
    layer(_tokens()).square().sum().backward()
    for row in (1, 4):
        assert layer.last_counts[row] == 0
        assert layer.last_prob_sums[row] == 0
        for param in layer.parameters():
            assert param.grad is not None
            assert torch.count_nonzero(param.grad[row]) == 0
    assert not torch.isin(layer.last_indices, torch.tensor([1, 4])).any()
    assert layer.last_counts.sum() == TOKENS * 2
    assert torch.count_nonzero(layer.router_weight.grad[[0, 2, 3, 5]]) > 0  # type: ignore[index]


def test_the_mask_buffer_is_read_by_reference() -> None:
    """`set_active` writes the registered buffer in place, so the forward sees it without a rebuild."""
    layer = _layer()
    buffer = layer.active
    layer.set_active(_mask(2))
    assert layer.active is buffer and layer.active.data_ptr() == buffer.data_ptr()
    layer(_tokens())
    assert layer.last_counts.tolist() == [0, 0, TOKENS, 0, 0, 0]


def test_fewer_routing_slots_than_top_k_route_everything_to_the_few() -> None:
    """With one routing slot and top-2, every token goes to that slot with weight one."""
    layer = _layer()
    x = _tokens()
    layer.set_active(_mask(3))
    out = layer(x)
    expected = torch.relu(x @ layer.w1[3] + layer.b1[3]) @ layer.w2[3] + layer.b2[3]
    torch.testing.assert_close(out, expected)
    assert (layer.last_indices[:, 1] == -1).all()


def test_a_layer_with_no_routing_slot_outputs_zeros_with_finite_gradients() -> None:
    """No routing slot at all gives a zero output rather than NaNs from an empty softmax."""
    layer = _layer()
    layer.set_active(_mask())
    out = layer(_tokens())
    out.sum().backward()
    assert torch.count_nonzero(out) == 0
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_set_active_refuses_a_mask_of_the_wrong_size() -> None:
    """A mask must have one entry per slot."""
    with pytest.raises(UsageError, match="capacity"):
        _layer().set_active(torch.ones(CAPACITY + 1, dtype=torch.bool))


def test_replace_parameters_resizes_the_layer() -> None:
    """Swapping in parameters with one row fewer shrinks the capacity, the mask and the statistics."""
    layer = _layer()
    params = layer.expert_parameters() | layer.router_parameters()
    layer.replace_parameters({n: torch.nn.Parameter(p.detach()[1:]) for n, p in params.items()})
    assert layer.capacity == CAPACITY - 1
    assert layer.active.shape == (CAPACITY - 1,) and not layer.active.any()
    layer.set_active(torch.ones(CAPACITY - 1, dtype=torch.bool))
    assert layer(_tokens()).shape == (TOKENS, D_MODEL)
    assert layer.last_counts.shape == (CAPACITY - 1,)


def test_replace_parameters_refuses_a_partial_set() -> None:
    """Every slot-major parameter is replaced together, or none is."""
    layer = _layer()
    with pytest.raises(UsageError, match="expected parameters"):
        layer.replace_parameters({"w1": torch.nn.Parameter(layer.w1.detach()[1:])})


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"top_k": 0}, {"d_model": True}])
def test_sizes_are_validated(kwargs: dict[str, int]) -> None:
    """A size that is not a positive int is refused at construction."""
    sizes = {"d_model": D_MODEL, "d_hidden": D_HIDDEN, "capacity": CAPACITY, "top_k": 2} | kwargs
    with pytest.raises(ConfigError):
        MoELayer(sizes["d_model"], sizes["d_hidden"], sizes["capacity"], top_k=sizes["top_k"])


@CUDA
def test_forward_on_cuda_never_synchronises_with_the_host() -> None:
    """Under CUDA's sync debug mode a forward and backward with a mask raise no synchronising call."""
    layer = _layer(device="cuda")
    layer.set_active(_mask(0, 1, 4).cuda())
    x = _tokens(device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layer(x).square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert layer.last_counts[[2, 3, 5]].sum().item() == 0


class _HalfDone(nn.Module):
    """A user's layer that has its parameters but forgot the mask, the resize hook and its routing."""

    capacity = 4

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 2))

    def expert_parameters(self) -> dict[str, nn.Parameter]:
        return {"w": self.w}

    def router_parameters(self) -> dict[str, nn.Parameter]:
        return {}

    set_active = None  # present, but not a method


def test_a_layer_missing_protocol_members_is_refused_naming_them() -> None:
    """Surgery and basin tracking name the layer, its class and every member it lacks, in protocol order."""
    layer = _HalfDone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with pytest.raises(ConfigError) as caught:
        ModelSurgery({3: layer}, optimizer)
    assert str(caught.value) == (
        "layer 3 (_HalfDone) does not meet the ExpertLayer protocol: it lacks set_active, replace_parameters"
    )
    with pytest.raises(ConfigError) as caught:
        BasinTracker({3: layer}, num_types=2)
    assert str(caught.value) == (
        "layer 3 (_HalfDone) does not meet the RoutedLayer protocol: it lacks last_indices, last_weights"
    )
    with pytest.raises(
        ConfigError, match=r"it lacks capacity, expert_parameters, router_parameters, set_active, "
    ):
        ModelSurgery({0: object()}, optimizer)  # type: ignore[dict-item]
