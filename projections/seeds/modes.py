"""What a seed in each state does to its chunk of the host's output: one table per seed spec.

reference/seed-projects.md section 1.6 (esperlite's `_process_chunks_v2`): TRAINING runs the
blueprint without blending it in, GRAFTING blends `(1-alpha)*chunk + alpha*blueprint(chunk)`
with the blueprint under `no_grad`, FINE_TUNING is `0.1*chunk + 0.9*blueprint(chunk)` and
FOSSILIZED is `blueprint(chunk)` under `no_grad`. esperlite's Python layer leaves
STABILIZATION and EVALUATING out, which would drop a fully grafted seed from the output for
the 50 steps spent checking it (its Triton kernel treats them as active); here they `HOLD` the
graft at the alpha the ramp reached. The `module` spec's states map onto the same modes.

One deliberate difference: esperlite computes a grafting or fossilized blueprint under
`no_grad`, which freezes its weights but also cuts the gradient to its input, so a chunk that
is grafted in passes nothing back to the host's units and the layers before them (measured:
gradient norm 0 through a fossilized chunk, and the demo's seeds ending worse than the host
alone). Here a frozen blueprint (a kasmina seed's in GRAFT, HOLD and FOSSIL) has only its own
weights frozen (the layer detaches those rows); the gradient flows through it to the host's
chunk and on.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from lifecycle_es.specs import KASMINA_SPEC, MODULE_SPEC, KasminaState, ModuleState

__all__ = [
    "FINE_TUNE_ALPHA",
    "GERMINATION",
    "LEARNING",
    "RISKY",
    "SEED_MODES",
    "SUCCESS",
    "SeedMode",
    "learns",
    "mode_of",
]


class SeedMode(IntEnum):
    """How a seed's chunk is computed; the value is what the layer's `modes` buffer holds."""

    HOST = 0
    """The host's chunk, untouched (no seed, dormant, waiting, or out: culled, pruned...)."""
    TRAIN = 1
    """The host's chunk; the blueprint learns to reconstruct it (the layer's `seed_loss`)."""
    GRAFT = 2
    """`(1-alpha)*host + alpha*blueprint`, alpha from the grafting schedule (weights: `LEARNING`)."""
    HOLD = 3
    """As GRAFT, at the alpha the ramp reached (the schedule no longer moves it)."""
    FINE_TUNE = 4
    """`0.1*host + 0.9*blueprint`, the blueprint trained with the host."""
    FOSSIL = 5
    """`blueprint(host)`; its input learns, its weights as `LEARNING` says."""


FINE_TUNE_ALPHA = 0.9
"""The blueprint's fixed weight in FINE_TUNING (esperlite's `0.1*chunk + 0.9*blueprint`)."""

_K, _M = KasminaState, ModuleState
SEED_MODES: Mapping[str, Mapping[str, SeedMode]] = MappingProxyType(
    {
        KASMINA_SPEC.name: MappingProxyType(
            {
                _K.TRAINING.value: SeedMode.TRAIN,
                _K.GRAFTING.value: SeedMode.GRAFT,
                _K.STABILIZATION.value: SeedMode.HOLD,
                _K.EVALUATING.value: SeedMode.HOLD,
                _K.FINE_TUNING.value: SeedMode.FINE_TUNE,
                _K.FOSSILIZED.value: SeedMode.FOSSIL,
            }
        ),
        MODULE_SPEC.name: MappingProxyType(
            {
                _M.TRAINING.value: SeedMode.TRAIN,
                _M.BLENDING.value: SeedMode.GRAFT,
                _M.HOLDING.value: SeedMode.HOLD,
                _M.INTEGRATED.value: SeedMode.FOSSIL,
            }
        ),
    }
)
"""Per seed spec, the mode of each state that is not `HOST`."""

LEARNING: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        KASMINA_SPEC.name: frozenset({_K.TRAINING.value, _K.FINE_TUNING.value}),
        MODULE_SPEC.name: frozenset(
            {_M.TRAINING.value, _M.BLENDING.value, _M.HOLDING.value, _M.INTEGRATED.value}
        ),
    }
)
"""Per seed spec, the states whose blueprint weights learn (the others' are frozen): the
module docstring says why a module learns in every state whose output counts."""

GERMINATION: Mapping[str, str] = MappingProxyType(
    {KASMINA_SPEC.name: _K.GERMINATED.value, MODULE_SPEC.name: _M.INSTANTIATED.value}
)
"""Per seed spec, the state whose entry gives the seed fresh blueprint weights."""

RISKY: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        KASMINA_SPEC.name: frozenset({_K.GRAFTING.value, _K.FINE_TUNING.value}),
        MODULE_SPEC.name: frozenset({_M.BLENDING.value}),
    }
)
"""Per seed spec, the states whose entry (grafting, fine-tuning) is checkpointed first. A
kasmina blueprint is frozen from grafting until fine-tuning, so these cover integration too; a
module's point, taken on entering BLENDING, holds the weights it had before it first counted in
the output, which a failure in BLENDING or HOLDING restores."""

SUCCESS: Mapping[str, str] = MappingProxyType(
    {KASMINA_SPEC.name: _K.FOSSILIZED.value, MODULE_SPEC.name: _M.INTEGRATED.value}
)
"""Per seed spec, the state that ends a seed's risk: its rollback checkpoint is discarded."""


def mode_of(spec: str, state: str) -> SeedMode:
    """Return the mode of a seed of `spec` in `state` (HOST for states and specs without one)."""
    return SEED_MODES.get(spec, {}).get(state, SeedMode.HOST)


def learns(spec: str, state: str) -> bool:
    """Return whether the blueprint of a seed of `spec` in `state` learns (`LEARNING`)."""
    return state in LEARNING.get(spec, frozenset())
