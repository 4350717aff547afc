"""Benchmark: the seed-host layer's alpha schedule and forward against hand-written peers.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_seed_layer.py
    [--seeds 10000] [--batch 256] [--width 512] [--chunks 64] [--repeat 50]
Targets (issue 13, DESIGN.md section 9), medians of `--repeat` runs, one intra-op thread:

- alpha of `--seeds` grafting seeds (five strategies mixed): one `AlphaSchedule.tick` < 0.5 ms;
  esperlite's way, one strategy object per seed called in a Python loop, is printed beside it,
  with a tick after a fold (its plan derived again) and one elementwise add, the per-op floor;
- forward with no seed active <= 1.05x the host `nn.Linear` alone;
- forward with every chunk grafting <= 1.1x a hand-written batched blend of the same tensors
  (`(1-a)*h + a*residual_mlp(h)`), and against a per-seed Python loop as esperlite's
  `_process_chunks_v2` runs it (the ratio is printed; no target).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from run_all import report_row  # a sibling script
from torch import nn

from lifecycle_es import BUILTIN_SPECS
from projections.seeds import FACTS, AlphaSchedule, GraftingConfig, SeedLayer, SeedMode, residual_mlp
from projections.state_tensors import StateTensors


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of `fn` over `repeat` runs, after two warm-up runs."""
    times = []
    for i in range(repeat + 2):
        t0 = time.perf_counter()
        fn()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def grafting_seeds(seeds: int) -> tuple[StateTensors, AlphaSchedule]:
    """State tensors and a schedule with `seeds` kasmina seeds in GRAFTING, strategies 0..4 in turn."""
    records = [
        {
            "seq": i + 1,
            "kind": "EntityRegistered",
            "step": 0,
            "entity": f"s{i}",
            "spec": "kasmina",
            "state": "GRAFTING",
            "attrs": {"grafting_strategy": i % 5},
        }
        for i in range(seeds)
    ]
    tensors, schedule = StateTensors(dict(BUILTIN_SPECS), capacity=seeds), AlphaSchedule()
    tensors.apply(records)
    schedule.apply(records)
    return tensors, schedule


