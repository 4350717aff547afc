"""Expert ids: `L{layer}_E{n}`, n counting the experts ever created in the layer (never reused)."""

from __future__ import annotations

import re

from lifecycle_es.errors import UsageError

__all__ = ["expert_id", "layer_of", "parse_expert_id"]

_ID = re.compile(r"^L(\d+)_E(\d+)$")


def expert_id(layer: int, n: int) -> str:
    """Return the id of the n-th expert ever created in `layer` (ChronoMoE's "L2_E5")."""
    return f"L{layer}_E{n}"


def parse_expert_id(entity: str) -> tuple[int, int] | None:
    """Return (layer, n) of an id made by `expert_id`, or None for any other id."""
    match = _ID.match(entity)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def layer_of(entity: str) -> int:
    """Return the layer named by an expert id, or raise `UsageError` for another kind of id."""
    parsed = parse_expert_id(entity)
    if parsed is None:
        raise UsageError(f"expert id {entity!r} is not of the form L<layer>_E<n>")
    return parsed[0]
