"""Blueprints: what a seed grows into, as batched functions over slot-major weights.

A blueprint maps a chunk of the host's output to a chunk of the same width. To run every seed
of a layer in one call, whatever the number of seeds, a blueprint is not a module per seed but
a pair of functions over *slot-major* tensors (row i holds seed i's weights, as the MoE layer
stores experts): `init` draws the weights of `rows` seeds, `apply` runs them on `[batch, rows,
width]` inputs. The layer keeps one set of such tensors per blueprint it hosts, and model
surgery edits their rows (fresh weights at germination, rows added and removed under the
`resize` strategy) with the same optimizer-state rules as experts.

A `BlueprintLibrary` is an explicit registry built by the caller: `default_library()` holds
`residual_mlp` (id 0) and `low_rank` (id 1), and `register` adds a user's blueprint under its
name, with the next id. Nothing registers itself at import.

Both built-ins are residual (`x + f(x)`) with a small last layer, so a young seed's output is
close to its input: grafting it in starts near the host's own output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from lifecycle_es.errors import ConfigError, UsageError

__all__ = ["Blueprint", "BlueprintLibrary", "default_library", "low_rank", "residual_mlp"]

Init = Callable[[int, int, torch.Generator], dict[str, torch.Tensor]]
"""(rows, width, CPU generator) -> slot-major fp32 CPU tensors by name, dim 0 = rows."""
Apply = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""(slot-major weights, x [batch, rows, width]) -> [batch, rows, width]."""


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """A named seed architecture: how to draw its weights and how to run them, batched over seeds."""

    name: str
    """The name users choose it by (and `BlueprintLibrary.id` turns into the state-tensor id)."""
    init: Init
    """Draw the weights of `rows` seeds from the generator; never the global RNG."""
    apply: Apply
    """Run every row's weights on its own slice of the input."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"a blueprint name must be an identifier, got {self.name!r}")
        if not callable(self.init) or not callable(self.apply):
            raise ConfigError(f"blueprint {self.name!r} needs callable init and apply")


class BlueprintLibrary:
    """The blueprints a run may germinate, by name and by id (registration order)."""

    def __init__(self, blueprints: tuple[Blueprint, ...] = ()) -> None:
        self._by_name: dict[str, Blueprint] = {}
        for blueprint in blueprints:
            self.register(blueprint)

    def register(self, blueprint: Blueprint) -> int:
        """Add a blueprint under its name and return its id; a taken name is refused."""
        if not isinstance(blueprint, Blueprint):
            raise ConfigError(f"register takes a Blueprint, got {type(blueprint).__name__}")
        if blueprint.name in self._by_name:
            raise ConfigError(f"a blueprint named {blueprint.name!r} is registered already")
        self._by_name[blueprint.name] = blueprint
        return len(self._by_name) - 1

    def __iter__(self) -> Iterator[Blueprint]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """Return the names in id order."""
        return list(self._by_name)

    def get(self, name: str) -> Blueprint:
        """Return the blueprint called `name`, or raise `UsageError` naming the known ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UsageError(f"no blueprint {name!r}; known: {', '.join(self._by_name)}") from None

    def id(self, name: str) -> int:
        """Return the id of `name`: what the state tensors' blueprint column holds."""
        self.get(name)
        return self.names().index(name)

    def by_id(self, blueprint_id: int) -> Blueprint:
        """Return the blueprint with id `blueprint_id`, or raise `UsageError`."""
        names = self.names()
        if not 0 <= blueprint_id < len(names):
            raise UsageError(f"no blueprint with id {blueprint_id}; ids are 0..{len(names) - 1}")
        return self._by_name[names[blueprint_id]]


def _uniform(generator: torch.Generator, bound: float, *shape: int) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)


OUT_SCALE = 0.01
"""Scale of a built-in blueprint's last layer at init, relative to nn.Linear's bound."""


def residual_mlp(hidden: int = 16) -> Blueprint:
    """Return `x + relu(x @ w1 + b1) @ w2 + b2`, one hidden layer of `hidden` units per seed."""

    def init(rows: int, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {
            "w1": _uniform(generator, 1 / math.sqrt(width), rows, width, hidden),
            "b1": torch.zeros(rows, hidden),
            "w2": _uniform(generator, OUT_SCALE / math.sqrt(hidden), rows, hidden, width),
            "b2": torch.zeros(rows, width),
        }

    def apply(w: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.einsum("brw,rwh->brh", x, w["w1"]) + w["b1"])
        return x + torch.einsum("brh,rhw->brw", h, w["w2"]) + w["b2"]

    return Blueprint(name="residual_mlp", init=init, apply=apply)


def low_rank(rank: int = 4) -> Blueprint:
    """Return the adapter `x + (x @ a) @ b`, of rank `rank` per seed."""

    def init(rows: int, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {
            "a": _uniform(generator, 1 / math.sqrt(width), rows, width, rank),
            "b": _uniform(generator, OUT_SCALE / math.sqrt(rank), rows, rank, width),
        }

    def apply(w: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x + torch.einsum("brk,rkw->brw", torch.einsum("brw,rwk->brk", x, w["a"]), w["b"])

    return Blueprint(name="low_rank", init=init, apply=apply)


def default_library() -> BlueprintLibrary:
    """Return a new library of the built-ins: `residual_mlp` (id 0) and `low_rank` (id 1)."""
    return BlueprintLibrary((residual_mlp(), low_rank()))
