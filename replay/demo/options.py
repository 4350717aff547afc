"""The demo's options, its coordinator settings and its model: what defines one demo run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lifecycle_es.controllers import ExpertCoordinatorConfig
from projections.moe import Strategy
from replay.demo.model import DemoModel
from replay.demo.task import Task

__all__ = ["DemoOptions", "demo_config", "demo_model"]


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """Everything that defines one demo run.

    Two runs with equal options train identically: each decision's noise is seeded from the
    run's seed (`RunStarted.seed`), its step, action and target.
    """

    steps: int = 3000  # replay.cli.demo.DEFAULT_STEPS
    """Training steps; the task's phases are fractions of them."""
    seed: int = 0
    """Seeds the model's initial weights and the task's data (separate CPU generators)."""
    strategy: Strategy = "masked"
    """Model surgery strategy: fixed capacity with masks, or parameters really resized."""
    lifecycle: bool = True
    """False trains the initial experts only: the baseline."""
    batch_size: int = 256
    layers: int = 1
    """MoE layers in the model."""
    initial_experts: int = 4
    """Experts per layer at step 0."""
    max_experts: int = 16
    """`max_experts_per_layer`, and the slots per layer allocated under the masked strategy."""
    d_model: int = 32
    d_hidden: int = 8
    """Expert hidden width: the rank of one type's map, so one expert fits one type."""
    top_k: int = 2
    lr: float = 1e-2
    weight_decay: float = 0.01

    def to_json(self) -> dict[str, Any]:
        """Return the options as JSON values, for `RunStarted.config`."""
        return asdict(self)


def demo_config(options: DemoOptions) -> ExpertCoordinatorConfig:
    """Return the demo's `ExpertCoordinatorConfig`: seeds/002's defaults except where the demo is short.

    Every other threshold, patience count (in checkpoints) and budget keeps its default. Changed:

    - `lifecycle_eval_interval=10`: a checkpoint every 10 training steps (the default 5 counts
      ChronoMoE v2 controller updates, themselves many steps apart);
    - `spawn_cooldown_steps=50` (default 500), `split_cooldown_per_expert=400` (default 1000):
      cooldowns in steps, scaled to phases of `steps / 5` (600 steps by default);
    - `prune_patience=5` (default 10) checkpoints dormant before a prune, so idle experts go
      within a phase;
    - `cooling_period=10` (default 3) checkpoints: a newborn clone needs about 100 steps to
      find a basin of its own; judged sooner, it is merged back or split again before it could;
    - `dormant_share_epsilon=0.01` (default 1e-6): an expert doing less than 1% of the layer's
      routing counts as idle, ChronoMoE v2's "nearly dead" bound (0 < share < 0.01);
    - starvation by basin breadth instead of routing spread: `starvation_breadth_threshold=1.6`
      (default: not asked), `starvation_entropy_threshold=None` (default 0.95) and
      `starvation_saturation_threshold=None` (the demo records no saturation). A layer starves
      while its experts' basins span 1.6 token types or more on average. Even routing held in
      every phase where each expert fits its type and spawned a clone every cooldown that took
      half of one expert's tokens and was pruned later (16 spawns and 11 prunes in one
      3000-step run), while the experts that do serve two types take more than their part of
      the routing, which the entropy test reads as no starvation;
    - `spawn_patience=10` (default 5) checkpoints: an untrained router spreads every basin for
      the first few dozen steps, which is no reason to grow;
    - `merge_below_split_share=True` (default off): two experts merge only while together they
      carry no more than `split_share_threshold`, so the halves of a split still sharing the
      load that split them are not merged back, only to be split again, once their lineage
      grace has passed;
    - `max_experts_per_layer` from the options (16 by default, the seeds/002 default).
    """
    return ExpertCoordinatorConfig(
        lifecycle_eval_interval=10,
        spawn_cooldown_steps=50,
        prune_patience=5,
        dormant_share_epsilon=0.01,
        split_cooldown_per_expert=400,
        cooling_period=10,
        starvation_breadth_threshold=1.6,
        starvation_entropy_threshold=None,
        starvation_saturation_threshold=None,
        spawn_patience=10,
        merge_below_split_share=True,
        max_experts_per_layer=options.max_experts,
    )


def demo_model(options: DemoOptions, task: Task) -> DemoModel:
    """Return the demo's model for `options` on `task`, its weights seeded from `options.seed`.

    Under the masked strategy every layer holds `max_experts` slots from the start; under
    resize it starts with `initial_experts` and surgery grows and shrinks it.
    """
    capacity = options.max_experts if options.strategy == "masked" else options.initial_experts
    return DemoModel(
        d_in=task.d_in,
        d_out=task.d_out,
        d_model=options.d_model,
        d_hidden=options.d_hidden,
        capacity=capacity,
        layers=options.layers,
        top_k=options.top_k,
        seed=options.seed,
    )
