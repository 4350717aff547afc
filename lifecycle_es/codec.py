"""The codec: events to flat log records and back, with schema versions and upcasters."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from lifecycle_es._shapes import Shape, enum_fields
from lifecycle_es._typed_lines import LineDecoder, TypedLines
from lifecycle_es.errors import SchemaError
from lifecycle_es.events import EVENT_TYPES, Event, EventBase

__all__ = ["CODEC", "Codec", "TypedLines", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a record of (kind, version) into a record of (kind, version + 1)."""


class Codec:
    """Owns the mapping between events and records: one place decides the stored form.

    Records carry the envelope and payload side by side; the schema version is stored as
    `schema`. Upcasters are registered per (kind, version) and run in a chain up to the
    version this code writes.
    """

    def __init__(
        self,
        types: Iterable[type[EventBase]] = EVENT_TYPES,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self._types = {t.model_fields["kind"].default: t for t in types}
        self._shapes = {kind: _shape(cls) for kind, cls in self._types.items()}
        self._record_shapes = {kind: Shape.of(cls) for kind, cls in self._types.items()}
        self._enums = {kind: enum_fields(cls) for kind, cls in self._types.items()}
        self._upcasters = dict(upcasters or {})
        self._adapter: TypeAdapter[Event] = TypeAdapter(Event)

    @property
    def kinds(self) -> frozenset[str]:
        """The event kinds this codec reads and writes (`tail --kind` warns of any other)."""
        return frozenset(self._types)

    def register_upcaster(self, kind: str, version: int, upcaster: Upcaster) -> None:
        """Register the function that lifts a `kind` record from `version` to `version + 1`."""
        if kind not in self._types:
            raise SchemaError(f"cannot register an upcaster for unknown kind {kind!r}")
        self._upcasters[(kind, version)] = upcaster

    def to_record(self, event: EventBase) -> dict[str, Any]:
        """Return the event as one flat mapping of plain values, ready for any log."""
        record = dict(event.__dict__)
        record["schema"] = record.pop("schema_version")
        for name in self._enums.get(record["kind"], ()):  # plain values, as every log stores them
            value = record[name]
            if isinstance(value, Enum):
                record[name] = value._value_  # the attribute: `.value` is a slow descriptor
        return record

    def from_record(self, record: Mapping[str, Any], *, trusted: bool = False) -> EventBase:
        """Decode a record into its event, upcasting older schemas.

        With `trusted=True` (records read back from our own log) field validation is skipped;
        kind and schema are always checked.
        """
        self.check_shape(record)
        data = self.upcast(record)
        cls = self._types[data["kind"]]
        data["schema_version"] = data.pop("schema")
        if trusted:
            return cls.trusted(**data)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise SchemaError(f"{_where(record)}: invalid fields: {_first_error(e)}") from e

    def upcast(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of the record lifted to the current schema of its kind."""
        kind = record.get("kind")
        cls = self._types.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise SchemaError(f"{_where(record)}: unknown kind {kind!r}")
        version = record.get("schema", 1)
        if not isinstance(version, int) or version < 1:
            raise SchemaError(f"{_where(record)}: schema must be a positive int, got {version!r}")
        if version > cls.SCHEMA:
            raise SchemaError(
                f"{_where(record)}: schema {version} is newer than version {cls.SCHEMA}, "
                "the newest this code reads"
            )
        data = dict(record)
        while version < cls.SCHEMA:
            upcaster = self._upcasters.get((cls.__name__, version))
            if upcaster is None:
                raise SchemaError(f"{_where(record)}: no upcaster from schema {version}")
            data = upcaster(data)
            version += 1
            data["schema"] = version
        data.setdefault("schema", version)
        return data

    def check(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return a record ready to fold on the trusted replay path, without decoding it.

        Kind, schema and shape are checked (`lifecycle_es._shapes`: required and unknown
        fields, top-level JSON types, the folded float maps); an unknown kind, a newer schema or
        a bad shape raises `SchemaError`. A record at its kind's current schema comes back as it
        is (no copy), an older one as an upcast copy.
        """
        kind = record.get("kind")
        shape = self._record_shapes.get(kind) if type(kind) is str else None
        try:
            if shape is not None and shape.matches(record):
                return record
        except KeyError:
            pass  # a field is missing: the slow path fills an optional one or names it
        return self._check_slowly(record)

    def _check_slowly(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """`check` for a record of another schema or lacking optional fields, naming what is wrong."""
        self.check_shape(record)
        data = self.upcast(record)  # unknown kinds and newer schemas raise here
        shape = self._record_shapes[data["kind"]]
        why = shape.problem(data) or shape.float_map_problem(data)
        if why is not None:
            raise SchemaError(f"{_where(record)}: {why}")
        return record if record.get("schema", 1) == data["schema"] else data

    def check_shape(self, record: Mapping[str, Any]) -> None:
        """Raise `SchemaError` unless `kind` is a str and the envelope's ints and the kind's
        str, mapping and list fields hold values of that JSON type (what the trusted path
        folds without validating: a wrong type there would be a TypeError deep in a fold)."""
        kind = record.get("kind")
        if type(kind) is not str:
            raise SchemaError(f"{_where(record)}: unknown kind {kind!r}")
        for name, expected in self._shapes.get(kind, _ENVELOPE):
            value = record.get(name)
            if value is not None and type(value) is not expected:
                why = f"{name} must be a {expected.__name__}, got {_type(value)}"
                raise SchemaError(f"{_where(record)}: {why}")

    @functools.cache  # noqa: B019 (one decoder per ignored key; CODEC lives as long as the process)
    def _lines(self, ignore: str | None) -> LineDecoder:
        return LineDecoder(
            self._record_shapes, {kind: cls.SCHEMA for kind, cls in self._types.items()}, ignore
        )

    def decode_lines(
        self, text: bytes, first_seq: int, count: int, *, ignore: str | None = None
    ) -> list[dict[str, Any]] | None:
        """The records of `count` stored lines (seqs from `first_seq`), decoded and checked as
        `check` checks them, at C speed; None when any line needs `check`'s slow path (an older
        schema, an absent optional field) or is damaged: parse and `check` those instead.
        `ignore` is a top-level key lines may hold that is not a field (a log's batch marker)."""
        return self._lines(ignore).decode(text, first_seq, count)

    def decode_typed_lines(
        self, text: bytes, first_seq: int, count: int, *, ignore: str | None = None
    ) -> TypedLines | None:
        """`decode_lines`, with the page left as the typed structs its lines decode into, which
        the registry and the state tensors fold without building a dict per record."""
        return self._lines(ignore).decode_typed(text, first_seq, count)

    def decode_typed_payloads(self, payloads: list[bytes], first_seq: int) -> TypedLines | None:
        """`decode_typed_lines` for records stored one msgpack payload each (a Redis log's
        entries, `RedisLog.stored_payloads`), with seqs from `first_seq`."""
        return self._lines(None).decode_typed_packed(payloads, first_seq)


_ENVELOPE: tuple[tuple[str, type], ...] = (("step", int), ("rank", int), ("entity", str), ("run_id", str))
"""The envelope fields every kind's shape check covers."""


def _shape(cls: type[EventBase]) -> tuple[tuple[str, type], ...]:
    """The (field, JSON type) pairs `check_shape` checks for a kind: the envelope, and its
    str, mapping and list fields."""
    own = tuple(
        (name, origin)
        for name, info in cls.model_fields.items()
        if (origin := _json_type(info.annotation)) in (dict, list, str)
        and name not in ("kind", "event_id", "causation")
    )
    return _ENVELOPE + tuple(pair for pair in own if pair not in _ENVELOPE)


def _json_type(annotation: Any) -> Any:
    """The container or str type a field's annotation stands for; a Literal of strs is a str
    (a fold looks such a value up in a dict, where a list would be a TypeError)."""
    origin = get_origin(annotation)
    if origin is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        return str
    return origin or annotation


def _type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _where(record: Mapping[str, Any]) -> str:
    return f"record seq {record.get('seq', '?')} (kind {record.get('kind', '?')!r})"


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" + (f" ({len(e.errors()) - 1} more)" if e.error_count() > 1 else "")


CODEC = Codec()
"""The codec for the built-in event kinds, with no upcasters (every kind is at schema 1)."""
