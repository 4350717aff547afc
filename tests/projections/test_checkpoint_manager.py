"""The checkpoint manager: round trips, retention by priority, migration, recovery, concurrency, events."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from lifecycle_es import (
    BUILTIN_SPECS,
    CODEC,
    CheckpointMismatchError,
    CheckpointUnreadableError,
    CheckpointWriteError,
    ConfigError,
    Lifecycle,
    Registry,
    SchemaError,
    UsageError,
    fold_record,
)
from projections.training import CheckpointManager, RetentionConfig


def seed_state(value: float, n: int = 16) -> dict[str, Any]:
    """A seed's state as a training loop would checkpoint it: tensors and plain data."""
    return {
        "lifecycle_state": torch.full((n,), 3, dtype=torch.int8),
        "alpha": torch.full((n,), value),
        "blueprint": {"weight": torch.randn(4, 4), "bias": torch.zeros(4)},
        "epochs_in_state": 7,
    }


def recorded(lifecycle: Lifecycle) -> list[tuple[str, str]]:
    """(action, checkpoint id) of every CheckpointRecorded on the run's log, in order."""
    return [
        (r["action"], r["checkpoint_id"]) for r in lifecycle.log.read() if r["kind"] == "CheckpointRecorded"
    ]


def test_save_list_load_round_trip(tmp_path: Path) -> None:
    """A saved checkpoint is listed with its metadata and loads back equal, tensors included."""
    manager = CheckpointManager(tmp_path, run_id="rt")
    state = seed_state(0.5)
    info = manager.save(state, layer=2, seed=7, step=40, state="TRAINING", extra={"loss": 0.25})
    sidecar = json.loads(info.path.with_suffix(".json").read_text())
    assert set(sidecar) == {
        *("id", "run_id", "layer", "seed", "state", "step", "priority"),
        *("version", "sha256", "size", "created_at", "extra"),
    }
    assert (sidecar["id"], sidecar["run_id"], sidecar["layer"], sidecar["seed"]) == (info.id, "rt", 2, 7)
    assert info.path.parent == tmp_path / "active" and info.size == info.path.stat().st_size
    assert str(int(info.created_at * 1000)) in info.id  # the id carries the millisecond timestamp
    assert manager.list_checkpoints() == [info]
    loaded = manager.load(info.id)
    assert loaded.info == info
    assert torch.equal(loaded.state_data["alpha"], state["alpha"])
    assert torch.equal(loaded.state_data["blueprint"]["weight"], state["blueprint"]["weight"])
    assert loaded.state_data["epochs_in_state"] == 7


def test_listing_filters_and_orders_newest_first(tmp_path: Path) -> None:
    """Listings filter by layer, seed, state, step range and priority, newest first."""
    manager = CheckpointManager(tmp_path, retention=RetentionConfig(per_seed=10))
    saves = [
        manager.save(seed_state(0), layer=0, seed=0, step=1, state="TRAINING"),
        manager.save(seed_state(1), layer=0, seed=1, step=2, state="GRAFTING", priority="high"),
        manager.save(seed_state(2), layer=1, seed=0, step=3, state="TRAINING", priority="low"),
        manager.save(seed_state(3), layer=0, seed=0, step=4, state="GRAFTING", priority="critical"),
    ]
    ids = [i.id for i in saves]
    assert [i.id for i in manager.list_checkpoints()] == ids[::-1]
    assert [i.id for i in manager.list_checkpoints(layer=0, seed=0)] == [ids[3], ids[0]]
    assert [i.id for i in manager.list_checkpoints(state="GRAFTING")] == [ids[3], ids[1]]
    assert [i.id for i in manager.list_checkpoints(steps=(2, 3))] == [ids[2], ids[1]]
    assert [i.id for i in manager.list_checkpoints(priority=["low", "high"])] == [ids[2], ids[1]]
    assert manager.list_checkpoints(priority="normal", layer=1) == []


