"""Checks of the parts a `Lifecycle` is built from: its specs, its gate library, its gate parameters.

Run at construction, so a wrong part is a one-sentence `ConfigError` before anything is
written, not an `AttributeError` at the first command that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lifecycle_es.errors import ConfigError
from lifecycle_es.gates import MIN_TIME_GATE, GateLibrary
from lifecycle_es.spec import Spec

__all__ = ["check_gate_params", "check_gates", "specs_by_name"]


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
