"""The digest of tensors on a device other than the CPU (CUDA), computed there (see
`projections.digest`): the cost is kernel launches, not bytes, so small tensors are packed into
one buffer by one batched copy and its rows weighted and summed at once, and a small model's
packing is kept between calls."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from projections._digest_words import ROW, _bytes, _host_row_weights, _host_table, _signed

_BLOCK_ROWS = 1 << 9
"""Rows per multiply on a device other than the CPU (CUDA): bounds the packing buffer and the
temporary product to 2^24 words (128 MiB) each. A tensor of more than a quarter of that is summed
in place, in blocks of rows; smaller ones are packed."""


def _row_sums(
    words: torch.Tensor, tail: torch.Tensor | None, out: list[torch.Tensor], *, block_rows: int = _BLOCK_ROWS
) -> int:
    """Append each row's sum of words times the row table to `out`; return the row count.

    Row j holds words j*C .. j*C + C - 1 of `words` then `tail` (the last row may be shorter).
    Torch has no int64 matrix-vector product on CUDA: blocks of rows are multiplied and summed.
    """
    table = _table(words.device)
    full = words.numel() // ROW
    grid = words[: full * ROW].view(full, ROW)
    out.extend((grid[i : i + block_rows] * table).sum(dim=1) for i in range(0, full, block_rows))
    rest = words[full * ROW :]
    if tail is not None:
        rest = torch.cat([rest, tail])  # under C words: a small copy
    if not rest.numel():
        return full
    out.append((rest * table[: rest.numel()]).sum().reshape(1))
    return full + 1


def _words(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensor's whole 64-bit words, and its last bytes zero-padded to one (or None), on its device."""
    return _split_words(_bytes(tensor))


