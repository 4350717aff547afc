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
    """Return the demo's `ExpertCoordinatorConfig`: the library's defaults, with `max_experts`.

    The demo sets nothing else: the defaults are those it and the real-data benchmark
    (tests/benchmarks/bench_real_data.py) both run under, measured over seeds on both. The
    demo's loop records each token's loss with its type (`ExpertLifecycle.record(types,
    losses)`), which gives the default need test (`starvation_need_metric`) its metric.
    """
    return ExpertCoordinatorConfig(max_experts_per_layer=options.max_experts)


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
