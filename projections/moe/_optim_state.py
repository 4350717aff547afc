"""Optimizer state of slot-major parameters: per-slot moment rows, and swaps by identity.

reference/ddp-structural-changes.md section 2: optimizer state must follow a parameter by
identity, never by position (`load_state_dict` maps by position and silently hands a pruned
expert's moments to its neighbour), and a tensor must never get zero moments under a mature
`step` (Adam's first update is then 2.5x to 3.16x the learning rate). Every state tensor shaped
like its parameter is treated as slot-major moments (Adam's `exp_avg`, `exp_avg_sq`,
`max_exp_avg_sq`, SGD's `momentum_buffer`); scalars such as `step` are shared by all slots of
the tensor and left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from lifecycle_es.errors import UsageError

__all__ = [
    "SECOND_MOMENT_KEYS",
    "clear_rows",
    "fresh_rows",
    "inherit_rows",
    "moment_rows",
    "optimizer_holds",
    "optimizer_params_match",
    "reindexed",
    "swap_parameter",
]

SECOND_MOMENT_KEYS = frozenset({"exp_avg_sq", "max_exp_avg_sq"})
"""State keys holding squared-gradient averages: the ones a fresh slot must not get as zeros."""


def moment_rows(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict[str, torch.Tensor]:
    """Return the state tensors of `param` that are shaped like it; empty before its first step."""
    state = optimizer.state.get(param, {})
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.shape == param.shape}


def inherit_rows(
    optimizer: torch.optim.Optimizer, param: nn.Parameter, dst: int, sources: Sequence[int]
) -> None:
    """Give slot `dst` the moments of `sources`: a copy of one, or the mean of several."""
    for moment in moment_rows(optimizer, param).values():
        if len(sources) == 1:  # a copy, bit for bit
            moment[dst] = moment[sources[0]]
        else:
            moment[dst] = moment[list(sources)].mean(dim=0)


def fresh_rows(
    optimizer: torch.optim.Optimizer, param: nn.Parameter, dst: int, siblings: Sequence[int]
) -> None:
    """Give a randomly initialised slot no momentum, and its siblings' mean second moment.

    All slots share the tensor's mature `step`, so zero second moments would make the first
    updates about 2.5x the learning rate at step 1000 (reference section 2). The second moment
    is one value, the mean over every entry of the siblings' rows: a random slot's entry i has
    nothing to do with a sibling's entry i, so only the layer's gradient scale carries over.
    A zero first moment carries no stale direction.
    """
    for key, moment in moment_rows(optimizer, param).items():
        if key in SECOND_MOMENT_KEYS and siblings:
            moment[dst] = moment[list(siblings)].mean()
        else:
            moment[dst] = 0


def clear_rows(optimizer: torch.optim.Optimizer, param: nn.Parameter, row: int) -> None:
    """Zero every moment of slot `row`, so a masked slot's stale momentum cannot move it.

    A masked slot still receives a defined, all-zero gradient; with zero moments its Adam
    update is exactly zero.
    """
    for moment in moment_rows(optimizer, param).values():
        moment[row] = 0


def reindexed(tensor: torch.Tensor, index: Sequence[int | None]) -> torch.Tensor:
    """Return rows `index` of `tensor` as a new tensor; a None row is zeros (filled later)."""
    out = tensor.new_zeros((len(index), *tensor.shape[1:]))
    kept = [(dst, src) for dst, src in enumerate(index) if src is not None]
    if kept:
        dst, src = zip(*kept, strict=True)
        out[list(dst)] = tensor[list(src)]
    return out


def swap_parameter(
    optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter, index: Sequence[int | None]
) -> None:
    """Put `new` where `old` is in its param group, with `old`'s state reindexed by `index`.

    The group keeps its hyper-parameters and position, so an LR scheduler holding the
    optimizer keeps working; only the entry of `old` and its state change hands.
    """
    for group in optimizer.param_groups:
        params = group["params"]
        for i, param in enumerate(params):
            if param is old:
                params[i] = new
                _move_state(optimizer, old, new, index)
                return
    raise UsageError(f"the optimizer does not hold the parameter of shape {tuple(old.shape)}")


def _move_state(
    optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter, index: Sequence[int | None]
) -> None:
    rows = moment_rows(optimizer, old)
    state = optimizer.state.pop(old, None)
    if state:
        optimizer.state[new] = {k: reindexed(v, index) if k in rows else v for k, v in state.items()}


def optimizer_holds(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> bool:
    """Tell whether every parameter of `params` is in one of the optimizer's groups."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return all(id(p) in held for p in params)


def optimizer_params_match(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Tell whether the optimizer updates exactly the model's trainable parameters.

    The guard of reference section 2, pitfall 4: a parameter missing from the optimizer is
    silently never trained, and a stale one is stepped for nothing, with every rank agreeing.
    """
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    return len(held) == len(set(held)) and set(held) == trainable
