"""The seed-host layer: a host layer whose output chunks each hold a seed slot.

`SeedLayer` wraps a host (an `nn.Linear`, or any module meeting `HostLayer`), cuts its output
into `chunks` equal chunks and gives each a seed slot. The forward reads three device buffers,
written by `SeedSurgery` from the folded lifecycle: `modes` (each chunk's `SeedMode`), `kinds`
(which hosted blueprint its seed runs) and `alpha` (its grafting alpha), so it never waits on
the host and has no Python loop per seed: every hosted blueprint runs batched over its rows,
and `torch.where` picks each chunk's result. With no seed past HOST the forward is the host's
own, decided by a host-side flag the surgery keeps.

TRAINING seeds leave the output as the host made it and learn to reconstruct their chunk:
`seed_loss` (a scalar tensor, 0 when no seed trains) is what the caller adds to its loss, and
`last_reconstruction` ([chunks], detached) each chunk's reconstruction error in the last forward
in which a seed trained, the `reconstruction_loss` the `kasmina.reconstruction` gate reads.
Which blueprints learn from the output is a per-chunk flag (`learning`): TRAIN and FINE_TUNE
always learn, and a blending mode learns where the surgery says so (`modes.LEARNING`: a
`module` seed learns in BLENDING, HOLDING and INTEGRATED). A frozen blueprint has its weights
frozen, not its input: the output's gradient flows through it to the host's chunk and the
layers before it (`modes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lifecycle_es.errors import ConfigError, UsageError
from projections.moe import Strategy
from projections.moe._protocol import check_layer
from projections.seeds.blueprints import Blueprint, BlueprintLibrary, default_library
from projections.seeds.modes import FINE_TUNE_ALPHA, SeedMode

__all__ = ["HostLayer", "SeedLayer"]

_BLENDING = frozenset({SeedMode.GRAFT, SeedMode.HOLD, SeedMode.FINE_TUNE, SeedMode.FOSSIL})
_LEARNING = frozenset({SeedMode.TRAIN, SeedMode.FINE_TUNE})
"""Modes whose blueprint weights always learn: TRAIN from the seed loss, FINE_TUNE from the output."""


@runtime_checkable
class HostLayer(Protocol):
    """What a seed-host layer needs from the layer it wraps: an output width and a forward."""

    out_features: int
    """Width of the last dim of the output; the chunks divide it."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return the host's output, `[..., out_features]`."""
        ...


