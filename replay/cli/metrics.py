"""`lifecycle-es metrics LOG --run RUN [--listen HOST:PORT | --textfile PATH] [--follow]
[--format prometheus|openmetrics]`.

A run's lifecycle metrics (`projections.MetricsProjection`) for Prometheus, through
prometheus_client, every sample labelled with the run. Without an option the exposition is
printed once, as Prometheus text or, with `--format openmetrics`, as OpenMetrics text (no one
text suits both formats' parsers: they name counter families differently). `--listen` serves
/metrics over HTTP (Prometheus text, or OpenMetrics when the scraper asks for it) while a
`Runner` follows the log on a thread, until SIGINT or SIGTERM. `--textfile` writes the
exposition atomically for node_exporter's textfile collector, once, or again after every new
batch with `--follow`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile

from bus import Log
from lifecycle_es.errors import ConfigError
from projections import MetricsProjection, Runner
from replay.cli._open import add_lenient_argument, add_log_arguments, open_run

__all__ = ["add_parser", "parse_listen", "run"]

_log = logging.getLogger("replay.cli.metrics")

DEFAULT_HOST = "127.0.0.1"
"""Where `--listen PORT` (no host) binds: loopback, reachable from this machine only."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    """Add the metrics options to `parser`."""
    add_log_arguments(parser, run_help="the run id (the `run` label of every sample)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve /metrics over HTTP and follow the log until SIGINT/SIGTERM; binds exactly where "
        f"told (HOST defaults to {DEFAULT_HOST}; 0.0.0.0 opens it to the network, [::1] for IPv6, "
        "port 0 picks a free one); prints the URL it serves",
    )
    where.add_argument(
        "--textfile",
        metavar="PATH",
        help="write the exposition to PATH atomically (for node_exporter's textfile collector, "
        "name it *.prom) instead of printing it",
    )
    parser.add_argument(
        "--follow", action="store_true", help="with --textfile, rewrite it after every new batch of records"
    )
    parser.add_argument(
        "--format",
        choices=("prometheus", "openmetrics"),
        default="prometheus",
        help="the text printed (default prometheus); --listen answers in the format the scraper asks "
        "for, --textfile writes Prometheus text",
    )
    add_lenient_argument(parser, help_text="skip unreadable JSONL lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print, serve or write the run's metrics, as the options say."""
    if args.follow and args.textfile is None and args.listen is None:
        raise ConfigError("--follow goes with --textfile (--listen always follows the log)")
    if args.format != "prometheus" and (args.textfile is not None or args.listen is not None):
        raise ConfigError("--format applies to printing: --listen answers in the format the scraper asks for")
    address = None if args.listen is None else parse_listen(args.listen)
    projection = MetricsProjection()
    registry = projection.registry(run=args.run)
    with open_run(args.log_url, args.run, lenient=args.lenient) as log:
        runner = Runner(log, [projection])
        runner.catch_up()
        if address is not None:
            _serve(runner, registry, address)
        elif args.textfile is not None:
            _write_textfile(log, runner, registry, args.textfile, follow=args.follow)
        else:
            text = projection.openmetrics if args.format == "openmetrics" else projection.prometheus
            sys.stdout.write(text(run=args.run))
    return 0


def parse_listen(value: str) -> tuple[str, int]:
    """Return (host, port) of `HOST:PORT`, `[IPV6]:PORT` or `PORT` (host 127.0.0.1)."""
    host, colon, port = value.rpartition(":")
    if not colon:
        host, port = "", value
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen takes HOST:PORT with a port from 0 to 65535, got {value!r}")
    return host.removeprefix("[").removesuffix("]") or DEFAULT_HOST, int(port)


# -- --listen ------------------------------------------------------------------------------------


def _serve(runner: Runner, registry: CollectorRegistry, address: tuple[str, int]) -> None:
    """Serve the registry while the runner follows the log, until a signal or a follow error."""
    with _stop_on_signals() as stop:
        server = _start_server(registry, address)
        try:
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            print(f"serving http://{host}:{server.server_port}/metrics", flush=True)
            runner.start()
            while not stop.wait(0.2) and runner.running:
                pass
        finally:
            server.shutdown()
            server.server_close()
            runner.stop()  # re-raises what ended the follow, if anything did


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per scrape, on the address family of its host."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # read when the socket is made, in the base constructor
        super().__init__(address, _Handler)


class _Handler(WSGIRequestHandler):
    """Logs each request at debug level, instead of wsgiref's line on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


def _start_server(registry: CollectorRegistry, address: tuple[str, int]) -> _Server:
    host, port = address
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server = _Server((host, port), family)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="lifecycle-es-metrics-http", daemon=True).start()
    return server


# -- --textfile ----------------------------------------------------------------------------------


def _write_textfile(
    log: Log, runner: Runner, registry: CollectorRegistry, path: str, *, follow: bool
) -> None:
    _write(registry, path, runner.seq)
    if not follow:
        return
    with _stop_on_signals() as stop:
        for batch in log.follow_batches(runner.seq, stop=stop):
            runner.apply(batch)
            _write(registry, path, runner.seq)


def _write(registry: CollectorRegistry, path: str, seq: int) -> None:
    try:
        write_to_textfile(path, registry)  # a temporary file renamed over PATH: never half-written
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    _log.info("wrote %s to seq %d", path, seq)


# -- signals -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event SIGINT and SIGTERM set (on the main thread; elsewhere only the caller can)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    saved = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
