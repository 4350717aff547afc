"""What the seeds demo measures at each evaluation: every live seed's metrics, from the held-out batch.

A seed's contribution is measured, not estimated: the held-out loss with its chunk as the mode
says against the same loss with its chunk set back to the host's (`SeedMode.HOST`), everything
else unchanged. `contribution` and `performance_delta` are that difference relative to the
loss without it (positive: the seed helps); `host_regression` is its negative part. The
names are the ones the heuristic, the policy's observation and the gates of both specs read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lifecycle_es.registry import EntityState
from projections.seeds import SeedLayer, SeedMode, mode_of
from replay.demo.seeds.model import SeedsModel, SeedsTask

__all__ = ["SeedMeter"]

_BLENDED = frozenset({SeedMode.GRAFT, SeedMode.HOLD, SeedMode.FINE_TUNE, SeedMode.FOSSIL})
_WINDOW = 5
"""Evaluations the stability score and the plateau look back over."""


@dataclass
class _Marks:
    """What a seed's metrics are measured against, taken when it entered its state."""

    state: str = ""
    reconstruction: float = 0.0
    accuracy: float = 0.0


@dataclass
class SeedMeter:
    """Measures the held-out loss and each live seed's metrics at an evaluation."""

    model: SeedsModel
    task: SeedsTask
    budget: float
    """The parameter budget the `module` spec's growth gate reads."""
    losses: list[float] = field(default_factory=list)
    marks: dict[str, _Marks] = field(default_factory=dict)

    def to_plain(self) -> dict[str, Any]:
        """Return the losses and marks as plain data, for a checkpoint."""
        marks = {e: [m.state, m.reconstruction, m.accuracy] for e, m in self.marks.items()}
        return {"losses": list(self.losses), "marks": marks}

    def load_plain(self, plain: dict[str, Any]) -> None:
        """Restore `to_plain()`'s losses and marks."""
        self.losses = [float(x) for x in plain["losses"]]
        self.marks = {e: _Marks(str(m[0]), float(m[1]), float(m[2])) for e, m in plain["marks"].items()}

    def held_out(self) -> float:
        """Return the held-out loss of the model as it is."""
        with torch.no_grad():
            return float((self.model(self.task.eval_x) - self.task.eval_y).square().mean())

    def measure(self, seeds: list[EntityState], free_slots: int) -> dict[str, dict[str, float]]:
        """Return each seed's metrics, measuring the held-out loss once and once more per blended seed."""
        loss = self.held_out()
        self.losses.append(loss)
        return {s.entity: self._one(s, loss, free_slots) for s in seeds}

    def _one(self, seed: EntityState, loss: float, free_slots: int) -> dict[str, float]:
        layer, chunk = self.model.seed_layer, int(seed.slot or 0)
        mode = mode_of(seed.spec, seed.state)
        reconstruction = float(layer.last_reconstruction[chunk]) if mode == SeedMode.TRAIN else 0.0
        marks = self.marks.setdefault(seed.entity, _Marks())
        if marks.state != seed.state:  # entered a new state: what later values compare with
            marks.state, marks.reconstruction, marks.accuracy = seed.state, reconstruction, _accuracy(loss)
        contribution = self._contribution(layer, chunk, loss) if mode in _BLENDED else 0.0
        stability = self._stability()
        training = mode == SeedMode.TRAIN
        base = marks.reconstruction if training else loss
        now = reconstruction if training else loss
        return {
            "current_loss": now,
            "loss_delta": self._delta() if not training else (now - base) / max(base, 1e-12),
            "reconstruction_loss": reconstruction,
            "contribution": contribution,
            "performance_delta": contribution,
            "host_regression": max(0.0, -contribution),
            "stability_score": stability,
            "error_rate": 0.0 if torch.isfinite(torch.tensor(loss)) else 1.0,
            "total_improvement": contribution,
            "final_stability": stability,
            # the `module` spec's gates
            "available_slots": float(free_slots),
            "current_params": float(sum(p.numel() for p in self.model.parameters())),
            "proposed_params": 0.0,
            "param_budget": self.budget,
            "epochs_trained": float(len(self.losses)),
            "loss_at_instantiation": marks.reconstruction,
            "module_grad_norm": self._grad_norm(layer, chunk) if training else 1.0,
            "host_accuracy_at_blend": marks.accuracy,
            "current_accuracy": _accuracy(loss),
            "improvement": contribution,
            "module_contribution": contribution,
        }

    def _contribution(self, layer: SeedLayer, chunk: int, loss: float) -> float:
        """Return (loss without the seed - loss with it) / loss without it."""
        modes, kinds = layer.modes.tolist(), layer.kinds.tolist()
        ablated = list(modes)
        ablated[chunk] = int(SeedMode.HOST)
        layer.set_modes(ablated, kinds)
        try:
            without = self.held_out()
        finally:
            layer.set_modes(modes, kinds)
        return (without - loss) / max(without, 1e-12)

    def _delta(self) -> float:
        """The held-out loss's relative change per evaluation, over the last `_WINDOW` evaluations."""
        if len(self.losses) < _WINDOW:
            return -1.0  # too early to call anything a plateau
        old, new = self.losses[-_WINDOW], self.losses[-1]
        return (new - old) / max(old, 1e-12) / (_WINDOW - 1)

    def _stability(self) -> float:
        """1 - 10 x the held-out loss's relative change per evaluation, in [0, 1]: 1 when settled."""
        return max(0.0, 1.0 - 10.0 * abs(self._delta()))

    @staticmethod
    def _grad_norm(layer: SeedLayer, chunk: int) -> float:
        """The norm of the last backward's gradient of the chunk's blueprint rows (0 if none)."""
        for name, rows in layer.row_chunks.items():
            if chunk in rows:
                row = rows.index(chunk)
                grads = [p.grad[row] for p in layer.slot_parameters(name).values() if p.grad is not None]
                return float(sum(g.square().sum() for g in grads) ** 0.5) if grads else 0.0
        return 0.0


def _accuracy(loss: float) -> float:
    """A regression's stand-in for accuracy, in (0, 1]: 1 / (1 + loss)."""
    return 1.0 / (1.0 + loss)
