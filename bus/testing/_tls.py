"""TLS and unix-socket redis-servers for tests: a throwaway CA and server certificate made
with the openssl CLI, and servers that listen only on TLS or only on a socket file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bus.testing._servers import RedisServer, free_port


def have_openssl() -> bool:
    """True when the openssl CLI (which makes the test certificates) is on PATH."""
    return shutil.which("openssl") is not None


def redis_has_tls() -> bool:
    """True when redis-server is linked with libssl (built with TLS, so --tls-port works)."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("ldd") is None:
        return False
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    return "libssl" in libs.stdout


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it (valid a day)."""
    paths = {n: directory / n for n in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # fast to make
    ca, ca_key = paths["ca.crt"], paths["ca.key"]
    crt, key, csr = paths["server.crt"], paths["server.key"], paths["server.csr"]
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=lces-test-ca")
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    san = directory / "san.cnf"
    san.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    signing: list[str | Path] = [
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        san,
    ]
    _openssl("x509", "-req", "-in", csr, "-out", crt, *signing)
    return paths


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], capture_output=True, check=True, timeout=60)


def tls_only_options(port: int, files: dict[str, Path]) -> list[str]:
    """redis-server options to listen only on TLS `port` with `make_certificates` files (no
    plain port, no client certificates asked)."""
    options = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(files["server.crt"])]
    options += ["--tls-key-file", str(files["server.key"]), "--tls-ca-cert-file", str(files["ca.crt"])]
    return [*options, "--tls-auth-clients", "no"]


def start_tls_server(directory: Path) -> RedisServer:
    """A redis-server that speaks only TLS (no plain port, no client certificates asked)."""
    files = make_certificates(directory)
    port = free_port()
    options = tls_only_options(port, files)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={files['ca.crt']}"
    server = RedisServer(port=port, directory=directory, options=options, url=url)
    server.start()
    return server


def start_unix_server(directory: Path) -> RedisServer:
    """A redis-server that listens only on a socket file in `directory`."""
    socket_path = directory / "redis.sock"
    options = ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    server = RedisServer(port=0, directory=directory, options=options, url=f"unix://{socket_path}?db=0")
    server.start()
    return server
