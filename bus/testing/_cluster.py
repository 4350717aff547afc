"""A Redis Cluster for tests: redis-server processes in cluster mode on free loopback ports,
joined with `redis-cli --cluster create`. Test infrastructure: nothing in the bus imports it."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bus.testing._servers import RedisServer, free_port

_READY_WAIT_S = 60.0  # generous: creating a cluster on a loaded 2-core machine takes seconds


def have_redis_cli() -> bool:
    """True when redis-cli (which creates clusters) is on PATH."""
    return shutil.which("redis-cli") is not None


@dataclass
class RedisClusterNodes:
    """Three masters (and `replicas` replicas each) this test session started."""

    root: Path
    replicas: int = 0
    node_timeout_ms: int = 1000
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A cluster log URL naming one node (redis-py finds the others)."""
        return f"redis://127.0.0.1:{self.servers[0].port}/?cluster=1"

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        for n in range(3 * (1 + self.replicas)):
            directory = self.root / f"node-{n}"
            directory.mkdir(parents=True)
            options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            options += ["--cluster-node-timeout", str(self.node_timeout_ms)]
            options += ["--cluster-port", str(free_port())]  # the bus port, not port + 10000
            server = RedisServer(port=free_port(), directory=directory, options=options)
            server.start()
            self.servers.append(server)
        self._create()
        self.wait_ok()

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        command = ["redis-cli", "--cluster", "create", *addresses]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=_READY_WAIT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr}")

    def wait_ok(self, *, skip: RedisServer | None = None) -> None:
        """Wait until every node but `skip` reports cluster_state:ok and, when none is
        skipped, every master has its replicas linked (so WAIT can count them)."""
        deadline = time.monotonic() + _READY_WAIT_S
        while not self._all_ok(skip):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster under {self.root} did not become ok")
            time.sleep(0.1)

    def _all_ok(self, skip: RedisServer | None) -> bool:
        for server in self.servers:
            if server is skip:
                continue
            with redis.Redis(port=server.port, socket_timeout=2) as client:
                try:
                    if client.cluster("INFO")["cluster_state"] != "ok":
                        return False
                    info = client.info("replication")
                except redis.RedisError:
                    return False
            if skip is None and not _linked(info, self.replicas):
                return False
        return True

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now."""
        return [s for s in self.servers if _role(s) == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The master that holds `key`'s slot now."""
        for server in self.masters():
            with redis.Redis(port=server.port) as client:
                slot = client.cluster("KEYSLOT", key)
                if _owns(client, int(slot), server.port):
                    return server
        raise LookupError(f"no master holds the slot of {key}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _linked(info: dict[str, Any], replicas: int) -> bool:
    """A master has its replicas; a replica has finished its sync (so WAIT counts it)."""
    if info["role"] == "master":
        return int(info.get("connected_slaves", 0)) >= replicas
    return info.get("master_link_status") == "up"


def _role(server: RedisServer) -> str:
    try:
        with redis.Redis(port=server.port, socket_timeout=2) as client:
            return str(client.info("replication")["role"])
    except redis.RedisError:
        return "down"


def _owns(client: redis.Redis, slot: int, port: int) -> bool:
    """Whether the master on `port` serves `slot`, by the node's own CLUSTER SLOTS view."""
    for row in client.execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
        start, end, master = int(row[0]), int(row[1]), row[2]
        if start <= slot <= end:
            return int(master[1]) == port
    return False
