"""Seeded noise for model surgery: the same bytes on every rank, whatever the device.

reference/ddp-structural-changes.md section 3: CPU (mt19937) and CUDA (Philox) streams differ
for one seed, and CUDA output also depends on the GPU's SM count, so every draw is made on a
CPU `torch.Generator` in fp32 with the exact shape, one call per tensor, then moved to the
parameter's device and dtype. Each draw gets its own generator, seeded from (event seed,
parameter name, target entity) with a 64-bit hash, so the order in which parameters or
children are visited cannot change any value, and the global RNG is never touched.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["draw_normal", "stream_seed"]


def stream_seed(seed: int, name: str, target: str) -> int:
    """Return the 63-bit generator seed of one draw: a hash of (event seed, parameter, entity)."""
    key = f"{seed}\x00{name}\x00{target}".encode()
    # 63 bits: manual_seed accepts it on every torch version without a sign question.
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def draw_normal(like: torch.Tensor, *, seed: int, name: str, target: str) -> torch.Tensor:
    """Return standard normal noise shaped like `like`, drawn on the CPU in fp32, on its device."""
    generator = torch.Generator(device="cpu").manual_seed(stream_seed(seed, name, target))
    noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)
