"""The digest's arithmetic (`projections.digest` documents the function): splitmix64, the
weight tables and a tensor's bytes, shared by the host path and the device path."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import torch

from lifecycle_es.errors import UsageError

ROW = 1 << 15
"""C: words per row of the weight table; a row's weights are a fixed table times a row constant."""

_MASK = (1 << 64) - 1

_ROW_BASE = 1 << 32


def sm(x: int) -> int:
    """Return splitmix64's output for the state `x` (an unsigned 64-bit integer)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _signed(value: int) -> int:
    value &= _MASK
    return value - (1 << 64) if value >= 1 << 63 else value


@functools.cache
def _row_weight(j: int) -> int:
    return sm(_ROW_BASE + j) | 1


@functools.cache
def _host_table() -> npt.NDArray[np.int64]:
    """The row table odd(sm(r)), r < C, as a numpy array (built once)."""
    return np.array([_signed(sm(r) | 1) for r in range(ROW)], dtype=np.int64)


_ROW_WEIGHTS: list[npt.NDArray[np.int64]] = [np.empty(0, dtype=np.int64)]
"""The row weights odd(sm(2^32 + j)) for j below its length, grown by doubling as needed."""


def _host_row_weights(rows: int) -> npt.NDArray[np.int64]:
    """The first `rows` row weights as a numpy array."""
    if _ROW_WEIGHTS[0].size < rows:
        size = max(rows, 2 * _ROW_WEIGHTS[0].size, 64)
        _ROW_WEIGHTS[0] = np.array([_signed(_row_weight(j)) for j in range(size)], dtype=np.int64)
    return _ROW_WEIGHTS[0][:rows]


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes in row-major order, as a flat uint8 tensor on its device."""
    return _dense(tensor).reshape(-1).contiguous().view(torch.uint8)


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor detached, its values resolved; refused unless its layout has dense bytes."""
    if tensor.layout != torch.strided:
        raise UsageError(f"digest: cannot read the bytes of a {tensor.layout} tensor; pass dense tensors")
    if tensor.is_conj() or tensor.is_neg():  # a conjugate or negative view: its values' bytes
        return tensor.detach().resolve_conj().resolve_neg()
    return tensor.detach()