class SeedLayer(nn.Module):
    """A host layer plus one seed slot per output chunk, each running a hosted blueprint."""

    modes: torch.Tensor
    kinds: torch.Tensor
    alpha: torch.Tensor
    learning: torch.Tensor

    def __init__(
        self,
        host: nn.Module,
        *,
        chunks: int,
        library: BlueprintLibrary | None = None,
        blueprints: Sequence[str] | None = None,
        strategy: Strategy = "masked",
        generator: torch.Generator | None = None,
    ) -> None:
        """Wrap `host`, hosting `blueprints` (names in `library`; default: all of it).

        Under `masked` every hosted blueprint has one row of weights per chunk from the start,
        drawn from `generator`; under `resize` it has none until a seed germinates.
        """
        super().__init__()
        check_layer(0, host, HostLayer)
        width = int(host.out_features)  # type: ignore[arg-type]  # checked by the protocol
        _check_chunks(chunks, width, strategy)
        self.library = library if library is not None else default_library()
        self.hosted = _hosted(self.library, blueprints)
        self.host, self.chunks, self.width, self.strategy = host, chunks, width // chunks, strategy
        device = next(host.parameters(), torch.empty(0)).device
        rows = chunks if strategy == "masked" else 0
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self._init_weights(rows, device, gen)
        self._init_chunk_state(chunks, device)

    def _init_weights(self, rows: int, device: torch.device, gen: torch.Generator) -> None:
        """Give each hosted blueprint `rows` rows of weights, and note the chunk each serves."""
        self.weights = nn.ModuleDict(
            {
                b.name: nn.ParameterDict(
                    {k: nn.Parameter(v.to(device)) for k, v in sorted(b.init(rows, self.width, gen).items())}
                )
                for b in self.hosted
            }
        )
        self.row_chunks: dict[str, list[int]] = {b.name: list(range(rows)) for b in self.hosted}
        """Per hosted blueprint, the chunk each row of its weights serves (host side)."""
        self._row_index = {b.name: torch.arange(rows, device=device) for b in self.hosted}

    def _init_chunk_state(self, chunks: int, device: torch.device) -> None:
        """Every chunk starts in HOST mode with no blueprint, alpha 0 and nothing learning."""
        self.register_buffer("modes", torch.zeros(chunks, dtype=torch.long, device=device))
        self.register_buffer("kinds", torch.full((chunks,), -1, dtype=torch.long, device=device))
        self.register_buffer("alpha", torch.zeros(chunks, dtype=torch.float32, device=device))
        self.register_buffer("learning", torch.zeros(chunks, dtype=torch.bool, device=device))
        """Per chunk, whether its blueprint's weights learn (`set_modes`)."""
        self.present = frozenset({SeedMode.HOST})
        """The modes some chunk is in (host side: which parts of the forward to run)."""
        self.any_active = False
        """Whether any chunk's mode is past HOST (host side; False takes the host's own forward)."""
        self._learns: list[bool] = [False] * chunks
        """Per chunk, the learning flag last given to `set_modes` (host side)."""
        self.any_learning = False
        """Whether some chunk past HOST has a learning blueprint (host side)."""
        self.any_frozen = False
        """Whether some chunk past HOST has a frozen blueprint (host side)."""
        self._no_loss = torch.zeros((), device=device)
        self.seed_loss = self._no_loss
        self.last_reconstruction = torch.zeros(chunks, device=device)

    # -- what surgery edits --------------------------------------------------------------------

    def slot_parameters(self, blueprint: str) -> dict[str, nn.Parameter]:
        """Return a hosted blueprint's slot-major weights by name; row i serves `row_chunks[blueprint][i]`."""
        return dict(self._weights_of(blueprint).items())

    def replace_parameters(
        self, blueprint: str, params: Mapping[str, nn.Parameter], chunks: Sequence[int]
    ) -> None:
        """Swap in resized weights of a hosted blueprint, whose rows serve `chunks`, in order."""
        current = self._weights_of(blueprint)
        if set(params) != set(current) or any(int(p.shape[0]) != len(chunks) for p in params.values()):
            raise UsageError(f"{blueprint}: expected {sorted(current)} with {len(chunks)} rows each")
        for name, param in params.items():
            current[name] = param
        self.row_chunks[blueprint] = list(chunks)
        device = self.modes.device
        self._row_index[blueprint] = torch.tensor(list(chunks), dtype=torch.long, device=device)

    def set_modes(
        self, modes: Sequence[int], kinds: Sequence[int], learning: Sequence[bool] | None = None
    ) -> None:
        """Copy each chunk's `SeedMode`, hosted-blueprint index (-1: none) and learning flag to the device.

        A chunk's blueprint learns if its mode is TRAIN or FINE_TUNE or its `learning` flag is
        set; `learning=None` keeps the flags last given (so a caller that briefly changes the
        modes, as an ablation does, and sets them back leaves the surgery's flags alone).
        """
        if learning is not None:
            if len(learning) != self.chunks:
                raise UsageError(f"learning needs one flag per chunk ({self.chunks}), got {len(learning)}")
            self._learns = [bool(flag) for flag in learning]
        learns = [SeedMode(m) in _LEARNING or flag for m, flag in zip(modes, self._learns, strict=True)]
        packed = torch.tensor([list(modes), list(kinds), learns], dtype=torch.long)
        self.modes.copy_(packed[0], non_blocking=True)
        self.kinds.copy_(packed[1], non_blocking=True)
        self.learning.copy_(packed[2].bool(), non_blocking=True)
        self.present = frozenset(SeedMode(m) for m in modes)
        self.any_active = self.present != {SeedMode.HOST}
        self.any_learning = any(m != SeedMode.HOST and flag for m, flag in zip(modes, learns, strict=True))
        self.any_frozen = any(m != SeedMode.HOST and not flag for m, flag in zip(modes, learns, strict=True))

    def _weights_of(self, blueprint: str) -> nn.ParameterDict:
        if blueprint not in self.weights:
            raise UsageError(f"blueprint {blueprint!r} is not hosted; hosted: {', '.join(self.weights)}")
        weights = self.weights[blueprint]
        assert isinstance(weights, nn.ParameterDict)
        return weights

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the host's output with each chunk's seed applied as its mode says."""
        out: torch.Tensor = self.host(x)
        present = self.present
        if not self.any_active:
            return out
        chunks = out.reshape(-1, self.chunks, self.width)
        training = SeedMode.TRAIN in present
        train = (self.modes == SeedMode.TRAIN)[None, :, None]
        grown = self._run_blueprints(torch.where(train, chunks.detach(), chunks) if training else chunks)
        if training:
            error = (grown - chunks.detach()).square().mean(dim=(0, 2))
            self.last_reconstruction = error.detach()
            self.seed_loss = (error * train[0, :, 0]).sum()
        else:
            self.seed_loss = self._no_loss
        if not present & _BLENDING:
            return out
        blended = self._blend(chunks, grown)
        if present <= _BLENDING:  # every chunk blends: no selection needed
            return blended.reshape(out.shape)
        return torch.where((self.modes >= SeedMode.GRAFT)[None, :, None], blended, chunks).reshape(out.shape)

    def _blend(self, chunks: torch.Tensor, grown: torch.Tensor) -> torch.Tensor:
        """`(1-a)*host + a*blueprint` per chunk, a by mode (the weights' freezing is `_frozen`'s)."""
        modes = self.modes
        alpha = torch.where(
            (modes == SeedMode.GRAFT) | (modes == SeedMode.HOLD),
            self.alpha,
            torch.where(modes == SeedMode.FINE_TUNE, FINE_TUNE_ALPHA, (modes == SeedMode.FOSSIL).float()),
        )[None, :, None]
        return (1 - alpha) * chunks + alpha * grown

    def _frozen(self, blueprint: str, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """A blueprint's weights with the rows of frozen seeds detached (`learning` says which learn).

        The gradient still flows through a frozen row to its input (the host's chunk and every
        layer before it); only the row's own weights get none. With every active row alike
        (host side: `any_learning`, `any_frozen`) it is the weights or their detached view, no copy.
        """
        weights = self.slot_parameters(blueprint)
        if not self.any_learning:
            return {k: w.detach() for k, w in weights.items()}
        if not self.any_frozen:
            return dict(weights)
        rows = self.learning if index is None else self.learning[index]
        return {
            k: torch.where(rows.view(-1, *[1] * (w.dim() - 1)), w, w.detach()) for k, w in weights.items()
        }

    def _run_blueprints(self, chunks: torch.Tensor) -> torch.Tensor:
        """Return every chunk's blueprint output (zeros where no blueprint runs): one call per blueprint."""
        grown = torch.zeros_like(chunks)
        for k, blueprint in enumerate(self.hosted):
            served = self.row_chunks[blueprint.name]
            if not served:
                continue
            if len(served) == self.chunks and self.strategy == "masked":  # row i is chunk i
                full = blueprint.apply(self._frozen(blueprint.name, None), chunks)
            else:
                index = self._row_index[blueprint.name]
                if index.device != chunks.device:  # the layer was moved after surgery set the rows
                    index = self._row_index[blueprint.name] = index.to(chunks.device)
                weights = self._frozen(blueprint.name, index)
                full = torch.zeros_like(chunks).index_copy(
                    1, index, blueprint.apply(weights, chunks[:, index])
                )
            grown = (
                full if len(self.hosted) == 1 else torch.where((self.kinds == k)[None, :, None], full, grown)
            )
        return grown


def _check_chunks(chunks: object, width: int, strategy: object) -> None:
    """Refuse a chunk count that does not divide the host's width, and an unknown strategy."""
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1 or width % chunks:
        raise ConfigError(f"chunks must be an int >= 1 dividing out_features={width}, got {chunks!r}")
    if strategy not in ("masked", "resize"):
        raise ConfigError(f"strategy must be 'masked' or 'resize', got {strategy!r}")


def _hosted(library: BlueprintLibrary, blueprints: Sequence[str] | None) -> tuple[Blueprint, ...]:
    """The blueprints a layer hosts: those named (default: all of `library`), each once."""
    hosted = tuple(library.get(n) for n in (blueprints if blueprints is not None else library.names()))
    if not hosted or len({b.name for b in hosted}) != len(hosted):
        raise ConfigError("a seed layer hosts at least one blueprint, each once")
    return hosted
