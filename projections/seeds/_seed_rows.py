"""A seed's rows: where its weights sit in its blueprint's slot-major parameters, and the edits on them.

A seed's row is the index of its chunk in its blueprint's `row_chunks`; it has none while its
weights are not there (under `resize`, before germination or after release). The edits keep
the optimizer's moments with the rows: germination draws fresh weights with no first moment
and the siblings' mean second moment (appending the row under `resize`); release clears the
row's moments (`masked`) or removes the row (`resize`); a seed that stops learning gets zeroed
moments and one that learns again its siblings' mean second moment; a rollback point is the
rows' weights and moments, written back bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from projections.moe._noise import stream_seed
from projections.moe._optim_state import clear_rows, fresh_rows, moment_rows, reindexed, swap_parameter
from projections.seeds.layer import SeedLayer
from projections.seeds.modes import SeedMode, learns, mode_of

__all__ = ["Seed", "germinate", "reindex", "release", "row_of", "rows_of", "settle_moments", "write_back"]


@dataclass(slots=True)
class Seed:
    """One seed of a managed layer, as the surgery sees it."""

    spec: str
    layer: int
    chunk: int
    state: str
    blueprint: str
    row: int
    """Its row in the state tensors and the alpha schedule (registration order)."""


def row_of(layer: SeedLayer, seed: Seed) -> int | None:
    """Return the seed's row in its blueprint's weights, None while it has none."""
    chunks = layer.row_chunks[seed.blueprint]
    return chunks.index(seed.chunk) if seed.chunk in chunks else None


def germinate(
    layer: SeedLayer, optimizer: torch.optim.Optimizer, entity: str, seed: Seed, *, step: int
) -> bool:
    """Give the seed fresh weights drawn from (step, blueprint, entity); True if a row was appended."""
    blueprint = layer.library.get(seed.blueprint)
    generator = torch.Generator()
    generator.manual_seed(stream_seed(step, seed.blueprint, entity))
    drawn = blueprint.init(1, layer.width, generator)
    row, resized = row_of(layer, seed), False
    if row is None:
        row, resized = len(layer.row_chunks[seed.blueprint]), True
        reindex(
            layer,
            optimizer,
            seed.blueprint,
            [*range(row), None],
            [*layer.row_chunks[seed.blueprint], seed.chunk],
        )
    siblings = [r for r in range(len(layer.row_chunks[seed.blueprint])) if r != row]
    with torch.no_grad():
        for name, param in layer.slot_parameters(seed.blueprint).items():
            param[row] = drawn[name][0].to(param.device, param.dtype)
            fresh_rows(optimizer, param, row, siblings)
    return resized


def release(layer: SeedLayer, optimizer: torch.optim.Optimizer, seed: Seed, row: int) -> bool:
    """Take the seed's `row` out of use: clear its moments (masked) or remove it (resize, True)."""
    if layer.strategy == "masked":
        for param in layer.slot_parameters(seed.blueprint).values():
            clear_rows(optimizer, param, row)
        return False
    chunks = layer.row_chunks[seed.blueprint]
    keep = [r for r in range(len(chunks)) if r != row]
    reindex(layer, optimizer, seed.blueprint, keep, [chunks[r] for r in keep])
    return True


def settle_moments(layer: SeedLayer, optimizer: torch.optim.Optimizer, seed: Seed, before: str) -> None:
    """Freeze a seed's rows for good when it stops learning; give them moments when it resumes.

    A frozen seed gets a zero gradient, but Adam would go on moving its rows with their old
    momentum: zeroed moments make its update exactly zero. A seed that learns again
    (fine-tuning) gets its siblings' mean second moment, never zeros under a mature step.
    """
    row = row_of(layer, seed)
    was_frozen, frozen = _frozen(seed.spec, before), _frozen(seed.spec, seed.state)
    freeze = frozen and not was_frozen
    thaw = learns(seed.spec, seed.state) and was_frozen
    if row is None or not (freeze or thaw):
        return
    siblings = [r for r in range(len(layer.row_chunks[seed.blueprint])) if r != row]
    for param in layer.slot_parameters(seed.blueprint).values():
        if freeze:
            clear_rows(optimizer, param, row)
        else:
            fresh_rows(optimizer, param, row, siblings)


def rows_of(layer: SeedLayer, optimizer: torch.optim.Optimizer, seed: Seed) -> dict[str, torch.Tensor]:
    """Return a seed's weights and moments: `w/NAME` and `m/NAME/KEY` rows."""
    row = row_of(layer, seed)
    if row is None:
        return {}
    rows: dict[str, torch.Tensor] = {}
    for name, param in layer.slot_parameters(seed.blueprint).items():
        rows[f"w/{name}"] = param[row]
        rows.update({f"m/{name}/{k}": v[row] for k, v in moment_rows(optimizer, param).items()})
    return rows


def write_back(
    layer: SeedLayer, optimizer: torch.optim.Optimizer, seed: Seed, saved: Mapping[str, torch.Tensor]
) -> bool:
    """Put `saved` (as `rows_of` returned it) back into the seed's row; False if it has none."""
    row = row_of(layer, seed)
    if row is None:
        return False
    with torch.no_grad():
        for name, param in layer.slot_parameters(seed.blueprint).items():
            param[row] = saved[f"w/{name}"].to(param.device)
            for key, moment in moment_rows(optimizer, param).items():
                if f"m/{name}/{key}" in saved:
                    moment[row] = saved[f"m/{name}/{key}"].to(moment.device)
    return True


def reindex(
    layer: SeedLayer,
    optimizer: torch.optim.Optimizer,
    blueprint: str,
    index: Sequence[int | None],
    chunks: Sequence[int],
) -> None:
    """Give a blueprint's weights rows `index` of the old ones (None: a new row), moments along."""
    swapped = {}
    for name, old in layer.slot_parameters(blueprint).items():
        new = nn.Parameter(reindexed(old.detach(), index), requires_grad=old.requires_grad)
        swap_parameter(optimizer, old, new, index)
        swapped[name] = new
    layer.replace_parameters(blueprint, swapped, chunks)


def _frozen(spec: str, state: str) -> bool:
    """Whether a seed in `state` runs its blueprint with the weights frozen (takes no gradient)."""
    return mode_of(spec, state) != SeedMode.HOST and not learns(spec, state)
