"""Consumer-group workers: scaled-out consumers that share a run's records between them.

Plain followers (`Log.follow`) each see every record; a group hands each record to one of
its consumers, which acknowledges it when done. A record a crashed consumer never
acknowledged is taken over with `autoclaim`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from bus._redis_client import decode_entries, decode_id
from bus.errors import InvalidArgumentError

if TYPE_CHECKING:
    from bus._redis import RedisLog


@dataclass(frozen=True, kw_only=True)
class Pending:
    """A record delivered to a consumer of the group and not yet acknowledged."""

    seq: int
    """The record's seq."""
    consumer: str
    """The consumer it was last delivered to."""
    idle_ms: int
    """Milliseconds since that delivery."""
    deliveries: int
    """How many times it has been delivered."""


class GroupWorker:
    """One consumer of a Redis consumer group on a run's stream (XREADGROUP/XACK/XAUTOCLAIM)."""

    def __init__(self, log: RedisLog, group: str, consumer: str, *, start: int = 0) -> None:
        if not group or not consumer:
            raise InvalidArgumentError("group and consumer names must not be empty")
        self.log, self.group, self.consumer = log, group, consumer
        self._client, self._key, self._caller = log.client, log.key, log._caller
        self._create(start)

    def _create(self, start: int) -> None:
        """Create the group at `start` (and the stream if absent); an existing group is kept."""

        def create() -> None:
            try:
                self._client.xgroup_create(self._key, self.group, id=f"{start}-0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

        self._caller.call(create)

    def read(self, count: int = 100, block_ms: int | None = None) -> list[dict[str, Any]]:
        """Records never delivered to this group, now delivered to this consumer.

        `block_ms` waits for new records; it must stay below the socket timeout. A lost
        reply is not retried (that could skip records): they stay pending for `autoclaim`.
        """
        limit_ms = int(self.log.policy.command_timeout_s * 1000)
        if block_ms is not None and not 0 < block_ms < limit_ms:
            raise InvalidArgumentError(f"block_ms must be between 1 and {limit_ms - 1}, got {block_ms}")
        reply: Any = self._caller.call(
            lambda: self._client.xreadgroup(
                self.group, self.consumer, {self._key: ">"}, count=count, block=block_ms
            ),
            idempotent=False,
        )
        return decode_entries(reply[0][1], self.log.run_id) if reply else []

    def ack(self, seqs: list[int]) -> int:
        """Acknowledge records by seq; returns how many were pending."""
        if not seqs:
            return 0
        ids = [f"{seq}-0" for seq in seqs]
        return int(self._caller.call(lambda: self._client.xack(self._key, self.group, *ids)))

    def pending(self, count: int = 100) -> list[Pending]:
        """Up to `count` of the group's unacknowledged records, oldest first."""
        rows = self._caller.call(lambda: self._client.xpending_range(self._key, self.group, "-", "+", count))
        return [_pending(row) for row in rows]

    def autoclaim(self, min_idle_ms: int, count: int = 100) -> list[dict[str, Any]]:
        """Take over up to `count` records idle for at least `min_idle_ms` in other consumers'
        pending lists (a crashed worker's), and return them; entries deleted from the
        stream are skipped."""
        claimed: list[Any] = []
        cursor = "0-0"
        while len(claimed) < count:
            cursor, entries = self._autoclaim_page(min_idle_ms, cursor, count - len(claimed))
            claimed.extend(e for e in entries if e and e[1])
            if decode_id(cursor) == 0:
                break
        return decode_entries(claimed, self.log.run_id)

    def _autoclaim_page(self, min_idle_ms: int, cursor: str, count: int) -> tuple[str, list[Any]]:
        """One XAUTOCLAIM call: the next cursor and the entries claimed."""
        reply: Any = self._caller.call(
            lambda: self._client.xautoclaim(self._key, self.group, self.consumer, min_idle_ms, cursor, count)
        )
        next_cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return next_cursor, list(reply[1])


def _pending(row: dict[str, Any]) -> Pending:
    consumer = row["consumer"]
    return Pending(
        seq=decode_id(row["message_id"]),
        consumer=consumer.decode() if isinstance(consumer, bytes) else str(consumer),
        idle_ms=int(row["time_since_delivered"]),
        deliveries=int(row["times_delivered"]),
    )
