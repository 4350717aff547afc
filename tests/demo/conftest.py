"""Fixtures of the demo tests: demo runs trained once per session and shared by the tests.

A 2000-step run (two thirds of the default) is the shortest in which the default seed shows
every action under both strategies; it takes a few seconds on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from _trained import SHORT_STEPS, Trained, train

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
