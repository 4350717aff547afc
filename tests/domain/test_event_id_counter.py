"""The event id generator's cheap path (counter below 2**48) and its general path agree."""

from __future__ import annotations

import itertools
import uuid

import pytest

from lifecycle_es import _ids


@pytest.mark.parametrize("start", [0, (1 << 48) - 2, (1 << 60) + 5])
def test_ids_around_the_cheap_path_boundary_are_distinct_canonical_uuids(
    start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids minted on either side of the counter's 2**48 boundary are canonical, distinct UUID text
    whose last 16 hex digits (after the variant nibble) spell the counter."""
    monkeypatch.setattr(_ids, "_counter", itertools.count(start))
    ids = [_ids.new_event_id() for _ in range(4)]
    assert len(set(ids)) == 4
    for n, text in enumerate(ids, start):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.variant == uuid.RFC_4122
        assert text.startswith(_ids._prefix)
        assert int(text[len(_ids._prefix) :].replace("-", ""), 16) == n & ((1 << 60) - 1)
