"""Record shapes: what the trusted replay path checks of a record instead of validating it.

A record read back from our own log skips pydantic, but its shape is still checked: every
field its kind requires is there, no field is unknown (the models forbid extras), and each
top-level value has a JSON type its field admits (a str for a str or an enum, an int for an
int, ...), so a fold never meets a TypeError. The values of the float maps the folds compute
with (`MetricsObserved.metrics`) are checked on every record.

`Shape.matches` answers for the common case, a record at its kind's current schema with every
field, in one call of straight-line code built from the model's fields when the codec is made
(as `dataclasses` builds `__init__`): measured, it costs half of a loop over the fields, and it
runs once per record of a replay. Any other record goes through `Shape.problem`, which names
what is wrong.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from lifecycle_es.events import EventBase

__all__ = ["Shape", "enum_fields", "json_types"]

JsonTypes = frozenset[type] | None
"""The Python types of the JSON values a field admits; None admits any."""

_FLOATS = frozenset({float, int})
_FOLDED_FLOAT_MAPS = {"MetricsObserved": ("metrics",)}
"""Per kind, the float maps a fold reads value by value (the registry's windows, the tensors)."""


def json_types(annotation: Any) -> JsonTypes:
    """The types of the JSON values a field annotation admits, without its constraints."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return json_types(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [json_types(a) for a in get_args(annotation)]
        return None if any(m is None for m in members) else frozenset().union(*members)  # type: ignore[arg-type]
    if origin is Literal:
        return frozenset(type(a) for a in get_args(annotation))
    plain = origin or annotation
    if plain is type(None):
        return frozenset({type(None)})
    if isinstance(plain, type) and issubclass(plain, Enum):
        return frozenset({str})  # our enums are StrEnums, stored as their values
    if plain is float:
        return _FLOATS
    if plain in (bool, int, str):
        return frozenset({plain})
    if plain in (dict, Mapping):
        return frozenset({dict})
    if plain in (list, tuple):
        return frozenset({list})
    return None  # JsonValue, Any: the writer's normalization already made them plain


def enum_fields(event: type[EventBase]) -> tuple[str, ...]:
    """The fields of a kind whose annotation admits an enum (stored as the enum's value)."""
    return tuple(name for name, info in event.model_fields.items() if _has_enum(info.annotation))


def _has_enum(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, Enum)
    return any(_has_enum(a) for a in get_args(annotation))


@dataclass(frozen=True, slots=True)
class Shape:
    """The fields of one kind as stored: which are required, their JSON types, the float maps."""

    kind: str
    required: frozenset[str]
    fields: Mapping[str, JsonTypes]
    float_maps: tuple[str, ...]
    matches: Callable[[Mapping[str, Any]], bool]
    """True for a record at the current schema with every field, each of an admitted type;
    KeyError for a record that lacks a field."""

    @classmethod
    def of(cls, event: type[EventBase]) -> Shape:
        """Read a kind's shape from its model's fields, by their stored names."""
        fields: dict[str, JsonTypes] = {}
        required: set[str] = set()
        for name, info in event.model_fields.items():
            fields[info.alias or name] = json_types(info.annotation)
            if info.is_required():
                required.add(info.alias or name)
        kind = event.model_fields["kind"].default
        float_maps = _FOLDED_FLOAT_MAPS.get(kind, ())
        matches = _matcher(fields, float_maps, event.SCHEMA)
        return cls(kind, frozenset(required), fields, float_maps, matches)

    def problem(self, record: Mapping[str, Any]) -> str | None:
        """Say what is wrong with a record's keys or top-level types, or None when nothing is."""
        missing = self.required - record.keys()
        if missing:
            return f"lacks the field {sorted(missing)[0]!r}"
        unknown = record.keys() - self.fields.keys()
        if unknown:
            return f"holds the unknown field {sorted(unknown)[0]!r}"
        for name, value in record.items():
            allowed = self.fields[name]
            if allowed is not None and type(value) not in allowed:
                admitted = " or ".join(sorted(_name(t) for t in allowed))
                return f"{name} must be {admitted}, got {_name(type(value))}"
        return None

    def float_map_problem(self, record: Mapping[str, Any]) -> str | None:
        """Say which folded float map holds a value that is not a number, or None."""
        for name in self.float_maps:
            value = record.get(name)
            if value and not _FLOATS.issuperset(map(type, value.values())):
                return f"{name} must map names to numbers"
        return None


def _matcher(fields: Mapping[str, JsonTypes], float_maps: tuple[str, ...], schema: int) -> Any:
    """Build `Shape.matches` for one kind: one boolean expression over the record's fields."""
    names: dict[str, Any] = {"_FLOATS": _FLOATS}
    terms = [f"len(r) == {len(fields)}", f"r['schema'] == {schema}"]
    for i, (name, allowed) in enumerate(fields.items()):
        if allowed is None:
            terms.append(f"{name!r} in r")
        elif len(allowed) == 1:
            names[f"t{i}"] = next(iter(allowed))
            terms.append(f"type(r[{name!r}]) is t{i}")
        else:
            names[f"t{i}"] = allowed
            terms.append(f"type(r[{name!r}]) in t{i}")
    terms += [f"_FLOATS.issuperset(map(type, r[{name!r}].values()))" for name in float_maps]
    exec("def matches(r):\n    return " + " and ".join(terms), names)  # built from our own field names
    return names["matches"]


def _name(kind: type) -> str:
    return {type(None): "null", dict: "an object", list: "an array"}.get(kind, f"a {kind.__name__}")
