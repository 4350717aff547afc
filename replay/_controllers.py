"""The controllers what-if can re-run: one `ControllerKind` each, found on a log by what it recorded.

A kind reads a run's records once (`see`), then tells whether the run used it (`recorded`),
which records open one of its evaluations (`evaluates`), and builds the controller again under
changed settings (`rerun`). The expert coordinator is the one kind so far; another controller
(the seed controllers, say) is a subclass here and an entry in `CONTROLLER_KINDS`.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import JsonValue

from bus import Record
from lifecycle_es.controllers import (
    CHECKPOINT_STEP,
    ExpertCoordinator,
    ExpertCoordinatorConfig,
    parse_expert_id,
)
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.events import EventBase, gate_results
from lifecycle_es.registry import Registry
from lifecycle_es.specs import EXPERT_SPEC

__all__ = ["CONTROLLER_KINDS", "Controller", "ControllerKind", "ExpertCoordinatorKind", "Rerun"]


class Controller(Protocol):
    """What a controller is to what-if: a pure `decide` over the registry at an evaluation step."""

    def decide(self, registry: Registry, *, run_id: str, step: int) -> list[EventBase]:
        """Return the controller's events for `step` without changing `registry`."""
        ...


@dataclass(frozen=True, slots=True)
class Rerun:
    """A controller built again under changed settings, and what its registry must keep."""

    controller: Controller
    window: int
    """Observations the registry must keep per metric for the controller to decide as it did."""
    settings: dict[str, JsonValue]
    """Every setting in force, as the controller records it (its config snapshot)."""


class ControllerKind(ABC):
    """One kind of controller: how to recognise it on a recorded run and build it again.

    An instance is fresh per what-if: `see` is called with every record of the run, in order,
    before any other method.
    """

    name: ClassVar[str]
    """How the output names the controller, e.g. "expert coordinator"."""
    spec: ClassVar[str]
    """The spec of the entities whose events the controller writes."""

    @abstractmethod
    def see(self, record: Record, spec: str | None) -> None:
        """Take note of one recorded record; `spec` is that of the entity it names, if known."""

    @abstractmethod
    def recorded(self) -> dict[str, JsonValue] | None:
        """Return the settings the run recorded for the controller, or None if it did not run."""

    @abstractmethod
    def evaluates(self, record: Record) -> bool:
        """Tell whether `record` opens one of the controller's evaluations at its step."""

    @abstractmethod
    def rerun(self, changes: Mapping[str, JsonValue]) -> Rerun:
        """Build the controller with the recorded settings and `changes` over them.

        Raises `ConfigError` for a name it has no setting of or a value the config refuses, and
        `UsageError` for a run whose recorded settings it cannot re-run.
        """

    @classmethod
    @abstractmethod
    def setting_names(cls) -> frozenset[str]:
        """Return the names `changes` may use."""


