"""The synchronized lifecycle in one process: the same code path as a rank, with nothing communicated.

Without a process group `LifecycleSync` decides, seals and applies exactly as a leader does but
verifies nothing; the distributed helpers return their input; `Checkpoints` saves and resumes
the same, so a crashed single-process run also resumes from its log.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import bus
from bus import MemoryLog
from bus.testing import free_port
from lifecycle_es import (
    Action,
    CheckpointMismatchError,
    CheckpointUnreadableError,
    ConfigError,
    DecisionMade,
    ForeignCheckpointError,
    InconsistentEventError,
    Lifecycle,
    UsageError,
)
from projections import Runner, Snapshot
from projections.moe import ModelSurgery
from projections.training import Replicated, distributed
from projections.training.checkpoint import FORMAT, Checkpoints, load_checkpoint, save_checkpoint
from projections.training.sync import LifecycleSync, SyncConfig, _check_decisions
from replay.demo import DemoOptions, DemoRun, RankOptions
from replay.demo.model import DemoModel
from tests._expert_actions import install

SYNC_KINDS = {"ActionsVerified", "DivergenceDetected", "CheckpointSaved", "CheckpointRestored"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The demo's tensors are tiny: one intra-op thread, as the `demo` command itself uses."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _demo(log: bus.Log, steps: int = 100, *, scheduled: bool = False, **ranks: Any) -> DemoRun:
    demo = DemoRun(DemoOptions(steps=steps, strategy="resize"), log, ranks=RankOptions(**ranks))
    if scheduled:
        install(demo, every=20)  # an action at steps 20, 40, ... on any machine
    return demo


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"leader": -1}, "leader must be a rank >= 0"),
        ({"leader": True}, "leader must be a rank >= 0"),
        ({"leader": "0"}, "leader must be a rank >= 0"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -1.5}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("inf")}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
        ({"timeout": True}, "timeout must be a number of seconds > 0"),
        ({"timeout": "5"}, "timeout must be a number of seconds > 0"),
    ],
)
def test_sync_config_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    """A leader that is no rank or a timeout that is no positive finite number is a ConfigError."""
    with pytest.raises(ConfigError, match=message):
        SyncConfig(**fields)


def test_a_leader_outside_the_world_is_refused() -> None:
    """Leader 1 in a one-process world is a ConfigError, for the sync as for the checkpoints."""
    demo = _demo(MemoryLog("cfg"))
    assert demo.lifecycle is not None
    side = demo.lifecycle
    with pytest.raises(ConfigError, match="outside a world of 1"):
        LifecycleSync(side.lc, side.runner, side.surgery, config=SyncConfig(leader=1))
    with pytest.raises(ConfigError, match="outside a world of 1"):
        Checkpoints(side.lc, side.runner, model=demo.model, optimizer=demo.optimizer, leader=1)


def test_resize_surgery_under_a_process_group_needs_a_rewrap() -> None:
    """Under a process group, resize surgery without `on_rewrap` is a ConfigError; masked needs none."""
    model = DemoModel(d_in=4, d_out=2, d_model=8, d_hidden=4, capacity=4, layers=1, top_k=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    replicated = Replicated(model)
    ModelSurgery(model.layers(), optimizer, strategy="resize", model=model)  # no group: nothing to re-wrap
    with distributed.process_group("gloo", **_one_rank()):
        with pytest.raises(ConfigError, match="DDP is re-wrapped after surgery"):
            ModelSurgery(model.layers(), optimizer, strategy="resize", model=model)
        ModelSurgery(model.layers(), optimizer, strategy="resize", model=model, on_rewrap=replicated.rewrap)
        ModelSurgery(model.layers(), optimizer, strategy="masked", model=model)


def test_at_boundary_inside_a_no_sync_window_is_refused() -> None:
    """Inside DDP's no_sync() (gradient accumulation) a boundary is a UsageError; after it, it runs."""
    model = DemoModel(d_in=4, d_out=2, d_model=8, d_hidden=4, capacity=4, layers=1, top_k=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    with distributed.process_group("gloo", **_one_rank()):
        replicated = Replicated(model)
        surgery = ModelSurgery(model.layers(), optimizer, model=model, on_rewrap=replicated.rewrap)
        log = MemoryLog("no-sync")
        sync = LifecycleSync(Lifecycle(log), Runner(log, [surgery]), surgery, replicated=replicated)
        with replicated.wrapper.no_sync(), pytest.raises(UsageError, match="inside a no_sync"):
            sync.at_boundary(0, lambda lc: lc.start(seed=0))
        assert log.last_seq() == 0
        assert sync.at_boundary(0, lambda lc: lc.start(seed=0)).step == 0


# -- one process: the leader's path, nothing verified -----------------------------------------


@pytest.fixture(scope="module")
def single() -> tuple[DemoRun, list[dict[str, Any]]]:
    """A 100-step demo run in one process, with its log's records."""
    log = MemoryLog("single")
    demo = _demo(log)
    demo.run()
    return demo, log.read()


def test_without_a_process_group_nothing_is_verified_or_recorded(
    single: tuple[DemoRun, list[dict[str, Any]]],
) -> None:
    """One process gets no digest, and its log holds no sync record: it is the single-process log."""
    demo, records = single
    assert demo.lifecycle is not None
    sync = demo.lifecycle.sync
    assert (sync.distributed, sync.is_leader, sync.world_size, demo.digest) == (False, True, 1, None)
    assert not {r["kind"] for r in records} & SYNC_KINDS
    assert [r["step"] for r in records if r["kind"] == "StepSealed"] == list(range(0, 101, 10))
    assert sync.verify(100) is None
    assert demo.lifecycle.lc.log.last_seq() == len(records)  # verify() wrote nothing


def test_a_boundary_writes_what_was_decided_then_the_seal_as_one_batch(
    single: tuple[DemoRun, list[dict[str, Any]]],
) -> None:
    """`at_boundary` appends the decided events and `StepSealed`, folds them, and reports no digest."""
    demo, records = single
    assert demo.lifecycle is not None
    sync = demo.lifecycle.sync
    boundary = sync.at_boundary(110, lambda lc: lc.observe({"loss": 0.5}, step=110))
    new = demo.lifecycle.lc.log.read(after=len(records))
    assert [(r["kind"], r["step"]) for r in new] == [("MetricsObserved", 110), ("StepSealed", 110)]
    assert [r["seq"] for r in boundary.records] == [r["seq"] for r in new]
    assert (boundary.step, boundary.decisions, boundary.digest, boundary.repaired, boundary.replayed) == (
        110,
        0,
        None,
        False,
        False,
    )
    assert sync.runner.seq == new[-1]["seq"] and demo.lifecycle.lc.registry.sealed_step == 110


def test_a_decision_sealed_for_another_step_is_inconsistent() -> None:
    """A `DecisionMade` sealed at step s whose apply_at_step is not s+1 raises InconsistentEventError."""
    demo = _demo(MemoryLog("late"))
    assert demo.lifecycle is not None
    demo.start()

    def decide(lc: Lifecycle) -> None:
        lc.append([DecisionMade(run_id=lc.run_id, step=10, action=Action.SPAWN, layer=0, apply_at_step=12)])

    with pytest.raises(InconsistentEventError, match="sealed at step 10 but asks to apply at step 12"):
        demo.lifecycle.sync.at_boundary(10, decide)


def test_a_repeated_or_earlier_boundary_step_is_refused_at_once() -> None:
    """at_boundary for a step at or before the last one this sync applied is a UsageError at once,
    where it used to wait the whole timeout for a seal already behind it; nothing is written."""
    log = MemoryLog("twice")
    demo = _demo(log, sync=SyncConfig(timeout=30.0))
    assert demo.lifecycle is not None
    demo.start()
    sync = demo.lifecycle.sync
    sync.at_boundary(10)
    seq = log.last_seq()
    began = time.monotonic()
    for step in (10, 5, 0):
        with pytest.raises(UsageError) as caught:
            sync.at_boundary(step, decide=lambda lc: lc.observe({"loss": 1.0}))
        assert str(caught.value) == (
            f"step {step}: this rank applied the boundary of step 10 already; "
            "give each evaluation step once (after_step, at_boundary), with steps that increase"
        )
    assert time.monotonic() - began < 5.0
    assert log.last_seq() == seq
    assert sync.at_boundary(20).step == 20


def test_check_decisions_counts_the_decisions_that_apply_next_step() -> None:
    """Decisions applying at s+1 are counted, other records ignored, any other apply_at_step refused."""

    def decision(seq: int, apply_at: int) -> dict[str, Any]:
        return {"kind": "DecisionMade", "seq": seq, "event_id": f"d{seq}", "apply_at_step": apply_at}

    batch = [
        decision(1, 21),
        {"kind": "MetricsObserved", "seq": 2},
        decision(3, 21),
        {"kind": "StepSealed", "seq": 4},
    ]
    assert _check_decisions(batch, 20) == 2
    with pytest.raises(InconsistentEventError, match=r"decision d5 .* sealed at step 20"):
        _check_decisions([*batch, decision(5, 20)], 20)


# -- checkpoints ------------------------------------------------------------------------------


def _write(path: Path) -> str:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return save_checkpoint(
        path,
        step=40,
        seq=17,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        snapshots=[Snapshot(kind="surgery", seq=17, state={"m": torch.arange(3)})],
        extra={"note": "x", "t": torch.ones(2)},
    )


def test_a_checkpoint_round_trips_and_its_sha256_is_that_of_its_bytes(tmp_path: Path) -> None:
    """`save_checkpoint` returns the file's SHA-256; `load_checkpoint` gives back every part."""
    path = tmp_path / "sub" / "c.pt"
    sha = _write(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left beside it
    checkpoint = load_checkpoint(path, sha256=sha)
    assert (checkpoint.step, checkpoint.seq) == (40, 17)
    assert set(checkpoint.model) == {"weight", "bias"}
    assert checkpoint.optimizer["state"][0]["step"] == 1
    assert torch.equal(checkpoint.snapshots["surgery"].state["m"], torch.arange(3))
    assert checkpoint.snapshots["surgery"].seq == 17
    assert checkpoint.extra["note"] == "x" and torch.equal(checkpoint.extra["t"], torch.ones(2))


def test_a_checkpoint_that_does_not_match_its_recorded_sha256_is_refused(tmp_path: Path) -> None:
    """A changed or truncated file is a CheckpointMismatchError before anything is unpickled."""
    path = tmp_path / "c.pt"
    sha = _write(path)
    with pytest.raises(CheckpointMismatchError, match="does not match the SHA-256"):
        load_checkpoint(path, sha256="0" * 64)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointMismatchError, match="changed or truncated"):
        load_checkpoint(path, sha256=sha)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a checkpoint\n",
        random.Random(0).randbytes(512),
        pickle.dumps({"format": FORMAT}, protocol=2),
        b"PK\x03\x04trunc",
    ],
    ids=["empty", "text", "random", "plain-pickle", "truncated-zip"],
)
def test_a_file_that_is_no_checkpoint_is_unreadable(tmp_path: Path, content: bytes) -> None:
    """Bytes torch cannot load are a CheckpointUnreadableError (one line in the CLI), not a traceback."""
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointUnreadableError, match="is not a lifecycle-es checkpoint"):
        load_checkpoint(path)


