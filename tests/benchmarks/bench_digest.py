"""Benchmark: the divergence digest against one torch.sum pass over the same tensors, and the old
host-side hashlib digest, at 1M, 10M and 100M parameters with Adam state.

Run from the repository root: PYTHONPATH=. python tests/benchmarks/bench_digest.py
    [--sizes 1M,10M,100M] [--device cpu|cuda] [--repeat 5] [--threads 1] [--no-old]
Target (DESIGN.md section 9): the digest <= 2 x one `torch.sum` pass over the same tensors,
computed on the tensors' device, no host copy of the model.

The model is a stack of square linear layers (weight and bias) of about 1M parameters each,
after one AdamW step, so each parameter has `step`, `exp_avg` and `exp_avg_sq`. Timed, each
the median of `--repeat` runs (the device synchronised at the end of each); ours and sum run in
pairs, back to back (at least `--repeat`, as many as fill half a second), and ours/sum is the
median of the pairs' ratios:

- sum: `tensor.sum()` of every parameter and state tensor (one read of every byte);
- ours: `projections.digest.digest` over the same items, as `ModelSurgery.digest` calls it;
- old: the previous digest (before this module): each tensor copied to the host and its bytes
  fed to blake2b. It copies the whole model to the host: slow at 100M; `--no-old` skips it.

The digest of CPU tensors runs on one thread (numpy.einsum), the sum on `--threads` torch threads:
the target is set at one thread. Each size also reports its row to `run_all.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from run_all import report_row  # a sibling script
from torch import nn

from projections.digest import digest, training_items

TARGET = 2.0
PAIRS_MAX = 200
WIDTH = 1000
"""Layer width: a layer is WIDTH x WIDTH weights plus WIDTH biases (about 1M parameters)."""


def model_with_adam(params: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """About `params` parameters in square linear layers, after one AdamW step (state filled)."""
    torch.manual_seed(0)
    width = min(WIDTH, max(8, int(params**0.5)))
    layers = max(1, round(params / (width * width + width)))
    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers))).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return model, optimizer


def items(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[tuple[str, Any]]:
    return list(training_items(sorted(model.named_parameters()), optimizer))


def sum_pass(listed: Iterable[tuple[str, Any]]) -> None:
    for _, value in listed:
        if isinstance(value, torch.Tensor):
            value.sum()


def old_digest(listed: Iterable[tuple[str, Any]]) -> str:
    """The digest before projections.digest: every tensor copied to the host and hashed."""
    h = hashlib.blake2b(digest_size=8)
    for name, value in listed:
        h.update(name.encode() + b"\x00")
        if isinstance(value, torch.Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{flat.dtype}{tuple(value.shape)}".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Median seconds of `fn` over `repeat` runs, after one warm-up run."""
    once(fn, device)
    return statistics.median(once(fn, device) for _ in range(repeat))


def once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one run of `fn`, the device synchronised at the end."""
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def paired(
    ours: Callable[[], object], base: Callable[[], object], device: torch.device, repeat: int
) -> tuple[float, float, float]:
    """Median seconds of `ours` and of `base`, and the median of their per-pair ratios, over
    `repeat` pairs run back to back (after one warm-up each), or as many as fill about half a
    second: a change in the machine's load hits both sides of a pair alike, which two separate
    series of runs would not, and short runs get enough pairs to outvote a preempted one."""
    warm = once(ours, device) + once(base, device)
    count = max(repeat, min(PAIRS_MAX, int(0.5 / warm)))
    pairs = [(once(ours, device), once(base, device)) for _ in range(count)]
    ratio = statistics.median(a / b for a, b in pairs)
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs), ratio


def size(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M,100M", help="parameter counts, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-old", action="store_true", help="skip the old hashlib digest")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"divergence digest: torch {torch.__version__}, {device}, {args.threads} thread(s), "
        f"median of {args.repeat}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'parameters':>12} {'tensors':>8} {'bytes':>9} {'sum ms':>9} {'ours ms':>9} {'ours/sum':>9} "
        f"{'GB/s':>6} {'old ms':>9} {'old/ours':>9}  target ours/sum <= {TARGET:g}"
    )
    for text in args.sizes.split(","):
        row(size(text), device, args.repeat, old=not args.no_old)


def row(params: int, device: torch.device, repeat: int, *, old: bool) -> None:
    """Build a model of `params` parameters with Adam state; time and print one table row."""
    model, optimizer = model_with_adam(params, device)
    listed = items(model, optimizer)
    count = sum(p.numel() for p in model.parameters())
    total = sum(v.numel() * v.element_size() for _, v in listed if isinstance(v, torch.Tensor))
    t_ours, t_sum, ratio = paired(lambda: digest(listed), lambda: sum_pass(listed), device, repeat)
    shown = "skipped"
    if old:
        t_old = timed(lambda: old_digest(listed), device, max(1, repeat // 2))
        shown = f"{t_old * 1e3:>9.1f} {t_old / t_ours:>9.2f}"
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(
        f"{count:>12,} {len(listed):>8} {total / 1e9:>8.2f}G {t_sum * 1e3:>9.1f} {t_ours * 1e3:>9.1f} "
        f"{ratio:>9.2f} {total / t_ours / 1e9:>6.2f} {shown:>19}  {verdict}",
        flush=True,
    )
    report_row(
        f"digest / one torch.sum pass, {count / 1e6:.0f}M parameters + Adam ({device.type})",
        f"{t_ours * 1e3:.1f} ms",
        f"{t_sum * 1e3:.1f} ms",
        ratio,
        f"<= {TARGET:g}",
        ratio <= TARGET,
    )


if __name__ == "__main__":
    main()