class ExpertCoordinatorKind(ControllerKind):
    """The expert coordinator (`lifecycle_es.controllers.ExpertCoordinator`).

    Its settings are an `ExpertCoordinatorConfig`, found on the run as the `config_snapshot` of
    its decisions or, on a run where it decided nothing, as `RunStarted.config["lifecycle"]`
    (where the demo records it). It manages the layers it observed (the layer observations
    that carry `checkpoint_step`) and those holding experts. Slots per layer: the capacity its
    slot gates recorded, else the larger of the recorded `max_experts_per_layer` and the
    highest slot an expert held (a changed `max_experts_per_layer` does not add slots). The
    counterfactual registry keeps `basin_window_size` observations per metric, as the writer
    the coordinator asks for does (`LifecycleConfig(metric_window=basin_window_size)`); a run
    written with a longer window is not reproduced exactly.
    """

    name = "expert coordinator"
    spec = EXPERT_SPEC.name

    def __init__(self) -> None:
        self._started: dict[str, JsonValue] | None = None
        self._snapshots: dict[str, dict[str, JsonValue]] = {}
        """Each distinct decision config snapshot, by its canonical JSON."""
        self._layers: set[int] = set()
        self._slots: dict[int, int] = {}
        """Per layer, one past the highest slot an expert was registered in."""
        self._capacity: dict[int, int] = {}
        """Per layer, the capacity the coordinator's slot gates recorded."""

    @classmethod
    def setting_names(cls) -> frozenset[str]:
        """Every field of `ExpertCoordinatorConfig`."""
        return frozenset(f.name for f in dataclasses.fields(ExpertCoordinatorConfig))

    def see(self, record: Record, spec: str | None) -> None:
        """Gather the config, the layers and the slots the run recorded."""
        kind = record["kind"]
        if kind == "RunStarted":
            started = record["config"].get("lifecycle")
            if isinstance(started, dict) and set(started) <= self.setting_names():
                self._started = started
        elif kind == "MetricsObserved" and self.evaluates(record):
            self._layers.add(record["layer"])
        elif spec != self.spec:
            return
        elif kind == "DecisionMade":
            snapshot = record["config_snapshot"]
            self._snapshots.setdefault(json.dumps(snapshot, sort_keys=True), snapshot)
        elif kind == "EntityRegistered" and record["layer"] is not None:
            layer, slot = record["layer"], record["slot"]
            self._layers.add(layer)
            self._slots[layer] = max(self._slots.get(layer, 0), 0 if slot is None else slot + 1)
        elif kind in ("GateChecked", "GatesChecked"):
            self._capacity_gate(record)

    def _capacity_gate(self, record: Record) -> None:
        # A spawn's gates are recorded on the id its child would get, which may never have
        # been registered: the layer comes from the id itself.
        parsed = parse_expert_id(record["entity"])
        for outcome in gate_results(record):
            # observed since the compact form; a threshold in older logs
            capacity = outcome.observed.get("capacity", outcome.thresholds.get("capacity"))
            if parsed is not None and capacity is not None:
                self._capacity[parsed[0]] = int(capacity)

    def recorded(self) -> dict[str, JsonValue] | None:
        """The one config snapshot the decisions recorded, else the one the run started with.

        Raises `UsageError` when the decisions record more than one.
        """
        if len(self._snapshots) > 1:
            raise UsageError(
                f"the run's expert decisions record {len(self._snapshots)} different configs; "
                "what-if re-runs a run made under one"
            )
        if self._snapshots:
            return dict(next(iter(self._snapshots.values())))
        if self._started is not None and self._layers:
            return dict(self._started)
        return None

    def evaluates(self, record: Record) -> bool:
        """A layer observation carrying `checkpoint_step`: the coordinator's, once per checkpoint."""
        return (
            record["kind"] == "MetricsObserved"
            and record["entity"] is None
            and record["layer"] is not None
            and CHECKPOINT_STEP in record["metrics"]
        )

    def rerun(self, changes: Mapping[str, JsonValue]) -> Rerun:
        """An `ExpertCoordinator` under the recorded config with `changes` over it."""
        recorded = self.recorded()
        if recorded is None:
            raise UsageError("the run records no expert coordinator config")
        unknown = sorted(set(changes) - self.setting_names())
        if unknown:
            raise ConfigError(f"the {self.name} has no setting {unknown[0]!r}")
        stale = sorted(set(recorded) - self.setting_names())
        if stale:
            raise UsageError(f"the run records the setting {stale[0]!r}, which this version lacks")
        # The model's slots are the recorded run's: a changed cap does not add any.
        limit = ExpertCoordinatorConfig(**dict[str, Any](recorded)).max_experts_per_layer
        config = ExpertCoordinatorConfig(**dict[str, Any](recorded, **changes))
        capacity = {
            layer: self._capacity.get(layer, max(limit, self._slots.get(layer, 0)))
            for layer in sorted(self._layers)
        }
        return Rerun(
            controller=ExpertCoordinator(config, capacity),
            window=config.basin_window_size,
            settings=config.snapshot(),
        )


CONTROLLER_KINDS: tuple[type[ControllerKind], ...] = (ExpertCoordinatorKind,)
"""Every controller what-if knows, in the order they decide within one evaluation."""
