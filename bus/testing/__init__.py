"""Test support for the bus: the log contract every backend passes, and redis-server
processes on free ports. Imports pytest, so only tests import this package."""

from bus.testing._contract import GUARD_S, LogContract, append_from_process, rec
from bus.testing._servers import RedisFactory, RedisServer, free_port, have_redis_server

__all__ = [
    "GUARD_S",
    "LogContract",
    "RedisFactory",
    "RedisServer",
    "append_from_process",
    "free_port",
    "have_redis_server",
    "rec",
]
