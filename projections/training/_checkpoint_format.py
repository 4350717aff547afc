"""The checkpoint manager's file pair: `{id}.pt` (the state) and `{id}.json` (its metadata).

The `.pt` file holds `{"version": int, "state_data": dict}` written by `torch.save` with only
tensors and plain data in it, read back with `torch.load(weights_only=True)` after its bytes
are checked against the SHA-256 in the sidecar. Older versions are lifted one step at a time
by registered migrations (seeds/001 section 3, reference section 1.7: v1 -> v2).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from lifecycle_es._arguments import first_misfit
from lifecycle_es.errors import CheckpointMismatchError, CheckpointUnreadableError, ConfigError
from lifecycle_es.events import CheckpointPriority

__all__ = [
    "CHECKPOINT_ID_PATTERN",
    "MIGRATIONS",
    "PRIORITIES",
    "VERSION",
    "CheckpointInfo",
    "Migration",
    "check_migrations",
    "first_non_tensor_data",
    "migrate_v1_to_v2",
    "read_info",
    "read_state",
]

VERSION = 2
"""The layout version the manager writes; older ones are migrated on load."""

PRIORITIES: tuple[CheckpointPriority, ...] = get_args(CheckpointPriority)
"""From least to most kept: low, normal, high, critical."""

CHECKPOINT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
"""An id is a file name stem: no dots or slashes, so it can never leave its directory."""

Migration = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
"""Lifts (metadata, state_data) of version v to version v + 1 (it need not set `version`)."""


def migrate_v1_to_v2(
    metadata: dict[str, Any], state_data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Version 1 had no priorities and kept the lifecycle state under `state_data["state"]`."""
    metadata = {**metadata, "priority": metadata.get("priority", "normal")}
    state_data = dict(state_data)
    if "state" in state_data:
        state_data["lifecycle_state"] = state_data.pop("state")
    return metadata, state_data


MIGRATIONS: Mapping[int, Migration] = {1: migrate_v1_to_v2}
"""The built-in chain: the migration from each version below `VERSION` to the next."""


