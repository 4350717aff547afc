"""The seeds demo's controllers: the heuristic with thresholds for a short run, a small fixed
torch policy (or one loaded from a file), and the hybrid of the two.

`DemoPolicy` is a state table plus a linear term: each state code has a preferred action (grow a
dormant slot, advance a live seed, prune again a pruned `module` slot) and the host regression a
seed causes pushes towards rollback (kasmina) or prune (module). Its weights are set here, not
learned; `--policy FILE` loads a state dict of the same shape instead (torch.load with
weights_only=True), e.g. one trained offline from `export-decisions --dataset` rows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lifecycle_es.controllers import (
    OBSERVATION_KEYS,
    SEED_ACTIONS,
    HeuristicConfig,
    HeuristicController,
    HybridController,
    PolicyController,
    SeedAction,
    SeedController,
)
from lifecycle_es.errors import ConfigError
from lifecycle_es.specs import KASMINA_SPEC, MODULE_SPEC
from projections.seeds import TorchPolicy
from replay.demo.seeds.options import SeedsOptions

__all__ = ["DemoPolicy", "build_controller", "demo_heuristic"]

_STATES = max(len(KASMINA_SPEC.states), len(MODULE_SPEC.states))
_A = SEED_ACTIONS.index


def demo_heuristic() -> HeuristicConfig:
    """The heuristic's thresholds for the demo: seeds/000's, except where a short run needs less.

    `plateau_threshold=0.003`: the host's loss counts as flat when it moved less than 0.3% per
    evaluation (averaged over three); `max_training_steps=400`: a seed that never learns is culled;
    `max_regression=0.01`: a graft that makes the held-out loss 1% worse is rolled back.
    """
    return HeuristicConfig(plateau_threshold=0.003, max_training_steps=400, max_regression=0.01)


class DemoPolicy(nn.Module):
    """Action logits from the state code (a table) and the observation (a linear term)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.table = nn.Embedding(_STATES, len(SEED_ACTIONS))
        self.linear = nn.Linear(len(OBSERVATION_KEYS), len(SEED_ACTIONS), bias=False)
        with torch.no_grad():
            self.table.weight.zero_()
            self.table.weight[:, _A(SeedAction.ADVANCE)] = 2.0
            self.table.weight[:, _A(SeedAction.HOLD)] = 1.0
            self.table.weight[0, _A(SeedAction.GROW)] = 3.0  # DORMANT (code 0 in both specs)
            if spec == MODULE_SPEC.name:
                self.table.weight[MODULE_SPEC.state("PRUNED").code, _A(SeedAction.PRUNE)] = 4.0
            self.linear.weight.zero_()
            harm = SeedAction.ROLLBACK if spec == KASMINA_SPEC.name else SeedAction.PRUNE
            self.linear.weight[_A(harm), OBSERVATION_KEYS.index("host_regression")] = 400.0

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """Return one logit per action in `SEED_ACTIONS` order."""
        code = observation[0].long().clamp(0, _STATES - 1)
        logits: torch.Tensor = self.table(code) + self.linear(observation)
        return logits


def _policy(options: SeedsOptions) -> PolicyController:
    network = DemoPolicy(options.spec)
    if options.policy_path is not None:
        path = Path(options.policy_path)
        if not path.is_file():
            raise ConfigError(f"policy file {path} does not exist")
        state = torch.load(path, weights_only=True)
        expected = set(network.state_dict())
        if not isinstance(state, dict) or set(state) != expected:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ConfigError(
                f"policy file {path} is not a DemoPolicy state dict: keys {got}, expected {sorted(expected)}"
            )
        try:
            network.load_state_dict(state)
        except RuntimeError as e:  # a shape differs; torch's message spans lines
            raise ConfigError(
                f"policy file {path} is not a DemoPolicy state dict: {' '.join(str(e).split())}"
            ) from e
    return PolicyController(TorchPolicy(network))


def build_controller(options: SeedsOptions) -> SeedController:
    """Return the controller `options.controller` names."""
    heuristic = HeuristicController(demo_heuristic())
    if options.controller == "heuristic":
        return heuristic
    if options.controller == "policy":
        return _policy(options)
    return HybridController(heuristic, _policy(options))
