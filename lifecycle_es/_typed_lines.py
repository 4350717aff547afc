"""Typed decoding of stored lines for the trusted replay path: one msgspec Struct per kind.

Built from each kind's `Shape`, the structs check in C, while parsing, what `Shape.matches`
checks in Python of a parsed record: the kind (the union's tag), every field there and none
unknown, each top-level value of a JSON type its field admits, the schema at the kind's current
version, and numbers in the folded float maps. A float field admits ints and keeps them ints,
so a record comes back equal to the one a plain parse gives.

Lines that do not decode this way (an older schema, an absent optional field, a damaged line)
give None: the caller parses them as plain records and checks each (`Codec.check`), which
upcasts what it can and names what is wrong, so both paths refuse the same records.

A page that decodes comes as `TypedLines`: the structs themselves, which the registry's fold
and the state tensors read by attribute (`fold_lines`, `plan_lines`), and the records as dicts
for every other reader, built once and only when asked for (measured: building the dicts cost
a quarter of a replay).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from lifecycle_es._shapes import JsonTypes, Shape

__all__ = ["LineDecoder", "TypedLines"]

_PLAIN: Mapping[type, Any] = {dict: dict[str, Any], list: list[Any]}
"""The msgspec type of a JSON type whose contents the shape check leaves alone."""


class LineDecoder:
    """Decodes newline-separated records of known kinds at their current schema, checked;
    records stored as one msgpack payload each (a Redis log's entries) decode into the same
    structs (`decode_typed_packed`).

    `ignore` names a top-level key a line may hold besides its record's fields and that is
    not part of the record: the batch marker of a JSONL log (`JsonlLog.BATCH_KEY`). Dropping it
    here, while decoding, saves copying the whole text to cut it out first.
    """

    def __init__(
        self, shapes: Mapping[str, Shape], schemas: Mapping[str, int], ignore: str | None = None
    ) -> None:
        structs = tuple(_struct(shape, schemas[kind], ignore) for kind, shape in shapes.items())
        union = _union(structs)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)
        self._packed: msgspec.msgpack.Decoder[list[Any]] = msgspec.msgpack.Decoder(_list_of(union))
        self._kinds: dict[type, str] = {struct: str(struct.__struct_config__.tag) for struct in structs}
        """The tag, which `asdict` leaves out, of each struct."""
        self._ignores = ignore is not None

    def decode(self, text: bytes, first_seq: int, count: int) -> list[dict[str, Any]] | None:
        """The records of `count` lines holding seqs `first_seq`, `first_seq + 1`, ..., or None
        when any line is not a well-shaped record of a known kind at its current schema."""
        lines = self.decode_typed(text, first_seq, count)
        return None if lines is None else lines.records()

    def decode_typed(self, text: bytes, first_seq: int, count: int) -> TypedLines | None:
        """`decode`, with the records left as the typed structs they decode into."""
        try:
            structs: list[Any] = self._decoder.decode_lines(text)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        if list(map(_seq_of, structs)) != list(range(first_seq, first_seq + count)):
            return None  # also a blank line, which is skipped
        return TypedLines(structs, first_seq, self._kinds, self._ignores)

    def decode_typed_packed(self, payloads: list[bytes], first_seq: int) -> TypedLines | None:
        """`decode_typed` for records stored as msgpack payloads, one per record (a Redis
        log's entries), with seqs `first_seq`, `first_seq + 1`, ...: decoded in one call as the
        msgpack array they make once an array header goes before them."""
        try:
            structs: list[Any] = self._packed.decode(_array_header(len(payloads)) + b"".join(payloads))
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        if list(map(_seq_of, structs)) != list(range(first_seq, first_seq + len(payloads))):
            return None
        return TypedLines(structs, first_seq, self._kinds, self._ignores)


class TypedLines:
    """A page of decoded, checked lines whose seqs run up by one from `first_seq`.

    Only `LineDecoder` builds one, after checking the seqs, so a fold may take their order
    as given. `structs` are read-only: they may be shared by several projections.
    """

    __slots__ = ("_ignores", "_records", "first_seq", "kinds", "structs")

    def __init__(self, structs: list[Any], first_seq: int, kinds: Mapping[type, str], ignores: bool) -> None:
        self.structs = structs
        self.first_seq = first_seq
        self.kinds = kinds
        """The kind of each struct type (the union's tag, which is not a field)."""
        self._ignores = ignores
        self._records: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.structs)

    @property
    def last_seq(self) -> int:
        """The seq of the page's last line."""
        return self.first_seq + len(self.structs) - 1

    def records(self) -> list[dict[str, Any]]:
        """The page as plain records, equal to those a plain parse gives; built on first use."""
        if self._records is None:
            self._records = self._build_records()
        return self._records

    def _build_records(self) -> list[dict[str, Any]]:
        # asdict and the kind by hand: measured, a third cheaper than msgspec.to_builtins
        records = list(map(msgspec.structs.asdict, self.structs))
        kinds = self.kinds
        for record, struct in zip(records, self.structs, strict=True):
            record["kind"] = kinds[type(struct)]
        if self._ignores:
            for record in records:
                del record[_IGNORED]
        return records


_IGNORED = "ignored_key_"
"""The struct field that takes the ignored key's value, if a line holds it."""

_seq_of = operator.attrgetter("seq")


def _array_header(count: int) -> bytes:
    """The msgpack header of an array of `count` items (array 32 for any count: msgpack
    readers take the wider header for a short array too)."""
    return b"\xdd" + count.to_bytes(4, "big")


def _struct(shape: Shape, schema: int, ignore: str | None) -> type[msgspec.Struct]:
    """The struct of one kind: every field required, typed as its shape admits."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, allowed in shape.fields.items():
        if name == "kind":
            continue  # the tag
        if name == "schema":
            fields.append((name, Literal[schema]))
        elif name in shape.float_maps:
            fields.append((name, dict[str, int | float]))
        else:
            fields.append((name, _type(allowed)))
    if ignore is not None:
        fields.append((_IGNORED, Any, None))
    return msgspec.defstruct(
        f"{shape.kind}Line",
        fields,
        rename={_IGNORED: ignore or _IGNORED},
        tag_field="kind",
        tag=shape.kind,
        forbid_unknown_fields=True,
        gc=False,  # short-lived and acyclic: turned into dicts at once
    )


def _type(allowed: JsonTypes) -> Any:
    """The msgspec type admitting exactly the JSON types of a field (any value for None)."""
    if allowed is None:
        return Any
    members = sorted((_PLAIN.get(t, t) for t in allowed), key=repr)
    return _union(members)


def _list_of(item: Any) -> Any:
    """The type `list[item]` of a type built at run time (which a static checker cannot read)."""
    return list.__class_getitem__(item)


def _union(members: Iterable[Any]) -> Any:
    return functools.reduce(operator.or_, members)
