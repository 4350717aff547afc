"""The Redis Streams log.

Layout (DESIGN section 3): stream key `lces:{<run_id>}:log` (the braces are a Cluster hash
tag), entry id `<seq>-0`, one field `d` holding the msgpack of the record with its seq first.

A batch append is one EVALSHA: the script reads the top entry, compares it with the expected
last seq and XADDs the batch with explicit ids, or returns the actual last seq. Nothing else
is stored: when the check fails, the client reads the entries at the expected positions and
compares their ids itself. That is as safe as doing it inside the script, because entries at
or below the last seq never change; it keeps the exact one-field layout and needs no msgpack
in Lua (fakeredis's Lua has no cmsgpack). The conflict path costs one more round trip.

A batch of records already plain is checked by encoding it (`bus._plain_pack`) rather than by
`normalize`'s checking copy; any other batch takes the copy, which converts or names the value.

Every append is checked: without `expected_seq` the client uses the last seq it knows
(asking the server only the first time) and, on a conflict that is not its own landed
batch, retries at the real end. So a retry after a lost reply is always recognised, as long
as the records carry `id_key`; a batch without ids is never resent after a lost reply
(`BusUnavailableError` says the outcome is unknown) rather than risk a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bus._gc import gc_paused
from bus._log import Log, ids_match
from bus._plain_pack import pack_plain, with_seq
from bus._records import DEFAULT_MAX_RECORD_BYTES, Record, check_size, pack_msgpack
from bus._redis_ack import Acknowledger
from bus._redis_client import (
    Caller,
    Client,
    RetryPolicy,
    connect,
    decode_entries,
    decode_id,
    probe,
    stored_payloads,
)
from bus._redis_group import GroupWorker
from bus._redis_url import parse_redis_url
from bus._runid import validate_run_id
from bus.errors import BusError, ConcurrencyError, DurabilityUnknownError, InvalidRecordError

# KEYS[1] the stream; ARGV[1] the expected last seq; ARGV[2..] the encoded records.
# Returns {1, first seq} after appending, or {0, actual last seq} without writing.
APPEND_LUA = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = 0
if #top > 0 then last = tonumber(string.match(top[1][1], '^%d+')) end
local expected = tonumber(ARGV[1])
if last ~= expected then return {0, last} end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], string.format('%d-0', expected + i - 1), 'd', ARGV[i])
end
return {1, expected + 1}
"""


Packed = tuple[int, list[bytes]]
"""A batch's payloads and the seq of its first record, encoded before the first try."""


def stream_key(run_id: str) -> str:
    """The stream key of a run (validated first, so no key is ever built from a bad id)."""
    return f"lces:{{{validate_run_id(run_id)}}}:log"


