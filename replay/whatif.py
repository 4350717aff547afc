"""What-if: re-run a run's controllers over its recorded observations under changed settings.

`what_if(log, {"split_patience": 8})` folds a fresh registry from the run's log with one
substitution. At each sealed evaluation step (a controller's layer observations, its events,
then `StepSealed`), the events the controller recorded between its observations and the seal
(gate checks, registrations, decisions, state moves of the entities of its spec) are replaced
by what it decides, under the changed settings, from the counterfactual registry; the decided
events are appended to an in-memory log, so the counterfactual evolves under its own decisions.
Everything else is replayed as recorded: observations, seals, other writers' events. A recorded
event that no longer fits the counterfactual (a move of an expert it never created) is skipped
and counted. The decisions are then compared with the recorded ones (`DecisionChange` rows).

Up to the first step where the decisions part, the counterfactual is exact: the same registry,
the same observations, the same code, other settings. After it, the observations come from a
model the recorded decisions shaped, not the counterfactual's; every row past that step says
so (`on_recorded_signals`). Observations are matched to entities by name, so a row also names
the entities the recording has no observation of from its step on (`unobserved`: the
counterfactual saw no signals of them) and those whose recorded namesake is another entity
(`stand_ins`: an expert the counterfactual spawned later than the recording did, under the id
the recording gave its own).

A seed run (decisions a `SeedDriver` recorded) is re-decided instead, decision by decision over
the recorded observations, with the heuristic's or the hybrid's settings changed
(`replay._seed_whatif`); its `log` is empty, as no counterfactual run is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from bus import Log, MemoryLog, Record
from lifecycle_es.codec import CODEC
from lifecycle_es.errors import ConfigError, InconsistentEventError, UsageError
from lifecycle_es.events import DecisionMade, EventBase
from lifecycle_es.registry import Registry, fold_record
from lifecycle_es.specs import BUILTIN_SPECS
from replay._controllers import CONTROLLER_KINDS, ControllerKind, Rerun
from replay._decision_diff import Coverage, DecisionChange, diff
from replay._seed_whatif import is_seed_decision, seed_what_if

__all__ = ["DecisionChange", "Setting", "WhatIf", "what_if"]

_WRITTEN = frozenset(
    {
        "GateChecked",
        "GatesChecked",
        "EntityRegistered",
        "TransitionApplied",
        "TransitionRejected",
        "DecisionMade",
    }
)
"""The kinds of the events a controller writes in an evaluation, replaced by its new decisions."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One changed setting: its recorded value and the value the what-if ran with."""

    controller: str
    name: str
    recorded: JsonValue
    what_if: JsonValue


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The counterfactual run and its decisions against the recorded ones."""

    run_id: str
    until_step: int | None
    settings: tuple[Setting, ...]
    """The settings changed (those given with their recorded value are left out)."""
    recorded: tuple[DecisionMade, ...]
    counterfactual: tuple[DecisionMade, ...]
    rows: tuple[DecisionChange, ...]
    """The differences, by step; empty when the what-if reproduces the recorded decisions."""
    first_parting_step: int | None
    """The first step whose decisions differ (None when none does)."""
    evaluations: int
    """The evaluations the controllers decided again."""
    skipped: int
    """Recorded events that no longer fit the counterfactual and were left out of it."""
    log: MemoryLog
    """The counterfactual run as a log: replay, analyse or export it like a recorded one."""

    @property
    def same(self) -> bool:
        """True when the what-if reproduces every recorded decision."""
        return not self.rows


def what_if(log: Log, changes: Mapping[str, JsonValue], *, until_step: int | None = None) -> WhatIf:
    """Re-run the run's controllers with `changes` over their recorded settings; diff the decisions.

    `changes` maps setting names (fields of the controller's config, e.g. `split_patience`)
    to values, validated by the config: an unknown name or a bad value raises `ConfigError`;
    a run with no controller what-if can re-run raises `UsageError`. `until_step` stops both runs after
    that step (records are read as a prefix, as `replay` does).
    """
    if until_step is not None and (isinstance(until_step, bool) or until_step < 0):
        raise ConfigError(f"until_step must be an int >= 0, got {until_step!r}")
    recording = _Recording(CONTROLLER_KINDS, until_step)
    for record in _records(log, until_step=None):
        recording.see(record)
    if recording.seeds:
        return _seeds(log, changes, until_step)
    reruns = recording.reruns(changes)
    counterfactual = _Counterfactual(log.run_id, reruns, recording.spec_of)
    for record in _records(log, until_step):
        counterfactual.feed(record)
    counterfactual.finish()
    coverage = Coverage(
        last_observed=recording.last_observed,
        recorded_births=recording.births,
        births={e.entity: (e.born_step, e.parent) for e in counterfactual.registry},
    )
    rows, parting = diff(recording.decisions, counterfactual.decisions, coverage)
    return WhatIf(
        run_id=log.run_id,
        until_step=until_step,
        settings=tuple(recording.settings(reruns, changes)),
        recorded=tuple(recording.decisions),
        counterfactual=tuple(counterfactual.decisions),
        rows=rows,
        first_parting_step=parting,
        evaluations=counterfactual.evaluations,
        skipped=counterfactual.skipped,
        log=counterfactual.log,
    )


def _seeds(log: Log, changes: Mapping[str, JsonValue], until_step: int | None) -> WhatIf:
    """The what-if of a seed run: its seed decisions decided again under `changes`."""
    found = seed_what_if(_records(log, until_step), changes)
    rerun = found.rerun
    name = rerun.controller.name
    return WhatIf(
        run_id=log.run_id,
        until_step=until_step,
        settings=tuple(
            Setting(name, k, rerun.recorded.get(k), rerun.settings[k])
            for k in sorted(changes)
            if rerun.recorded.get(k) != rerun.settings[k]
        ),
        recorded=tuple(found.recorded),
        counterfactual=tuple(found.again),
        rows=found.rows,
        first_parting_step=found.first_parting_step,
        evaluations=len(found.again),
        skipped=0,
        log=MemoryLog(log.run_id),
    )


def _records(log: Log, until_step: int | None) -> Iterator[Record]:
    """The log's records, upcast, up to the first one past `until_step`."""
    for page in log.pages():
        for record in page:
            if until_step is not None and record["step"] > until_step:
                return
            yield CODEC.check(record)


class _Recording:
    """What the first pass learns of the recorded run: its controllers, decisions and observations."""

    def __init__(self, kinds: Sequence[type[ControllerKind]], until_step: int | None) -> None:
        self.kinds = [kind() for kind in kinds]
        self.until_step = until_step
        self.spec_of: dict[str, str] = {}
        """The spec of every entity the run registered, by name."""
        self.births: dict[str, tuple[int, str | None]] = {}
        """The step and parent each entity was registered with, by name."""
        self.decisions: list[DecisionMade] = []
        """The recorded decisions up to `until_step`."""
        self.last_observed: dict[str, int] = {}
        """The step of each entity's last recorded observation."""
        self._within = True
        self.seeds = False
        """Whether the run holds decisions of a `SeedDriver` (a seed run)."""

    def see(self, record: Record) -> None:
        kind, entity = record["kind"], record["entity"]
        self.seeds = self.seeds or is_seed_decision(record)
        if kind == "EntityRegistered":
            self.spec_of[entity] = record["spec"]
            self.births[entity] = (record["step"], record["parent"])
        for controller in self.kinds:
            controller.see(record, self.spec_of.get(entity) if entity is not None else None)
        self._within = self._within and (self.until_step is None or record["step"] <= self.until_step)
        if not self._within:
            return
        if kind == "DecisionMade":
            made = CODEC.from_record(record)
            assert isinstance(made, DecisionMade)
            self.decisions.append(made)
        elif kind == "MetricsObserved" and entity is not None:
            self.last_observed[entity] = record["step"]

    def reruns(self, changes: Mapping[str, JsonValue]) -> list[tuple[ControllerKind, Rerun]]:
        """Build every controller the run used again, each with the changes to its settings."""
        present = [kind for kind in self.kinds if kind.recorded() is not None]
        if not present:
            raise UsageError("the run records no controller what-if can re-run (no recorded config)")
        for name in changes:
            owners = [kind for kind in present if name in kind.setting_names()]
            if not owners:
                known = " or ".join(f"the {kind.name}" for kind in present)
                raise ConfigError(f"unknown setting {name!r}: not a setting of {known}")
            if len(owners) > 1:
                raise ConfigError(f"setting {name!r} names a setting of more than one controller")
        return [
            (kind, kind.rerun({k: v for k, v in changes.items() if k in kind.setting_names()}))
            for kind in present
        ]

    def settings(
        self, reruns: Sequence[tuple[ControllerKind, Rerun]], changes: Mapping[str, JsonValue]
    ) -> Iterator[Setting]:
        for kind, rerun in reruns:
            recorded = kind.recorded() or {}
            for name in sorted(set(changes) & kind.setting_names()):
                if recorded.get(name) != rerun.settings[name]:
                    yield Setting(kind.name, name, recorded.get(name), rerun.settings[name])


class _Counterfactual:
    """The second pass: the recorded run folded again, each evaluation decided anew."""

    def __init__(
        self, run_id: str, reruns: Sequence[tuple[ControllerKind, Rerun]], spec_of: Mapping[str, str]
    ) -> None:
        self.registry = Registry(BUILTIN_SPECS, window=max(rerun.window for _, rerun in reruns))
        self.log = MemoryLog(run_id)
        self.run_id = run_id
        self.reruns = reruns
        self.spec_of = spec_of
        self.decisions: list[DecisionMade] = []
        self.evaluations = 0
        self.skipped = 0
        self._open: list[tuple[ControllerKind, Rerun]] = []
        """The controllers evaluating at `_step`, whose recorded events are held back."""
        self._step = -1
        self._held: list[Record] = []

    def feed(self, record: Record) -> None:
        """Fold one recorded record, hold it back, or (a seal) decide the evaluation it closes."""
        if self._open and record["step"] != self._step:
            self.finish()  # the evaluation was never sealed: it stands as recorded
        if self._open and record["kind"] == "StepSealed":
            self._decide()
        elif self._open and self._written_by_open(record):
            self._held.append(record)
            return
        else:
            for kind, rerun in self.reruns:
                if kind.evaluates(record) and all(kind is not k for k, _ in self._open):
                    self._open.append((kind, rerun))
                    self._step = record["step"]
        self._keep(record)

    def finish(self) -> None:
        """Fold the held events of an evaluation left unsealed as they were recorded."""
        for record in self._held:
            self._keep(record)
        self._held.clear()
        self._open.clear()

    def _written_by_open(self, record: Record) -> bool:
        if record["kind"] not in _WRITTEN:
            return False
        spec = record["spec"] if record["kind"] == "EntityRegistered" else self.spec_of.get(record["entity"])
        return any(kind.spec == spec for kind, _ in self._open)

    def _decide(self) -> None:
        for _, rerun in self._open:
            self._append(rerun.controller.decide(self.registry, run_id=self.run_id, step=self._step))
            self.evaluations += 1
        self._held.clear()
        self._open.clear()

    def _append(self, events: Sequence[EventBase]) -> None:
        records = [CODEC.to_record(event) for event in events]
        for i, record in enumerate(records):
            record["seq"] = self.registry.seq + 1 + i
        self.log.append(records, expected_seq=self.registry.seq)
        for record in records:
            self._fold(record)

    def _keep(self, record: Record) -> None:
        folded = {**record, "seq": self.registry.seq + 1}
        try:
            self._fold(folded)  # a refused event changes nothing: the fold checks before it writes
        except InconsistentEventError:
            self.skipped += 1
            return
        self.log.append([folded], expected_seq=folded["seq"] - 1)

    def _fold(self, record: Record) -> None:
        fold_record(self.registry, record)
        if record["kind"] == "DecisionMade":
            made = CODEC.from_record(record)
            assert isinstance(made, DecisionMade)
            self.decisions.append(made)
