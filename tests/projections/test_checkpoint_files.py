"""Checkpoint files under bad input and concurrency: a payload of the right format but the wrong
layout is unreadable (never a KeyError), wrong argument types are refused before anything is
written, and threads saving one path never collide (issue 12)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from lifecycle_es import CheckpointUnreadableError, Lifecycle, UsageError
from projections import RegistryProjection, Runner
from projections.training.checkpoint import FORMAT, Checkpoints, load_checkpoint, save_checkpoint


def _payload(**changes: Any) -> dict[str, Any]:
    good: dict[str, Any] = {
        "format": FORMAT,
        "step": 4,
        "seq": 9,
        "model": {"w": torch.ones(2)},
        "optimizer": {},
        "snapshots": {"surgery": {"seq": 9, "state": {"m": torch.arange(2)}}},
        "extra": {},
    }
    good.update(changes)
    return {k: v for k, v in good.items() if v is not _MISSING}


_MISSING = object()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"step": _MISSING}, "its 'step' is None, not an int >= 0"),
        ({"seq": "9"}, "its 'seq' is '9', not an int >= 0"),
        ({"step": -1}, "its 'step' is -1"),
        ({"step": True}, "its 'step' is True"),
        ({"model": _MISSING}, "its 'model' is of type NoneType, not a dict"),
        ({"model": [1]}, "its 'model' is of type list, not a dict"),
        ({"model": {"w": 3}}, "its 'model' holds a value that is not a tensor"),
        ({"optimizer": "adam"}, "its 'optimizer' is of type str"),
        ({"snapshots": _MISSING}, "its 'snapshots' is of type NoneType"),
        ({"snapshots": {"surgery": 3}}, "its snapshot 'surgery' is not a dict under a str name"),
        ({"snapshots": {"surgery": {"state": {}}}}, "its snapshot 'surgery' lacks an int 'seq'"),
        ({"snapshots": {"surgery": {"seq": 1, "state": [1]}}}, "lacks an int 'seq' >= 0 or a dict 'state'"),
        ({"extra": _MISSING}, "its 'extra' is of type NoneType"),
    ],
    ids=str,
)
def test_a_checkpoint_with_a_missing_or_mistyped_field_is_unreadable(
    tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    """A weights-only file of our format lacking a field, or holding one of the wrong type, is a
    one-sentence CheckpointUnreadableError naming the field, never a KeyError or AttributeError."""
    path = tmp_path / "c.pt"
    torch.save(_payload(**changes), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointUnreadableError) as caught:
        load_checkpoint(path, sha256=sha)
    text = str(caught.value)
    assert (
        text.startswith(f"{path} is not a lifecycle-es checkpoint of format {FORMAT}: ") and problem in text
    )


def test_a_well_formed_payload_written_by_hand_loads() -> None:
    """The layout check accepts what it describes (the good payload of the cases above)."""
    assert set(_payload()) == {"format", "step", "seq", "model", "optimizer", "snapshots", "extra"}


_GOOD: dict[str, Any] = {"step": 1, "seq": 1, "model": {}, "optimizer": {}, "snapshots": []}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"step": "1"}, "save_checkpoint(step=...) takes an int >= 0, got '1'"),
        ({"seq": -2}, "save_checkpoint(seq=...) takes an int >= 0, got -2"),
        ({"model": [torch.ones(1)]}, "save_checkpoint(model=...) takes a mapping, got list"),
        ({"optimizer": None}, "save_checkpoint(optimizer=...) takes a mapping, got NoneType"),
        ({"extra": 3}, "save_checkpoint(extra=...) takes a mapping, got int"),
        ({"snapshots": [{"kind": "x"}]}, "save_checkpoint(snapshots=...) takes a sequence of Snapshot"),
    ],
    ids=str,
)
def test_save_refuses_wrong_argument_types_before_writing(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    """A wrong type for any argument of save_checkpoint is a UsageError naming it; no file appears."""
    with pytest.raises(UsageError) as caught:
        save_checkpoint(tmp_path / "c.pt", **{**_GOOD, **changes})
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "sha256", "message"),
    [
        (3, None, "load_checkpoint(path=...) takes a str or path, got int"),
        ("c.pt", b"ab", "load_checkpoint(sha256=...) takes hex text or None, got bytes"),
    ],
)
def test_load_refuses_wrong_argument_types(path: Any, sha256: Any, message: str) -> None:
    """A path or digest of the wrong type is a UsageError naming the argument, not a TypeError."""
    with pytest.raises(UsageError) as caught:
        load_checkpoint(path, sha256=sha256)
    assert str(caught.value) == message


def _race(path: Path, trial: int) -> tuple[list[str], list[BaseException]]:
    """Four threads save different states to `path` at once; return their hashes and errors."""
    hashes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def save(index: int) -> None:
        barrier.wait()  # start together, so the writes overlap
        try:
            state = {"w": torch.full((64,), float(trial * 4 + index))}
            hashes.append(
                save_checkpoint(path, step=index, seq=index, model=state, optimizer={}, snapshots=[])
            )
        except BaseException as e:  # collected and asserted on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return hashes, errors


def test_threads_saving_one_path_never_collide(tmp_path: Path) -> None:
    """20 trials of 4 threads saving different states to one path: no call fails, the file is
    one of the states whole (its hash is one a call returned), and no temporary file is left."""
    path = tmp_path / "c.pt"
    for trial in range(20):
        hashes, errors = _race(path, trial)
        assert errors == []
        assert len(set(hashes)) == 4
        assert hashlib.sha256(path.read_bytes()).hexdigest() in hashes
        assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("boundary", "message"),
    [
        (10, "Checkpoints.save(boundary=...) takes what at_boundary returned, got int"),
        (None, "Checkpoints.save(boundary=...) takes what at_boundary returned, got NoneType"),
    ],
)
def test_checkpoints_save_refuses_a_boundary_that_is_no_boundary(
    tmp_path: Path, boundary: Any, message: str
) -> None:
    """A step number or None where the Boundary belongs is a UsageError naming it; nothing is written
    or recorded."""
    lifecycle = Lifecycle(run_id="ckpt")
    model = torch.nn.Linear(2, 2)
    checkpoints = Checkpoints(
        lifecycle,
        Runner(lifecycle.log, [RegistryProjection()]),
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    )
    with pytest.raises(UsageError) as caught:
        checkpoints.save(tmp_path / "ckpt", boundary)
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == [] and lifecycle.log.last_seq() == 0
