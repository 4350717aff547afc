"""The policy seed controller: the observation, the probabilities and the chosen action are
recorded in the `DecisionMade`, so a replay of the log never calls the policy again."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from lifecycle_es import Lifecycle, Registry, UsageError, fold_record
from lifecycle_es.controllers import (
    OBSERVATION_KEYS,
    SEED_ACTIONS,
    PolicyController,
    SeedAction,
    SeedDriver,
)
from lifecycle_es.controllers.policy import choose
from projections.seeds import TorchPolicy
from replay.export import dataset_rows

A = SeedAction


class CountingPolicy:
    """A fixed policy that counts its calls: it prefers `grow`, then `advance` once trained."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, observation: Sequence[float]) -> list[float]:
        self.calls += 1
        state_code = observation[OBSERVATION_KEYS.index("state_code")]
        favourite = A.GROW if state_code == 0 else A.ADVANCE
        return [0.7 if a is favourite else 0.075 for a in SEED_ACTIONS]


def run_policy(policy: CountingPolicy) -> Lifecycle:
    lc = Lifecycle(run_id="policy")
    lc.start(seed=11)
    lc.register("s0", "kasmina", layer=0, slot=0)
    driver = SeedDriver(PolicyController(policy))
    for step in (0, 1, 2):
        driver.run(lc, step=step, metrics={"s0": {"loss_delta": 0.25}})
    return lc


def test_a_policy_decision_records_what_the_policy_saw_and_said() -> None:
    """Each decision holds the observation by name, the 5 probabilities and the argmax action."""
    lc = run_policy(CountingPolicy())
    made = [r for r in lc.log.read() if r["kind"] == "DecisionMade"]
    assert [r["metrics_at_decision"]["seed_action"] for r in made] == ["grow", "advance", "advance"]
    first = made[0]["metrics_at_decision"]
    assert first["controller"] == "policy"
    assert list(first["observation"]) == list(OBSERVATION_KEYS)
    assert first["observation"]["loss_delta"] == 0.25
    assert first["probabilities"] == pytest.approx([0.075, 0.075, 0.075, 0.075, 0.7])
    assert [r["action"] for r in made] == ["GERMINATE", "ADVANCE", "ADVANCE"]
    assert lc.registry.get("s0").state == "TRAINING"


def test_replaying_the_log_never_calls_the_policy() -> None:
    """Folding the log again and exporting its dataset reads the recorded decisions: the
    policy's call count stays at the number of live decisions."""
    policy = CountingPolicy()
    lc = run_policy(policy)
    assert policy.calls == 3
    rebuilt = Registry(lc.registry.specs)
    for record in lc.log.read():
        fold_record(rebuilt, record)
    rows = dataset_rows(lc.log)
    assert rebuilt == lc.registry
    assert [row["action"] for row in rows] == ["grow", "advance", "advance"]
    assert policy.calls == 3


def test_a_torch_network_is_a_policy_through_the_adapter() -> None:
    """TorchPolicy runs a real nn.Linear without gradients and returns its softmax as floats."""
    torch.manual_seed(0)
    network = nn.Linear(len(OBSERVATION_KEYS), len(SEED_ACTIONS))
    with torch.no_grad():
        network.weight.zero_()
        network.bias.copy_(torch.tensor([0.0, 2.0, 0.0, 0.0, 1.0]))
    policy = TorchPolicy(network)
    probs = policy([0.0] * len(OBSERVATION_KEYS))
    expected = torch.softmax(torch.tensor([0.0, 2.0, 0.0, 0.0, 1.0], dtype=torch.float64), 0).tolist()
    assert probs == pytest.approx(expected)
    lc = Lifecycle(run_id="torch")
    lc.start()
    lc.register("m", "module", slot=0)
    (step,) = SeedDriver(PolicyController(policy)).run(lc, step=0)
    assert step.decision.action is A.ADVANCE
    with pytest.raises(UsageError, match="observation must have 10 entries"):
        policy([0.0])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([0.5, 0.5], "must return 5 probabilities"),
        ([0.5, 0.5, 0.5, -0.5, 0.0], "must return 5 probabilities"),
        ([0.1, 0.1, 0.1, 0.1, 0.1], "summing to 1"),
        (["a"] * 5, "must return 5 numbers"),
    ],
)
def test_a_policy_that_returns_no_distribution_is_a_usage_error(output: list[object], message: str) -> None:
    """A wrong length, a negative value or a sum far from 1 raises before anything is recorded."""
    lc = Lifecycle(run_id="bad")
    lc.start()
    lc.register("m", "module", slot=0)
    before = lc.registry.seq
    with pytest.raises(UsageError, match=message):
        SeedDriver(PolicyController(lambda _: output)).run(lc, step=0)  # type: ignore[arg-type, return-value]
    assert lc.registry.seq == before


def test_a_sampled_choice_is_a_pure_function_of_the_seed() -> None:
    """choose() returns the same index for the same seed, never an action of probability 0."""
    probs = (0.0, 0.5, 0.0, 0.5, 0.0)
    picks = [choose(probs, seed) for seed in range(200)]
    assert picks == [choose(probs, seed) for seed in range(200)]
    assert set(picks) == {1, 3}
    assert choose((0.0, 0.0, 1.0, 0.0, 0.0), 7) == 2
