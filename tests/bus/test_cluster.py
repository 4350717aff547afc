"""Redis Cluster and acknowledged appends: runs spread over the masters, WAIT/WAITAOF, and
a master failover that loses nothing acknowledged."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis

import bus
from bus import BusError, DurabilityUnknownError, InvalidUrlError, RedisLog, RetryPolicy
from bus.testing import RedisClusterNodes, RedisFactory, RedisServer

pytestmark = pytest.mark.redis_server
GUARD_S = 60.0  # a stuck failover fails the test instead of hanging CI; never asserted


def test_runs_spread_over_every_master_and_read_back(redis_cluster: RedisClusterNodes) -> None:
    """60 runs land on all three masters (the hash tag picks the slot) and each reads back whole."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    runs = [f"{prefix}-{n}" for n in range(60)]
    for n, run in enumerate(runs):
        with bus.open(redis_cluster.url, run) as log:
            log.append([{"event_id": f"{run}-{k}", "k": k} for k in range(n % 5 + 1)])
    held = {}
    for master in redis_cluster.masters():
        with redis.Redis(port=master.port) as client:
            held[master.port] = len(client.keys(f"lces:{{{prefix}-*"))
    print(f"\ncluster: runs={len(runs)} masters={len(held)} per master={sorted(held.values())}")
    assert len(held) == 3 and all(held.values()) and sum(held.values()) == len(runs)
    for n, run in enumerate(runs):
        with bus.open(redis_cluster.url, run, create=False) as log:
            assert [r["k"] for r in log.read()] == list(range(n % 5 + 1))


def test_wait_without_enough_replicas_is_durable_unknown(redis_server: RedisServer, run_id: str) -> None:
    """With wait=1 on a server with no replica the append raises DurabilityUnknownError naming
    its seqs; the batch is in the log and the next append goes after it."""
    with bus.open(f"{redis_server.url}?wait=1", run_id) as log:
        with pytest.raises(DurabilityUnknownError, match="seqs 1-2 are durable-unknown") as info:
            log.append([{"event_id": "a"}, {"event_id": "b"}])
        assert (info.value.first_seq, info.value.last_seq) == (1, 2)
        with pytest.raises(DurabilityUnknownError, match="seqs 3-3"):
            log.append([{"event_id": "c"}])
        assert [r["event_id"] for r in log.read()] == ["a", "b", "c"]


def test_wait_with_a_linked_replica_acknowledges(redis_factory: RedisFactory, run_id: str) -> None:
    """With wait=1 and one linked replica an append is reported, and the replica holds it."""
    master = redis_factory.start()
    replica = redis_factory.start("--replicaof", "127.0.0.1", str(master.port))
    with replica.admin() as admin:  # linked and past its first sync, so it acks what it gets
        wait_until(lambda: admin.info("replication").get("master_link_status") == "up", "the replica")
    with bus.open(f"{master.url}?wait=1", run_id) as log:
        assert log.append([{"event_id": "a"}, {"event_id": "b"}]) == 1
    with replica.admin() as client:
        assert client.xlen(f"lces:{{{run_id}}}:log") == 2


def test_wait_zero_is_plain_append(redis_server: RedisServer, run_id: str) -> None:
    """wait=0 asks for no replica: appends are reported as before."""
    with bus.open(f"{redis_server.url}?wait=0", run_id) as log:
        assert log.append([{"event_id": "a"}]) == 1


def test_waitaof_needs_a_server_that_has_it(redis_server: RedisServer, run_id: str) -> None:
    """waitaof=1 on a server without WAITAOF (Redis < 7.2) is refused at open in one sentence;
    on one with it, an append with appendonly off is durable-unknown (no AOF to confirm)."""
    with redis_server.admin() as admin:
        version = tuple(int(p) for p in str(admin.info("server")["redis_version"]).split(".")[:2])
    url = f"{redis_server.url}?waitaof=1"
    if version < (7, 2):
        with pytest.raises(InvalidUrlError, match=r"no WAITAOF \(it needs Redis >= 7.2\)"):
            bus.open(url, run_id)
        return
    with pytest.raises(BusError), bus.open(url, run_id) as log:  # refused or durable-unknown
        log.append([{"event_id": "a"}])


class Writer(threading.Thread):
    """Appends 10-record batches to one run until told to stop, sorting each batch's ids
    into acknowledged or not (durable-unknown or failed)."""

    def __init__(self, url: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id = url, run_id
        self.acked: list[str] = []
        self.appends = self.unknown = self.failed = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        policy = RetryPolicy(attempts=30, backoff_s=0.05, backoff_cap_s=0.5)  # ~13 s of tries
        try:
            with RedisLog(self.url, self.run_id, policy=policy) as log:
                while not self.stop.is_set():
                    self._one(log)
        except BaseException as e:  # reported by the test, which joins this thread
            self.error = e

    def _one(self, log: RedisLog) -> None:
        ids = [uuid.uuid4().hex for _ in range(10)]
        self.appends += 1
        try:
            log.append([{"event_id": i} for i in ids])
        except DurabilityUnknownError:
            self.unknown += 1
            return
        except BusError:  # unreachable past the bounded tries: not acknowledged
            self.failed += 1
            return
        self.acked.extend(ids)


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_failover_with_wait_loses_nothing_acknowledged(replicated_cluster: RedisClusterNodes) -> None:
    """Writers with wait=1 append while the master of one run's slot is SIGKILLed; its replica
    takes over, the writers go on against the new master, and every acknowledged record
    is in the log exactly once, gapless."""
    cluster = replicated_cluster
    url = f"{cluster.url}&wait=1"
    writers = [Writer(url, f"t-{uuid.uuid4().hex}") for _ in range(3)]
    for w in writers:
        w.start()
    wait_until(lambda: all(len(w.acked) >= 300 for w in writers), "acknowledged appends")
    key = f"lces:{{{writers[0].run_id}}}:log"
    victim = cluster.master_of(key)
    victim.kill()
    wait_until(lambda: promoted(cluster, key, victim), "the replica's promotion")
    cluster.wait_ok(skip=victim)
    before = len(writers[0].acked)
    victim.start()  # rejoins as a replica of the new master, so WAIT 1 can succeed again
    cluster.wait_ok()
    wait_until(lambda: len(writers[0].acked) >= before + 300, "appends after the failover")
    for w in writers:
        w.stop.set()
        w.join(GUARD_S)
        assert w.error is None, w.error
    lost = sum(check_run(cluster.url, w) for w in writers)
    appends, acked = sum(w.appends for w in writers), sum(len(w.acked) // 10 for w in writers)
    unknown, failed = sum(w.unknown for w in writers), sum(w.failed for w in writers)
    print(
        f"\nfailover: runs={len(writers)} appends={appends} acknowledged={acked} "
        f"durable-unknown={unknown} failed={failed} lost={lost}"
    )
    assert lost == 0


def promoted(cluster: RedisClusterNodes, key: str, victim: RedisServer) -> bool:
    """Whether a node other than `victim` is now the master of `key`'s slot."""
    try:
        return cluster.master_of(key) is not victim
    except (LookupError, redis.RedisError):
        return False


def check_run(url: str, writer: Writer) -> int:
    """Check one run's log is gapless without duplicates; return how many acknowledged
    records it lacks."""
    with bus.open(url, writer.run_id, create=False) as log:
        records = log.read()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    ids = [r["event_id"] for r in records]
    assert len(set(ids)) == len(ids)
    return len(set(writer.acked) - set(ids))
