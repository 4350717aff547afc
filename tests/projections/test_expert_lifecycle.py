"""`ExpertLifecycle` runs the lifecycle of a user's own MoE layer in three calls, and refuses misuse.

The layer here is written the way a user would write one (not the reference `MoELayer`): a
top-2 router over slot-major expert weights, meeting `ExpertLayer` and `RoutedLayer`. The
coordinator's actions are switched off where a test asserts what the log holds, so no
assertion depends on one machine's floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bus
from bus import MemoryLog
from lifecycle_es import ConfigError, UsageError
from lifecycle_es.controllers import ExpertCoordinatorConfig
from projections.training import Boundary, ExpertLifecycle, find_expert_layers

TYPES, D, SLOTS, TOKENS = 4, 8, 6, 32
QUIET = ExpertCoordinatorConfig(
    lifecycle_eval_interval=5,
    max_experts_per_layer=SLOTS,  # the masked layers below have SLOTS slots
    max_spawns_per_cycle=0,
    max_prunes_per_cycle=0,
    max_splits_per_cycle=0,
    max_merges_per_cycle=0,
)
"""Evaluate every 5 steps and decide no action: the log's shape is the same on every machine."""


class TopTwo(nn.Module):
    """A user's top-2 MoE layer: one linear map per expert, stored slot-major."""

    def __init__(self, slots: int = SLOTS, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(slots, D, D, generator=g) / D**0.5)
        self.router = nn.Parameter(torch.randn(slots, D, generator=g) / D**0.5)
        self.register_buffer("active", torch.ones(slots, dtype=torch.bool))
        self.last_indices = torch.empty(0, 2, dtype=torch.long)
        self.last_weights = torch.empty(0, 2)

    @property
    def capacity(self) -> int:
        return int(self.w.shape[0])

    def expert_parameters(self) -> dict[str, nn.Parameter]:
        return {"w": self.w}

    def router_parameters(self) -> dict[str, nn.Parameter]:
        return {"router": self.router}

    def set_active(self, mask: torch.Tensor) -> None:
        self.active.copy_(mask)

    def replace_parameters(self, params: Mapping[str, nn.Parameter]) -> None:
        self.w, self.router = params["w"], params["router"]
        self.active = torch.zeros(self.capacity, dtype=torch.bool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x @ self.router.t()).masked_fill(~self.active, float("-inf"))
        top, idx = logits.topk(2, dim=-1)
        weights = torch.softmax(top, dim=-1)
        self.last_indices, self.last_weights = idx, weights.detach()
        every = torch.einsum("td,cde->tce", x, self.w)
        chosen = every.gather(1, idx[..., None].expand(-1, -1, D))
        out: torch.Tensor = (weights[..., None] * chosen).sum(dim=1)
        return out