class RedisLog(Log):
    """A log in one Redis stream; any number of processes may append and follow it.

    Build it from a URL (it then owns its connection pool and closes it) or with
    `from_client` around an existing client such as `fakeredis.FakeRedis` (left open).
    """

    poll_interval = 0.5  # the XREAD BLOCK time; the socket timeout is set above it
    page_size = 10_000
    """Entries fetched per XRANGE while reading."""
    conflict_retries = 100
    """Appends without `expected_seq` retry at the new end this many times under contention."""

    def __init__(
        self,
        url: str,
        run_id: str,
        *,
        policy: RetryPolicy | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        id_key: str = "event_id",
        _client: Client | None = None,
    ) -> None:
        self.run_id = validate_run_id(run_id)
        self.key = stream_key(run_id)
        self.policy = policy or RetryPolicy()
        self.max_record_bytes, self.id_key = max_record_bytes, id_key
        self.target = parse_redis_url(url)
        self._caller = Caller(url, self.policy)
        self.url = self._caller.url
        self._owns_client = _client is None
        if _client is None:
            probe(self.target, self.policy)  # a bounded first contact: fails fast and once
        self._client = _client or connect(self.target, self.policy, self.poll_interval)
        self._script = self._client.register_script(APPEND_LUA)
        acked = self.target.wait_replicas or self.target.waitaof
        self._acks = Acknowledger(self, APPEND_LUA) if acked else None
        self._known_last: int | None = None
        try:
            self._caller.call(self._client.ping)
            if self._acks is not None:
                self._acks.check_server()
        except BusError:
            self._close()
            raise

    @classmethod
    def from_client(
        cls, client: Client, run_id: str, *, url: str = "redis://(client)", **options: Any
    ) -> RedisLog:
        """A log on an existing client (e.g. fakeredis); `close` leaves the client open."""
        return cls(url, run_id, _client=client, **options)

    @property
    def client(self) -> Client:
        """The redis-py client (for consumer groups and tests)."""
        return self._client

    def group(self, group: str, consumer: str, *, start: int = 0) -> GroupWorker:
        """A consumer-group worker on this log's stream (the group is created if absent)."""
        return GroupWorker(self, group, consumer, start=start)

    def append(
        self, records: Sequence[Record], expected_seq: int | None = None, *, plain: bool = False
    ) -> int:
        """`Log.append`; a list of records that are plain as they stand is checked by encoding
        it (`bus._plain_pack`, at C speed) instead of by a checking copy: same refusals, same
        stored bytes."""
        if plain or type(records) is not list or not records:
            return super().append(records, expected_seq, plain=plain)
        self._check_append(expected_seq)
        # the seq the payloads start at: a guess until the log's end is known (no network call
        # before the records are checked); a wrong guess costs one more encoding
        first = (expected_seq if expected_seq is not None else self._known_last or 0) + 1
        payloads = pack_plain(records, first)
        if payloads is None:  # a value to convert or refuse: normalize says which, and why
            return super().append(records, expected_seq)
        self._check_sizes(payloads)
        return self._append(records, expected_seq, (first, payloads))

    def _append(
        self, batch: list[dict[str, Any]], expected_seq: int | None, packed: Packed | None = None
    ) -> int:
        try:
            return self._append_at_end(batch, expected_seq, packed)
        except DurabilityUnknownError as e:
            self._known_last = e.last_seq  # it is in the master's log: the next append goes after it
            raise

    def _append_at_end(
        self, batch: list[dict[str, Any]], expected_seq: int | None, packed: Packed | None
    ) -> int:
        guess = expected_seq if expected_seq is not None else self._last_known()
        for _ in range(self.conflict_retries):
            ok, value = self._try_append(batch, guess, packed)
            if ok:
                self._known_last = value + len(batch) - 1
                return value
            if ids_match(self.read(guess, len(batch)), batch, self.id_key):
                if self._acks is not None:  # its WAIT reply was lost with it: replicas unknown
                    raise DurabilityUnknownError(guess + 1, guess + len(batch), "the reply was lost")
                return guess + 1  # our batch already landed: a reply was lost on the way
            if expected_seq is not None:
                raise ConcurrencyError(expected_seq, value)
            guess = value
        raise ConcurrencyError(guess, self.last_seq())

    def _try_append(
        self, batch: list[dict[str, Any]], expected: int, packed: Packed | None
    ) -> tuple[bool, int]:
        """One script call: (True, first seq) or (False, actual last seq).

        `packed` is the batch's payloads from a first seq, used when it is `expected + 1`.
        A call whose reply is lost is retried only when every record has an id: the retry
        then recognises the landed batch. Without ids it could not, so the error is raised.
        """
        if packed is not None and packed[0] == expected + 1:
            payloads = packed[1]
        else:
            payloads = self._encode(batch, expected + 1)
        args: list[bytes | int] = [expected, *payloads]
        has_ids = all(r.get(self.id_key) is not None for r in batch)
        if self._acks is not None:
            return self._acks.append(args, len(batch), idempotent=has_ids)
        reply = self._caller.call(lambda: self._script(keys=[self.key], args=args), idempotent=has_ids)
        return bool(reply[0]), int(reply[1])

    def _encode(self, batch: list[dict[str, Any]], first: int) -> list[bytes]:
        try:
            payloads = [pack_msgpack(with_seq(r, seq)) for seq, r in enumerate(batch, first)]
        except UnicodeEncodeError as e:
            raise InvalidRecordError("a record holds a lone surrogate in a string") from e
        self._check_sizes(payloads)
        return payloads

    def _check_sizes(self, payloads: list[bytes]) -> None:
        """Raise `RecordTooLargeError` for the first payload over the limit (one C pass when none is)."""
        limit = self.max_record_bytes
        if max(map(len, payloads)) > limit:
            for i, payload in enumerate(payloads):
                check_size(len(payload), i, limit)

    def _last_known(self) -> int:
        if self._known_last is None:
            self._known_last = self.last_seq()
        return self._known_last

    def read(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with gc_paused():  # a read of many records would set off full collections (bus._gc)
            for page in self._entry_pages(after, limit):
                out.extend(decode_entries(page, self.run_id))
        return out

    def _entry_pages(self, after: int, limit: int | None) -> Iterator[list[Any]]:
        """The entries after `after` (at most `limit`), one XRANGE page at a time."""
        self._check_open()
        start, left = max(after, 0) + 1, limit
        while left is None or left > 0:
            count = self.page_size if left is None else min(self.page_size, left)
            page = self._xrange(start, count)
            yield page
            if len(page) < count:
                return
            start = decode_id(page[-1][0]) + 1
            left = None if left is None else left - len(page)

    def read_entries(self, after: int = 0, limit: int | None = None) -> list[Any]:
        """The stored entries `(id, {b"d": payload})` of the records after `after` (at most
        `limit`), for a reader that decodes the payloads itself (a replay folding typed
        structs); `stored_payloads` checks their ids, `decode_entries` makes them records."""
        return [entry for page in self._entry_pages(after, limit) for entry in page]

    @staticmethod
    def stored_payloads(entries: list[Any], first_seq: int) -> list[bytes] | None:
        """The msgpack payloads of entries from `read_entries` whose ids run up by one from
        `first_seq`, else None; the seq inside each payload is the caller's to check."""
        return stored_payloads(entries, first_seq)

    def decode_entries(self, entries: list[Any]) -> list[dict[str, Any]]:
        """The records of entries from `read_entries`, or `CorruptLogError` naming the first
        entry that is not a bus record."""
        with gc_paused():
            return decode_entries(entries, self.run_id)

    def _xrange(self, start: int, count: int) -> list[Any]:
        """Up to `count` entries from seq `start` on."""
        page = self._caller.call(lambda: self._client.xrange(self.key, f"{start}-0", "+", count=count))
        return list(page or [])

    def _wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        block_ms = max(1, int(timeout * 1000))
        reply = self._caller.call(
            lambda: self._client.xread({self.key: f"{after}-0"}, count=self.follow_batch_size, block=block_ms)
        )
        return decode_entries(_xread_entries(reply), self.run_id)

    def last_seq(self) -> int:
        self._check_open()
        top = self._caller.call(lambda: self._client.xrevrange(self.key, "+", "-", count=1))
        return decode_id(top[0][0]) if top else 0

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()


def _xread_entries(reply: Any) -> list[Any]:
    """The entries of a one-stream XREAD reply, in either RESP2 or RESP3 shape."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (streams,) = reply.values()
        return list(streams[0]) if streams and isinstance(streams[0], list) else list(streams)
    return list(reply[0][1])
