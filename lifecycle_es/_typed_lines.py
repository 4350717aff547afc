"""Typed decoding of stored lines for the trusted replay path: one msgspec Struct per kind.

Built from each kind's `Shape`, the structs check in C, while parsing, what `Shape.matches`
checks in Python of a parsed record: the kind (the union's tag), every field there and none
unknown, each top-level value of a JSON type its field admits, the schema at the kind's current
version, and numbers in the folded float maps. A float field admits ints and keeps them ints,
so a record comes back equal to the one a plain parse gives.

Lines that do not decode this way (an older schema, an absent optional field, a damaged line)
give None: the caller parses them as plain records and checks each (`Codec.check`), which
upcasts what it can and names what is wrong, so both paths refuse the same records.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from lifecycle_es._shapes import JsonTypes, Shape

__all__ = ["LineDecoder"]

_PLAIN: Mapping[type, Any] = {dict: dict[str, Any], list: list[Any]}
"""The msgspec type of a JSON type whose contents the shape check leaves alone."""


class LineDecoder:
    """Decodes newline-separated records of known kinds at their current schema, checked.

    `ignore` names a top-level key a line may hold besides its record's fields and that is
    not part of the record: the batch marker of a JSONL log (`JsonlLog.BATCH_KEY`). Dropping it
    here, while decoding, saves copying the whole text to cut it out first.
    """

    def __init__(
        self, shapes: Mapping[str, Shape], schemas: Mapping[str, int], ignore: str | None = None
    ) -> None:
        structs = tuple(_struct(shape, schemas[kind], ignore) for kind, shape in shapes.items())
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_union(structs))
        self._kinds = {struct: struct.__struct_config__.tag for struct in structs}
        """The tag, which `asdict` leaves out, of each struct."""
        self._ignores = ignore is not None

    def decode(self, text: bytes, first_seq: int, count: int) -> list[dict[str, Any]] | None:
        """The records of `count` lines holding seqs `first_seq`, `first_seq + 1`, ..., or None
        when any line is not a well-shaped record of a known kind at its current schema."""
        try:
            structs: list[Any] = self._decoder.decode_lines(text)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        seqs = [s.seq for s in structs]
        if seqs != list(range(first_seq, first_seq + count)):  # also a blank line, which is skipped
            return None
        # asdict and the kind by hand: measured, a third cheaper than msgspec.to_builtins
        records = list(map(msgspec.structs.asdict, structs))
        kinds = self._kinds
        for record, struct in zip(records, structs, strict=True):
            record["kind"] = kinds[type(struct)]
        if self._ignores:
            for record in records:
                del record[_IGNORED]
        return records


_IGNORED = "ignored_key_"
"""The struct field that takes the ignored key's value, if a line holds it."""


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


def _union(members: Iterable[Any]) -> Any:
    return functools.reduce(operator.or_, members)