class Job:
    """A model holding a `TopTwo`, its optimizer and a seeded data stream of typed tokens."""

    def __init__(self) -> None:
        self.model = nn.Sequential(TopTwo(), nn.Linear(D, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)

    def step(self, step: int) -> torch.Tensor:
        """Train on step `step`'s batch; return its token types."""
        g = torch.Generator().manual_seed(step)
        types = torch.randint(0, TYPES, (TOKENS,), generator=g)
        x = torch.randn(TOKENS, D, generator=g) + types[:, None].float()
        loss = self.model(x).square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return types

    def train(self, lifecycle: ExpertLifecycle, steps: range) -> Boundary | None:
        """Train each of `steps`, recording it and calling after_step; return the last call's result."""
        boundary = None
        for step in steps:
            lifecycle.record(self.step(step))
            boundary = lifecycle.after_step(step)
        return boundary

    def lifecycle(self, log: bus.Log | str, **kwargs: Any) -> ExpertLifecycle:
        return ExpertLifecycle(
            self.model, self.optimizer, log, num_types=TYPES, initial_experts=4, config=QUIET, **kwargs
        )


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_three_calls_run_the_lifecycle_on_a_users_own_layer() -> None:
    """start, record and after_step: the run starts with its experts, and every 5 steps the
    interval's routing is observed and sealed; the run's own metrics are read at evaluations only."""
    job, log = Job(), MemoryLog("own-layer")
    lifecycle = job.lifecycle(log)
    assert lifecycle.layers == {0: job.model[0]}  # found by scanning the model
    assert lifecycle.start(seed=3, config={"task": "toy"}) is None
    read: list[int] = []
    boundaries = []
    for step in range(1, 21):
        lifecycle.record(job.step(step))
        boundary = lifecycle.after_step(step, metrics=lambda step=step: read.append(step) or {"loss": 1.0})
        boundaries.append(None if boundary is None else boundary.step)
    assert boundaries == [None] * 4 + [5] + [None] * 4 + [10] + [None] * 4 + [15] + [None] * 4 + [20]
    assert read == [5, 10, 15, 20]
    records = log.read()
    started = records[0]
    assert (started["kind"], started["seed"]) == ("RunStarted", 3)
    assert started["config"] == {"task": "toy", "lifecycle": QUIET.snapshot()}
    registered = [(r["entity"], r["state"], r["slot"]) for r in records if r["kind"] == "EntityRegistered"]
    assert registered == [(f"L0_E{i}", "active", i) for i in range(4)]
    assert [r["step"] for r in records if r["kind"] == "StepSealed"] == [0, 5, 10, 15, 20]
    observed = [r for r in records if r["kind"] == "MetricsObserved" and r["step"] == 20]
    experts = [(0, f"L0_E{i}") for i in range(4)]
    assert [(r["layer"], r["entity"]) for r in observed] == [(0, None), *experts, (None, None)]
    assert observed[-1]["metrics"] == {"loss": 1.0}
    assert lifecycle.routing_counts() == {0: 4}
    assert job.model[0].active.tolist() == [True] * 4 + [False] * 2
    assert lifecycle.finish(20) is None  # one process: nothing to compare


def test_a_log_url_is_opened_for_the_run_and_closed_with_it(tmp_path: Path) -> None:
    """A directory (or jsonl:// URL) with run_id gives the run's JSONL log, closed by the context."""
    job = Job()
    with job.lifecycle(str(tmp_path), run_id="by-url") as lifecycle:
        lifecycle.start()
        job.train(lifecycle, range(1, 6))
    with bus.open(f"jsonl://{tmp_path}", "by-url", create=False) as log:
        assert [r["step"] for r in log.read() if r["kind"] == "StepSealed"] == [0, 5]


def test_a_resumed_run_continues_after_its_checkpoint(tmp_path: Path) -> None:
    """start(resume=True) loads the last checkpoint on a fresh model and returns it; its boundary
    is behind the rank, so calling it again is refused, and training goes on from the next step."""
    job, log = Job(), MemoryLog("resumed")
    first = job.lifecycle(log)
    first.start()
    boundary = job.train(first, range(1, 11))
    assert boundary is not None
    first.checkpoints.save(tmp_path, boundary, extra={"basin": first.basin.state()})
    again = Job()
    second = again.lifecycle(log.attach())
    checkpoint = second.start(resume=True)
    assert checkpoint is not None and checkpoint.step == 10
    second.basin.load_state(checkpoint.extra["basin"])
    assert second.surgery.digest(event_ids=False) == first.surgery.digest(event_ids=False)
    with pytest.raises(UsageError, match="applied the boundary of step 10 already"):
        second.after_step(10)
    again.train(second, range(11, 16))
    assert second.lc.registry.sealed_step == 15


# -- misuse ------------------------------------------------------------------------------------


def test_record_or_after_step_before_start_is_refused() -> None:
    """The loop must start the run first; each call says so."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("unstarted"))
    types = job.step(1)
    with pytest.raises(UsageError, match=r"^record\(\) before start\(\): call start\(\) once"):
        lifecycle.record(types)
    with pytest.raises(UsageError, match=r"^after_step\(\) before start\(\)"):
        lifecycle.after_step(5)
    with pytest.raises(UsageError, match=r"^finish\(\) before start\(\)"):
        lifecycle.finish(5)
    assert lifecycle.log.last_seq() == 0


def test_start_called_twice_is_refused() -> None:
    """A second start() says so, instead of refusing step 0's boundary as behind the run."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("twice-started"))
    lifecycle.start()
    seq = lifecycle.log.last_seq()
    with pytest.raises(UsageError) as caught:
        lifecycle.start()
    assert str(caught.value) == "start() called twice: call it once, on every rank, before training"
    assert lifecycle.log.last_seq() == seq


def test_a_token_type_out_of_range_is_refused_at_the_next_evaluation() -> None:
    """A type id >= num_types is a UsageError at the evaluation step, before anything is decided."""
    job, log = Job(), MemoryLog("bad-types")
    lifecycle = job.lifecycle(log)
    lifecycle.start()
    for step in range(1, 6):
        types = job.step(step)
        lifecycle.record(types + TYPES if step == 3 else types)
        if step < 5:
            lifecycle.after_step(step)
    seq = log.last_seq()
    with pytest.raises(UsageError, match=rf"token type ids must lie in \[0, {TYPES}\)"):
        lifecycle.after_step(5)
    assert log.last_seq() == seq


def test_an_evaluation_step_repeated_is_refused_at_once() -> None:
    """after_step twice with one evaluation step raises at once, instead of waiting for a seal."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("twice"))
    lifecycle.start()
    job.train(lifecycle, range(1, 6))
    with pytest.raises(UsageError, match=r"^step 5: this rank applied the boundary of step 5 already"):
        lifecycle.after_step(5)


def test_an_earlier_evaluation_step_is_refused_at_once() -> None:
    """An evaluation step before the last one applied raises, naming both; nothing is appended."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("earlier"))
    lifecycle.start()
    job.train(lifecycle, range(1, 11))
    seq = lifecycle.log.last_seq()
    with pytest.raises(UsageError) as caught:
        lifecycle.after_step(5)
    assert str(caught.value) == (
        "step 5: this rank applied the boundary of step 10 already; "
        "give each evaluation step once (after_step, at_boundary), with steps that increase"
    )
    assert lifecycle.log.last_seq() == seq


@pytest.mark.parametrize(
    ("step", "got"), [("10", "str"), (True, "bool"), (10.0, "float"), (torch.tensor(10), "Tensor")]
)
def test_a_step_that_is_not_an_int_is_refused(step: object, got: str) -> None:
    """after_step takes the int step of the loop: a str, bool, float or tensor is a UsageError."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("step"))
    lifecycle.start()
    lifecycle.record(job.step(1))
    seq = lifecycle.log.last_seq()
    with pytest.raises(UsageError) as caught:
        lifecycle.after_step(step)  # type: ignore[arg-type]
    assert str(caught.value) == f"step must be an int, got {got}"
    assert lifecycle.log.last_seq() == seq


@pytest.mark.parametrize(
    ("types", "got"),
    [
        (torch.zeros(TOKENS), f"a torch.float32 tensor of shape ({TOKENS},)"),
        (torch.zeros(2, TOKENS // 2, dtype=torch.long), f"a torch.int64 tensor of shape (2, {TOKENS // 2})"),
        (torch.zeros(TOKENS, dtype=torch.uint8), f"a torch.uint8 tensor of shape ({TOKENS},)"),
        ([0] * TOKENS, "a list"),
    ],
)
def test_token_types_that_are_not_one_int_id_per_token_are_refused_at_record(types: object, got: str) -> None:
    """Floats, a 2-D batch, a dtype torch cannot index with or a list: one UsageError, nothing kept."""
    job = Job()
    lifecycle = job.lifecycle(MemoryLog("types"))
    lifecycle.start()
    job.step(1)
    with pytest.raises(UsageError) as caught:
        lifecycle.record(types, torch.ones(TOKENS))  # type: ignore[arg-type]
    assert (
        str(caught.value)
        == f"token types must be a 1-D int64 or int32 tensor, one id per token, but got {got}"
    )
    assert lifecycle.basin.tokens == 0
    lifecycle.record(job.step(2).int(), torch.ones(TOKENS))  # int32 ids are taken
    assert lifecycle.basin.tokens == TOKENS


@pytest.mark.parametrize(
    ("layers", "got"),
    [(["the layer"], "a list"), ({"moe": "the layer"}, "keys ['moe']"), ({-1: "the layer"}, "keys [-1]")],
)
def test_layers_not_keyed_by_layer_index_are_refused(layers: object, got: str) -> None:
    """`layers=` maps layer indices to MoE layers; anything else is a ConfigError saying so."""
    job = Job()
    given = [job.model[0] for _ in layers] if isinstance(layers, list) else {k: job.model[0] for k in layers}
    with pytest.raises(ConfigError) as caught:
        job.lifecycle(MemoryLog("layers"), layers=given)
    assert str(caught.value) == (
        f"layers maps layer indices (ints >= 0) to MoE layers, e.g. {{0: model.moe}}, but got {got}"
    )
    assert job.lifecycle(MemoryLog("layers"), layers={0: job.model[0]}).layers == {0: job.model[0]}


@pytest.mark.parametrize("count", [0, SLOTS + 1, 2.5, True])
def test_initial_experts_outside_one_to_the_slots_are_refused_when_built(count: Any) -> None:
    """A layer starts with at least one routing expert and at most its slots (and the cap)."""
    job = Job()
    with pytest.raises(ConfigError) as caught:
        ExpertLifecycle(job.model, job.optimizer, MemoryLog("count"), num_types=TYPES, initial_experts=count)
    assert str(caught.value) == (
        f"initial_experts must be an int in [1, {SLOTS}] (layer 0's slots and max_experts_per_layer), "
        f"got {count!r}"
    )


def test_a_config_that_is_not_the_coordinators_is_refused_when_built() -> None:
    """Settings go in an ExpertCoordinatorConfig; a dict of them is a ConfigError saying so."""
    job = Job()
    settings: Any = {"spawn_patience": 3}
    with pytest.raises(ConfigError) as caught:
        ExpertLifecycle(job.model, job.optimizer, MemoryLog("cfg"), num_types=TYPES, config=settings)
    assert str(caught.value) == (
        "config must be an ExpertCoordinatorConfig, got a dict: "
        "build one with its settings, e.g. ExpertCoordinatorConfig(spawn_patience=5)"
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"user": {"worst_class_loss": 1.0}}, "user= takes a function the evaluation calls, got a dict"),
        ({"metrics": 1.0}, "metrics= takes a function the evaluation calls, got a float"),
        (
            {"revival": lambda: {3: torch.zeros(1, D)}},
            r"revival\(\) gave inputs of layers \[3\], but the managed layers are \[0\]",
        ),
    ],
)
def test_bad_evaluation_inputs_are_refused_and_lose_no_routing(given: dict[str, Any], message: str) -> None:
    """A value where a function belongs, or inputs of a layer not managed: a UsageError before the
    interval's routing is read, so the same step then observes what a run without it observes."""

    def run(bad: dict[str, Any] | None) -> list[dict[str, Any]]:
        torch.manual_seed(0)  # the model's head draws from the global generator
        job, log = Job(), MemoryLog("inputs")
        lifecycle = job.lifecycle(log)
        lifecycle.start()
        job.train(lifecycle, range(1, 5))
        lifecycle.record(job.step(5))
        if bad is not None:
            seq = log.last_seq()
            with pytest.raises(UsageError, match=rf"^{message}"):
                lifecycle.after_step(5, **bad)
            assert log.last_seq() == seq
        assert lifecycle.after_step(5) is not None
        return [r["metrics"] for r in log.read() if r["kind"] == "MetricsObserved" and r["step"] == 5]

    observed = run(given)
    assert observed and observed == run(None)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lifecycle": 1}, "cannot use the key 'lifecycle': the coordinator's settings are recorded there"),
        (
            {"lr": torch.tensor(0.1)},
            r"takes JSON values with str keys only, but config\['lr'\] is of type Tensor",
        ),
    ],
)
def test_a_start_config_that_cannot_be_recorded_is_refused(config: dict[str, Any], message: str) -> None:
    """The run's own config goes to RunStarted beside the coordinator's: JSON values, no 'lifecycle' key."""
    lifecycle = Job().lifecycle(MemoryLog("config"))
    with pytest.raises(ConfigError, match=message):
        lifecycle.start(config=config)
    assert lifecycle.log.last_seq() == 0


class _NoMask(TopTwo):
    set_active = None  # type: ignore[assignment]


def test_a_model_without_a_complete_moe_layer_is_refused_naming_what_is_missing() -> None:
    """Scanning a model names each module that looks like an MoE layer and what it lacks."""
    with pytest.raises(ConfigError) as caught:
        find_expert_layers(nn.Sequential(nn.Linear(2, 2), _NoMask()))
    assert str(caught.value) == (
        "Sequential holds no module meeting the ExpertLayer protocol: 1 (_NoMask) lacks set_active"
    )
    with pytest.raises(ConfigError, match=r"holds no module meeting the ExpertLayer protocol: pass layers="):
        find_expert_layers(nn.Linear(2, 2))


def test_a_log_url_needs_a_run_id_and_a_log_its_own_run() -> None:
    """A URL without run_id, or a run_id other than the given log's, is a ConfigError."""
    job = Job()
    with pytest.raises(ConfigError, match="needs run_id= to name the run"):
        job.lifecycle("memory://")
    with pytest.raises(ConfigError, match="run_id 'other' differs from the log's run 'mine'"):
        job.lifecycle(MemoryLog("mine"), run_id="other")
