"""The state tensors' live rows as plain values with state names, for tests and debugging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lifecycle_es.spec import Spec
from projections._state_plan import COLUMNS, HISTORY_DEPTH, METRIC_NAMES, PARENT_STATE, STATE, RowIndex

__all__ = ["row_dicts"]

_COLS = len(COLUMNS)
_INTS = _COLS + 2 * HISTORY_DEPTH
"""A packed row's int32 words: its columns, then its history ring's (from, to) pairs."""


def row_dicts(
    specs: Mapping[str, Spec],
    index: RowIndex,
    state: torch.Tensor,
    history: torch.Tensor,
    metrics: torch.Tensor,
) -> list[dict[str, Any]]:
    """Return the live rows of `state`, `history` and `metrics` as plain values with state
    names, in row order, copied to the host once."""
    live = index.live
    packed = torch.cat(
        (
            state[:live],
            history[:live].reshape(live, 2 * HISTORY_DEPTH),
            metrics[:live].view(torch.int32),
        ),
        dim=1,
    ).cpu()
    ints = packed[:, :_INTS].tolist()
    floats = packed[:, _INTS:].contiguous().view(torch.float32).tolist()
    return [_row_dict(specs, index, entity, ints[row], floats[row]) for entity, row in index.rows.items()]


def _row_dict(
    specs: Mapping[str, Spec], index: RowIndex, entity: str, ints: list[int], floats: list[float]
) -> dict[str, Any]:
    spec = specs[index.spec_names[index.row_spec[index.rows[entity]]]]

    def name(code: int) -> str | None:
        return None if code < 0 else spec.state_by_code(code).name

    pairs = zip(ints[_COLS:_INTS:2], ints[_COLS + 1 : _INTS : 2], strict=True)
    return {
        "entity": entity,
        "spec": spec.name,
        **dict(zip(COLUMNS, ints[:_COLS], strict=True)),
        "state_code": ints[STATE],
        "state": name(ints[STATE]),
        "parent_state": name(ints[PARENT_STATE]),
        "history": [(name(a), name(b)) for a, b in pairs if a >= 0],
        "metrics": dict(zip(METRIC_NAMES, floats, strict=True)),
    }