def test_retention_archives_normal_and_high_deletes_low_and_keeps_critical(tmp_path: Path) -> None:
    """Over the per-seed limit, normal and high checkpoints are archived, low ones deleted,
    critical ones kept; the per-run and archive limits hold too, and each move is an event
    caused by the save that forced it."""
    lifecycle = Lifecycle(run_id="keep")
    limits = RetentionConfig(per_seed=2, per_run=3, archive=2)
    manager = CheckpointManager(tmp_path, retention=limits, lifecycle=lifecycle)
    crit = manager.save(seed_state(0), layer=0, seed=0, step=1, priority="critical")
    low = manager.save(seed_state(1), layer=0, seed=0, step=2, priority="low")
    high = manager.save(seed_state(2), layer=0, seed=0, step=3, priority="high")
    # Two slots: the critical one and the high one; the low one is deleted, not archived.
    assert {i.id for i in manager.list_checkpoints()} == {crit.id, high.id}
    assert not low.path.exists() and manager.list_checkpoints(place="archive") == []
    normal = manager.save(seed_state(3), layer=0, seed=0, step=4)
    # The newer normal one loses to the high one: high ranks first within the limit.
    assert {i.id for i in manager.list_checkpoints()} == {crit.id, high.id}
    assert [i.id for i in manager.list_checkpoints(place="archive")] == [normal.id]
    other = [manager.save(seed_state(4), layer=1, seed=s, step=5 + s) for s in range(2)]
    # Per run at most 3 in active/: critical stays, then high, then the newest normal.
    assert {i.id for i in manager.list_checkpoints()} == {crit.id, high.id, other[1].id}
    # The archive keeps its 2 newest: normal was archived first and is deleted.
    assert [i.id for i in manager.list_checkpoints(place="archive")] == [other[0].id, normal.id][:2]
    manager.save(seed_state(5), layer=2, seed=0, step=9)
    assert normal.id not in {i.id for i in manager.list_checkpoints(place="all")}
    assert crit.id in {i.id for i in manager.list_checkpoints()}
    actions = recorded(lifecycle)
    assert ("delete", low.id) in actions and ("archive", normal.id) in actions
    assert ("delete", normal.id) in actions
    assert not any(a != "save" and cid == crit.id for a, cid in actions)
    assert lifecycle.registry.checkpoints[crit.id] == "active"
    assert low.id not in lifecycle.registry.checkpoints
    # Each archive or delete is caused by a save, and happens at that save's step.
    records = [r for r in lifecycle.log.read() if r["kind"] == "CheckpointRecorded"]
    saves = {r["event_id"]: r["step"] for r in records if r["action"] == "save"}
    moves = [r for r in records if r["action"] in ("archive", "delete")]
    assert moves and all(saves[r["causation"]] == r["step"] for r in moves)


def write_v1_checkpoint(directory: Path, checkpoint_id: str) -> None:
    """A checkpoint as version 1 wrote it: no priority, the lifecycle state under "state"."""
    buffer = io.BytesIO()
    torch.save({"version": 1, "state_data": {"state": "TRAINING", "alpha": torch.ones(3)}}, buffer)
    data = buffer.getvalue()
    (directory / f"{checkpoint_id}.pt").write_bytes(data)
    metadata = {
        "id": checkpoint_id,
        "run_id": "old",
        "layer": 1,
        "seed": 0,
        "state": "TRAINING",
        "step": 12,
        "version": 1,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "created_at": 1706115234.567,
        "extra": {},
    }
    (directory / f"{checkpoint_id}.json").write_text(json.dumps(metadata))


def test_a_v1_checkpoint_is_migrated_on_load(tmp_path: Path) -> None:
    """A version 1 checkpoint lists as version 1 and loads as version 2: priority normal, the
    state renamed to lifecycle_state."""
    (tmp_path / "active").mkdir()
    write_v1_checkpoint(tmp_path / "active", "layer1_seed0_1706115234567")
    manager = CheckpointManager(tmp_path, run_id="old")
    [listed] = manager.list_checkpoints()
    assert (listed.version, listed.priority) == (1, "normal")
    loaded = manager.load(listed.id)
    assert (loaded.info.version, loaded.info.priority) == (2, "normal")
    assert loaded.state_data["lifecycle_state"] == "TRAINING" and "state" not in loaded.state_data
    assert torch.equal(loaded.state_data["alpha"], torch.ones(3))


