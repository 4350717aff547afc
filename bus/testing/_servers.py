"""redis-server processes for tests: each on a free loopback port in its own directory.

Used by the shared pytest fixtures (tests/conftest.py) and by fault tests that restart a
server or give it ACL users. Test infrastructure: nothing in the bus imports it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_BINARY = "redis-server"
_START_WAIT_S = 20.0  # generous: a loaded CI machine can be slow to start a process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process this test session started (or one it was given by URL)."""

    port: int
    directory: Path
    options: list[str] = field(default_factory=list)
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, on the same port and directory) and wait until it answers."""
        binary = shutil.which(REDIS_BINARY)
        assert binary is not None
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "no",
            *self.options,
        ]  # later options win over defaults
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115  # kept by the process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.url = self.url or f"redis://127.0.0.1:{self.port}/0"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_WAIT_S
        # through the URL, so a TLS-only or unix-socket-only server is reached as tests reach it
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.AuthenticationError:
                    return  # it answers; the default user is just locked down
                except (redis.ConnectionError, redis.TimeoutError):
                    assert self.process is not None
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start; "
                            f"see {self.directory / 'server.log'}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: only what AOF already has survives)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server politely, then forcibly if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        """Kill and start again on the same port and directory (AOF, if on, is replayed)."""
        self.kill()
        self.start()

    def admin(self) -> redis.Redis:
        """A client as the default user (which the server's options may have changed)."""
        return redis.Redis.from_url(self.url)


def have_redis_server() -> bool:
    """True when the redis-server binary is on PATH."""
    return shutil.which(REDIS_BINARY) is not None


class RedisFactory:
    """Starts redis-servers in subdirectories of a test's tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[RedisServer] = []

    def start(self, *options: str) -> RedisServer:
        """A new server with extra command-line options, e.g. "--appendonly", "yes"."""
        directory = self.root / f"redis-{len(self.servers)}"
        directory.mkdir()
        server = RedisServer(port=free_port(), directory=directory, options=list(options))
        self.servers.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
