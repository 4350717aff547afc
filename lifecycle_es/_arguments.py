"""Checks of public-API arguments at the boundary, so a wrong type is one of our typed errors.

Without them a list where a name belongs fails deep inside as `TypeError: unhashable type`, a
huge int as `OverflowError`; here each is a one-sentence error naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lifecycle_es.errors import LifecycleError, UsageError

__all__ = [
    "INT64_MAX",
    "MAX_DEPTH",
    "check_count",
    "check_mapping",
    "check_text",
    "first_misfit",
    "first_non_json",
    "json_mapping",
    "plain_text",
    "shown",
]

INT64_MAX = 2**63 - 1
"""The largest int a record may hold (JSON and msgpack readers both store it)."""

MAX_DEPTH = 64
"""How deeply JSON values given to the API may nest; deeper is refused before it can recurse."""


def check_text(value: object, what: str, error: type[LifecycleError] = UsageError) -> str:
    """Return `value` if it is a str, else raise `error` naming `what`."""
    if not isinstance(value, str):
        raise error(f"{what} must be a str, got {type(value).__name__}")
    return value


def plain_text(value: object, what: str, error: type[LifecycleError] = UsageError) -> str:
    """Return `value` as a plain str (a str subclass becomes its value), else raise `error`.

    For values stored as they are: events built unvalidated go to the log unchecked.
    """
    if type(value) is str:  # the common case, answered without another call
        return value
    return str(check_text(value, what, error))


def check_count(value: object, what: str, error: type[LifecycleError] = UsageError) -> int:
    """Return `value` if it is an int from 0 to `INT64_MAX` (not a bool), else raise `error`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= INT64_MAX:
        raise error(f"{what} must be from 0 to 2**63 - 1, got {shown(repr(value))}")
    return value


def check_mapping(value: object, what: str, error: type[LifecycleError] = UsageError) -> Mapping[Any, Any]:
    """Return `value` if it is a mapping, else raise `error` naming `what`."""
    if not isinstance(value, Mapping):
        raise error(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def json_mapping(
    value: object, where: str, name: str, error: type[LifecycleError] = UsageError
) -> dict[Any, Any]:
    """Return `value` (None: empty) as a dict of JSON values with str keys, else raise `error`.

    The one check of the JSON-valued arguments a command records (config, metadata, attrs);
    `where` names the argument as the caller wrote it (`start(config=...)`), `name` as the
    path in the message about the first value that does not fit.
    """
    plain = dict(check_mapping({} if value is None else value, where, error))
    bad = first_non_json(plain, name)
    if bad is not None:
        raise error(f"{where} takes JSON values with str keys only, but {bad}")
    return plain


def first_non_json(value: object, path: str) -> str | None:
    """Return a phrase naming the first value in `value` that a record cannot hold, or None.

    JSON values only: str keys, finite floats, ints within 64 bits, nesting at most
    `MAX_DEPTH` deep (deeper would exhaust the stack of every encoder after us).
    """
    return first_misfit(value, path, _json_leaf, (list,))


def first_misfit(
    value: object,
    path: str,
    leaf: Callable[[object, str], str | None],
    sequences: tuple[type[Sequence[object]], ...],
    depth: int = 0,
) -> str | None:
    """Walk `value` through `sequences` and str-keyed dicts, at most `MAX_DEPTH` deep, and
    return the first phrase `leaf` gives for a value that is neither, or None when all fit."""
    if depth > MAX_DEPTH:
        return f"{path} nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, sequences):
        found = (first_misfit(v, f"{path}[{i}]", leaf, sequences, depth + 1) for i, v in enumerate(value))
        return next((bad for bad in found if bad is not None), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has the key {key!r} of type {type(key).__name__}"
            bad = first_misfit(item, f"{path}[{key!r}]", leaf, sequences, depth + 1)
            if bad is not None:
                return bad
        return None
    return leaf(value, path)


def _json_leaf(value: object, path: str) -> str | None:
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if -INT64_MAX - 1 <= value <= INT64_MAX else f"{path} is an int outside 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}"
    return f"{path} is of type {type(value).__name__}"


def shown(value: object) -> str:
    """A short one-line rendering of a value for an error message."""
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:77] + "..."
