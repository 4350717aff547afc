"""A primary log (normally Redis) with a JSONL mirror that holds exactly the same records."""

from __future__ import annotations

from typing import Any

from bus._jsonl import JsonlLog
from bus._log import Log
from bus.errors import ConcurrencyError, CorruptLogError, InvalidArgumentError


class MirroredLog(Log):
    """Appends go to the primary first, then to the mirror; reads come from the primary.

    A crash between the two writes leaves the mirror behind; opening catches it up from the
    primary. A mirror that is ahead of the primary, or disagrees with it at its last record,
    is an error that `lifecycle-es verify --repair` fixes.
    """

    def __init__(self, primary: Log, mirror: JsonlLog) -> None:
        if primary.run_id != mirror.run_id:
            raise InvalidArgumentError(
                f"primary run {primary.run_id!r} and mirror run {mirror.run_id!r} differ"
            )
        self.primary, self.mirror = primary, mirror
        self.run_id, self.id_key = primary.run_id, primary.id_key
        joiner = "&" if "?" in primary.url else "?"
        self.url = f"{primary.url}{joiner}mirror={mirror.path.parent}"
        self.poll_interval, self.follow_batch_size = primary.poll_interval, primary.follow_batch_size
        self.max_record_bytes = primary.max_record_bytes
        try:
            self.catch_up()
        except BaseException:
            self._close()  # the pair owns both logs, even when it cannot open
            raise

    def catch_up(self) -> int:
        """Copy to the mirror what the primary has beyond it; returns how many records."""
        copied = 0
        while True:
            have = self.mirror.last_seq()
            self._check_agrees(have)
            missing = self.primary.read(have, self.follow_batch_size)
            if not missing:
                return copied
            try:
                self.mirror.append(missing, expected_seq=have)
            except ConcurrencyError:
                continue  # another process mirrored these meanwhile: look again
            copied += len(missing)

    def _check_agrees(self, have: int) -> None:
        """Raise unless the primary has the mirror's last record, identical."""
        if have == 0:
            return
        ours = self.primary.read(have - 1, 1)
        theirs = self.mirror.read(have - 1, 1)
        if not ours or ours != theirs:
            why = "is ahead of the primary" if not ours else "differs from the primary"
            raise CorruptLogError(
                str(self.mirror.path),
                have,
                f"the mirror {why} at seq {have}; run `lifecycle-es verify "
                f"{self.url} --run {self.run_id} --repair`",
            )

    def _append(self, batch: list[dict[str, Any]], expected_seq: int | None) -> int:
        # The mirror's checks (its size limit on the JSON encoding, which can be several times
        # the msgpack size) run before the primary stores anything: an append that raises has
        # stored nothing anywhere, and the mirror can never be left unable to catch up.
        self.mirror.check(batch)
        first = self.primary.append(batch, expected_seq, plain=True)  # normalized by our own append
        if self.mirror.last_seq() == first - 1:
            try:
                self.mirror.append(batch, expected_seq=first - 1, plain=True)
                return first
            except ConcurrencyError:
                pass  # another process wrote the mirror meanwhile: fall back to catching up
        self.catch_up()
        return first

    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self.primary.read(after, limit)

    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        return self.primary._wait(after, timeout)

    def last_seq(self) -> int:
        return self.primary.last_seq()

    def _close(self) -> None:
        try:
            self.primary.close()
        finally:
            self.mirror.close()
