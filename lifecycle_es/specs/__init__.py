"""The six built-in lifecycle specs, their state enums, and lookup by name.

Each spec lives in its own module as one `Spec` constant plus the enum of its states; this
package gathers them explicitly into `BUILTIN_SPECS` (no import-time registration).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lifecycle_es.errors import SpecError
from lifecycle_es.spec import Spec
from lifecycle_es.specs._base import SpecState
from lifecycle_es.specs.agent import AGENT_SPEC, AgentState
from lifecycle_es.specs.expert import (
    DEFAULT_INIT_STRATEGY,
    DEFAULT_PERTURBATION,
    EXPERT_SPEC,
    INIT_STRATEGIES,
    ROUTING_STATES,
    ExpertState,
    InitStrategy,
    MergeMetrics,
    PruneMetrics,
    SpawnMetrics,
    SplitMetrics,
    SurgerySettings,
)
from lifecycle_es.specs.kasmina import KASMINA_SPEC, KasminaState
from lifecycle_es.specs.module import MODULE_SPEC, ModuleState
from lifecycle_es.specs.run import RUN_SPEC, RunHook, RunState
from lifecycle_es.specs.task import TASK_SPEC, TaskState

__all__ = [
    "AGENT_SPEC",
    "BUILTIN_SPECS",
    "DEFAULT_INIT_STRATEGY",
    "DEFAULT_PERTURBATION",
    "EXPERT_SPEC",
    "INIT_STRATEGIES",
    "KASMINA_SPEC",
    "MODULE_SPEC",
    "ROUTING_STATES",
    "RUN_SPEC",
    "TASK_SPEC",
    "AgentState",
    "ExpertState",
    "InitStrategy",
    "KasminaState",
    "MergeMetrics",
    "ModuleState",
    "PruneMetrics",
    "RunHook",
    "RunState",
    "SpawnMetrics",
    "SpecState",
    "SplitMetrics",
    "SurgerySettings",
    "TaskState",
    "get_spec",
]

BUILTIN_SPECS: Mapping[str, Spec] = MappingProxyType(
    {s.name: s for s in (KASMINA_SPEC, MODULE_SPEC, EXPERT_SPEC, RUN_SPEC, AGENT_SPEC, TASK_SPEC)}
)
"""The built-in specs by name, in the order `spec list` shows them."""


def get_spec(name: str) -> Spec:
    """Return the built-in spec called `name`, or raise `SpecError` naming the known ones."""
    try:
        return BUILTIN_SPECS[name]
    except KeyError:
        known = ", ".join(BUILTIN_SPECS)
        raise SpecError(f"unknown spec {name!r}; the built-in specs are: {known}") from None