def per_seed_alpha(seeds: int, repeat: int) -> float:
    """esperlite's way: one strategy object per seed, `compute_alpha` called seed by seed."""
    from tests.seeds.test_grafting_schedules import REFERENCE, GraftingStrategy  # the transcription

    config = GraftingConfig()
    objects = [REFERENCE[GraftingStrategy(i % 5)](config) for i in range(seeds)]
    facts = dict.fromkeys(FACTS, 0.0)
    alphas = [0.0] * seeds
    epoch = [0]

    def step() -> None:
        epoch[0] += 1
        for i, obj in enumerate(objects):
            alphas[i] = obj.compute(epoch[0], alphas[i], facts)

    return timed(step, max(3, repeat // 10))


def alpha_table(seeds: int, repeat: int) -> None:
    tensors, schedule = grafting_seeds(seeds)
    step = [0]

    def tick() -> None:
        step[0] += 1
        tensors.advance(step[0])
        schedule.tick(tensors, step[0])

    def replan() -> None:
        # What a fold between two ticks costs: the plan derived again (lent the previous one's
        # scratch and constants, as a fold does).
        assert schedule._plan is not None
        schedule._plan = ((-1, 0, 0), schedule._plan[1])
        tick()

    ours, peer = timed(tick, repeat), per_seed_alpha(seeds, repeat)
    folded = timed(replan, repeat)
    x = torch.rand(seeds)
    floor = timed(lambda: x + x, repeat * 10)
    verdict = "met" if ours < 5e-4 else "NOT met"
    print(f"{'alpha, ' + str(seeds) + ' grafting seeds':<44} {'ms':>9} {'ratio':>8}")
    name = "  AlphaSchedule.tick (vectorized)"
    print(f"{name:<44} {ours * 1e3:>9.3f} {'1.00x':>8}  target < 0.5 ms: {verdict}")
    print(f"{'  tick after a fold (plan derived again)':<44} {folded * 1e3:>9.3f} {folded / ours:>7.2f}x")
    print(f"{'  per-seed Python loop (esperlite)':<44} {peer * 1e3:>9.3f} {peer / ours:>7.1f}x")
    name = f"  one elementwise add of {seeds} floats"
    print(f"{name:<44} {floor * 1e3:>9.3f} {floor / ours:>7.2f}x")
    report_row(
        f"alpha of {seeds} grafting seeds: AlphaSchedule.tick / per-seed Python loop",
        f"{ours * 1e3:.3f} ms",
        f"{peer * 1e3:.3f} ms",
        ours / peer,
        "< 0.5 ms",
        ours < 5e-4,
    )


def grafting_layer(host: nn.Linear, chunks: int, gen: torch.Generator) -> SeedLayer:
    """A layer hosting residual_mlp with every chunk grafting at a random alpha."""
    layer = SeedLayer(host, chunks=chunks, blueprints=["residual_mlp"], generator=gen)
    layer.set_modes([SeedMode.GRAFT] * chunks, [0] * chunks)
    layer.alpha.copy_(torch.rand(chunks, generator=gen))
    return layer


def hand_blend(layer: SeedLayer, x: torch.Tensor) -> torch.Tensor:
    """The same blend written by hand, batched, with nothing but the arithmetic."""
    h = layer.host(x).view(-1, layer.chunks, layer.width)
    grown = residual_mlp().apply(layer.slot_parameters("residual_mlp"), h).detach()
    a = layer.alpha[None, :, None]
    return ((1 - a) * h + a * grown).view(x.shape[0], -1)


def loop_blend(layer: SeedLayer, x: torch.Tensor) -> torch.Tensor:
    """esperlite's `_process_chunks_v2`: a Python loop over seeds, one blueprint call and `.item()` each."""
    h, weights, apply = layer.host(x), layer.slot_parameters("residual_mlp"), residual_mlp().apply
    out = []
    for i in range(layer.chunks):
        chunk = h[:, i * layer.width : (i + 1) * layer.width]
        if int(layer.modes[i].item()) == SeedMode.GRAFT:
            alpha = float(layer.alpha[i].item())
            with torch.no_grad():
                grown = apply({k: v[i : i + 1] for k, v in weights.items()}, chunk[:, None, :])[:, 0]
            chunk = (1 - alpha) * chunk + alpha * grown
        out.append(chunk)
    return torch.cat(out, dim=1)


def forward_table(batch: int, width: int, chunks: int, repeat: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, width, generator=gen)
    host = nn.Linear(width, width)
    idle = SeedLayer(host, chunks=chunks, blueprints=["residual_mlp"], generator=gen)
    grafting = grafting_layer(host, chunks, gen)
    torch.testing.assert_close(grafting(x), hand_blend(grafting, x))
    torch.testing.assert_close(grafting(x), loop_blend(grafting, x))
    rows = [
        ("host nn.Linear alone", lambda: host(x), None, None),
        ("SeedLayer, no seed active", lambda: idle(x), "host", 1.05),
        ("hand-written batched blend", lambda: hand_blend(grafting, x), None, None),
        ("SeedLayer, every chunk grafting", lambda: grafting(x), "blend", 1.1),
        ("per-seed Python loop (esperlite)", lambda: loop_blend(grafting, x), "blend", None),
    ]
    print(f"\n{f'forward, batch {batch}, width {width}, {chunks} chunks':<44} {'ms':>9} {'ratio':>8}")
    base: dict[str, float] = {}
    for name, fn, against, target in rows:
        median, ratio = timed(fn, repeat), ""
        if against is None:
            base["host" if "host" in name else "blend"] = median
        else:
            ratio = f"{median / base[against]:.2f}x vs {against}"
        print(f"{'  ' + name:<44} {median * 1e3:>9.3f} {ratio:>16}")
        if against is not None and target is not None:
            report_row(
                f"forward, {name} / {rows[0 if against == 'host' else 2][0]}",
                f"{median * 1e3:.3f} ms",
                f"{base[against] * 1e3:.3f} ms",
                median / base[against],
                f"<= {target}",
                median / base[against] <= target,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load}, one intra-op thread\n")
    alpha_table(args.seeds, args.repeat)
    with torch.no_grad():
        forward_table(args.batch, args.width, args.chunks, args.repeat)


if __name__ == "__main__":
    main()
