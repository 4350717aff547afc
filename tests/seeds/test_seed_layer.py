"""The seed-host layer computes each state's chunk as a per-seed loop would, and surgery edits its rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lifecycle_es import ConfigError, InconsistentEventError, Lifecycle, UsageError
from projections.moe import optimizer_params_match
from projections.seeds import (
    AlphaSchedule,
    Blueprint,
    BlueprintLibrary,
    SeedLayer,
    SeedMode,
    default_library,
    low_rank,
)
from projections.state_tensors import StateTensors
from tests.seeds._rig import CHUNKS, IN, OUT, SPECS, Rig, passing_gates, register_seeds, run_plan

WIDTH = OUT // CHUNKS


def _layer(strategy: str = "masked") -> SeedLayer:
    gen = torch.Generator().manual_seed(3)
    host = nn.Linear(IN, OUT)
    with torch.no_grad():
        for p in host.parameters():
            p.copy_(torch.empty(p.shape).uniform_(-0.5, 0.5, generator=gen))
    layer = SeedLayer(host, chunks=CHUNKS, strategy=strategy, generator=gen)  # type: ignore[arg-type]
    with torch.no_grad():  # weights far from the identity, so every mode's output differs
        for p in layer.weights.parameters():
            p.copy_(torch.empty(p.shape).uniform_(-0.5, 0.5, generator=gen))
    return layer


def _x() -> torch.Tensor:
    return torch.randn(5, IN, generator=torch.Generator().manual_seed(4))


def _per_seed_loop(
    layer: SeedLayer, x: torch.Tensor, modes: list[int], kinds: list[int], alpha: list[float]
) -> torch.Tensor:
    """esperlite's `_process_chunks_v2`, a call per seed; frozen weights detached, not `no_grad`."""
    host = layer.host(x)
    out = []
    for i in range(layer.chunks):
        chunk = host[:, i * layer.width : (i + 1) * layer.width]
        mode = SeedMode(modes[i])
        if mode in (SeedMode.HOST, SeedMode.TRAIN):
            out.append(chunk)
            continue
        blueprint = layer.hosted[kinds[i]]
        row = layer.row_chunks[blueprint.name].index(i)
        learns = mode == SeedMode.FINE_TUNE  # GRAFT, HOLD, FOSSIL: the weights frozen, not the input
        weights = {
            k: v[row : row + 1] if learns else v[row : row + 1].detach()
            for k, v in layer.slot_parameters(blueprint.name).items()
        }
        grown = blueprint.apply(weights, chunk[:, None, :])[:, 0]
        a = {SeedMode.FINE_TUNE: 0.9, SeedMode.FOSSIL: 1.0}.get(mode, alpha[i])
        out.append((1 - a) * chunk + a * grown)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize(
    ("modes", "kinds"),
    [
        ([SeedMode.GRAFT, SeedMode.HOLD, SeedMode.FINE_TUNE, SeedMode.FOSSIL], [0, 1, 1, 0]),
        ([SeedMode.HOST, SeedMode.TRAIN, SeedMode.GRAFT, SeedMode.FOSSIL], [-1, 0, 1, 1]),
    ],
)
def test_each_mode_matches_a_per_seed_loop(modes: list[int], kinds: list[int]) -> None:
    """Every chunk's output, whatever its mode and blueprint, equals the per-seed reference computation."""
    layer, alpha = _layer(), [0.3, 0.7, 0.1, 0.9]
    layer.set_modes(modes, kinds)
    layer.alpha.copy_(torch.tensor(alpha))
    with torch.no_grad():
        torch.testing.assert_close(layer(_x()), _per_seed_loop(layer, _x(), modes, kinds, alpha))


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_gradients_match_the_per_seed_loop(strategy: str) -> None:
    """The host's and every blueprint row's gradients equal the per-seed reference's, modes mixed."""
    modes, kinds, alpha = (
        [SeedMode.GRAFT, SeedMode.TRAIN, SeedMode.FINE_TUNE, SeedMode.FOSSIL],
        [0, 1, 1, 0],
        [0.4] * 4,
    )
    layer = _layer()
    if strategy == "resize":  # rows serve chunks out of order, as surgery leaves them
        for name, chunks in (("residual_mlp", [3, 0]), ("low_rank", [2, 1])):
            rows = {
                k: nn.Parameter(v.detach()[chunks].clone()) for k, v in layer.slot_parameters(name).items()
            }
            layer.replace_parameters(name, rows, chunks)
    layer.set_modes(modes, kinds)
    layer.alpha.copy_(torch.tensor(alpha))
    grads = []
    for forward in (layer, lambda x: _per_seed_loop(layer, x, modes, kinds, alpha)):
        layer.zero_grad(set_to_none=True)
        forward(_x()).square().sum().backward()
        grads.append(
            {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in layer.named_parameters()}
        )
    assert grads[0]["host.weight"].abs().sum() > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], msg=name)


