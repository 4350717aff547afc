"""Gates: named pure functions that decide whether a transition may happen, and why.

A gate reads a `GateInput` (the entity, the step, the metrics in force, the registry) and its
parameters, and returns a `GateResult`. Gates are code registered by name in a `GateLibrary`;
specs refer to them by name. Every evaluation becomes a `GateChecked` event (the expert
coordinator's own checks are recorded per attempt, as one `GatesChecked`). The library and its
types are `_gate_library`; the built-in gates, which `default_gates` returns, `_builtin_gates`.
"""

from lifecycle_es._builtin_gates import default_gates
from lifecycle_es._gate_library import (
    EMBARGO_GATE,
    MIN_TIME_GATE,
    Gate,
    GateFn,
    GateInput,
    GateLibrary,
    GateResult,
)

__all__ = [
    "EMBARGO_GATE",
    "MIN_TIME_GATE",
    "Gate",
    "GateFn",
    "GateInput",
    "GateLibrary",
    "GateResult",
    "default_gates",
]
