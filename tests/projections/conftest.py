"""Fixtures shared by the projection tests: snapshot round trips through JSON and torch."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import pytest
import torch

from projections import Snapshot

RoundTrip = Callable[[Snapshot], Snapshot]


def _through_json(snapshot: Snapshot) -> Snapshot:
    text = json.dumps({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state})
    return Snapshot(**json.loads(text))


def _through_torch(snapshot: Snapshot) -> Snapshot:
    buffer = io.BytesIO()
    torch.save({"kind": snapshot.kind, "seq": snapshot.seq, "state": snapshot.state}, buffer)
    buffer.seek(0)
    return Snapshot(**torch.load(buffer, weights_only=True))


@pytest.fixture(params=["json", "torch"])
def round_trip(request: pytest.FixtureRequest) -> RoundTrip:
    """A snapshot written out and read back, as a checkpoint would: JSON, or torch weights_only."""
    return _through_json if request.param == "json" else _through_torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tensors are tiny: one intra-op thread, so a busy 2-core machine does not make OpenMP spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
