"""Opt-in acknowledgement of Redis appends by replicas (`WAIT`) and the AOF (`WAITAOF`).

A log opened with `wait=N` (and/or `waitaof=1`) reports an append only once the server says
N replicas (the master's AOF) hold it. WAIT counts the writes of the connection it runs on,
so the append script and the WAIT go down one connection in one pipeline, to the master of
the run's slot: still one round trip per batch. A count that falls short raises
`DurabilityUnknownError`: the batch is in the master's log, but a failover may lose it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from bus._redis_client import TRANSIENT
from bus.errors import DurabilityUnknownError, InvalidUrlError

if TYPE_CHECKING:
    from bus._redis import RedisLog

log = logging.getLogger("bus.redis")


class Acknowledger:
    """Appends for one log that wait for replicas and/or the AOF before they count."""

    wait_timeout_ms = 1000
    """How long WAIT/WAITAOF may block; kept well under the socket timeout."""

    def __init__(self, owner: RedisLog, script: str) -> None:
        self.log, self.script = owner, script
        self.replicas = owner.target.wait_replicas
        self.aof = owner.target.waitaof

    def check_server(self) -> None:
        """Refuse `waitaof` on a server without WAITAOF (Redis < 7.2) before any append."""
        if not self.aof:
            return

        def probe() -> None:
            try:  # met at once (nothing asked): only tells whether the command exists
                self._node().execute_command("WAITAOF", 0, 0, 1)  # type: ignore[no-untyped-call]
            except redis.ResponseError as e:
                if "unknown command" not in str(e).lower():
                    raise
                raise InvalidUrlError(
                    f"the log server at {self.log.url} has no WAITAOF (it needs Redis >= 7.2): drop waitaof=1"
                ) from e

        self.log._caller.call(probe)

    def append(self, args: list[bytes | int], count: int, *, idempotent: bool) -> tuple[bool, int]:
        """Run the append script, then WAIT/WAITAOF on the same connection: (True, first seq)
        once confirmed, (False, actual last seq) on a conflict; a shortfall raises."""

        def send() -> list[Any]:
            pipe = self._node().pipeline(transaction=False)
            pipe.eval(self.script, 1, self.log.key, *args)
            pipe.wait(self.replicas, self.wait_timeout_ms)
            if self.aof:
                pipe.execute_command("WAITAOF", 1, 0, self.wait_timeout_ms)  # type: ignore[no-untyped-call]
            try:
                replies = list(pipe.execute(raise_on_error=False))
            except TRANSIENT as e:
                self._refresh(e)
                raise
            if isinstance(replies[0], Exception):  # the script did not run: retry or report that
                if isinstance(replies[0], TRANSIENT):
                    self._refresh(replies[0])
                raise replies[0]
            return replies

        replies = self.log._caller.call(send, idempotent=idempotent)
        ok, value = bool(replies[0][0]), int(replies[0][1])
        if ok:
            self._confirm(value, value + count - 1, replies[1:])
        return ok, value

    def _confirm(self, first: int, last: int, replies: list[Any]) -> None:
        """Raise `DurabilityUnknownError` unless the WAIT (and WAITAOF) replies suffice; an
        error reply (e.g. WAITAOF with appendonly off) counts as not confirmed."""
        wait, aof = replies[0], (replies[1] if self.aof else None)
        for reply in (wait, aof):
            if isinstance(reply, Exception):
                raise DurabilityUnknownError(first, last, f"the server answered {reply}")
        if int(wait) >= self.replicas and (aof is None or int(aof[0]) >= 1):
            return
        got = f"{wait} of {self.replicas} replicas" + ("" if aof is None else f", local AOF {aof[0]}")
        raise DurabilityUnknownError(first, last, f"{got} confirmed within {self.wait_timeout_ms} ms")

    def _node(self) -> redis.Redis:
        """A client of the master that holds the run's slot (the log's client, unclustered)."""
        client = self.log.client
        if isinstance(client, RedisCluster):
            return client.get_redis_connection(client.get_node_from_key(self.log.key))  # type: ignore[no-untyped-call]
        return client

    def _refresh(self, error: Exception) -> None:
        """After a failure on a cluster, reread the slot map so the next try finds the new
        master; best effort, since the failure itself is what the caller sees."""
        client = self.log.client
        if not isinstance(client, RedisCluster):
            return
        try:
            client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException) as e:
            log.debug("cluster slot map not refreshed after %s: %s", type(error).__name__, e)
