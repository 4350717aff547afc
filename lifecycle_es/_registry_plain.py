"""A registry as plain data and back: `Registry.to_state` and `Registry.from_state`.

The plain form is what checkpoints hold (JSON- and `torch.load(weights_only=True)`-safe), so
it carries every table the fold keeps, as lists and dicts of plain values.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lifecycle_es._entity import entity_from_plain, entity_to_plain, holds_slot, peer_of

if TYPE_CHECKING:
    from lifecycle_es.registry import Registry

_RUN_FACTS = (
    "run_id",
    "seq",
    "step",
    "run_state",
    "run_seed",
    "sealed_step",
    "verified_step",
    "last_checkpoint",
)
"""The plain values a registry holds about its run, copied as they are."""


def registry_to_plain(r: Registry) -> dict[str, Any]:
    """Return the registry as plain data."""
    return {
        "window": r.window,
        "run_id": r.run_id,
        "seq": r.seq,
        "step": r.step,
        "run_state": r.run_state,
        "run_config": r.run_config,
        "run_seed": r.run_seed,
        "sealed_step": r.sealed_step,
        "verified_step": r.verified_step,
        "last_checkpoint": r.last_checkpoint,
        "checkpoints": dict(r.checkpoints),
        "entities": [entity_to_plain(e) for e in r.entities.values()],
        "failures": [[*k, *v] for k, v in r._failures.items()],
        "windows": [
            [kind, key, name, list(values)]
            for (kind, key), named in r._windows.items()
            for name, values in named.items()
        ],
        "cycle": dict(r._cycle),
        "last_decision": [[a, k, s] for (a, k), s in r._last_decision.items()],
    }


def load_plain(r: Registry, state: Mapping[str, Any]) -> None:
    """Fill a new, empty registry from `registry_to_plain` output."""
    for name in _RUN_FACTS:
        setattr(r, name, state[name])
    r.run_config = dict(state["run_config"])
    r.checkpoints = dict(state.get("checkpoints", {}))  # absent from older snapshots
    _load_entities(r, state["entities"])
    r._failures = {(s, layer, slot): (n, at) for s, layer, slot, n, at in state["failures"]}
    _load_windows(r, state["windows"])
    r._cycle = Counter(state["cycle"])
    r._last_decision = {(a, k): s for a, k, s in state["last_decision"]}


def _load_entities(r: Registry, entities: list[Any]) -> None:
    """Place each entity: its record, the live set, its population, and its slot if it holds one."""
    for plain in entities:
        e = entity_from_plain(plain)
        r.entities[e.entity] = e
        if e.state not in r._retired[e.spec]:
            r._live[e.entity] = None
        r._population[(e.spec, e.layer, e.state)] += 1
        if e.slot is not None and holds_slot(r.specs[e.spec], e.state):
            r._slots[(e.spec, e.layer, e.slot)] = e.entity


def _load_windows(r: Registry, windows: list[Any]) -> None:
    for kind, key, name, values in windows:
        # A snapshot taken before windows followed the live set may hold stale ones.
        if not (kind == "entity" and r._is_out(key)) and not r._is_out(peer_of(name)):
            r._windows.setdefault((kind, key), {})[name] = deque(values, maxlen=r.window)
