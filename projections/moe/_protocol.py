"""Checking what a user hands the lifecycle: a layer against a layer protocol, naming what it
lacks, and a batch's token types.

`isinstance(layer, ExpertLayer)` answers yes or no; a user whose MoE layer misses one method
needs to know which. The members are read from the protocol class itself, so the check cannot
drift from it.
"""

from __future__ import annotations

import inspect

import torch

from lifecycle_es.errors import ConfigError, UsageError

__all__ = ["check_layer", "check_token_types", "missing_members", "protocol_members"]

TYPE_DTYPES = (torch.int64, torch.int32)
"""The dtypes token type ids may have: those torch indexes with."""


def check_token_types(token_types: object) -> None:
    """Refuse token types that are not a 1-D int64 or int32 tensor, one id per token.

    Only the tensor's metadata is read, so the check never waits for the device; the ids' range
    is checked where they are counted.
    """
    if isinstance(token_types, torch.Tensor) and token_types.dim() == 1 and token_types.dtype in TYPE_DTYPES:
        return
    got = (
        f"a {token_types.dtype} tensor of shape {tuple(token_types.shape)}"
        if isinstance(token_types, torch.Tensor)
        else f"a {type(token_types).__name__}"
    )
    raise UsageError(f"token types must be a 1-D int64 or int32 tensor, one id per token, but got {got}")


def protocol_members(protocol: type) -> list[str]:
    """Return the public attributes and methods a `typing.Protocol` class asks for, in source order."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if not getattr(base, "_is_protocol", False) or base.__name__ in {"Protocol", "Generic"}:
            continue
        for name in [*getattr(base, "__annotations__", {}), *vars(base)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def missing_members(layer: object, protocol: type) -> list[str]:
    """Return the members of `protocol` that `layer` lacks, or has but cannot call when they are methods."""
    missing = []
    for name in protocol_members(protocol):
        method = inspect.isfunction(inspect.getattr_static(protocol, name, None))
        if not hasattr(layer, name) or (method and not callable(getattr(layer, name))):
            missing.append(name)
    return missing


def check_layer(index: int, layer: object, protocol: type) -> None:
    """Raise `ConfigError` naming the members of `protocol` that layer `index` lacks."""
    missing = missing_members(layer, protocol)
    if missing:
        raise ConfigError(
            f"layer {index} ({type(layer).__name__}) does not meet the {protocol.__name__} "
            f"protocol: it lacks {', '.join(missing)}"
        )