def test_a_torch_file_of_another_layout_or_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    """A torch file without our format, or no file at all, is a CheckpointUnreadableError naming the path."""
    path = tmp_path / "other.pt"
    torch.save({"format": FORMAT + 1}, path)
    with pytest.raises(CheckpointUnreadableError, match="of format"):
        load_checkpoint(path)
    with pytest.raises(CheckpointUnreadableError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_leader_saves_at_a_decided_boundary_and_not_at_a_replayed_one(tmp_path: Path) -> None:
    """`save` writes and records a file at a boundary this run sealed; at one the log had sealed
    already (a resumed run catching up) it writes and records nothing."""
    log = MemoryLog("saves")
    demo = _demo(log)
    assert demo.lifecycle is not None
    demo.start()
    side = demo.lifecycle
    path = side.checkpoints.save(tmp_path, side.sync.at_boundary(10))
    assert path is not None and path.parent == tmp_path / "active" and path.suffix == ".pt"
    saved = [r for r in log.read() if r["kind"] == "CheckpointSaved"]
    assert [(r["step"], r["path"], r["upto_seq"]) for r in saved] == [(10, str(path), side.runner.seq)]
    assert saved[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    again = _demo(log.attach())
    assert again.lifecycle is not None
    replayed = again.lifecycle.sync.at_boundary(0)
    assert replayed.replayed
    assert again.lifecycle.checkpoints.save(tmp_path / "again", replayed) is None
    assert not (tmp_path / "again").exists()
    assert [r["kind"] for r in log.read()].count("CheckpointSaved") == 1


def test_a_checkpoint_without_a_snapshot_the_rank_needs_is_foreign(tmp_path: Path) -> None:
    """Resuming from a checkpoint that holds no snapshot of one of the rank's projections is a
    ForeignCheckpointError naming the projection."""
    demo = _demo(MemoryLog("foreign"))
    assert demo.lifecycle is not None
    demo.start()
    side = demo.lifecycle
    surgery_only = Checkpoints(
        side.lc, Runner(side.lc.log, [side.surgery]), model=demo.model, optimizer=demo.optimizer
    )
    surgery_only.save(tmp_path, side.sync.at_boundary(10))
    with pytest.raises(ForeignCheckpointError, match="holds no snapshot of projection 'state_tensors'"):
        side.checkpoints.resume()


def test_a_checkpoint_of_another_surgery_strategy_is_foreign(tmp_path: Path) -> None:
    """A checkpoint whose surgery snapshot was taken under another strategy does not fit: foreign."""
    demo = _demo(MemoryLog("strategy"))
    assert demo.lifecycle is not None
    demo.start()
    side = demo.lifecycle
    side.checkpoints.save(tmp_path, side.sync.at_boundary(10))
    strategy = "masked" if side.surgery.strategy == "resize" else "resize"
    surgery = ModelSurgery(demo.model.layers(), demo.optimizer, strategy=strategy, model=demo.model)
    other = Checkpoints(side.lc, Runner(side.lc.log, [surgery]), model=demo.model, optimizer=demo.optimizer)
    with pytest.raises(ForeignCheckpointError, match="does not fit projection 'surgery'"):
        other.resume()


class _Crash(Exception):
    """Stands for a process dying mid-run."""


def test_a_crashed_single_process_run_resumes_from_its_checkpoint_to_the_same_model(tmp_path: Path) -> None:
    """Resuming from the last checkpoint and replaying the sealed steps ends on the uninterrupted model."""
    reference = _demo(MemoryLog("reference"), steps=200, scheduled=True)
    reference.run()
    log = MemoryLog("crashed")
    first = _demo(log, steps=200, scheduled=True, checkpoint_dir=tmp_path, checkpoint_every=50)

    def crash(step: int) -> None:
        if step == 95:
            raise _Crash

    with pytest.raises(_Crash):
        first.run(after_step=crash)
    saved = [r for r in log.read() if r["kind"] == "CheckpointSaved"]
    assert [r["step"] for r in saved] == [50]
    again = _demo(
        log.attach(), steps=200, scheduled=True, checkpoint_dir=tmp_path, checkpoint_every=50, resume=True
    )
    again.run()
    assert again.lifecycle is not None and reference.lifecycle is not None
    records = log.read()
    restored = [r for r in records if r["kind"] == "CheckpointRestored"]
    assert [(r["step"], r["sha256"], r["upto_seq"]) for r in restored] == [
        (50, saved[0]["sha256"], saved[0]["upto_seq"])
    ]
    # steps 60-90 were sealed by the first run and replayed (the decider's actions at 60 and 80),
    # not decided again
    assert [r["step"] for r in records if r["kind"] == "StepSealed"] == list(range(0, 201, 10))
    assert [r["step"] for r in records if r["kind"] == "CheckpointSaved"] == [50, 100, 150, 200]
    assert [r["step"] for r in records if r["kind"] == "DecisionMade" and 50 < r["step"] < 95] == [60, 80]
    assert again.replicated.rewraps == 0  # no process group: nothing to re-wrap
    assert again.lifecycle.surgery.digest(event_ids=False) == reference.lifecycle.surgery.digest(
        event_ids=False
    )
    assert again.lifecycle.surgery.digest() != reference.lifecycle.surgery.digest()  # other event ids


# -- the distributed helpers without a group -------------------------------------------------


def test_without_a_process_group_the_helpers_change_nothing() -> None:
    """No group: rank 0 of 1, sums and broadcasts are no-ops, a digest's range and gather are itself."""
    assert (distributed.active(), distributed.rank(), distributed.world_size()) == (False, 0, 1)
    tensor = torch.arange(3.0)
    distributed.sum_in_place([tensor])
    assert tensor.tolist() == [0.0, 1.0, 2.0]
    digest = "fedcba9876543210"
    assert distributed.digest_range(digest) == (digest, digest)
    assert distributed.gather_digests(digest) == [digest]
    model = torch.nn.Linear(2, 2)
    weights = model.weight.detach().clone()
    distributed.broadcast_training_state(
        distributed.named_state(model), torch.optim.SGD(model.parameters()), src=0
    )
    assert torch.equal(model.weight, weights)


def _one_rank() -> dict[str, Any]:
    return {"init_method": f"tcp://127.0.0.1:{free_port()}", "rank": 0, "world_size": 1}


def test_process_group_leaves_the_group_it_joined_whether_the_block_ends_or_raises() -> None:
    """Inside the block a one-rank gloo group is active; after it none is, and an error passes through."""
    with distributed.process_group("gloo", **_one_rank()):
        assert (distributed.active(), distributed.rank(), distributed.world_size()) == (True, 0, 1)
    assert not distributed.active()
    with pytest.raises(_Crash), distributed.process_group("gloo", **_one_rank()):
        raise _Crash
    assert not distributed.active()


def test_replicated_without_a_group_is_the_module_itself() -> None:
    """`Replicated` wraps nothing in one process: calls go to the module and a re-wrap does nothing."""
    model = torch.nn.Linear(2, 2)
    replicated = Replicated(model)
    assert replicated.wrapper is model
    x = torch.ones(1, 2)
    assert torch.equal(replicated(x), model(x))
    replicated.rewrap()
    assert replicated.wrapper is model and replicated.rewraps == 0


def test_named_state_lists_parameters_and_buffers_sorted() -> None:
    """Parameters and `buffer:`-prefixed buffers come in sorted name order, the order a repair broadcasts."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    names = [n for n, _ in distributed.named_state(model)]
    assert names == sorted(names)
    assert {"0.weight", "1.bias", "buffer:1.running_mean", "buffer:1.num_batches_tracked"} <= set(names)


def test_a_stop_request_is_the_next_boundarys_stop_and_only_its() -> None:
    """`request_stop` makes the next boundary a stop (one vote in one process); the one after
    it is not, and a boundary without a request never is."""
    demo = _demo(MemoryLog("votes"))
    assert demo.lifecycle is not None
    demo.start()
    sync = demo.lifecycle.sync
    assert not sync.at_boundary(10).stop
    sync.request_stop()
    stopped = sync.at_boundary(20)
    assert stopped.stop and stopped.stop_votes == 1
    assert not sync.at_boundary(30).stop
