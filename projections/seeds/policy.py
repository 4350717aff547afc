"""`TorchPolicy`: a torch network as the policy of a `PolicyController`.

`lifecycle_es` stays free of torch: its policy controller takes any callable from the
observation vector to action probabilities. This adapter is that callable for an `nn.Module`
that maps an observation tensor `[len(OBSERVATION_KEYS)]` to one logit per action
(`SEED_ACTIONS` order). It runs the network without gradients on the CPU and returns the
softmax as Python floats, which the decision records; a replay reads them back from the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lifecycle_es.controllers import OBSERVATION_KEYS, SEED_ACTIONS
from lifecycle_es.errors import ConfigError, UsageError

__all__ = ["TorchPolicy"]


class TorchPolicy:
    """Calls a torch policy network on an observation and returns its action probabilities."""

    def __init__(self, network: nn.Module) -> None:
        if not isinstance(network, nn.Module):
            raise ConfigError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        self.network = network

    def __call__(self, observation: Sequence[float]) -> list[float]:
        """Return softmax(network(observation)) as floats, one per action in `SEED_ACTIONS` order."""
        if len(observation) != len(OBSERVATION_KEYS):
            raise UsageError(
                f"the observation must have {len(OBSERVATION_KEYS)} entries, got {len(observation)}"
            )
        device = next(self.network.parameters(), torch.empty(0)).device
        x = torch.tensor(list(observation), dtype=torch.float32, device=device)
        with torch.no_grad():
            logits = self.network(x)
        if logits.shape != (len(SEED_ACTIONS),):
            raise UsageError(
                f"the network must return {len(SEED_ACTIONS)} logits, got shape {tuple(logits.shape)}"
            )
        return [float(p) for p in torch.softmax(logits.double(), dim=0).cpu()]
