"""The state-enum base class and the two table helpers the built-in specs are written with.

Each built-in spec names its states once, in a `SpecState` enum, and builds its table from the
members, so a misspelt state is a Python error and code compares enum members, never free
strings. A member's value is the name stored in events; its declaration order is its code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from lifecycle_es.errors import UnknownStateError
from lifecycle_es.spec import StateCategory, StateDef, TransitionDef

__all__ = ["SpecState", "edge", "state"]


class SpecState(StrEnum):
    """Base of the built-in specs' state enums: value is the stored name, order is the code.

    Being a `str`, a member compares equal to the state name held by the registry and the events
    (`KasminaState.TRAINING == "TRAINING"`).
    """

    @property
    def code(self) -> int:
        """The state's integer code: its position in the enum's declaration order."""
        return type(self)._member_names_.index(self.name)

    @classmethod
    def from_code(cls, code: int) -> Self:
        """Return the member whose code is `code`, or raise `UnknownStateError`."""
        names = cls._member_names_
        if not 0 <= code < len(names):
            raise UnknownStateError(f"{cls.__name__} has no state with code {code}")
        return cls[names[code]]


def state(
    member: SpecState,
    category: StateCategory,
    *,
    description: str,
    terminal: bool = False,
    min_time_in_state: int = 0,
    embargo: bool = False,
) -> StateDef:
    """Return the `StateDef` of `member`, its name and code taken from the enum."""
    return StateDef(
        name=member.value,
        code=member.code,
        category=category,
        terminal=terminal,
        min_time_in_state=min_time_in_state,
        description=description,
        embargo=embargo,
    )


def edge(
    source: SpecState,
    target: SpecState,
    trigger: str,
    *,
    description: str,
    gates: tuple[str, ...] = (),
    skip_min_time: bool = False,
) -> TransitionDef:
    """Return the `TransitionDef` from `source` to `target`; `description` says why it exists."""
    return TransitionDef(
        source=source.value,
        target=target.value,
        trigger=trigger,
        gates=gates,
        skip_min_time=skip_min_time,
        description=description,
    )
