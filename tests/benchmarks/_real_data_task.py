"""The real-data benchmark's task: scikit-learn's digits, learned class-incrementally in five phases.

`load_digits` is 1797 8x8 grey images of the digits 0-9, shipped inside the scikit-learn wheel
(nothing is downloaded). A stratified split seeded from the run's seed holds out 30% for test.
Classes arrive in three phases (0-3, then 4-6, then 7-9), then 0-3 are dropped (training sees
4-9 only) and then every class returns. Each step draws a batch, with replacement, from the
training images of the phase's classes, from a generator seeded by the run's seed, so the
lifecycle run and every static baseline of one seed see the same batches. With `validation`,
a quarter of the training images (stratified, seeded) is held out and `test` returns it: for
choosing settings without looking at the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DROPPED", "PHASES", "Digits", "Phase"]


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of the schedule: its name and the classes training draws from."""

    name: str
    classes: tuple[int, ...]


PHASES = (
    Phase("learn 0-3", (0, 1, 2, 3)),
    Phase("add 4-6", tuple(range(7))),
    Phase("add 7-9", tuple(range(10))),
    Phase("drop 0-3", tuple(range(4, 10))),
    Phase("return all", tuple(range(10))),
)
DROPPED = (0, 1, 2, 3)
"""The classes the drop phase leaves out, whose accuracy measures forgetting."""
CLASSES = 10
PIXELS = 64


class Digits:
    """The digits split for one seed, with a seeded batch stream."""

    def __init__(self, seed: int, *, batch_size: int, validation: bool = False) -> None:
        from sklearn.datasets import load_digits  # the bench extra's one dependency
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(
            x / 16.0, y, test_size=0.3, stratify=y, random_state=seed
        )
        if validation:  # a quarter of the training images held out and measured instead of the test split
            x_train, x_test, y_train, y_test = train_test_split(
                x_train, y_train, test_size=0.25, stratify=y_train, random_state=seed
            )
        self.x_train = torch.tensor(x_train, dtype=torch.float32)
        self.y_train = torch.tensor(y_train, dtype=torch.long)
        self.x_test = torch.tensor(x_test, dtype=torch.float32)
        self.y_test = torch.tensor(y_test, dtype=torch.long)
        self.batch_size = batch_size
        self._g = torch.Generator().manual_seed(10_000 + seed)

    def batch(self, phase: Phase) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one training batch of the phase's classes: images and labels."""
        pool = torch.nonzero(_among(self.y_train, phase.classes)).squeeze(1)
        pick = pool[torch.randint(len(pool), (self.batch_size,), generator=self._g)]
        return self.x_train[pick], self.y_train[pick]

    def test(self, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out images of `classes` and their labels."""
        keep = _among(self.y_test, classes)
        return self.x_test[keep], self.y_test[keep]


def _among(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(classes))
