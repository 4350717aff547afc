"""Checking records by encoding them: the Redis log's payloads of records already plain.

`normalize` checks and copies a record in Python, value by value, and the Redis log then
encodes the copy. For a record whose values are plain as they stand (the common case: records a
codec built from validated events) both jobs can be done at C speed on the payload itself:

- msgpack with `strict_types` packs only the exact types (dict, list, str, int, float, bool,
  None, and bytes-likes): a subclass, tuple or set is a TypeError, an int outside
  [-2**63, 2**64) an OverflowError and a lone surrogate a UnicodeEncodeError;
- a typed msgspec decode of that payload refuses what msgpack takes but a record may not hold:
  a key that is not a str, bytes and ext values, NaN and the infinities, and nesting deeper
  than `_DEPTH` containers.

Whatever either refuses goes to `normalize`, which converts it (a StrEnum, a tuple) or raises
the one-sentence `InvalidRecordError` naming the record and the field; so the fast path
accepts only what `normalize` accepts unchanged, and stores the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any, Union

import msgpack
import msgspec

from bus._records import RESERVED_KEY

__all__ = ["pack_plain", "with_seq"]

_DEPTH = 6
"""Containers below the record the typed decode follows; deeper records take the slow path."""

_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""A finite float: NaN fails both bounds, the infinities one."""


def _plain_type(depth: int) -> Any:
    """The type of a plain value nested at most `depth` containers deep (msgspec has no
    recursive aliases on this Python, so the levels are spelled out)."""
    scalar: Any = Union[None, bool, int, _Finite, str]  # noqa: UP007 (a runtime type expression)
    value = scalar
    for _ in range(depth):
        value = Union[scalar, list.__class_getitem__(value), dict.__class_getitem__((str, value))]  # noqa: UP007
    return value


_PLAIN = msgspec.msgpack.Decoder(dict.__class_getitem__((str, _plain_type(_DEPTH))))
_pack_strict = msgpack.Packer(use_bin_type=True, strict_types=True).pack
_REFUSED = (TypeError, ValueError, OverflowError, msgspec.ValidationError)
"""What the strict packer and the typed decode raise for a value they do not take as is."""


def pack_plain(records: Sequence[Any], first_seq: int) -> list[bytes] | None:
    """The Redis payloads (msgpack, seq first, seqs from `first_seq`) of records that are plain
    as they stand, or None when any record is not: `normalize` then converts or refuses it."""
    payloads: list[bytes] = []
    try:
        for seq, record in enumerate(records, first_seq):
            if type(record) is not dict or RESERVED_KEY in record or "seq" in record:
                return None  # a record's own seq is checked, then dropped, by `normalize`
            payload = _pack_strict(with_seq(record, seq))
            _PLAIN.decode(payload)
            payloads.append(payload)
    except _REFUSED:
        return None
    return payloads


def with_seq(record: dict[str, Any], seq: int) -> dict[str, Any]:
    """The record as stored: `seq` first, then its other fields in order (a 'seq' the record
    holds itself, which `normalize` has checked, gives up its value, as `normalize` drops it)."""
    stored = {"seq": seq, **record}
    stored["seq"] = seq
    return stored