def check_migrations(migrations: object) -> dict[int, Migration]:
    """Return the chain if it has one callable from every version 1 .. VERSION - 1, else raise."""
    if not isinstance(migrations, Mapping):
        raise ConfigError(
            f"migrations must be a mapping of version to function, got {type(migrations).__name__}"
        )
    wanted = set(range(1, VERSION))
    if set(migrations) != wanted:
        raise ConfigError(
            f"migrations must cover exactly versions {sorted(wanted)}, got {sorted(map(repr, migrations))}"
        )
    if not all(callable(f) for f in migrations.values()):
        raise ConfigError("every migration must be a function of (metadata, state_data)")
    return dict(migrations)


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """One checkpoint's metadata, as its JSON sidecar holds it, and where its files are."""

    id: str
    run_id: str
    layer: int
    seed: int
    state: str
    """The entity's lifecycle state when it was saved ("" when the caller gave none)."""
    step: int
    priority: CheckpointPriority
    version: int
    sha256: str
    size: int
    """Bytes in the `.pt` file."""
    created_at: float
    """Wall time of the save, seconds since the epoch; the id holds it in milliseconds."""
    extra: dict[str, Any]
    """The caller's JSON metadata."""
    path: Path
    """The `.pt` file; the sidecar is beside it with the suffix `.json`."""

    @property
    def place(self) -> str:
        """The directory the checkpoint is in: "active" or "archive"."""
        return self.path.parent.name

    def to_json(self) -> bytes:
        """The sidecar's bytes."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(fields, sort_keys=True, indent=1).encode()


_FIELDS = (
    "id",
    "run_id",
    "layer",
    "seed",
    "state",
    "step",
    "priority",
    "version",
    "sha256",
    "size",
    "created_at",
    "extra",
)
_COUNTS = ("layer", "seed", "step", "version", "size")


def read_info(sidecar: Path, migrations: Mapping[int, Migration]) -> tuple[dict[str, Any], CheckpointInfo]:
    """Read a sidecar: the raw metadata, and the info it lists as (migrated, with the stored
    `version` kept, so a listing tells which files are old)."""
    try:
        raw = json.loads(sidecar.read_bytes())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointUnreadableError(f"cannot read checkpoint metadata {sidecar}: {e}") from e
    if not isinstance(raw, dict) or not _is_count(raw.get("version")) or raw["version"] < 1:
        raise CheckpointUnreadableError(f"{sidecar} is not checkpoint metadata: it has no version >= 1")
    if raw["version"] > VERSION:
        raise CheckpointUnreadableError(
            f"{sidecar} is of version {raw['version']}, newer than {VERSION}, the newest this code reads"
        )
    metadata, _ = _migrate(raw, {}, migrations, sidecar)
    return raw, info_from({**metadata, "version": raw["version"]}, sidecar)


def info_from(raw: Mapping[str, Any], sidecar: Path) -> CheckpointInfo:
    """Check current-version metadata field by field and return it as an info."""
    problem = _metadata_problem(raw)
    if problem is not None:
        raise CheckpointUnreadableError(f"checkpoint metadata {sidecar} is unusable: {problem}")
    return CheckpointInfo(**{name: raw[name] for name in _FIELDS}, path=sidecar.with_suffix(".pt"))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _metadata_problem(raw: Mapping[str, Any]) -> str | None:
    """A phrase naming the first field that is missing or of the wrong type, or None."""
    for name in _COUNTS:
        if not _is_count(raw.get(name)):
            return f"its {name!r} is {raw.get(name)!r}, not an int >= 0"
    for name in ("id", "run_id", "state", "sha256"):
        if not isinstance(raw.get(name), str):
            return f"its {name!r} is {raw.get(name)!r}, not a str"
    if raw.get("priority") not in PRIORITIES:
        return f"its priority {raw.get('priority')!r} is not one of {list(PRIORITIES)}"
    created = raw.get("created_at")
    if isinstance(created, bool) or not isinstance(created, int | float) or not math.isfinite(created):
        return f"its created_at is {created!r}, not a finite number"
    if not isinstance(raw.get("extra"), dict):
        return "its extra is not a mapping"
    return None


def read_state(
    raw: dict[str, Any], sidecar: Path, migrations: Mapping[int, Migration], map_location: torch.device
) -> tuple[CheckpointInfo, dict[str, Any]]:
    """Verify the `.pt` beside `sidecar` against the metadata's SHA-256, load it onto
    `map_location` and migrate both to the current version."""
    path = sidecar.with_suffix(".pt")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointUnreadableError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    if hashlib.sha256(data).hexdigest() != raw.get("sha256"):
        raise CheckpointMismatchError(
            f"checkpoint {path} does not hash to the SHA-256 its metadata recorded; "
            "it was changed or truncated"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:
        # On foreign bytes the weights-only loader raises almost any type; each means no checkpoint.
        raise CheckpointUnreadableError(
            f"{path} is not a checkpoint: the loader failed ({type(e).__name__})"
        ) from e
    if (
        not isinstance(payload, dict)
        or payload.get("version") != raw["version"]
        or not isinstance(payload.get("state_data"), dict)
    ):
        raise CheckpointUnreadableError(
            f"{path} does not hold the version and state_data its metadata describes"
        )
    metadata, state_data = _migrate(raw, payload["state_data"], migrations, path)
    return info_from(metadata, sidecar), state_data


def _migrate(
    metadata: dict[str, Any], state_data: dict[str, Any], migrations: Mapping[int, Migration], path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    version = metadata["version"]
    while version < VERSION:
        try:
            metadata, state_data = migrations[version](dict(metadata), dict(state_data))
        except Exception as e:  # a caller's migration may fail any way; the checkpoint is unusable
            raise CheckpointUnreadableError(f"migrating {path} from version {version} failed: {e}") from e
        version += 1
        metadata = {**metadata, "version": version}
    return metadata, state_data


def first_non_tensor_data(value: object, path: str) -> str | None:
    """A phrase naming the first value a weights-only load could not read back, or None:
    tensors, str-keyed dicts, lists, tuples, str, int, float, bool and None only."""
    return first_misfit(value, path, _tensor_data_leaf, (list, tuple))


def _tensor_data_leaf(value: object, path: str) -> str | None:
    if value is None or isinstance(value, torch.Tensor | str | int | float):
        return None
    return f"{path} is of type {type(value).__name__}"
