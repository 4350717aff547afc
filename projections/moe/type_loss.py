"""Loss per token type between checkpoints: the need signal a load-balancing loss cannot fake.

Routing statistics say how tokens are spread over experts, not whether the model fits them: a
load-balancing loss makes routing even whatever the need. The training loss of each token type
does say it. `TypeLossTracker.record(token_types, losses)` keeps references to a step's
per-token losses (no device work, no host sync); at a checkpoint `collect` folds them into a
sum and a count per type and returns `need_metrics`: the *type loss gap*, the worst type's mean
loss over the mean loss of all types seen, minus 1 (0 when every type is fit equally well). It
is dimensionless, so one threshold serves a regression loss and a cross-entropy alike: a gap of
1 means one kind of token costs twice the average, which more capacity can serve where it is
short (the types that share an expert are fit worse than those that have one of their own).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lifecycle_es.errors import ConfigError, UsageError
from projections.moe._protocol import check_token_types

__all__ = ["TYPE_LOSS_GAP", "TypeLossTracker", "need_metrics"]

TYPE_LOSS_GAP = "type_loss_gap"
"""The user metric `ExpertLifecycle` records (`user.type_loss_gap`): worst type's loss / mean - 1."""
MIN_TOKENS = 8
"""Types with fewer tokens in an interval are left out of the gap: their mean is mostly noise."""


class TypeLossTracker:
    """Sums each token type's training loss between two checkpoints."""

    def __init__(self, *, num_types: int) -> None:
        """Track losses of tokens of `num_types` types (ids 0..num_types-1)."""
        if isinstance(num_types, bool) or not isinstance(num_types, int) or num_types < 1:
            raise ConfigError(f"num_types must be an int >= 1, got {num_types!r}")
        self.num_types = num_types
        self._kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None

    def record(self, token_types: torch.Tensor, losses: torch.Tensor) -> None:
        """Keep one step's per-token losses ([tokens] float) with the tokens' types ([tokens] long)."""
        check_token_types(token_types)
        if tuple(losses.shape) != tuple(token_types.shape) or losses.dim() != 1:
            raise UsageError(
                f"losses must be one value per token, shape {tuple(token_types.shape)}, "
                f"got {tuple(losses.shape)}"
            )
        self._kept.append((token_types, losses.detach()))

    def _fold(self) -> None:
        if not self._kept:
            return
        types = torch.cat([t for t, _ in self._kept]).clamp(0, self.num_types - 1)
        losses = torch.cat([v for _, v in self._kept]).to(types.device, torch.float64)
        self._kept.clear()
        sums = torch.zeros(self.num_types, dtype=torch.float64, device=types.device)
        sums.index_add_(0, types, losses)
        counts = torch.bincount(types, minlength=self.num_types).to(torch.float64)
        self._sums = sums if self._sums is None else self._sums + sums
        self._counts = counts if self._counts is None else self._counts + counts

    def sum_across(self, reduce: Callable[[dict[str, torch.Tensor]], object]) -> None:
        """Replace this interval's sums and counts by their sum over every rank (as `BasinTracker`'s)."""
        self._fold()
        shared = {
            "type_loss.sums": torch.zeros(self.num_types, dtype=torch.float64)
            if self._sums is None
            else self._sums.cpu(),
            "type_loss.counts": torch.zeros(self.num_types, dtype=torch.float64)
            if self._counts is None
            else self._counts.cpu(),
        }
        reduce(shared)
        self._sums, self._counts = shared["type_loss.sums"], shared["type_loss.counts"]

    def collect(self) -> dict[str, float]:
        """Return the interval's `need_metrics` (nothing if no loss was recorded) and start the next."""
        self._fold()
        if self._sums is None or self._counts is None:
            return {}
        sums, counts = self._sums.tolist(), self._counts.tolist()
        self._sums = self._counts = None
        return need_metrics(sums, counts)


def need_metrics(sums: list[float], counts: list[float]) -> dict[str, float]:
    """Return the type loss gap of per-type loss sums and token counts (nothing if undefined).

    Types with fewer than `MIN_TOKENS` tokens are left out; with fewer than two types left, or
    a mean loss of 0 or a non-finite one, there is no gap to report.
    """
    means = [s / c for s, c in zip(sums, counts, strict=True) if c >= MIN_TOKENS]
    if len(means) < 2:
        return {}
    average = math.fsum(means) / len(means)
    if not math.isfinite(average) or average <= 0.0:
        return {}
    return {TYPE_LOSS_GAP: max(means) / average - 1.0}
