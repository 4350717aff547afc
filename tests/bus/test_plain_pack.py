"""The Redis log's check-by-encoding path (`bus._plain_pack`) against the checking copy."""

from __future__ import annotations

import math
from collections import OrderedDict
from enum import StrEnum
from typing import Any

import pytest

from bus._plain_pack import pack_plain, with_seq
from bus._records import normalize, pack_msgpack


class Color(StrEnum):
    RED = "red"


PLAIN: dict[str, Any] = {
    "kind": "GateChecked",
    "step": 3,
    "big": (1 << 64) - 1,
    "small": -(1 << 63),
    "ts": 1.5,
    "passed": True,
    "causation": None,
    "observed": {"loss": 0.004, "nested": [[{"a": -0.0}], []]},
}


def test_plain_records_store_the_bytes_the_checking_copy_stores() -> None:
    """A plain record packs to exactly what normalize plus the usual encoding gives."""
    payloads = pack_plain([PLAIN, {"x": "y"}], 7)
    expected = [pack_msgpack(with_seq(normalize(r, i), 7 + i)) for i, r in enumerate([PLAIN, {"x": "y"}])]
    assert payloads == expected


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        [{"a": -math.inf}],
        {1: 2},
        b"bytes",
        Color.RED,
        (1, 2),
        1 << 64,
        -(1 << 63) - 1,
        OrderedDict(a=1),
        "\ud800",
        [[[[[[[1]]]]]]],
    ],
)
def test_values_normalize_must_convert_or_refuse_take_the_slow_path(value: object) -> None:
    """Anything not plain as it stands is left to normalize, which converts it or names it."""
    assert pack_plain([{"ok": 1}, {"v": value}], 1) is None


def test_records_that_are_not_plain_dicts_take_the_slow_path() -> None:
    """A mapping that is not a dict, a record with the reserved key, or one with a seq of its own
    (which normalize checks and then drops) goes to normalize."""
    assert pack_plain([OrderedDict(a=1)], 1) is None
    assert pack_plain([{"_batch": 1}], 1) is None
    assert pack_plain([{"seq": 0, "x": 1}], 1) is None
