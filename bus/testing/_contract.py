"""The log contract: test cases every backend must pass, for pytest.

Subclass `LogContract` in a `Test...` class and implement `make_log` (a new handle on this
test's log, which starts empty); override `reopen` if closing and making a new handle is not
how the backend reopens, and `process_url` to run the cases that append from another process.
Imports pytest, so only tests import this module.
"""

from __future__ import annotations

from bus.testing._contract_append import AppendCases
from bus.testing._contract_harness import GUARD_S, append_from_process, rec
from bus.testing._contract_read import ReadCases

__all__ = ["GUARD_S", "LogContract", "append_from_process", "rec"]


class LogContract(AppendCases, ReadCases):
    """The cases every `Log` backend passes."""