@pytest.mark.parametrize("mode", [SeedMode.GRAFT, SeedMode.HOLD, SeedMode.FOSSIL])
def test_a_frozen_seed_passes_the_gradient_to_the_host_but_learns_nothing(mode: SeedMode) -> None:
    """Through a grafting, held or fossilized chunk the host gets a gradient; the blueprint's weights none."""
    layer = _layer()
    layer.set_modes([mode, SeedMode.HOST, SeedMode.HOST, SeedMode.HOST], [0, -1, -1, -1])
    layer.alpha.fill_(0.5)
    out = layer(_x())
    out[:, : layer.width].square().sum().backward()  # the loss reads the seed's chunk only
    host = layer.host.weight.grad
    assert host is not None and host[: layer.width].abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in layer.weights.parameters())


def test_a_layer_with_no_active_seed_is_the_host() -> None:
    """With every chunk HOST (or a seed only training) the output is the host's, bit for bit."""
    layer = _layer()
    assert not layer.any_active
    assert torch.equal(layer(_x()), layer.host(_x()))
    layer.set_modes([SeedMode.TRAIN, SeedMode.HOST, SeedMode.TRAIN, SeedMode.HOST], [0, -1, 1, -1])
    assert layer.any_active
    assert torch.equal(layer(_x()), layer.host(_x()))


def test_training_seeds_learn_from_the_seed_loss_without_touching_the_output() -> None:
    """The seed loss trains a TRAINING seed's rows and no other row; the output trains none of them."""
    layer = _layer()
    layer.set_modes([SeedMode.TRAIN, SeedMode.HOST, SeedMode.HOST, SeedMode.HOST], [0, -1, -1, -1])
    out = layer(_x())
    assert layer.seed_loss.item() > 0
    assert layer.last_reconstruction[0].item() == pytest.approx(layer.seed_loss.item())
    out.square().sum().backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in layer.weights.parameters())
    host_grad = layer.host.weight.grad.clone()  # type: ignore[union-attr]
    layer.seed_loss.backward()
    trained = layer.slot_parameters("residual_mlp")["w1"].grad
    assert trained is not None and trained[0].abs().sum() > 0 and not trained[1:].any()
    assert torch.equal(layer.host.weight.grad, host_grad)  # type: ignore[arg-type]


def test_only_fine_tuning_blueprints_learn_from_the_output() -> None:
    """Grafting, held and fossilized blueprints are frozen in the output; a fine-tuning one learns from it."""
    layer = _layer()
    layer.set_modes([SeedMode.GRAFT, SeedMode.FINE_TUNE, SeedMode.FOSSIL, SeedMode.HOLD], [0, 0, 0, 0])
    layer.alpha.fill_(0.5)
    layer(_x()).square().sum().backward()
    grad = layer.slot_parameters("residual_mlp")["w1"].grad
    assert grad is not None
    assert [bool(grad[i].any()) for i in range(CHUNKS)] == [False, True, False, False]


def test_the_host_protocol_takes_a_users_module_and_names_what_one_lacks() -> None:
    """A user's host with out_features works; one without it, or chunks that do not divide it, is refused."""

    class Doubler(nn.Module):
        out_features = OUT

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat((x, x), dim=1)

    layer = SeedLayer(Doubler(), chunks=CHUNKS)
    assert torch.equal(layer(_x()), torch.cat((_x(), _x()), dim=1))
    with pytest.raises(ConfigError, match="lacks out_features"):
        SeedLayer(nn.ReLU(), chunks=2)
    with pytest.raises(ConfigError, match="chunks must be an int >= 1 dividing out_features=12"):
        SeedLayer(nn.Linear(IN, OUT), chunks=5)


def test_a_library_registers_user_blueprints_by_name_explicitly() -> None:
    """A user blueprint gets the next id; a taken name and an unknown one are refused with typed errors."""
    library = default_library()
    assert library.names() == ["residual_mlp", "low_rank"] and len(default_library()) == 2
    wide = Blueprint(name="wide_adapter", init=low_rank(8).init, apply=low_rank(8).apply)
    assert library.register(wide) == 2 and library.id("wide_adapter") == 2
    assert library.by_id(2) is wide
    with pytest.raises(ConfigError, match="registered already"):
        library.register(wide)
    with pytest.raises(UsageError, match="no blueprint 'nope'"):
        library.get("nope")
    with pytest.raises(ConfigError, match="must be an identifier"):
        Blueprint(name="a b", init=wide.init, apply=wide.apply)
    assert len(BlueprintLibrary()) == 0


