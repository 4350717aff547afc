"""Test support for the bus: the log contract every backend passes, and redis-server
processes on free ports. Imports pytest, so only tests import this package."""

from bus.testing._cluster import RedisClusterNodes, have_redis_cli
from bus.testing._contract import GUARD_S, LogContract, append_from_process, rec
from bus.testing._servers import RedisFactory, RedisServer, free_port, have_redis_server
from bus.testing._tls import (
    have_openssl,
    make_certificates,
    redis_has_tls,
    start_tls_server,
    start_unix_server,
)

__all__ = [
    "GUARD_S",
    "LogContract",
    "RedisClusterNodes",
    "RedisFactory",
    "RedisServer",
    "append_from_process",
    "free_port",
    "have_openssl",
    "have_redis_cli",
    "have_redis_server",
    "make_certificates",
    "rec",
    "redis_has_tls",
    "start_tls_server",
    "start_unix_server",
]
