"""The divergence digest: a fixed 64-bit function of named tensors, computed where they live.

`LifecycleSync` compares it across ranks after every batch of decisions (DESIGN.md section 7),
so it must see every byte of the parameters and optimizer state and cost about one pass over
them: the words are summed on the tensors' device (CPU or CUDA) and only the final 8 bytes per
device reach the host. No host copy of the model is made.

The function. All arithmetic is modulo 2^64; `sm(x)` is splitmix64's output for the state x
(z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31) and `odd(x)` is x | 1. For items
(name_t, value_t), t = 0 .. T-1, in the order given, and an optional event chain E:

    D = sum_t odd(sm(2^48 + t)) * (H_t + S_t)  [+ odd(sm(2^48 + T)) * E]

- H_t: the first 8 bytes, read little-endian, of blake2b(digest_size=8) over
  "{name}\\0{dtype}\\0{shape}" for a tensor (e.g. "w\\0torch.float32\\0(4, 3)"), or over
  "{name}\\0{type name}\\0{repr}" for a plain value (whose S_t is 0).
- S_t = sum_i w_i * c_i, where c_i is the i-th 64-bit word of the tensor's bytes in row-major
  order, read little-endian as a signed integer (the last word padded with zero bytes), and
  w_i = odd(sm(i mod C)) * odd(sm(2^32 + floor(i / C))) with C = 2^15.
- E: the first 8 bytes, little-endian, of blake2b(digest_size=8) over "events\\0{chain}", for
  `chain` the running hash of applied event ids (`extend_chain`).

D is written as 16 lowercase hex digits. Every weight is odd, so flipping bit k of any word
changes D by +-2^k times an odd number, which is never 0 modulo 2^64: any single bit flip in a
tensor changes the digest, for certain. Names, dtypes, shapes and the order of the items enter
through H_t and the item weights; the event ids enter through a 128-bit blake2b chain, so a
change there is missed with probability about 2^-64. torch's int64 multiply and sum wrap
modulo 2^64 on the CPU and on CUDA alike (two's complement, as the tests check against exact
integers), so the same bytes give the same digest on either device. Bytes are read as the
machine stores them: ranks compared must share a byte order (every CPU and GPU torch runs on
today is little-endian).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lifecycle_es.errors import UsageError

__all__ = ["digest", "extend_chain", "training_items"]

ROW = 1 << 15
"""C: words per row of the weight table; a row's weights are a fixed table times a row constant."""

_MASK = (1 << 64) - 1
_ROW_BASE = 1 << 32
_ITEM_BASE = 1 << 48
_BLOCK_ROWS = 1 << 9
"""Rows per multiply on a device without an int64 matrix-vector product (CUDA): bounds the
temporary to 2^24 words (128 MiB)."""


