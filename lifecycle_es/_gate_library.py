"""What a gate is (`Gate`, its `GateInput` and `GateResult`) and the `GateLibrary` that names gates.

`lifecycle_es.gates` re-exports all of it, with the built-in gates of `_builtin_gates`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from lifecycle_es.errors import ConfigError
from lifecycle_es.events import GateCategory
from lifecycle_es.spec import MIN_TIME_GATE  # defined with the specs whose guards name it

if TYPE_CHECKING:
    from lifecycle_es.registry import EntityState, Registry

__all__ = ["EMBARGO_GATE", "MIN_TIME_GATE", "Gate", "GateFn", "GateInput", "GateLibrary", "GateResult"]

EMBARGO_GATE = "not_embargoed"
"""The structural gate that keeps entities out of a slot on cooldown, at registration too."""


@dataclass(frozen=True, slots=True)
class GateInput:
    """What a gate may read: the entity, the requested target, the clock, metrics, the registry."""

    entity: EntityState
    target: str
    step: int
    metrics: Mapping[str, float]
    registry: Registry

    def history(self, name: str) -> tuple[float, ...]:
        """Return the entity's observed values of metric `name`, oldest first."""
        return self.registry.metric_window(self.entity.entity, name)


class GateResult(NamedTuple):
    """The verdict of one gate: passed or not, one sentence why, and the values it looked at."""

    passed: bool
    reason: str
    observed: dict[str, float]


GateFn = Callable[[GateInput, Mapping[str, float]], GateResult]
"""A gate's body: (input, parameters) -> result. Must be pure and deterministic."""


@dataclass(frozen=True, slots=True)
class Gate:
    """A named, categorised gate with its default parameters (the recorded thresholds)."""

    name: str
    category: GateCategory
    fn: GateFn
    defaults: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    def parameters(self, overrides: Mapping[str, float]) -> dict[str, float]:
        """Return the parameters in force: `overrides` over the gate's defaults."""
        return {**self.defaults, **overrides}


class GateLibrary(Mapping[str, Gate]):
    """The gates a lifecycle may refer to, by name. Built explicitly; nothing registers at import."""

    def __init__(self, gates: Iterable[Gate] = ()) -> None:
        self._gates: dict[str, Gate] = {}
        for gate in gates:
            self.add(gate)

    def add(self, gate: Gate) -> None:
        """Add a gate; a second gate of the same name is a `ConfigError`."""
        if gate.name in self._gates:
            raise ConfigError(f"gate {gate.name!r} is already in the library")
        self._gates[gate.name] = gate

    def __getitem__(self, name: str) -> Gate:
        try:
            return self._gates[name]
        except KeyError:
            raise ConfigError(f"no gate named {name!r} in the library") from None

    # `in` and `get` answer from the dict: Mapping's own would turn the ConfigError above into
    # an exception where a question was asked.
    def __contains__(self, name: object) -> bool:
        return name in self._gates

    def get(self, name: str, default: Gate | None = None) -> Gate | None:  # type: ignore[override]
        """Return the gate called `name`, or `default` when the library has none."""
        return self._gates.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._gates)

    def __len__(self) -> int:
        return len(self._gates)