def test_a_seed_runs_the_user_blueprint_its_registration_names() -> None:
    """A seed registered with attrs blueprint=NAME germinates into that hosted blueprint's rows."""
    library = default_library()
    library.register(Blueprint(name="wide_adapter", init=low_rank(8).init, apply=low_rank(8).apply))
    rig = Rig()
    rig.layer = SeedLayer(nn.Linear(IN, OUT), chunks=CHUNKS, library=library, blueprints=["wide_adapter"])
    lc = Lifecycle(gates=passing_gates())
    lc.register("u", "kasmina", layer=0, slot=2, attrs={"blueprint": "wide_adapter"})
    lc.register("bad", "kasmina", layer=0, slot=1, attrs={"blueprint": "low_rank"})
    optimizer = torch.optim.Adam(rig.layer.parameters())
    surgery = type(rig.surgery)({0: rig.layer}, optimizer, tensors=rig.tensors, schedule=rig.schedule)
    with pytest.raises(InconsistentEventError, match="not hosted"):
        surgery.apply(lc.log.read())
    assert surgery.seeds["u"].blueprint == "wide_adapter"


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_surgery_adds_and_removes_rows_with_the_optimizer_by_identity(strategy: str) -> None:
    """Germination gives rows (resize appends), culling frees them (masked keeps); the optimizer follows."""
    rig = Rig(strategy=strategy)  # type: ignore[arg-type]
    lc = run_plan(rig)
    assert optimizer_params_match(rig.layer, rig.optimizer)
    rows = {name: len(chunks) for name, chunks in rig.layer.row_chunks.items()}
    if strategy == "masked":
        assert rows == {"residual_mlp": CHUNKS, "low_rank": CHUNKS}
    else:  # s0 fossilized (residual_mlp, chunk 0), s1 rolled back (low_rank, chunk 1), s2 culled
        assert rig.layer.row_chunks == {"residual_mlp": [0], "low_rank": [1]}
    assert rig.layer.modes.tolist() == [SeedMode.FOSSIL, SeedMode.HOST, SeedMode.HOST, SeedMode.HOST]
    assert lc.registry.get("s2").state == "CULLED"


def test_germination_is_seeded_from_the_event_and_leaves_the_global_rng_alone() -> None:
    """Two rigs folding the same log draw the same weights, and folding draws nothing from the global RNG."""
    a, b = Rig(strategy="resize"), Rig(strategy="resize")
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    lc.transition("s0", "GERMINATED")
    before = torch.get_rng_state()
    a.surgery.apply(lc.log.read())
    assert torch.equal(torch.get_rng_state(), before)
    b.surgery.apply(lc.log.read())
    assert a.surgery.digest() == b.surgery.digest()
    assert a.layer.row_chunks["residual_mlp"] == [0]


def test_a_seed_in_a_slot_outside_the_layer_is_refused() -> None:
    """Registering a seed of a managed layer in a slot past its chunks raises InconsistentEventError."""
    rig, lc = Rig(), Lifecycle(gates=passing_gates())
    lc.register("far", "kasmina", layer=0, slot=CHUNKS)
    with pytest.raises(InconsistentEventError, match="names slot 4; layer 0 has 4 chunks"):
        rig.surgery.apply(lc.log.read())


@pytest.mark.parametrize("strategy", ["masked", "resize"])
def test_a_module_seed_is_pruned_recycled_and_integrated(strategy: str) -> None:
    """A `module` seed blends, is pruned (its rows freed), grows again in its recycled slot and integrates."""
    rig, lc = Rig(strategy=strategy), Lifecycle(gates=passing_gates())  # type: ignore[arg-type]
    lc.register("m", "module", layer=0, slot=1, attrs={"blueprint": "low_rank"})
    seen = []
    path = ["INSTANTIATED", "TRAINING", "BLENDING", "PRUNED", "DORMANT", "INSTANTIATED", "TRAINING"]
    for step, to in enumerate([*path, "BLENDING", "HOLDING", "INTEGRATED"]):
        rig.train_step(step)
        lc.transition("m", to, step=step)
        rig.surgery.apply(lc.log.read(rig.surgery.seq))
        seen.append((int(rig.layer.modes[1]), len(rig.layer.row_chunks["low_rank"])))
    rows = CHUNKS if strategy == "masked" else 1
    freed = CHUNKS if strategy == "masked" else 0
    assert [m for m, _ in seen] == [0, 1, 2, 0, 0, 0, 1, 2, 3, 5]
    assert [n for _, n in seen][2:5] == [rows, freed, freed]
    assert seen[-1][1] == rows and optimizer_params_match(rig.layer, rig.optimizer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_forward_and_tick_on_cuda_never_synchronise_with_the_host() -> None:
    """Under CUDA's sync debug mode, a forward and backward of every mode and an alpha tick raise nothing."""
    layer = _layer().cuda()
    layer.set_modes([SeedMode.TRAIN, SeedMode.GRAFT, SeedMode.FINE_TUNE, SeedMode.FOSSIL], [0, 1, 0, 1])
    tensors, schedule = StateTensors(SPECS, device="cuda"), AlphaSchedule(device="cuda")
    lc = Lifecycle(gates=passing_gates())
    register_seeds(lc)
    for name, to in (("s0", "GERMINATED"), ("s0", "TRAINING"), ("s0", "GRAFTING")):
        lc.transition(name, to)
    tensors.apply(lc.log.read())
    schedule.apply(lc.log.read())
    x = _x().cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        (layer(x).square().sum() + layer.seed_loss).backward()
        tensors.advance(5)
        schedule.tick(tensors, 5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert schedule.alpha[0].item() == pytest.approx(0.1)
