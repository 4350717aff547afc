"""A scripted training run shared by the replay tests (importable by the writer subprocesses).

Kasmina seeds, a growth module and MoE experts walk their specs through the real default
gates, one refused transition included; every step ends with `StepSealed`. After each step
the live registry is recorded with the seq, step and a wall time that separate it from the
next step, so a replay to that point can be compared with what the writer really held.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bus
from lifecycle_es import InvalidTransitionError, Lifecycle, Registry

REPO = Path(__file__).resolve().parents[2]
"""The repository root: the working directory and import path of every subprocess."""
HERE = Path(__file__).resolve().parent

GUARD_S = 30.0
"""How long a test waits for another thread or process before failing; never asserted."""

_CLOCK_GAP_S = 0.002
"""Wall time left on each side of a recorded moment, so no record shares its timestamp."""

Op = Callable[[Lifecycle], object]


@dataclass(frozen=True)
class Point:
    """The live registry as it stood after a step was sealed, and where that point lies."""

    step: int
    seq: int
    time: float
    """A wall time after every record of the step and before any record of the next."""
    registry: Registry


def register(entity: str, spec: str, **where: Any) -> Op:
    return lambda lc: lc.register(entity, spec, **where)


def move(entity: str, to: str, **metrics: float) -> Op:
    return lambda lc: lc.transition(entity, to, metrics=metrics)


def refuse(entity: str, to: str, **metrics: float) -> Op:
    """A transition the gates must refuse (it is still recorded on the log)."""

    def op(lc: Lifecycle) -> None:
        try:
            lc.transition(entity, to, metrics=metrics)
        except InvalidTransitionError:
            return
        raise AssertionError(f"the gates let {entity} move to {to}")

    return op


def observe(metrics: dict[str, float], **where: Any) -> Op:
    return lambda lc: lc.observe(metrics, **where)


SCRIPT: tuple[tuple[int, tuple[Op, ...]], ...] = (
    (
        0,
        (
            register("seed-0", "kasmina", layer=0, slot=0, attrs={"blueprint": 3}),
            register("seed-1", "kasmina", layer=0, slot=1),
            register("seed-2", "kasmina", layer=1, slot=0),
            register("module-0", "module", layer=1, slot=1),
            register("expert-0", "expert", layer=2, slot=0, state="active"),
            register("expert-1", "expert", layer=2, slot=1, state="active"),
            register("expert-2", "expert", layer=2, slot=2, parent="expert-0"),
            move("seed-0", "GERMINATED"),
            move("seed-0", "TRAINING"),
        ),
    ),
    (
        25,
        (
            move("seed-1", "GERMINATED"),
            move("module-0", "INSTANTIATED", available_slots=1),
            move("expert-0", "dormant"),
            observe({"loss": 0.9, "accuracy": 0.4}, entity="seed-0"),
        ),
    ),
    (
        50,
        (
            refuse("seed-0", "GRAFTING", reconstruction_loss=0.2),  # too early and too poor
            move("seed-1", "TRAINING"),
            move("module-0", "TRAINING"),
            move("expert-2", "cooling"),
            observe({"routed_tokens": 1200.0}, layer=2),
        ),
    ),
    (
        75,
        (
            move("seed-2", "GERMINATED"),
            move("seed-2", "CANCELLED"),
            move("expert-0", "active"),
        ),
    ),
    (
        100,
        (
            move("seed-0", "GRAFTING", reconstruction_loss=0.004),
            move(
                "module-0",
                "BLENDING",
                epochs_trained=10,
                loss_at_instantiation=1.0,
                current_loss=0.5,
                module_grad_norm=1.0,
            ),
            move("expert-2", "active"),
            observe({"loss": 0.5, "accuracy": 0.7, "stability": 0.9}, entity="seed-0"),
        ),
    ),
    (
        150,
        (
            move("seed-0", "STABILIZATION"),
            move("seed-1", "CULLED"),
            move("module-0", "HOLDING", host_accuracy_at_blend=0.8, current_accuracy=0.82),
            move("expert-1", "pending_prune"),
        ),
    ),
    (
        175,
        (
            move("seed-0", "EVALUATING"),
            move("expert-1", "archived"),
        ),
    ),
    (
        225,
        (
            move("seed-0", "FINE_TUNING", performance_delta=0.05, stability_score=0.9),
            move("module-0", "PRUNED"),
            register("seed-3", "kasmina", layer=1, slot=0, parent="seed-2"),
        ),
    ),
    (
        275,
        (
            move("seed-0", "FOSSILIZED", total_improvement=0.05, final_stability=0.97),
            move("module-0", "DORMANT"),
            move("seed-3", "GERMINATED"),
        ),
    ),
)
"""(step, commands) of the run, in step order; each step is sealed after its commands."""


def play(lc: Lifecycle, *, after_step: Callable[[Point], None] | None = None) -> list[Point]:
    """Start the run, play the whole script, and return the point recorded after each step."""
    lc.start(config={"script": "replay-tests"}, seed=7)
    points = []
    for step, ops in SCRIPT:
        lc.advance(step)
        for op in ops:
            op(lc)
        lc.seal()
        points.append(_record(lc))
        if after_step is not None:
            after_step(points[-1])
    return points


def _record(lc: Lifecycle) -> Point:
    time.sleep(_CLOCK_GAP_S)
    moment = time.time()
    time.sleep(_CLOCK_GAP_S)
    return Point(step=lc.registry.step, seq=lc.registry.seq, time=moment, registry=lc.registry.copy())


def append_late(url: str, run_id: str, count: int) -> None:
    """Run in another process: register `count` late experts on an existing run, then seal.

    Appends 2 * count + 1 records, one batch per command, as a live writer would.
    """
    with bus.open(url, run_id) as log:
        lc = Lifecycle(log)  # folds what the log holds, then writes after it
        lc.advance(lc.registry.step + 10)
        for n in range(count):
            lc.register(f"late-{n}", "expert", layer=3, slot=n)
            lc.observe({"routed_tokens": float(n)}, entity=f"late-{n}")
        lc.seal()


def late_records(count: int) -> int:
    """How many records `append_late(..., count)` appends."""
    return 2 * count + 1


def three_seeds(lc: Lifecycle) -> None:
    """Start `lc`'s run and walk three Kasmina seeds to TRAINING with metrics, each also asking
    for GRAFTING at every step (refused by a gate until it passes): batches of several records,
    refusals among them, for the typed-decoding tests."""
    lc.start(seed=0)
    for i in range(3):
        name, at = f"seed-{i}", 10 * i
        lc.register(name, "kasmina", layer=i, step=at)
        lc.transition(name, "GERMINATED", step=at + 1)
        lc.transition(name, "TRAINING", step=at + 2)
        for step in range(at + 3, at + 6):
            lc.observe({"loss": 1.0 / step, "accuracy": 0.5}, entity=name, step=step)
            with contextlib.suppress(InvalidTransitionError):  # refused: a gate blocks it
                lc.transition(name, "GRAFTING", step=step, metrics={"reconstruction_loss": 0.5})
