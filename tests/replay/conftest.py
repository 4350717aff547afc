"""Fixtures of the replay tests: the log backends a run is written to and read back from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.testing import RedisServer


@pytest.fixture(params=["jsonl", pytest.param("redis", marks=pytest.mark.redis_server)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A `bus.open` URL on a fresh JSONL directory, or on the session's real redis-server."""
    if request.param == "jsonl":
        return f"jsonl://{tmp_path / 'runs'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url