def sm(x: int) -> int:
    """Return splitmix64's output for the state `x` (an unsigned 64-bit integer)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _signed(value: int) -> int:
    value &= _MASK
    return value - (1 << 64) if value >= 1 << 63 else value


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def extend_chain(chain: str, event_id: str) -> str:
    """Return the running hash `chain` of applied event ids extended by one (16 bytes, hex)."""
    return hashlib.blake2b(bytes.fromhex(chain) + event_id.encode(), digest_size=16).hexdigest()


def training_items(
    named: Iterable[tuple[str, torch.Tensor]], optimizer: torch.optim.Optimizer
) -> Iterator[tuple[str, Any]]:
    """Yield each parameter and then its optimizer state, by key in sorted order ("name/key")."""
    for name, param in named:
        yield name, param
        state = optimizer.state.get(param, {}) if isinstance(param, nn.Parameter) else {}
        for key in sorted(state):
            yield f"{name}/{key}", state[key]


def digest(items: Iterable[tuple[str, Any]], *, events: str | None = None) -> str:
    """Return the 16-hex-digit digest of (name, tensor or plain value) items and an event chain.

    The function is the module's docstring's; `events=None` leaves the event term out.
    """
    host = 0
    sums: dict[torch.device, tuple[list[torch.Tensor], list[int]]] = {}
    count = 0
    for t, (name, value) in enumerate(items):
        weight = sm(_ITEM_BASE + t) | 1
        host += weight * _blake64(_header(name, value))
        if isinstance(value, torch.Tensor) and value.numel():
            parts, weights = sums.setdefault(value.device, ([], []))
            parts.append(_word_sum(value))
            weights.append(_signed(weight))
        count = t + 1
    if events is not None:
        host += (sm(_ITEM_BASE + count) | 1) * _blake64(f"events\0{events}")
    for device, (parts, weights) in sums.items():
        table = torch.tensor(weights, dtype=torch.int64, device=device)
        host += int(_dot(torch.stack(parts), table))  # the device's only copy to the host: 8 bytes
    return f"{host & _MASK:016x}"


def _header(name: str, value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{name}\0{value.dtype}\0{tuple(value.shape)}"
    return f"{name}\0{type(value).__name__}\0{value!r}"


def _word_sum(tensor: torch.Tensor) -> torch.Tensor:
    """S_t: the weighted sum of a tensor's 64-bit words, as a 0-dim int64 on its device."""
    words = _words(tensor)
    rows = words.numel() // ROW
    device = words.device
    row_table, row_weights = _tables(device, rows + 1)
    total = torch.zeros((), dtype=torch.int64, device=device)
    if rows:
        full = words[: rows * ROW].view(rows, ROW)
        total += _dot(_row_sums(full, row_table), row_weights[:rows])
    rest = words[rows * ROW :]
    if rest.numel():
        total += _dot(rest, row_table[: rest.numel()]) * row_weights[rows]
    return total


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as int64 words (the last one zero-padded), on its device."""
    if tensor.layout != torch.strided:
        raise UsageError(f"digest: cannot read the bytes of a {tensor.layout} tensor; pass dense tensors")
    data = tensor.detach().reshape(-1).contiguous().view(torch.uint8)
    whole = data.numel() // 8 * 8
    head = data[:whole]
    if data.storage_offset() % 8:  # a view into a larger tensor, not 8-byte aligned
        head = head.clone()
    words = head.view(torch.int64)
    if whole == data.numel():
        return words
    tail = torch.zeros(8, dtype=torch.uint8, device=data.device)
    tail[: data.numel() - whole] = data[whole:]
    return torch.cat([words, tail.view(torch.int64)])


def _row_sums(full: torch.Tensor, row_table: torch.Tensor) -> torch.Tensor:
    """Each row's sum of words times the row table."""
    if full.device.type == "cpu":
        return torch.mv(full, row_table)  # no temporary; int64 mv wraps like the rest
    # No int64 matrix-vector product on CUDA: multiply and sum in blocks of rows.
    return torch.cat(
        [(full[i : i + _BLOCK_ROWS] * row_table).sum(dim=1) for i in range(0, full.shape[0], _BLOCK_ROWS)]
    )


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.device.type == "cpu":
        return torch.dot(a, b)
    return (a * b).sum()  # no int64 dot on CUDA


_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
"""Per device: the row table odd(sm(r)), r < C, and the row constants odd(sm(2^32 + j)) so far."""


def _tables(device: torch.device, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the row table and at least `rows` row constants on `device` (built once, grown)."""
    cached = _TABLES.get(device)
    if cached is not None and cached[1].numel() >= rows:
        return cached
    row_table = cached[0] if cached is not None else _odd_sm(range(ROW), device)
    have = 0 if cached is None else cached[1].numel()
    size = max(rows, 2 * have, 64)
    row_weights = _odd_sm(range(_ROW_BASE, _ROW_BASE + size), device)
    _TABLES[device] = (row_table, row_weights)
    return row_table, row_weights


def _odd_sm(states: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([_signed(sm(x) | 1) for x in states], dtype=torch.int64, device=device)