def test_the_migration_chain_is_validated_and_failures_are_typed(tmp_path: Path) -> None:
    """A chain with a missing or extra version is a ConfigError; a failing migration makes the
    checkpoint unreadable, not a crash."""
    with pytest.raises(ConfigError, match="cover exactly versions"):
        CheckpointManager(tmp_path, migrations={})
    with pytest.raises(ConfigError, match="cover exactly versions"):
        CheckpointManager(tmp_path, migrations={1: lambda m, s: (m, s), 2: lambda m, s: (m, s)})

    def broken(metadata: dict[str, Any], state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        raise KeyError("gone")

    (tmp_path / "active").mkdir()
    write_v1_checkpoint(tmp_path / "active", "layer1_seed0_1706115234567")
    with pytest.raises(CheckpointUnreadableError, match="migrating"):
        CheckpointManager(tmp_path, migrations={1: broken}).load("layer1_seed0_1706115234567")


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_on_the_log(tmp_path: Path) -> None:
    """Recovery passes over a newest checkpoint whose bytes changed, restores the previous one,
    names what it skipped, and records both the corruption and the restore."""
    lifecycle = Lifecycle(run_id="recover")
    manager = CheckpointManager(tmp_path, lifecycle=lifecycle)
    good = manager.save(seed_state(1.0), layer=0, seed=3, step=10)
    bad = manager.save(seed_state(2.0), layer=0, seed=3, step=20)
    data = bytearray(bad.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.path.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match="SHA-256"):
        manager.load(bad.id)
    recovery = manager.load_latest(layer=0, seed=3)
    assert recovery is not None
    assert recovery.checkpoint.info.id == good.id
    assert [cid for cid, _ in recovery.skipped] == [bad.id]
    assert torch.equal(recovery.checkpoint.state_data["alpha"], torch.full((16,), 1.0))
    assert recorded(lifecycle)[-2:] == [("corrupt", bad.id), ("restore", good.id)]
    assert lifecycle.registry.checkpoints == {good.id: "active", bad.id: "corrupt"}
    assert manager.load_latest(layer=5) is None


def test_when_every_checkpoint_is_corrupt_recovery_raises(tmp_path: Path) -> None:
    """With no intact checkpoint left, recovery is one typed error naming the newest failure."""
    manager = CheckpointManager(tmp_path)
    info = manager.save(seed_state(1.0), layer=0, seed=0, step=1)
    info.path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="none of the 1 matching"):
        manager.load_latest()


def test_restore_goes_to_the_chosen_device(tmp_path: Path) -> None:
    """Tensors are restored onto map_location (CPU here; CUDA too when the machine has it)."""
    manager = CheckpointManager(tmp_path)
    info = manager.save(seed_state(1.0), layer=0, seed=0, step=1)
    devices = ["cpu", torch.device("cpu")] + (["cuda:0"] if torch.cuda.is_available() else [])
    for device in devices:
        loaded = manager.load(info.id, map_location=device)
        assert loaded.state_data["alpha"].device == torch.device(device)


def _save_many(root: str, worker: int, count: int, start: Any) -> None:
    manager = CheckpointManager(root, run_id="many", retention=RetentionConfig(per_seed=1000, per_run=1000))
    start.wait(timeout=60)
    for i in range(count):
        manager.save({"worker": torch.tensor([worker]), "i": torch.tensor([i])}, layer=worker, seed=0, step=i)


def test_threads_and_processes_saving_at_once_never_collide(tmp_path: Path) -> None:
    """8 threads and 4 processes saving into one root at once: every checkpoint is there, with
    its own id, and loads back with its own state."""
    count = 10
    context = multiprocessing.get_context("fork")
    start = context.Barrier(12)  # every saver begins together, threads and processes alike
    # Fork before any thread starts: a child forked while a thread holds a lock could hang.
    processes = [
        context.Process(target=_save_many, args=(str(tmp_path), w, count, start)) for w in range(8, 12)
    ]
    for process in processes:
        process.start()
    threads = [threading.Thread(target=_save_many, args=(str(tmp_path), w, count, start)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    manager = CheckpointManager(tmp_path, run_id="many")
    infos = manager.list_checkpoints()
    assert len(infos) == len({i.id for i in infos}) == 12 * count
    for info in infos:
        state = manager.load(info.id).state_data
        assert (int(state["worker"]), int(state["i"])) == (info.layer, info.step)
    assert not [p for p in (tmp_path / "active").iterdir() if ".tmp-" in p.name]


def test_replayed_events_equal_the_live_registry(tmp_path: Path) -> None:
    """Folding the run's log from scratch gives the registry the live run holds, checkpoint
    view included."""
    lifecycle = Lifecycle(run_id="replayed")
    lifecycle.start()
    manager = CheckpointManager(
        tmp_path, lifecycle=lifecycle, retention=RetentionConfig(per_seed=1, archive=1)
    )
    for step, priority in enumerate(["normal", "low", "high", "normal"]):
        manager.save(seed_state(step), layer=0, seed=0, step=step, priority=priority)  # type: ignore[arg-type]
    manager.load_latest()
    replayed = Registry(BUILTIN_SPECS)
    for record in lifecycle.log.read():
        fold_record(replayed, record)
    assert replayed == lifecycle.registry
    assert Registry.from_state(BUILTIN_SPECS, lifecycle.registry.to_state()) == lifecycle.registry
    assert {a for a, _ in recorded(lifecycle)} == {"save", "archive", "delete", "restore"}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.save([1, 2], layer=0, seed=0, step=0), UsageError, "takes a mapping"),
        (lambda m: m.save({"f": open}, layer=0, seed=0, step=0), UsageError, "tensors and plain data"),
        (lambda m: m.save({}, layer=-1, seed=0, step=0), UsageError, "layer"),
        (lambda m: m.save({}, layer=0, seed="0", step=0), UsageError, "seed"),
        (lambda m: m.save({}, layer=0, seed=0, step=0, priority="urgent"), UsageError, "priority"),
        (lambda m: m.save({}, layer=0, seed=0, step=0, extra={"x": float("nan")}), UsageError, "JSON"),
        (lambda m: m.list_checkpoints(steps=(5, 1)), UsageError, "empty"),
        (lambda m: m.list_checkpoints(place="attic"), UsageError, "place"),
        (lambda m: m.load("../../etc/passwd"), UsageError, "not a checkpoint id"),
        (lambda m: m.load("layer0_seed0_1_missing"), UsageError, "no checkpoint"),
        (lambda m: m.load_latest(map_location="warp-drive"), UsageError, "not a device"),
    ],
)
def test_bad_input_gets_a_typed_one_sentence_error(
    tmp_path: Path, call: Any, error: type, match: str
) -> None:
    """Wrong arguments raise our typed error with a one-line message, and write nothing."""
    manager = CheckpointManager(tmp_path)
    with pytest.raises(error, match=match) as caught:
        call(manager)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "active").exists() or not list((tmp_path / "active").iterdir())


