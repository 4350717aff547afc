"""Fixtures of the demo tests: demo runs trained once per session and shared by the tests.

The emergent runs are 2000 steps (two thirds of the default): every phase of the task, a few
seconds on one CPU thread. Which actions the coordinator takes in them depends on float
results that differ between CPUs, so tests on them assert only what holds for any decisions;
every action comes from the scheduled runs, whose decider reads no float.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from _trained import SCHEDULED_STEPS, SHORT_STEPS, Trained, train

from replay.demo import DemoOptions


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """The demo's tensors are tiny: one intra-op thread, as the `demo` command itself uses."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def masked(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The shortened demo under the masked strategy."""
    return train(tmp_path_factory.mktemp("masked"), DemoOptions(steps=SHORT_STEPS))


@pytest.fixture(scope="session")
def masked_again(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The same run again, in another directory, under the same run id."""
    return train(tmp_path_factory.mktemp("again"), DemoOptions(steps=SHORT_STEPS))


@pytest.fixture(scope="session")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The shortened demo under the resize strategy."""
    return train(tmp_path_factory.mktemp("resize"), DemoOptions(steps=SHORT_STEPS, strategy="resize"))


@pytest.fixture(scope="session")
def scheduled_masked(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A short demo run under the masked strategy whose actions come from the seeded decider."""
    return train(
        tmp_path_factory.mktemp("scheduled-masked"), DemoOptions(steps=SCHEDULED_STEPS), scheduled=True
    )


@pytest.fixture(scope="session")
def scheduled_resized(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A short demo run under the resize strategy whose actions come from the seeded decider."""
    return train(
        tmp_path_factory.mktemp("scheduled-resize"),
        DemoOptions(steps=SCHEDULED_STEPS, strategy="resize"),
        scheduled=True,
    )
