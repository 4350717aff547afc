"""The parts a `Lifecycle` is built from, checked: its config, specs, gate library, gate parameters.

Run at construction, so a wrong part is a one-sentence `ConfigError` before anything is
written, not an `AttributeError` at the first command that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bus import Log
from lifecycle_es.codec import Codec
from lifecycle_es.commands import GatePolicy
from lifecycle_es.errors import ConfigError
from lifecycle_es.events import GateMode
from lifecycle_es.gates import MIN_TIME_GATE, GateLibrary
from lifecycle_es.spec import Spec

__all__ = ["LifecycleConfig", "check_gate_params", "check_gates", "check_parts", "specs_by_name"]


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    """How a lifecycle applies its gates and how much metric history it keeps."""

    mode: GateMode = GateMode.STRICT
    """Strict: every gate blocks. Permissive: only structural gates block."""
    gate_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per gate name, parameters over its defaults, e.g. {"kasmina.reconstruction": {...}}."""
    metric_window: int = 50
    """Observations kept per metric per entity or layer (ChronoMoE's basin_window_size)."""

    def __post_init__(self) -> None:
        if self.mode not in tuple(GateMode):
            raise ConfigError(f"mode must be one of {[m.value for m in GateMode]}, got {self.mode!r}")
        object.__setattr__(self, "mode", GateMode(self.mode))
        window = self.metric_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"metric_window must be an int >= 1, got {window!r}")
        check_gate_params(self.gate_params)

    @property
    def gate_policy(self) -> GatePolicy:
        """The gate mode and parameters as the command handlers take them."""
        return GatePolicy(mode=self.mode, params=self.gate_params)


def check_parts(log: object, config: object, gates: object, codec: object) -> None:
    """Refuse constructor parts of the wrong kind before any is used."""
    for name, value, kind in (
        ("log", log, Log),
        ("config", config, LifecycleConfig),
        ("gates", gates, GateLibrary),
        ("codec", codec, Codec),
    ):
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"Lifecycle({name}=...) takes a {kind.__name__}, got {type(value).__name__}")


def check_gate_params(params: object) -> None:
    """Gate parameters are numbers by parameter name by gate name; the gates read nothing else."""
    ok = isinstance(params, Mapping) and all(
        isinstance(gate, str)
        and isinstance(values, Mapping)
        and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in values.items()
        )
        for gate, values in params.items()
    )
    if not ok:
        raise ConfigError("gate_params must map gate names to mappings of parameter names to numbers")


def specs_by_name(specs: object) -> dict[str, Spec]:
    """The specs by name, from a mapping or an iterable of `Spec`; anything else is a ConfigError."""
    if isinstance(specs, Mapping):
        pairs = list(specs.items())
    elif isinstance(specs, Iterable) and not isinstance(specs, str):
        pairs = [(getattr(s, "name", None), s) for s in specs]
    else:
        pairs = [(None, specs)]
    if not all(isinstance(name, str) and isinstance(spec, Spec) for name, spec in pairs):
        raise ConfigError("Lifecycle(specs=...) takes Spec objects, as a mapping by name or an iterable")
    return dict(pairs)


def check_gates(specs: Mapping[str, Spec], gates: GateLibrary) -> None:
    """Refuse a gate library that lacks a gate one of the specs names."""
    for spec in specs.values():
        # A state with a minimum time makes the command handler check MIN_TIME_GATE too.
        needed = spec.gate_names | (
            {MIN_TIME_GATE} if any(s.min_time_in_state > 0 for s in spec.states) else set()
        )
        missing = sorted(needed - set(gates))
        if missing:
            raise ConfigError(f"spec {spec.name!r} names gates missing from the library: {missing}")
