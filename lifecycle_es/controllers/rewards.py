"""seeds/000's `get_reward`: what a seed controller's decision earned, term by term.

The metrics are numbers (a flag is 1.0 when set): `loss_improved` earns +1, any
`host_regression` above 0 costs 2, `over_budget` costs 1, and an advance that completed an
integration (`integration_success`) earns +5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lifecycle_es.controllers._seed_actions import SeedAction

__all__ = ["REWARD_TERMS", "get_reward"]

REWARD_TERMS: Mapping[str, float] = {
    "loss_improved": 1.0,
    "host_regression": -2.0,
    "over_budget": -1.0,
    "integration_success": 5.0,
}
"""Each term's weight, as seeds/000's `get_reward` gives it."""


def get_reward(metrics: Mapping[str, float], action: SeedAction) -> tuple[float, dict[str, float]]:
    """Return the reward of taking `action` under `metrics`, and the terms that make it up."""
    terms: dict[str, float] = {}
    for name in ("loss_improved", "host_regression", "over_budget"):
        if metrics.get(name, 0.0) > 0:
            terms[name] = REWARD_TERMS[name]
    if action is SeedAction.ADVANCE and metrics.get("integration_success", 0.0) > 0:
        terms["integration_success"] = REWARD_TERMS["integration_success"]
    return math.fsum(terms.values()), terms
