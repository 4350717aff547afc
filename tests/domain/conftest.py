"""Fixtures of the domain tests: a gate library whose gates always pass, and a way to put an
entity in any state of its spec by walking real transitions."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from lifecycle_es import BUILTIN_SPECS, EntityState, Lifecycle, Spec
from lifecycle_es.gates import MIN_TIME_GATE, Gate, GateInput, GateLibrary, GateResult, default_gates

GAP = 1_000
"""Steps taken between the hops of a walk: more than any built-in minimum time in state."""

Place = Callable[..., EntityState]


def _always_pass(inp: GateInput, params: Mapping[str, float]) -> GateResult:
    return GateResult(True, "always passes", {})


def passing_gate_library() -> GateLibrary:
    """Return a library where every gate a built-in spec names passes, with its real category.

    The minimum-time gate stays the real one, so walks must still step past the minimums.
    """
    real = default_gates()
    names = sorted(set().union(*(s.gate_names for s in BUILTIN_SPECS.values())))
    gates = [Gate(name, real[name].category, _always_pass) for name in names]
    return GateLibrary([real[MIN_TIME_GATE], *gates])


def shortest_path(spec: Spec, target: str) -> list[str]:
    """Return the shortest list of states from an initial state of `spec` to `target` (BFS)."""
    parent: dict[str, str | None] = {s: None for s in spec.initial}
    todo = deque(spec.initial)
    while todo:
        state = todo.popleft()
        if state == target:
            path = [state]
            while (prev := parent[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for edge in spec.exits(state):
            if edge.target not in parent:
                parent[edge.target] = state
                todo.append(edge.target)
    raise AssertionError(f"{target} is unreachable in {spec.name}")


def place_entity(
    lc: Lifecycle,
    entity: str,
    spec: str,
    state: str,
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    **register: Any,
) -> EntityState:
    """Register `entity` and walk it along a shortest path into `state`, GAP steps per hop.

    `metrics` maps a target state to the metrics its transition is requested with.
    """
    path = shortest_path(lc.registry.specs[spec], state)
    lc.register(entity, spec, state=path[0], **register)
    for target in path[1:]:
        lc.advance(lc.registry.step + GAP)
        lc.transition(entity, to=target, metrics=(metrics or {}).get(target))
    found = lc.registry.get(entity)
    assert found.state == state
    return found


@pytest.fixture(scope="session")
def passing_gates() -> GateLibrary:
    """A gate library where every spec gate passes (the minimum-time gate is the real one)."""
    return passing_gate_library()


@pytest.fixture(scope="session")
def place() -> Place:
    """`place(lc, entity, spec, state, **register_kwargs)`: put an entity in any state."""
    return place_entity
