"""A Redis Cluster for tests: redis-server processes in cluster mode on free loopback ports,
joined with `redis-cli --cluster create`; with `tls=True` every node, the cluster bus and
replication speak only TLS. Test infrastructure: nothing in the bus imports it."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bus.testing._servers import RedisServer, free_port
from bus.testing._tls import make_certificates, tls_only_options

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
    tls: bool = False
    """TLS only: clients, the cluster bus and replication (one CA, one certificate for all)."""
    servers: list[RedisServer] = field(default_factory=list)
    certificates: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A cluster log URL naming one node (redis-py finds the others)."""
        if self.tls:
            ca = self.certificates["ca.crt"]
            return f"rediss://127.0.0.1:{self.servers[0].port}/?cluster=1&ssl_ca_certs={ca}"
        return f"redis://127.0.0.1:{self.servers[0].port}/?cluster=1"

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        if self.tls:
            (self.root / "tls").mkdir(parents=True)
            self.certificates = make_certificates(self.root / "tls")
        for n in range(3 * (1 + self.replicas)):
            directory = self.root / f"node-{n}"
            directory.mkdir(parents=True)
            port = free_port()
            options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            options += ["--cluster-node-timeout", str(self.node_timeout_ms)]
            options += ["--cluster-port", str(free_port())]  # the bus port, not port + 10000
            url = ""  # RedisServer's plain default
            if self.tls:
                options += tls_only_options(port, self.certificates)
                options += ["--tls-cluster", "yes", "--tls-replication", "yes"]
                url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={self.certificates['ca.crt']}"
            server = RedisServer(port=port, directory=directory, options=options, url=url)
            server.start()
            self.servers.append(server)
        self._create()
        self.wait_ok()

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        command = ["redis-cli", *self._cli_tls(), "--cluster", "create", *addresses]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=_READY_WAIT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr}")

    def _cli_tls(self) -> list[str]:
        return ["--tls", "--cacert", str(self.certificates["ca.crt"])] if self.tls else []

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
            with _client(server) as client:
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
            with _client(server) as client:
                slot = client.cluster("KEYSLOT", key)
                if _owns(client, int(slot), server.port):
                    return server
        raise LookupError(f"no master holds the slot of {key}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _client(server: RedisServer) -> redis.Redis:
    """A plain client of one node, through its URL so that a TLS node is reached over TLS."""
    return redis.Redis.from_url(server.url, socket_timeout=2)


def _linked(info: dict[str, Any], replicas: int) -> bool:
    """A master has its replicas; a replica has finished its sync (so WAIT counts it)."""
    if info["role"] == "master":
        return int(info.get("connected_slaves", 0)) >= replicas
    return info.get("master_link_status") == "up"


def _role(server: RedisServer) -> str:
    try:
        with _client(server) as client:
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
