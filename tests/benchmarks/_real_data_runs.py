"""One training run of the real-data benchmark: the user's MoE, with the expert lifecycle or static.

The lifecycle is wired in through the public API only, as a user's own loop would:
`projections.training.ExpertLifecycle` around the model and optimizer on a JSONL log, with
`start`, `record(labels, losses)` (a token's type is its class, its loss the need signal) and
`after_step(step, revival=...)` (the batch's MoE inputs, where parked experts are scored for
revival) each step, and `finish` at the end. A static run trains the same model with its first
`experts` slots routing, on the same batches, with the same loss (cross-entropy plus the
balancing loss).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _real_data_model import DigitMoE  # a sibling module
from _real_data_task import CLASSES, DROPPED, PHASES, PIXELS, Digits

from lifecycle_es.controllers import ExpertCoordinatorConfig
from projections.training import ExpertLifecycle

__all__ = ["EARLY", "RunOptions", "RunResult", "train"]

EARLY = (10, 30)
"""Steps into the return phase at which the returning classes' accuracy is measured."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every run of one benchmark shares."""

    steps_per_phase: int
    batch_size: int = 64
    d_model: int = 32
    d_hidden: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    balance_coef: float = 0.01
    """Weight of the Switch load-balancing loss (Switch Transformer's value)."""
    validation: bool = False
    """Measure on a validation split carved from the training images, not on the test split."""
    capacity: int = 16
    """Expert slots of every model, lifecycle or static: a static run of n experts routes to the
    first n slots only, so it starts from the very weights the lifecycle run of its seed starts
    from (its first slots, embedding and head), and the comparison is paired by seed."""


@dataclass(slots=True)
class RunResult:
    """What one run measured: accuracy per phase end, experts over time, decisions, log size."""

    phase_acc: list[float] = field(default_factory=list)
    """Test accuracy on the classes each phase trains on, at the phase's last step."""
    all_acc: list[float] = field(default_factory=list)
    """Test accuracy on all ten classes at each phase's end."""
    dropped_acc: list[float] = field(default_factory=list)
    """Test accuracy on the dropped classes (0-3) at each phase's end."""
    dropped_among_acc: list[float] = field(default_factory=list)
    """The same, with only the dropped classes' own logits competing: how well the features
    still tell them apart, whatever the head's calibration across all ten classes."""
    early_acc: list[float] = field(default_factory=list)
    """Test accuracy on the dropped classes (0-3) `EARLY` steps into the phase they return in:
    what parking is for (a parked expert comes back knowing them; the others relearn them)."""
    experts: list[int] = field(default_factory=list)
    """Routing experts at each evaluation checkpoint (a static run: its one count)."""
    phase_experts: list[float] = field(default_factory=list)
    """Routing experts at each phase's end."""
    decisions: Counter[str] = field(default_factory=Counter)
    """Decisions applied before the run ended, by action."""
    parked: int = 0
    """PRUNE decisions applied with reason `basin_gone` (counted among the PRUNEs too)."""
    log_bytes: int = 0
    checkpoints: int = 0


def train(
    seed: int, options: RunOptions, *, experts: int, config: ExpertCoordinatorConfig | None
) -> RunResult:
    """Train one seed: with the lifecycle from `experts` experts under `config`, or static (None)."""
    torch.manual_seed(seed)
    data = Digits(seed, batch_size=options.batch_size, validation=options.validation)
    model = DigitMoE(
        d_in=PIXELS,
        classes=CLASSES,
        d_model=options.d_model,
        d_hidden=options.d_hidden,
        capacity=options.capacity,
        seed=seed,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    if config is None:
        model.moe.set_active(torch.arange(options.capacity) < experts)
        result = RunResult(experts=[experts])
        _loop(model, optimizer, data, options, result, None)
        return result
    with tempfile.TemporaryDirectory() as tmp:
        run_id = f"digits-{seed}"
        lifecycle = ExpertLifecycle(
            model,
            optimizer,
            f"jsonl://{tmp}?fsync=never",
            run_id=run_id,
            num_types=CLASSES,
            config=config,
            initial_experts=experts,
            strategy="masked",
        )
        with lifecycle:
            lifecycle.start(seed=seed, config={"benchmark": "digits"})
            result = RunResult()
            _loop(model, optimizer, data, options, result, lifecycle)
            lifecycle.finish(options.steps_per_phase * len(PHASES))
        _read_log(Path(tmp) / f"{run_id}.jsonl", options.steps_per_phase * len(PHASES), result)
    return result


def _loop(
    model: DigitMoE,
    optimizer: torch.optim.Optimizer,
    data: Digits,
    options: RunOptions,
    result: RunResult,
    lifecycle: ExpertLifecycle | None,
) -> None:
    step = 0
    for phase in PHASES:
        for into in range(1, options.steps_per_phase + 1):
            step += 1
            x, y = data.batch(phase)
            losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            loss = losses.mean() + options.balance_coef * model.moe.balance_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if lifecycle is not None:
                lifecycle.record(y, losses)  # each image's loss: the need signal
                # the batch's MoE inputs: a parked expert whose side of the router they fall on is revived
                if lifecycle.after_step(step, revival=lambda: {0: model.moe.last_input}) is not None:
                    result.experts.append(lifecycle.routing_counts()[0])
            if phase == PHASES[-1] and into in EARLY:
                result.early_acc.append(_accuracy(model, data, DROPPED))
        result.phase_acc.append(_accuracy(model, data, phase.classes))
        result.all_acc.append(_accuracy(model, data, tuple(range(CLASSES))))
        result.dropped_acc.append(_accuracy(model, data, DROPPED))
        result.dropped_among_acc.append(_accuracy(model, data, DROPPED, among=True))
        result.phase_experts.append(result.experts[-1])


@torch.no_grad()
def _accuracy(model: DigitMoE, data: Digits, classes: tuple[int, ...], *, among: bool = False) -> float:
    """Accuracy on the test images of `classes`; with `among`, only those classes' logits compete."""
    x, y = data.test(classes)
    logits = model(x)
    if among:
        own = torch.tensor(classes)
        return float((own[logits[:, own].argmax(dim=-1)] == y).float().mean())
    return float((logits.argmax(dim=-1) == y).float().mean())


def _read_log(path: Path, steps: int, result: RunResult) -> None:
    """Count the log's bytes, its checkpoints, and the decisions applied by step `steps`."""
    result.log_bytes = path.stat().st_size
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("kind") == "StepSealed" and event.get("step", 0) > 0:
                result.checkpoints += 1
            if event.get("kind") == "DecisionMade" and event.get("apply_at_step", 0) <= steps:
                result.decisions[event["action"]] += 1
                result.parked += event.get("reason") == "basin_gone"
