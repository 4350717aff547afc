"""A rank of a two-rank gloo run in which an idle expert is parked and later revived.

Run by tests/projections/test_park_revive.py through `tests.ddp._harness.Ranks`: every rank
trains the same layer on its own data through `Replicated`, the lifecycle on the shared log; it
prints one JSON line with its decisions, the step each was applied at, and its surgery's digest.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import cast

import torch

import bus
from lifecycle_es.controllers import ExpertCoordinatorConfig, expert_id
from projections.moe import MoELayer, Strategy
from projections.training import ExpertLifecycle, Replicated, distributed

D_MODEL, SLOTS, TOKENS = 8, 4, 32
IDLE = expert_id(0, 3)


def train(url: str, strategy: str) -> dict[str, object]:
    """Train until the idle expert was parked and revived (at most 80 steps); report."""
    layer = MoELayer(D_MODEL, 16, SLOTS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # E3 scores -10 x[0]: no input with x[0] > 0 reaches it
        layer.router_weight[3] = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), -10.0)
    model = torch.nn.Sequential(layer)
    replicated = Replicated(model)
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
    home = torch.zeros(D_MODEL).index_fill_(0, torch.tensor([0]), 3.0)
    g = torch.Generator().manual_seed(4 + distributed.rank())
    with bus.open(url, "revive") as log:
        lifecycle = ExpertLifecycle(
            model,
            optimizer,
            log,
            num_types=1,
            config=config,
            strategy=cast(Strategy, strategy),
            replicated=replicated,
        )
        lifecycle.start(seed=0)
        for step in range(1, 81):
            side = -1.0 if IDLE in lifecycle.surgery.parking.parked else 1.0  # same on every rank
            x = side * home + 0.3 * torch.randn(TOKENS, D_MODEL, generator=g)
            optimizer.zero_grad()
            replicated(x).square().mean().backward()
            optimizer.step()
            lifecycle.record(torch.zeros(TOKENS, dtype=torch.long))
            lifecycle.after_step(step, revival=lambda x=x: {0: x})
            if lifecycle.lc.registry.get(IDLE).state == "active" and side < 0:
                break
        made = [
            [r["action"], r["entity"], r["apply_at_step"]]
            for r in lifecycle.lc.log.read()
            if r["kind"] == "DecisionMade"
        ]
        return {
            "rank": distributed.rank(),
            "made": made,
            "digest": lifecycle.finish(step),
            "model": lifecycle.surgery.digest(event_ids=False),
        }


def main() -> None:
    """Join the gloo group, train, print one JSON line."""
    torch.set_num_threads(1)
    with distributed.process_group("gloo", timeout=datetime.timedelta(seconds=60)):
        print(json.dumps(train(sys.argv[1], sys.argv[2])), flush=True)


if __name__ == "__main__":
    main()
