"""A corpus of bad command lines: each exits non-zero with exactly one line on stderr, no
traceback, nothing changed on disk or in Redis, and no password printed (issue 12).

One line per case in `CASES`, so a case is added in one line. A case's command line is a
template over these places:

- {dir}: a JSONL log directory holding runs `good` and `trained` (a short demo), and copies
  of `good` whose second line holds a NaN (`nan`) or 100,000-deep nesting (`deep`);
- {url}: the Redis URL, with user `lces` and its password, of a server holding run `good`;
- {mirror}: {url} with `?mirror=` its JSONL mirror;
- {badpw}: {url} with a wrong password;
- {closed}: a password URL on a loopback port nothing listens on;
- {file}: a plain file; {root}: the directory all of these lie in; {password}: the password.

The unreachable-server cases run at the default log level: retries are debug messages, so the
one error line is all a user sees.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import bus
from bus.testing import RedisFactory, RedisServer, free_port, have_redis_server
from lifecycle_es import Lifecycle
from replay.cli import main
from tests._cli import one_line, run_cli
from tests.replay._runs import play

PASSWORD = "corpus-Pw-5e0b77"

CASES: list[tuple[str, str]] = [
    # the top level
    ("no-command", ""),
    ("unknown-command", "frobnicate"),
    ("bad-log-level", "--log-level loud replay {dir} --run good"),
    ("bad-color", "--color sometimes replay {dir} --run good"),
    ("usage-error-echoing-a-password-url", "replay {dir} --run good {url}"),
    # demo: flags checked before anything is opened, then logs that cannot take a new run
    ("demo-steps-too-few", "demo --log {dir} --run new --steps 10"),
    ("demo-steps-not-a-number", "demo --log {dir} --run new --steps ten"),
    ("demo-steps-a-float", "demo --log {dir} --run new --steps 1e3"),
    ("demo-seed-negative", "demo --log {dir} --run new --seed -1"),
    ("demo-strategy-unknown", "demo --log {dir} --run new --strategy grow"),
    ("demo-ranks-zero", "demo --log {dir} --run new --ranks 0"),
    ("demo-checkpoint-every-not-a-multiple-of-10", "demo --log {dir} --run new --checkpoint-every 15"),
    ("demo-sync-timeout-nan", "demo --log {dir} --run new --sync-timeout nan"),
    ("demo-sync-timeout-inf", "demo --log {dir} --run new --sync-timeout inf"),
    ("demo-sync-timeout-zero", "demo --log {dir} --run new --sync-timeout 0"),
    ("demo-baseline-with-ranks", "demo --log {dir} --run new --baseline --ranks 2"),
    ("demo-run-exists-jsonl", "demo --log {dir} --run good --steps 50"),
    ("demo-run-exists-redis", "demo --log {url} --run good --steps 50"),
    ("demo-run-exists-mirrored", "demo --log {mirror} --run good --steps 50"),
    ("demo-run-id-traversal", "demo --log {dir} --run ../escape --steps 50"),
    ("demo-run-id-with-a-slash", "demo --log {dir} --run a/b --steps 50"),
    ("demo-run-id-empty", "demo --log {dir} --run '' --steps 50"),
    ("demo-max-restarts-negative", "demo --log {dir} --run new --max-restarts -1"),
    ("demo-sync-timeout-overflowing", "demo --log {dir} --run new --steps 50 --sync-timeout 1e400"),
    ("demo-log-is-a-file", "demo --log {file} --run new --steps 50"),
    ("demo-log-dir-missing", "demo --log {root}/nowhere --run new --steps 50"),
    ("demo-log-unknown-scheme", "demo --log ftp://host/x --run new --steps 50"),
    ("demo-redis-unreachable", "demo --log {closed} --run new --steps 50"),
    ("demo-redis-wrong-password", "demo --log {badpw} --run new --steps 50"),
    # logs damaged in the middle, runs that exist nowhere, URL options nobody reads
    ("replay-nan-in-a-record", "replay {dir} --run nan"),
    ("tail-deep-nesting", "tail {dir} --run deep"),
    ("export-decisions-nan", "export-decisions {dir} --run nan -o {root}/out.jsonl"),
    ("metrics-deep-nesting", "metrics {dir} --run deep"),
    ("verify-mirrored-run-nowhere", "verify {mirror} --run ghost"),
    ("verify-jsonl-run-nowhere", "verify {dir} --run ghost"),
    ("replay-unknown-jsonl-option", "replay jsonl://{dir}?colour=red --run good"),
    ("replay-unknown-redis-option", "replay {url}?colour=red --run good"),
    ("replay-jsonl-password-option", "replay jsonl://{dir}?password={password} --run good"),
    ("tail-malformed-ipv6-host", "tail redis://[::1/0 --run good"),
    ("replay-cluster-not-a-flag", "replay {url}?cluster=maybe --run good"),
    ("replay-timeout-negative", "replay {url}?timeout=-1 --run good"),
    # spec
    ("spec-no-subcommand", "spec"),
    ("spec-show-unknown", "spec show dragon"),
    ("spec-show-empty-name", "spec show ''"),
    ("spec-show-bad-format", "spec show module --format yaml"),
    # tail
    ("tail-unknown-run", "tail {dir} --run ghost"),
    ("tail-unknown-run-redis", "tail {url} --run ghost"),
    ("tail-run-id-traversal", "tail {dir} --run ../../etc/passwd"),
    ("tail-run-missing", "tail {dir}"),
    ("tail-from-bad-seq", "tail {dir} --run good --from seq:x"),
    ("tail-from-unknown-form", "tail {dir} --run good --from middle"),
    ("tail-from-negative-last", "tail {dir} --run good --from last:-3"),
    ("tail-from-negative-step", "tail {dir} --run good --from step:-1"),
    ("tail-from-malformed-time", "tail {dir} --run good --from time:garbage"),
    ("tail-from-seq-beyond-64-bits-redis", "tail {url} --run good --from seq:99999999999999999999999"),
    ("tail-from-step-beyond-64-bits", "tail {dir} --run good --from step:99999999999999999999999"),
    ("tail-until-step-negative", "tail {dir} --run good --until-step -1"),
    ("tail-last-negative", "tail {dir} --run good --last -1"),
    ("tail-last-not-a-number", "tail {dir} --run good --last many"),
    ("tail-from-and-last", "tail {dir} --run good --from end --last 3"),
    ("tail-count-negative", "tail {dir} --run good --count -1"),
    ("tail-layer-not-a-number", "tail {dir} --run good --layer one"),
    ("tail-wait-timeout-nan", "tail {dir} --run good --follow --wait-timeout nan"),
    ("tail-wait-timeout-negative", "tail {dir} --run good --follow --wait-timeout -1"),
    ("tail-bad-format", "tail {dir} --run good --format xml"),
    ("tail-lenient-on-redis", "tail {url} --run good --lenient"),
    ("tail-log-is-a-file", "tail {file} --run good"),
    ("tail-redis-unreachable", "tail {closed} --run good"),
    ("tail-redis-wrong-password", "tail {badpw} --run good"),
    # replay
    ("replay-unknown-run", "replay {dir} --run ghost"),
    ("replay-unknown-run-redis", "replay {url} --run ghost"),
    ("replay-unknown-run-mirrored", "replay {mirror} --run ghost"),
    ("replay-run-id-traversal", "replay {dir} --run ..%2F..%2Fetc"),
    ("replay-run-id-dotdot", "replay {dir} --run .."),
    ("replay-run-id-empty", "replay {dir} --run ''"),
    ("replay-until-seq-negative", "replay {dir} --run good --until-seq -1"),
    ("replay-until-seq-not-a-number", "replay {dir} --run good --until-seq abc"),
    ("replay-until-step-negative", "replay {dir} --run good --until-step -2"),
    ("replay-until-time-malformed", "replay {dir} --run good --until-time yesterday"),
    ("replay-until-time-impossible-date", "replay {dir} --run good --until-time 2020-13-45T00:00"),
    ("replay-until-time-a-number", "replay {dir} --run good --until-time 1e400"),
    ("replay-jsonl-url-without-a-directory", "replay jsonl:// --run good"),
    ("replay-two-untils", "replay {dir} --run good --until-seq 3 --until-step 3"),
    ("replay-bad-format", "replay {dir} --run good --format xml"),
    ("replay-log-is-a-file", "replay {file} --run good"),
    ("replay-log-dir-missing", "replay {root}/nowhere --run good"),
    ("replay-mistyped-url", "replay redis:/localhost --run good"),
    ("replay-lenient-on-redis", "replay {url} --run good --lenient"),
    ("replay-redis-unreachable", "replay {closed} --run good"),
    ("replay-redis-wrong-password", "replay {badpw} --run good"),
    ("replay-redis-port-out-of-range", "replay redis://lces:{password}@127.0.0.1:99999/0 --run good"),
    # what-if (run `trained` is a short demo, whose controllers what-if re-runs)
    ("what-if-unknown-run", "what-if {dir} --run ghost"),
    ("what-if-unknown-setting", "what-if {dir} --run trained --set no_such_setting=3"),
    ("what-if-setting-not-a-number", "what-if {dir} --run trained --set split_patience=abc"),
    ("what-if-setting-nan", "what-if {dir} --run trained --set split_patience=nan"),
    ("what-if-setting-overflowing-float", "what-if {dir} --run trained --set split_patience=1e400"),
    ("what-if-setting-huge-int", "what-if {dir} --run trained --set split_patience=99999999999999999999999"),
    ("what-if-setting-without-a-value", "what-if {dir} --run trained --set split_patience"),
    ("what-if-setting-twice", "what-if {dir} --run trained --set split_patience=3 --set split_patience=4"),
    ("what-if-until-step-negative", "what-if {dir} --run trained --until-step -1"),
    ("what-if-bad-format", "what-if {dir} --run trained --format csv"),
    ("what-if-no-recorded-controllers", "what-if {dir} --run good --set split_patience=3"),
    ("what-if-redis-unreachable", "what-if {closed} --run trained"),
    # verify
    ("verify-a-jsonl-log", "verify {dir} --run good"),
    ("verify-no-mirror", "verify {url} --run good"),
    ("verify-empty-mirror-option", "verify {url}?mirror= --run good"),
    ("verify-run-id-traversal", "verify {mirror} --run ../good"),
    ("verify-redis-unreachable", "verify {closed}?mirror={root}/mirror --run good"),
    ("verify-redis-wrong-password", "verify {badpw}?mirror={root}/mirror --run good"),
    # export-decisions
    ("export-unknown-run", "export-decisions {dir} --run ghost -o {root}/out.jsonl"),
    ("export-output-under-a-file", "export-decisions {dir} --run good -o {file}/out.jsonl"),
    ("export-output-is-a-directory", "export-decisions {dir} --run good -o {root}"),
    (
        "export-redis-unreachable",
        "export-decisions {closed} --run good -o {root}/out.jsonl",
    ),
    # report
    ("report-unknown-run", "report {dir} --run ghost -o {root}/out.html"),
    ("report-output-under-a-file", "report {dir} --run good -o {file}/out.html"),
    ("report-output-is-a-directory", "report {dir} --run good -o {root}"),
    ("report-output-dir-missing", "report {dir} --run good -o {root}/no/such/r.html"),
    ("report-redis-wrong-password", "report {badpw} --run good -o {root}/out.html"),
    # metrics
    ("metrics-unknown-run", "metrics {dir} --run ghost"),
    ("metrics-listen-without-a-port", "metrics {dir} --run good --listen localhost"),
    ("metrics-listen-port-out-of-range", "metrics {dir} --run good --listen 127.0.0.1:99999"),
    ("metrics-listen-port-not-a-number", "metrics {dir} --run good --listen 127.0.0.1:http"),
    ("metrics-follow-without-textfile", "metrics {dir} --run good --follow"),
    ("metrics-textfile-under-a-file", "metrics {dir} --run good --textfile {file}/m.prom"),
    ("metrics-textfile-is-a-directory", "metrics {dir} --run good --textfile {root}"),
    ("metrics-bad-format", "metrics {dir} --run good --format statsd"),
    ("metrics-redis-unreachable", "metrics {closed} --run good"),
    # tables
    ("tables-table-missing", "tables {dir} --run good"),
    ("tables-unknown-table", "tables {dir} --run good --table speeds"),
    ("tables-bad-format", "tables {dir} --run good --table populations --format xml"),
    ("tables-unknown-run", "tables {dir} --run ghost --table populations"),
    ("tables-unknown-run-redis", "tables {url} --run ghost --table populations"),
    ("tables-log-is-a-file", "tables {file} --run good --table populations"),
    ("tables-redis-wrong-password", "tables {badpw} --run good --table decisions"),
]


@dataclass(frozen=True)
class World:
    """The logs, files and server every case runs against."""

    root: Path
    server: RedisServer
    places: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Run `good` written to a JSONL directory and to an ACL redis-server with a JSONL mirror."""
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    root = tmp_path_factory.mktemp("corpus")
    factory = RedisFactory(tmp_path_factory.mktemp("corpus-redis"))
    server = factory.start()
    with server.admin() as admin:
        admin.execute_command("ACL", "SETUSER", "lces", "on", f">{PASSWORD}", "~*", "+@all")  # type: ignore[no-untyped-call]
    url = f"redis://lces:{PASSWORD}@127.0.0.1:{server.port}/0"
    (root / "runs").mkdir()
    (root / "file.txt").write_text("not a directory\n")
    for log_url in (f"jsonl://{root / 'runs'}", f"{url}?mirror={root / 'mirror'}"):
        with bus.open(log_url, "good") as log:
            play(Lifecycle(log))
    _damage_second_line(root / "runs" / "good.jsonl", root / "runs" / "nan.jsonl", '"bad": NaN')
    _damage_second_line(root / "runs" / "good.jsonl", root / "runs" / "deep.jsonl", _DEEP)
    demo = ["demo", "--log", str(root / "runs"), "--run", "trained", "--steps", "50", "--quiet"]
    assert main(demo) == 0
    places = {
        "root": str(root),
        "dir": str(root / "runs"),
        "file": str(root / "file.txt"),
        "url": url,
        "mirror": f"{url}?mirror={root / 'mirror'}",
        "badpw": f"redis://lces:{PASSWORD}-wrong@127.0.0.1:{server.port}/0",
        "closed": f"redis://lces:{PASSWORD}@127.0.0.1:{free_port()}/0",
        "password": PASSWORD,
    }
    yield World(root, server, places)
    factory.stop_all()


