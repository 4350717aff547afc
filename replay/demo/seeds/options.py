"""What defines one seeds-demo run: `SeedsOptions`, validated at construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from lifecycle_es.errors import ConfigError
from projections.moe import Strategy
from projections.seeds import GraftingStrategy

__all__ = ["CONTROLLERS", "GRAFTINGS", "ControllerName", "SeedSpec", "SeedsOptions"]

ControllerName = Literal["heuristic", "policy", "hybrid"]
SeedSpec = Literal["kasmina", "module"]
CONTROLLERS: tuple[ControllerName, ...] = ("heuristic", "policy", "hybrid")
GRAFTINGS: tuple[str, ...] = tuple(g.name.lower() for g in GraftingStrategy)
"""The grafting schedules by name: linear, drift_controlled, momentum, adaptive, stability."""


@dataclass(frozen=True, kw_only=True)
class SeedsOptions:
    """Everything that defines one seeds-demo run.

    Equal options give the same host, data and decisions until a seed germinates: the surgery
    draws a seed's weights from its germination's event id, which differs between runs, so
    two runs part once a seed grafts. Training along one log is exact: a resumed run, or a
    follower of a finished log, ends bit-identical.
    """

    spec: SeedSpec = "kasmina"
    controller: ControllerName = "heuristic"
    grafting: str = "linear"
    strategy: Strategy = "masked"
    steps: int = 1500
    seed: int = 0
    lifecycle: bool = True
    """False trains the host alone (a baseline): no seed is ever registered."""
    width: int = 8
    """Width of the host's seed layer (and of the baseline host)."""
    chunks: int = 4
    """Seed slots on the seed layer."""
    blueprint: str = "residual_mlp"
    eval_every: int = 10
    batch_size: int = 128
    lr: float = 1e-2
    policy_path: str | None = None
    """A saved `DemoPolicy` state dict for the policy and hybrid controllers (default: built in)."""

    def __post_init__(self) -> None:
        if self.spec not in ("kasmina", "module"):
            raise ConfigError(f"spec must be 'kasmina' or 'module', got {self.spec!r}")
        if self.controller not in CONTROLLERS:
            raise ConfigError(f"controller must be one of {list(CONTROLLERS)}, got {self.controller!r}")
        if self.grafting not in GRAFTINGS:
            raise ConfigError(f"grafting must be one of {list(GRAFTINGS)}, got {self.grafting!r}")
        if self.strategy not in ("masked", "resize"):
            raise ConfigError(f"strategy must be 'masked' or 'resize', got {self.strategy!r}")
        for name in ("steps", "width", "chunks", "eval_every", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.width % self.chunks:
            raise ConfigError(f"chunks {self.chunks} must divide width {self.width}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")

    @property
    def grafting_id(self) -> int:
        """The grafting schedule's id in the `grafting_strategy` state-tensor column."""
        return int(GraftingStrategy[self.grafting.upper()])

    def to_json(self) -> dict[str, Any]:
        """Return the options as JSON values, for `RunStarted.config`."""
        return asdict(self)