@pytest.mark.parametrize(
    "kwargs",
    [{"per_seed": 0}, {"per_run": True}, {"archive": 1.5}],
)
def test_bad_retention_config_is_a_config_error(kwargs: dict[str, Any]) -> None:
    """Each retention limit must be an int >= 1, checked when the config is made."""
    with pytest.raises(ConfigError, match="must be an int >= 1"):
        RetentionConfig(**kwargs)


def test_bad_construction_is_a_config_error(tmp_path: Path) -> None:
    """A manager built with a wrong root, run id, durability flag or a run id that contradicts
    its lifecycle is refused at construction."""
    with pytest.raises(ConfigError, match="root"):
        CheckpointManager(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run id"):
        CheckpointManager(tmp_path, run_id="../x")
    with pytest.raises(ConfigError, match="differs"):
        CheckpointManager(tmp_path, run_id="a", lifecycle=Lifecycle(run_id="b"))
    with pytest.raises(ConfigError, match="durable must be a bool"):
        CheckpointManager(tmp_path, durable="yes")  # type: ignore[arg-type]


def test_a_save_without_fsync_still_round_trips(tmp_path: Path) -> None:
    """durable=False changes only whether files are flushed to disk, not what is read back."""
    manager = CheckpointManager(tmp_path, durable=False)
    info = manager.save(seed_state(0.25), layer=1, seed=1, step=3)
    assert torch.equal(manager.load(info.id).state_data["alpha"], torch.full((16,), 0.25))


def test_a_checkpoint_record_of_the_wrong_shape_is_a_schema_error(tmp_path: Path) -> None:
    """On the trusted replay path, a CheckpointRecorded whose action or priority is not a str is
    refused by the codec's shape check before any fold sees it."""
    lifecycle = Lifecycle(run_id="shape")
    CheckpointManager(tmp_path, lifecycle=lifecycle).save(seed_state(0), layer=0, seed=0, step=0)
    [record] = lifecycle.log.read()
    assert CODEC.check(record) is record
    for name in ("action", "priority"):
        with pytest.raises(SchemaError, match=f"{name} must be a str"):
            CODEC.check({**record, name: ["save"]})


def test_a_damaged_metadata_file_is_left_out_and_named_by_recovery(tmp_path: Path) -> None:
    """A sidecar that is not metadata is left out of listings, and recovery names it among the
    checkpoints it passed over while it restores an intact one."""
    manager = CheckpointManager(tmp_path)
    good = manager.save(seed_state(1.0), layer=0, seed=0, step=1)
    (tmp_path / "active" / "layer0_seed0_9999999999999_deadbeef.json").write_text("{not json")
    assert manager.list_checkpoints() == [good]
    recovery = manager.load_latest()
    assert recovery is not None and recovery.checkpoint.info.id == good.id
    assert [cid for cid, _ in recovery.skipped] == ["layer0_seed0_9999999999999_deadbeef"]


def test_a_save_that_cannot_be_written_is_a_typed_error(tmp_path: Path) -> None:
    """A root where the files cannot go (here a file, not a directory) is a CheckpointWriteError
    from the OS error, and nothing is recorded."""
    root = tmp_path / "not-a-directory"
    root.write_text("")
    lifecycle = Lifecycle(run_id="full")
    with pytest.raises(CheckpointWriteError, match="cannot write checkpoint") as caught:
        CheckpointManager(root, lifecycle=lifecycle).save(seed_state(0), layer=0, seed=0, step=0)
    assert isinstance(caught.value.__cause__, OSError)
    assert recorded(lifecycle) == []
