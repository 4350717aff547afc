"""Benchmark: one guarded transition (one gate) producing its events and folding them,
against a `transitions` (pytransitions) Machine trigger with one condition, in the same run.

Run: python tests/benchmarks/bench_transition.py [--n 20000]
Target (DESIGN.md section 9): median ratio ours / transitions <= 0.6.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from transitions import Machine

sys.path.insert(0, str(Path(__file__).parent))
from run_all import report_row  # a sibling script

from lifecycle_es import (
    CODEC,
    Gate,
    GateCategory,
    GateInput,
    GateLibrary,
    GateResult,
    Lifecycle,
    Spec,
    StateCategory,
    StateDef,
    TransitionDef,
    fold_record,
)
from lifecycle_es.commands import GatePolicy, Stamp, request_transition


def _ready(inp: GateInput, params: Mapping[str, float]) -> GateResult:
    return GateResult(True, "ready", {})


SPEC = Spec(
    name="toggle",
    states=(
        StateDef(name="a", code=0, category=StateCategory.INITIAL),
        StateDef(name="b", code=1, category=StateCategory.ACTIVE),
    ),
    transitions=(
        TransitionDef(source="a", target="b", trigger="go", gates=("ready",)),
        TransitionDef(source="b", target="a", trigger="back", gates=("ready",)),
    ),
    initial=("a",),
)
GATES = GateLibrary([Gate("ready", GateCategory.STRUCTURAL, _ready)])


def _medians_ns(
    steps: Mapping[str, Callable[[], object]],
    n: int,
    batch: int = 100,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, float]:
    """Median per call, in nanoseconds of `clock`, over batches of `batch` calls; the contenders
    take turns batch by batch, so a slow spell of a shared machine hits them alike."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n // batch):
        for name, fn in steps.items():
            t0 = clock()
            for _ in range(batch):
                fn()
            samples[name].append((clock() - t0) / batch)
    return {name: statistics.median(values) for name, values in samples.items()}


def transitions_step() -> Callable[[], None]:
    """One trigger of a `transitions` Machine with one condition, alternating a -> b -> a."""

    class Model:
        def ready(self) -> bool:
            return True

    model = Model()
    machine = Machine(model=model, states=["a", "b"], initial="a")
    machine.add_transition("go", "a", "b", conditions="ready")
    machine.add_transition("back", "b", "a", conditions="ready")
    flip = iter(lambda: None, 1)
    state = {"up": False}

    def step() -> None:
        if state["up"]:
            model.back()  # type: ignore[attr-defined]
        else:
            model.go()  # type: ignore[attr-defined]
        state["up"] = not state["up"]

    del flip
    return step


def lifecycle_step() -> Callable[[], None]:
    """One guarded `Lifecycle.transition` on a memory log, alternating a -> b -> a."""
    lc = Lifecycle(run_id="bench", specs=[SPEC], gates=GATES)
    lc.register("e", "toggle")
    targets = ("b", "a")
    counter = {"i": 0}

    def step() -> None:
        lc.transition("e", targets[counter["i"] & 1])
        counter["i"] += 1

    return step


def core_step() -> Callable[[], None]:
    """The domain alone: the command handler and the fold, no log."""
    lc = Lifecycle(run_id="bench", specs=[SPEC], gates=GATES)
    lc.register("e", "toggle")
    registry, policy = lc.registry, GatePolicy()
    stamp = Stamp(run_id="bench", step=0)
    targets = ("b", "a")
    counter = {"i": 0}

    def step() -> None:
        outcome = request_transition(registry, GATES, policy, stamp, entity="e", to=targets[counter["i"] & 1])
        for event in outcome.events:
            record = CODEC.to_record(event)
            record["seq"] = registry.seq + 1
            fold_record(registry, record)
        counter["i"] += 1

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    steps = {"peer": transitions_step(), "ours": lifecycle_step(), "core": core_step()}
    _medians_ns(steps, 2000)  # warm up
    medians = _medians_ns(steps, args.n)
    peer, ours, core = medians["peer"], medians["ours"], medians["core"]
    print(f"{'what':<62} {'median us':>10} {'ratio':>7}")
    print(f"{'transitions Machine trigger, one condition':<62} {peer / 1e3:>10.2f} {1:>7.2f}")
    print(
        f"{'Lifecycle.transition, one gate, memory log (2 events + fold)':<62} "
        f"{ours / 1e3:>10.2f} {ours / peer:>7.2f}"
    )
    print(f"{'command handler + fold, no log':<62} {core / 1e3:>10.2f} {core / peer:>7.2f}")
    # On a shared machine the wall clock counts time the process waited for a core; CPU time
    # of this thread does not, so it shows the same ratio with less noise (for information).
    cpu = _medians_ns(steps, args.n, clock=time.thread_time_ns)
    print(
        f"{'the same in CPU time: ours / transitions, handler + fold / transitions':<62} "
        f"{cpu['ours'] / cpu['peer']:>10.2f} {cpu['core'] / cpu['peer']:>7.2f}"
    )
    report_row(
        "Lifecycle.transition, one gate, memory log / transitions trigger (median)",
        f"{ours / 1e3:.2f} us",
        f"{peer / 1e3:.2f} us",
        ours / peer,
        "<= 0.6",
        ours / peer <= 0.6,
    )


if __name__ == "__main__":
    main()