def _split_words(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_words` of a tensor's flat bytes `data`."""
    whole = data.numel() // 8 * 8
    head = data[:whole]
    if data.storage_offset() % 8:  # a view into a larger tensor, not 8-byte aligned
        head = head.clone()
    words = head.view(torch.int64)
    if whole == data.numel():
        return words, None
    tail = nn.functional.pad(data[whole:], (0, 8 - (data.numel() - whole)))
    return words, tail.view(torch.int64)


def _device_sum(tensors: list[tuple[int, torch.Tensor]], *, block_rows: int = _BLOCK_ROWS) -> int:
    """Return sum of weight * S_t over (weight, tensor) pairs on one device, computed there.

    Large tensors are summed in place (`_row_sums`); the others are packed, each from the start of
    a row, into a zeroed buffer of at most `block_rows` rows, whose zero padding adds nothing.
    The row sums, 8 bytes per 256 KiB of tensor, are copied to the host, weighted there by their
    item's weight times their row weight, and summed: one wait on the device. A small model's
    packing is kept between calls (`_Kept`).
    """
    kept = _kept(tensors, block_rows)
    if kept is not None:
        torch._foreach_copy_(kept.targets, kept.sources)
        return _weighted(_buffer_row_sums(kept.buffer), kept.weights)
    row_bytes = 8 * ROW
    sums: list[torch.Tensor] = []
    weights: list[int] = []  # per entry of `sums`, in order: the item weight, and its row count
    counts: list[int] = []
    pending: list[tuple[torch.Tensor, int]] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending_rows
        if pending:
            sums.append(_packed_row_sums(pending, pending_rows))
            pending.clear()
            pending_rows = 0

    for weight, tensor in tensors:
        data = _bytes(tensor)
        rows = -(-data.numel() // row_bytes)
        if 4 * rows > block_rows:
            flush()  # keeps `sums` in the order of `weights`
            _row_sums(*_split_words(data), sums, block_rows=block_rows)
        else:
            if pending_rows + rows > block_rows:
                flush()
            pending.append((data, rows))
            pending_rows += rows
        weights.append(_signed(weight))
        counts.append(rows)
    flush()
    return _weighted(sums[0] if len(sums) == 1 else torch.cat(sums), _entry_weights(weights, counts))


def _weighted(row_sums: torch.Tensor, weights: npt.NDArray[np.int64]) -> int:
    """The row sums, copied to the host (8 bytes per row), dotted with their weights, wrapped."""
    with np.errstate(over="ignore"):
        return int(np.dot(row_sums.cpu().numpy(), weights))


def _packed_row_sums(pending: list[tuple[torch.Tensor, int]], rows: int) -> torch.Tensor:
    """The row sums of flat byte tensors `pending` (each with its row count) laid out row by row."""
    buffer, targets = _pack_targets(pending, rows)
    torch._foreach_copy_(targets, [part for part, _ in pending])  # batched: few launches for many
    return _buffer_row_sums(buffer)


def _pack_targets(
    pending: list[tuple[torch.Tensor, int]], rows: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A zeroed buffer of `rows` rows and, per flat byte tensor of `pending`, its place there."""
    row_bytes = 8 * ROW
    buffer = torch.zeros(rows * row_bytes, dtype=torch.uint8, device=pending[0][0].device)
    targets, at = [], 0
    for part, part_rows in pending:
        targets.append(buffer[at : at + part.numel()])
        at += part_rows * row_bytes
    return buffer, targets


def _buffer_row_sums(buffer: torch.Tensor) -> torch.Tensor:
    return (buffer.view(torch.int64).view(-1, ROW) * _table(buffer.device)).sum(dim=1)


_KEPT_BYTES = 32 << 20
"""The largest packing buffer kept between calls, per device: a small model's, whose packing would
otherwise cost more torch calls than summing it."""


@dataclasses.dataclass(frozen=True)
class _Kept:
    """A small model's tensors packed once: byte views of the live tensors (`sources`), their places
    in a kept buffer (`targets`) and each row's weight. Parameters and optimizer state are updated
    in place, so the views follow them; `key` (each tensor's weight, address, dtype and shape, all
    contiguous) tells when the tensors are other ones. Holding the views keeps the old storage alive,
    so a new tensor cannot take its address unnoticed. One packing is kept per device, the last
    small model's, until the process ends: the digest of one device is taken by one thread at a
    time (as `LifecycleSync` does), since two would share the buffer."""

    key: tuple[tuple[Any, ...], ...]
    buffer: torch.Tensor
    targets: list[torch.Tensor]
    sources: list[torch.Tensor]
    weights: npt.NDArray[np.int64]


_KEPT: dict[torch.device, _Kept] = {}
"""Per device: the last small model's packing."""


def _kept(tensors: list[tuple[int, torch.Tensor]], block_rows: int) -> _Kept | None:
    """The kept packing of `tensors`, made now if they are new; None unless they are small enough
    to keep (every one contiguous, all in one pack of at most `_KEPT_BYTES`)."""
    counts = _pack_rows(tensors, min(block_rows, _KEPT_BYTES // (8 * ROW)))
    key = None if counts is None else _kept_key(tensors)
    if counts is None or key is None:
        return None
    device = tensors[0][1].device
    kept = _KEPT.get(device)
    if kept is not None and kept.key == key:
        return kept
    rows = sum(counts)
    sources = [_bytes(tensor) for _, tensor in tensors]
    buffer, targets = _pack_targets(list(zip(sources, counts, strict=True)), rows)
    weights = _entry_weights([_signed(weight) for weight, _ in tensors], counts)
    kept = _KEPT[device] = _Kept(key, buffer, targets, sources, weights)
    return kept


def _pack_rows(tensors: list[tuple[int, torch.Tensor]], most: int) -> list[int] | None:
    """Each tensor's rows in a pack, or None as soon as they pass `most` (a large model stops
    at its first few tensors)."""
    counts, rows = [], 0
    for _, tensor in tensors:
        counts.append(-(-tensor.numel() * tensor.element_size() // (8 * ROW)))
        rows += counts[-1]
        if rows > most:
            return None
    return counts


def _kept_key(tensors: list[tuple[int, torch.Tensor]]) -> tuple[tuple[Any, ...], ...] | None:
    """What identifies `tensors` for a kept packing, or None if one of them cannot be kept (not
    dense and contiguous: its bytes would be a copy, not a view of it)."""
    key = []
    for weight, tensor in tensors:
        if tensor.layout != torch.strided or not tensor.is_contiguous():
            return None
        if tensor.is_conj() or tensor.is_neg():
            return None
        key.append((weight, tensor.data_ptr(), tensor.dtype, tensor.shape))
    return tuple(key)


def _entry_weights(weights: list[int], counts: list[int]) -> npt.NDArray[np.int64]:
    """Per row sum: its item's weight (signed) times its row weight odd(sm(2^32 + j)), wrapped."""
    counts_array = np.array(counts, dtype=np.int64)
    starts = np.cumsum(counts_array) - counts_array
    within = np.arange(int(counts_array.sum()), dtype=np.int64) - np.repeat(starts, counts_array)
    with np.errstate(over="ignore"):
        return (
            np.repeat(np.array(weights, dtype=np.int64), counts_array)
            * _host_row_weights(int(counts_array.max()))[within]
        )


_TABLES: dict[torch.device, torch.Tensor] = {}
"""Per device: the row table odd(sm(r)), r < C (256 KiB), built once."""


def _table(device: torch.device) -> torch.Tensor:
    table = _TABLES.get(device)
    if table is None:
        table = _TABLES[device] = torch.from_numpy(_host_table()).to(device)
    return table
