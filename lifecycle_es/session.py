"""`Lifecycle`: the in-process writer of one run. Commands become events on the log, then state.

This is a composition module (DESIGN.md section 2): it joins the domain (specs, gates,
commands, the fold) to a `bus` log. Every change takes the same path: a command handler returns
events, they are appended with `expected_seq` (one writer per run), then folded (`RunWriter`,
in `lifecycle_es._run_writer`); the config and the checks of the parts are in `_parts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bus import Log, MemoryLog
from lifecycle_es import commands
from lifecycle_es._arguments import INT64_MAX, check_count, check_text, json_mapping, shown
from lifecycle_es._parts import LifecycleConfig, check_gates, check_parts, specs_by_name
from lifecycle_es._run_writer import RunWriter
from lifecycle_es.codec import CODEC, Codec
from lifecycle_es.commands import Stamp
from lifecycle_es.errors import ConfigError, InvalidTransitionError, UsageError
from lifecycle_es.events import RunStarted, RunStateChanged, StepSealed
from lifecycle_es.gates import GateLibrary, default_gates
from lifecycle_es.hooks import Hooks
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.spec import Spec
from lifecycle_es.specs import BUILTIN_SPECS, RUN_SPEC, RunState

__all__ = ["Lifecycle", "LifecycleConfig", "TransitionPlan"]


class Lifecycle(RunWriter):
    """The writer of one run: registers entities, requests transitions, records metrics.

    Built on a `bus` log (an in-memory one by default); on construction it folds whatever the
    log already holds, so a restarted writer continues where the log ends.
    """

    def __init__(
        self,
        log: Log | None = None,
        *,
        run_id: str = "run",
        specs: Mapping[str, Spec] | Iterable[Spec] | None = None,
        gates: GateLibrary | None = None,
        config: LifecycleConfig | None = None,
        rank: int = 0,
        codec: Codec = CODEC,
    ) -> None:
        check_parts(log, config, gates, codec)
        check_count(rank, "rank", ConfigError)
        self._owns_log = log is None
        self.log = MemoryLog(run_id) if log is None else log
        self.run_id = self.log.run_id
        self.config = config or LifecycleConfig()
        self.gates = default_gates() if gates is None else gates  # an empty library is falsy
        self.rank = int(rank)  # plain: an IntEnum rank would reach the log as it is
        self.codec = codec
        self.hooks = Hooks()
        spec_map = specs_by_name(BUILTIN_SPECS if specs is None else specs)
        check_gates(spec_map, self.gates)
        self.registry = Registry(spec_map, window=self.config.metric_window)
        self._policy = self.config.gate_policy
        self._clock = 0
        self._last_stamp = Stamp(run_id=self.run_id, step=0, rank=self.rank)
        self._pending: list[dict[str, Any]] | None = None
        self.catch_up()

    # -- the clock -----------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The lifecycle clock: the step commands that name none are stamped with.

        The latest step the log holds, or a later one set by `advance`; a `Lifecycle` reopened
        on a run's log goes on from where the run stands.
        """
        return max(self._clock, self.registry.step)

    def advance(self, step: int) -> None:
        """Set the lifecycle clock (the training step) used by commands that name no step."""
        self._clock = self._check_step(step)

    def _stamp(self, step: int | None, causation: str | None = None) -> Stamp:
        at = self.step if step is None else self._check_step(step)
        last = self._last_stamp
        # A Stamp is frozen and checks itself at construction: reuse the last one while the
        # step stays (most commands of a step name no causation), rather than check again.
        if causation is None and last.step == at and last.rank == self.rank:
            return last
        stamp = Stamp(run_id=self.run_id, step=at, rank=self.rank, causation=causation)
        if causation is None:
            self._last_stamp = stamp
        return stamp

    def _check_step(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, int):
            raise UsageError(f"step must be an int, got {type(step).__name__}")
        if step > INT64_MAX:
            raise UsageError(f"step must be at most 2**63 - 1, got {shown(repr(step))}")
        if step < self.registry.step:
            raise UsageError(f"step {step} is before the run's latest step {self.registry.step}")
        return step

    # -- commands ------------------------------------------------------------------------------

    def start(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        seed: int = 0,
        world_size: int = 1,
        torch_version: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Record `RunStarted` and move the run from pending to running.

        A run starts once: on a log that already holds its `RunStarted` this raises
        `InvalidTransitionError` and records nothing (a restarted writer resumes, it does not
        start again). `config` must hold JSON values only (a `ConfigError` names the first key
        that does not), and so must `metadata`, what resumes the run (command line, arguments,
        checkpoint directory, versions).
        """
        if self.registry.run_id is not None:
            raise InvalidTransitionError(f"run {self.run_id!r} has already started; a run starts once")
        stamp = self._stamp(None)
        config = json_mapping(config, "start(config=...)", "config", ConfigError)
        metadata = json_mapping(metadata, "start(metadata=...)", "metadata", ConfigError)
        # Checked here, not left to pydantic, whose lax mode would take "3" for 3.
        if isinstance(seed, bool) or not isinstance(seed, int) or not -INT64_MAX - 1 <= seed <= INT64_MAX:
            raise ConfigError(f"start(seed=...) must be a 64-bit int, got {shown(repr(seed))}")
        if check_count(world_size, "start(world_size=...)", ConfigError) < 1:
            raise ConfigError(f"start(world_size=...) must be at least 1, got {world_size}")
        fields = {"config": config, "world_size": world_size, "seed": seed, "metadata": metadata}
        self.append([self._run_started(stamp.step, torch_version=torch_version, **fields)])
        if RUN_SPEC.name in self.registry.specs:
            self.set_run_state(RunState.RUNNING, reason="run started")

    def _run_started(self, step: int, **fields: Any) -> RunStarted:
        """Build `RunStarted`; a field pydantic refuses is named as the `start` argument it came from."""
        try:
            return RunStarted(
                run_id=self.run_id, step=step, rank=self.rank, specs=sorted(self.registry.specs), **fields
            )
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"start({first['loc'][0]}=...): {first['msg']}") from e

    def set_run_state(
        self,
        to: RunState | str,
        *,
        reason: str = "",
        step: int | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Move the run along the `run` spec, firing its hooks (pre_stop, post_start, ...).

        The run is not an entity: a move the spec does not allow is a programming error and
        raises `InvalidTransitionError` without recording anything. `attrs` (JSON values) are
        recorded with the move, e.g. whether a stop saved its checkpoint.
        """
        spec = self.registry.specs.get(RUN_SPEC.name)
        if spec is None:
            raise UsageError(f"this lifecycle has no {RUN_SPEC.name!r} spec, so the run has no state to set")
        if not isinstance(to, str):  # a RunState is a str too
            raise UsageError(f"set_run_state(to=...) takes a run state name, got {type(to).__name__}")
        check_text(reason, "reason")
        attrs = json_mapping(attrs, "set_run_state(attrs=...)", "attrs")
        current, target, trigger = self._run_move(spec, str(to))
        stamp = self._stamp(step)
        data = {
            "entity": self.run_id,
            "spec": spec.name,
            "from_state": current,
            "to_state": target,
            "trigger": trigger,
            "reason": reason,
            "step": stamp.step,
        }
        self.hooks.fire("pre", spec, data)
        moved = {"from_state": current, "to_state": target, "reason": reason, "attrs": attrs}
        self.append([RunStateChanged(run_id=self.run_id, step=stamp.step, rank=self.rank, **moved)])
        self.hooks.fire("post", spec, data)

    def _run_move(self, spec: Spec, to: str) -> tuple[str, str, str]:
        """Return the run's state, the state `to` names and the trigger of the edge between them."""
        current = self.registry.run_state
        target = spec.state(to).name
        edge = None if current is None else spec.edge(current, target)
        if current is None or edge is None:
            raise InvalidTransitionError(f"Invalid run transition: {current} -> {target}")
        return current, target, edge.trigger

    def register(
        self,
        entity: str,
        spec: str,
        *,
        state: str | None = None,
        slot: int | None = None,
        layer: int | None = None,
        parent: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        step: int | None = None,
        causation: str | None = None,
    ) -> EntityState:
        """Register an entity in its spec's default (or a given) initial state and return it.

        A slot still under embargo is refused with `SlotEmbargoedError`, recording nothing.
        """
        event = commands.register(
            self.registry,
            self._stamp(step, causation),
            entity=entity,
            spec=spec,
            state=state,
            slot=slot,
            layer=layer,
            parent=parent,
            attrs=attrs,
            gates=self.gates,
            policy=self._policy,
        )
        self.append([event])
        return self.registry.get(entity)

    def transition(
        self,
        entity: str,
        to: str | None = None,
        *,
        trigger: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        reason: str = "",
        step: int | None = None,
        causation: str | None = None,
        triggered_by: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> EntityState:
        """Move an entity to `to` (or along `trigger`) if its gates pass, and return it.

        `triggered_by` (who asks) and `metadata` (JSON values) are recorded with the move or
        its refusal. Pre-transition hooks run before the append (a coroutine handler is run to
        its end), post-transition hooks after it. A refused transition is recorded (its gate
        checks and `TransitionRejected`) and then raises `InvalidTransitionError` naming every
        failed check.
        """
        plan = self.plan(entity, to, trigger, metrics, reason, step, causation, triggered_by, metadata)
        if plan.outcome.accepted and self.hooks:
            self.hooks.fire("pre", plan.spec, plan.data)
        self.record(plan)
        if self.hooks:
            self.hooks.fire("post", plan.spec, plan.data)
        return self.registry.get(entity)

    async def transition_async(
        self,
        entity: str,
        to: str | None = None,
        *,
        trigger: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        reason: str = "",
        step: int | None = None,
        causation: str | None = None,
        triggered_by: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> EntityState:
        """`transition` for an event loop: pre-hooks are awaited in order, then the move is
        appended, then post-hooks are awaited; it returns once the move is on the log."""
        args = (entity, to, trigger, metrics, reason, step, causation, triggered_by, metadata)
        plan = self.plan(*args)
        if plan.outcome.accepted and self.hooks:
            await self.hooks.fire_async("pre", plan.spec, plan.data)
            if self.registry.seq != plan.seq:  # another coroutine moved the run meanwhile
                plan = self.plan(*args)
        self.record(plan)
        if self.hooks:
            await self.hooks.fire_async("post", plan.spec, plan.data)
        return self.registry.get(entity)

    def plan(
        self,
        entity: str,
        to: str | None,
        trigger: str | None,
        metrics: Mapping[str, Any] | None,
        reason: str,
        step: int | None,
        causation: str | None,
        triggered_by: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> TransitionPlan:
        """Check a transition request and build its events, recording nothing and firing no hook.

        The arguments are `transition`'s, by position. `record` appends the plan.
        """
        if triggered_by is not None:
            check_text(triggered_by, "triggered_by")
        extra = None if metadata is None else check_metadata(metadata)
        outcome = commands.request_transition(
            self.registry,
            self.gates,
            self._policy,
            self._stamp(step, causation),
            entity=entity,
            to=to,
            trigger=trigger,
            metrics=metrics,
            reason=reason,
            triggered_by=triggered_by,
            metadata=extra,
        )
        return self._plan_of(outcome, reason, triggered_by, extra)

    def _plan_of(
        self, outcome: commands.Outcome, reason: str, triggered_by: str | None, extra: dict[str, Any] | None
    ) -> TransitionPlan:
        """The plan of a checked request: its outcome, with the data its hooks get."""
        last = outcome.events[-1].__dict__  # the command checked the entity: it is registered
        spec = self.registry.specs[self.registry.entities[last["entity"]].spec]
        data = {
            "entity": last["entity"],
            "from_state": last["from_state"],
            "to_state": last["to_state"],
            "trigger": last["trigger"],
            "step": last["step"],
            "spec": spec.name,
            "reason": reason,
            "triggered_by": triggered_by,
            "metadata": extra or {},
        }
        return TransitionPlan(outcome, spec, data, self.registry.seq)

    def record(self, plan: TransitionPlan) -> None:
        """Append a planned transition (no hook fires); a refused one raises once it is recorded."""
        # Built from checked, plain values, unless metadata shares the caller's nested objects.
        self._append(plan.outcome.events, plain=plan.data["metadata"] == {})
        if not plan.outcome.accepted:
            raise InvalidTransitionError(
                f"{plan.data['entity']}: {plan.data['from_state']} -> {plan.data['to_state']} refused: "
                + "; ".join(plan.outcome.reasons),
                reasons=plan.outcome.reasons,
            )

    def observe(
        self,
        metrics: Mapping[str, Any],
        *,
        entity: str | None = None,
        layer: int | None = None,
        step: int | None = None,
    ) -> None:
        """Record metrics of an entity, a layer or the run at an evaluation checkpoint."""
        event = commands.observe(self.registry, self._stamp(step), metrics, entity=entity, layer=layer)
        self._append([event], plain=True)  # every value checked and made plain by the command

    def seal(self, step: int | None = None) -> None:
        """Record `StepSealed`: the lifecycle events of the step are complete."""
        stamp = self._stamp(step)
        self._append([StepSealed(run_id=self.run_id, step=stamp.step, rank=self.rank)], plain=True)


@dataclass(frozen=True, slots=True)
class TransitionPlan:
    """A checked transition request: its events, the spec, the hooks' data, the seq it saw."""

    outcome: commands.Outcome
    spec: Spec
    data: dict[str, Any]
    seq: int


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """Return transition metadata as a dict of JSON values (None for none), or raise `UsageError`."""
    if metadata is None:
        return None
    return json_mapping(metadata, "transition(metadata=...)", "metadata")
