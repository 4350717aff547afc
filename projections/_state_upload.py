"""The state tensors' upload: host values to the projection's device in one transfer per dtype.

A batch's indices and values are built on the host (`_writes`); each dtype goes up as one
buffer, without waiting on the device, and is split there into one view per sequence.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Sequence

import torch

__all__ = ["pack"]


def pack(
    parts: Sequence[Collection[int]], dtype: torch.dtype, device: torch.device
) -> Sequence[torch.Tensor]:
    """Upload int64 or int32 sequences in one transfer; return one device view per sequence."""
    data = array("q" if dtype == torch.int64 else "i")
    for part in parts:
        data.extend(part)
    return _upload(data, dtype, device).split_with_sizes([len(p) for p in parts])


def _upload(data: array[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Move host values to the device without waiting on it (pinned memory on CUDA)."""
    if not data:
        return torch.empty(0, dtype=dtype, device=device)
    host = torch.frombuffer(data, dtype=dtype)
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