_DEEP = '"deep": ' + "[" * 100_000 + "]" * 100_000


def _damage_second_line(source: Path, target: Path, field: str) -> None:
    """Copy a JSONL log with `field` put into its second record's text, right after the seq."""
    lines = source.read_text().splitlines(keepends=True)
    head, rest = lines[1].split(",", 1)
    lines[1] = f"{head}, {field},{rest}"
    target.write_text("".join(lines))


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root`, with a hash of each file's content ("dir" for a directory)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _redis(server: RedisServer) -> tuple[int, dict[bytes, bytes]]:
    """The server's key count and every key's serialized value."""
    client = redis.Redis(port=server.port)
    try:
        return client.dbsize(), {key: client.dump(key) for key in client.keys("*")}
    finally:
        client.close()


@pytest.mark.redis_server
@pytest.mark.parametrize("template", [pytest.param(t, id=i) for i, t in CASES])
def test_a_bad_command_line_fails_in_one_line_and_changes_nothing(
    world: World,
    template: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-zero exit, one line on stderr and no traceback, the same files and Redis keys
    before and after, and the password nowhere in the output."""
    monkeypatch.chdir(world.root)  # anything written relative to the cwd would show in the tree
    argv = shlex.split(template.format(**world.places))
    files, keys = _tree(world.root), _redis(world.server)
    status, out, err = run_cli(capsys, *argv)
    assert status != 0, out
    one_line(err)
    assert PASSWORD not in out + err
    assert _tree(world.root) == files
    assert _redis(world.server) == keys
