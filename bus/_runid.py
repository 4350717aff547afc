"""Run id validation: the one gate every key and path built from a run id goes through."""

from __future__ import annotations

import re

from bus.errors import InvalidRunIdError

# No '/', '\\', NUL or whitespace can pass, so a run id is always a single path component and
# a safe part of a Redis key. Dots are allowed inside ("a..b" is a plain file name under DIR);
# "." and ".." cannot pass because the first character must be alphanumeric.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_run_id(run_id: object) -> str:
    """Return `run_id` unchanged if it is a valid run id, else raise `InvalidRunIdError`."""
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:57] + "..."
        raise InvalidRunIdError(f"invalid run id {shown}: it must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}")
    return run_id
