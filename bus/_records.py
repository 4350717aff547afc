"""What a record may hold: validation into plain values, copying, and the size limit.

Every backend stores the same plain values, so a record reads back identically from memory,
JSONL and Redis (and a mirror can be compared to its primary record by record). The rules are
the intersection of JSON and msgpack: str keys; None, bool, int in [-2**63, 2**64), finite
float, str, and lists (tuples become lists) and mappings of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import msgpack

from bus.errors import InvalidRecordError, RecordTooLargeError

Record = Mapping[str, Any]

DEFAULT_MAX_RECORD_BYTES = 1 << 20
"""Default limit on one record's encoding (1 MiB), well under Redis's 512 MB bulk limit."""

pack_msgpack = msgpack.Packer(use_bin_type=True).pack
"""msgpack-encode a normalized record. One shared Packer is about twice as fast as
`msgpack.packb` (which builds a Packer per call) and is safe across threads: its C `pack`
holds the GIL throughout, as plain values never call back into Python."""

RESERVED_KEY = "_batch"
"""A top-level key no record may hold: the JSONL log marks a batch's first line with it."""

_MAX_DEPTH = 64
_MIN_INT = -(1 << 63)
_END_INT = 1 << 64


def normalize(record: object, index: int) -> dict[str, Any]:
    """Return a plain deep copy of `record` without any 'seq' field, or raise
    `InvalidRecordError` naming the record's position in the batch and the field."""
    if not isinstance(record, Mapping):
        raise InvalidRecordError(f"record {index} of the batch is a {type(record).__name__}, not a mapping")
    out = _mapping(record, index, "", 0)
    out.pop("seq", None)
    if RESERVED_KEY in out:
        raise InvalidRecordError(f"record {index} of the batch uses the reserved key {RESERVED_KEY!r}")
    return out


def _mapping(value: Mapping[Any, Any], index: int, field: str, depth: int) -> dict[str, Any]:
    """Copy a mapping; scalar values are checked inline because most values are scalars
    and a function call per value would double the cost of an append."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str:
            key = _key(key, index, repr(field) if field else "record")
        kind = type(item)
        if (
            kind is str
            or kind is bool
            or item is None
            or (kind is int and _MIN_INT <= item < _END_INT)
            or (kind is float and item - item == 0.0)  # false for NaN and +-inf
        ):
            out[key] = item
        else:
            out[key] = _value(item, index, field or key, depth)
    return out


def normalize_batch(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Normalize every record of a batch, so a bad one raises before anything is written."""
    if isinstance(records, Mapping | str | bytes):
        raise InvalidRecordError("append takes a sequence of records, not a single record")
    return [normalize(record, i) for i, record in enumerate(records)]


def check_size(encoded_len: int, index: int, limit: int) -> None:
    """Raise `RecordTooLargeError` when one encoded record exceeds the log's limit."""
    if encoded_len > limit:
        raise RecordTooLargeError(index, encoded_len, limit)


def copy_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a stored (already plain) record that the caller may mutate freely."""
    return {k: _copy(v) if type(v) in (dict, list) else v for k, v in record.items()}


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _key(key: object, index: int, where: str) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):  # str subclasses (StrEnum) are stored as their plain value
        return key[:]
    raise InvalidRecordError(f"record {index} of the batch has a non-str key {key!r} in {where}")


def _value(value: Any, index: int, field: str, depth: int) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if _MIN_INT <= value < _END_INT:
            return value
        _reject(index, field, "an integer outside the 64-bit range")
    if kind is float:
        if value - value == 0.0:  # false for NaN and +-inf, which JSON cannot hold
            return value
        _reject(index, field, f"the non-finite float {value!r}")
    if depth >= _MAX_DEPTH:
        _reject(index, field, f"values nested deeper than {_MAX_DEPTH} levels")
    if kind is dict:
        return _mapping(value, index, field, depth + 1)
    if kind is list or kind is tuple:
        return [_value(v, index, field, depth + 1) for v in value]
    return _subclass_value(value, index, field, depth)


def _subclass_value(value: Any, index: int, field: str, depth: int) -> Any:
    """Plain values for subclasses (IntEnum, StrEnum, OrderedDict, ...); reject the rest."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _value(int(value), index, field, depth)
    if isinstance(value, float):
        return _value(float(value), index, field, depth)
    if isinstance(value, str):
        return value[:]
    if isinstance(value, Mapping):
        return _value(dict(value), index, field, depth)
    if isinstance(value, list | tuple):
        return _value(list(value), index, field, depth)
    _reject(index, field, f"a value of type {type(value).__name__}")


def _reject(index: int, field: str, what: str) -> NoReturn:
    raise InvalidRecordError(
        f"record {index} of the batch holds {what} in field {field!r}, "
        "which JSON and msgpack cannot both store"
    )
