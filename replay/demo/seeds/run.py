"""The seeds demo's training loop (its replay, without training, is `replay.demo.seeds.replay`).

Every step: `surgery.tick(step)` (time in state and the alpha ramps follow the training clock),
forward, the loss plus the training seeds' reconstruction loss, backward, gradients averaged
over the ranks, `optimizer.step()`. Every `eval_every` steps the leader measures each live
seed (`SeedMeter`), records the metrics, lets the `SeedDriver` decide and fire one action per
seed, and registers a new seed in each slot whose seed failed once the slot's embargo allows
(a refused registration is counted); then every rank folds what the log gained into the seed
surgery. The leader writes, every rank reads: the ranks stay identical because they apply the
same records to the same weights.

`run(guarded=True)` trains inside a `PreemptionGuard`: a SIGTERM or SIGINT on any rank stops
every rank at the next evaluation boundary, where each saves its checkpoint (`checkpoint`) and
the leader records the run `interrupted` (`stopped`); a run built with `resume=True` restores
it and continues, ending with the `final_digest` of the run never interrupted.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bus import Log
from lifecycle_es import BUILTIN_SPECS, Lifecycle, SlotEmbargoedError
from lifecycle_es.controllers import SeedDriver
from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs import RunState
from projections.seeds import AlphaSchedule, RollbackPoints, SeedSurgery
from projections.state_tensors import StateTensors
from projections.training import PreemptionGuard
from projections.training.checkpoint_manager import CheckpointManager
from projections.training.resume import check_resumable, resume_run
from replay.demo.seeds import checkpoint
from replay.demo.seeds.controllers import build_controller
from replay.demo.seeds.metrics import SeedMeter
from replay.demo.seeds.model import SeedsModel, SeedsTask, parameter_count
from replay.demo.seeds.options import SeedsOptions
from replay.demo.seeds.ranks import any_rank, average_gradients, same_on_every_rank

__all__ = ["Progress", "SeedsRun", "Snapshot"]

Progress = Callable[[int, float, Counter[str]], None]
"""Called after each evaluation (and the last step) with the step, the loss and seeds by state."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Seeds by state at one evaluation, for the summary's timeline."""

    step: int
    states: Counter[str]


@dataclass
class _Tally:
    """What the run did: the moves applied by target state, decisions by action, refusals."""

    moves: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    """Requests the gates (or a minimum time in state) refused."""
    embargoed: int = 0
    """Registrations into an embargoed slot, refused."""


class SeedsRun:
    """One training run of the seeds demo: the host, its seeds and (on the leader) the lifecycle."""

    def __init__(
        self,
        options: SeedsOptions,
        log: Log | None,
        *,
        rollback_dir: Path | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        metadata: Mapping[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """`checkpoint_dir` is where a stop saves and a `resume` restores; `metadata` goes in `RunStarted`."""
        self.options, self.log, self.rank, self.world_size = options, log, rank, world_size
        self.checkpoint_dir, self.resume, self.metadata = checkpoint_dir, resume, dict(metadata or {})
        if resume and checkpoint_dir is None:
            raise ConfigError("a resumed run needs the checkpoint_dir its stop saved into")
        self.task = SeedsTask(options.seed, options.batch_size)
        self.model = SeedsModel(
            options.width,
            chunks=options.chunks,
            strategy=options.strategy,
            blueprint=options.blueprint,
            seed=options.seed,
            seeds=options.lifecycle,
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr)
        self.tally = _Tally()
        self.timeline: list[Snapshot] = []
        self.train_losses: list[float] = []
        self.generation: Counter[int] = Counter()
        """Per slot, how many seeds were registered into it."""
        self.lc: Lifecycle | None = None
        self.surgery: SeedSurgery | None = None
        self.rollback: RollbackPoints | None = None
        self.stopped_at: int | None = None
        """The evaluation step a preemption notice stopped the run at (None: it ran to the end)."""
        self.exit_code = 0
        """What the process should exit with: the guard's (143 after a SIGTERM)."""
        if options.lifecycle:
            if log is None:
                raise ConfigError("a run with the lifecycle needs a log to write its decisions to")
            self._wire(log, rollback_dir)

    def _wire(self, log: Log, rollback_dir: Path | None) -> None:
        self.rollback = None if rollback_dir is None else RollbackPoints(CheckpointManager(rollback_dir))
        self.surgery = SeedSurgery(
            {0: self.model.seed_layer},
            self.optimizer,
            tensors=StateTensors(dict(BUILTIN_SPECS)),
            schedule=AlphaSchedule(),
            rollback=self.rollback,
            model=self.model,
        )
        if self.rank == 0:
            self.lc = Lifecycle(log)
            self.driver = SeedDriver(build_controller(self.options))
            budget = parameter_count(self.options.width) * 4.0
            self.meter = SeedMeter(self.model, self.task, budget)

    # -- training ------------------------------------------------------------------------------

    def run(self, progress: Progress | None = None, *, guarded: bool = False) -> None:
        """Train for `options.steps` steps, deciding every `eval_every`; `guarded`: stop on a notice."""
        first = self._start()
        guard = self._new_guard() if guarded else None
        with guard or contextlib.nullcontext():
            self._train(first, progress, guard)
            if self.stopped_at is None and self.lc is not None:
                # so `runs` lists it completed and `tail --follow` stops at its end
                end = max(self.options.steps - 1, self.lc.registry.step)
                if guard is not None:
                    guard.complete(end)
                else:
                    self.lc.set_run_state(
                        RunState.TERMINATED, reason="training completed", step=end, attrs={"completed": True}
                    )
        self.exit_code = 0 if guard is None else guard.exit_code

    def _train(self, first: int, progress: Progress | None, guard: PreemptionGuard | None) -> None:
        every = self.options.eval_every
        for step in range(first, self.options.steps):
            if self.surgery is not None:
                self.surgery.tick(step)
            self.train_losses.append(self._train_step(step))
            last = step == self.options.steps - 1
            if step and step % every == 0 and self.surgery is not None:
                self._evaluate(step)
                if guard is not None and self._stop_voted(guard):
                    guard.stop(step)  # saves every rank's checkpoint, then the leader records it
                    self.stopped_at = step
                    return
            if progress is not None and (step % every == 0 or last):
                recent = self.train_losses[-every:]
                progress(step + 1, sum(recent) / len(recent), self.states())

    def _start(self) -> int:
        """Record the run's start and its seeds (or restore the stop checkpoint); return the first step."""
        if self.resume:
            return self._resume()
        if self.lc is not None:
            options, world, metadata = self.options, self.world_size, self.metadata
            self.lc.start(config=options.to_json(), seed=options.seed, world_size=world, metadata=metadata)
            for slot in range(self.options.chunks):
                self._register(slot, step=0)
        self._follow(0)
        return 0

    def _resume(self) -> int:
        """Restore this rank's stop checkpoint, move the run back to running, fold the log on from it."""
        assert self.surgery is not None and self.checkpoint_dir is not None
        if self.lc is not None:
            check_resumable(self.lc)  # before anything is restored
        restored = checkpoint.restore(
            self._checkpoints(),
            rank=self.rank,
            model=self.model,
            optimizer=self.optimizer,
            projections=(self.surgery.tensors, self.surgery.schedule, self.surgery),
        )
        if restored is None:
            raise UsageError(f"no checkpoint of rank {self.rank} in {self.checkpoint_dir}: nothing to resume")
        if self.world_size > 1:
            same_on_every_rank(restored.step)
        self.load_extra_state(restored.extra)
        if self.lc is not None:
            resume_run(self.lc, step=restored.step, source=f"checkpoint {restored.checkpoint_id}")
        self._follow(restored.step)
        return restored.step + 1

    def _checkpoints(self) -> CheckpointManager:
        assert self.checkpoint_dir is not None and self.log is not None
        return CheckpointManager(self.checkpoint_dir, lifecycle=self.lc, run_id=self.log.run_id)

    def _new_guard(self) -> PreemptionGuard:
        if self.log is None or self.surgery is None:
            raise ConfigError("a guarded seeds run needs the lifecycle: its stops are evaluation boundaries")
        # a follower's guard records nothing; it only needs a lifecycle of the run to refer to
        lc = self.lc if self.lc is not None else Lifecycle(self.log)
        return PreemptionGuard(lc, save=self._save_at_stop, record=self.lc is not None, spot=False)

    def _stop_voted(self, guard: PreemptionGuard) -> bool:
        """Whether any rank received a notice: every rank asks at every boundary, so all stop together."""
        vote = guard.notice is not None
        return vote if self.world_size == 1 else any_rank(vote)

    def _save_at_stop(self, step: int) -> str:
        """The guard's pre-stop save: this rank's checkpoint of the stop boundary."""
        if self.checkpoint_dir is None or self.surgery is None:
            raise ConfigError("the seeds run has no checkpoint_dir: the stop could not be checkpointed")
        return checkpoint.save(
            self._checkpoints(),
            rank=self.rank,
            step=step,
            model=self.model,
            optimizer=self.optimizer,
            projections=(self.surgery.tensors, self.surgery.schedule, self.surgery),
            extra=self.extra_state(),
        )

    def _train_step(self, step: int) -> float:
        x, y = self.task.batch(step)
        if self.world_size > 1:  # each rank its share of the batch
            x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
        self.optimizer.zero_grad(set_to_none=False)
        task_loss = (self.model(x) - y).square().mean()
        (task_loss + self.model.seed_loss()).backward()
        if self.world_size > 1:
            average_gradients(self.model, self.world_size)
        self.optimizer.step()
        return float(task_loss.detach())

    def _evaluate(self, step: int) -> None:
        lc = self.lc
        if lc is not None:
            lc.advance(step)
            seeds = self._live(lc.registry)
            free = sum(1 for s in seeds if s.state == "DORMANT")
            for entity, metrics in self.meter.measure(seeds, free).items():
                lc.observe(metrics, entity=entity, step=step)
            for done in self.driver.run(lc, step=step):
                self.tally.decisions[done.decision.action.value] += 1
                self.tally.refused += done.fired is not None and not done.fired.accepted
            self._regrow(lc, step)
            self.timeline.append(Snapshot(step, self.states()))
        self._follow(step)

    def _regrow(self, lc: Lifecycle, step: int) -> None:
        """Register a new seed in each slot whose seed ended in failure, once its embargo allows."""
        owners = self._owners(lc.registry)
        for slot in range(self.options.chunks):
            owner = owners.get(slot)
            if owner is None or not lc.registry.spec_of(owner).state(owner.state).terminal:
                continue
            if owner.state in ("FOSSILIZED", "INTEGRATED"):
                continue
            try:
                self._register(slot, step=step)
            except SlotEmbargoedError:
                self.tally.embargoed += 1

    def _register(self, slot: int, *, step: int) -> None:
        assert self.lc is not None
        attrs = {"blueprint": self.options.blueprint, "grafting_strategy": self.options.grafting_id}
        name = f"seed-{slot}.{self.generation[slot]}"
        self.lc.register(name, self.options.spec, layer=0, slot=slot, attrs=attrs, step=step)
        self.generation[slot] += 1

    def _follow(self, step: int) -> None:
        """Fold the records of steps up to `step` the log gained into the seed surgery.

        Every rank folds the same records. A live run's log holds nothing past `step`; a run
        following a finished log (`rank` > 0 in a world of one: the log's decisions replayed,
        with training) takes each step's records at that step.
        """
        if self.surgery is None or self.log is None:
            return
        if self.world_size > 1:
            torch.distributed.barrier()  # the leader's records are on the log
        records = self.log.read(self.surgery.seq)
        later = next((i for i, r in enumerate(records) if int(r.get("step", 0)) > step), len(records))
        records = records[:later]
        for r in records:
            if r["kind"] == "TransitionApplied":
                self.tally.moves[r["to_state"]] += 1
        self.surgery.apply(records)

    # -- what it shows -------------------------------------------------------------------------

    def _owners(self, registry: Registry) -> dict[int, EntityState]:
        owners: dict[int, EntityState] = {}
        for e in registry:
            if e.spec == self.options.spec and e.slot is not None:
                owners[e.slot] = e  # registration order: the latest seed of each slot wins
        return owners

    def _live(self, registry: Registry) -> list[EntityState]:
        return [e for e in self._owners(registry).values() if not registry.spec_of(e).state(e.state).terminal]

    def states(self) -> Counter[str]:
        """The seeds by state now: each slot's latest seed (empty without the lifecycle)."""
        if self.surgery is None:
            return Counter()
        return Counter(s.state for s in self._slot_seeds())

    def _slot_seeds(self) -> list[Any]:
        assert self.surgery is not None
        owners = self.surgery.owners[0]
        return [self.surgery.seeds[e] for e in owners if e is not None]

    @property
    def final_loss(self) -> float:
        """The held-out loss at the end."""
        with torch.no_grad():
            return float((self.model(self.task.eval_x) - self.task.eval_y).square().mean())

    @property
    def digest(self) -> str:
        """The seed surgery's digest (weights, optimizer state, applied events); '' without seeds."""
        return "" if self.surgery is None else self.surgery.digest()

    @property
    def final_digest(self) -> str:
        """The weights' and optimizer state's digest alone: equal for a resumed and an uninterrupted run
        (the events a resume writes anew have other ids); '' without seeds."""
        return "" if self.surgery is None else self.surgery.digest(event_ids=False)

    # -- checkpoint data -----------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """Return what a checkpoint needs besides the model, optimizer and projections."""
        meter = getattr(self, "meter", None)
        return {
            "train_losses": list(self.train_losses),
            "moves": dict(self.tally.moves),
            "decisions": dict(self.tally.decisions),
            "refused": self.tally.refused,
            "embargoed": self.tally.embargoed,
            "timeline": [[snap.step, dict(snap.states)] for snap in self.timeline],
            "generation": {str(slot): n for slot, n in self.generation.items()},
            "rollback": {} if self.rollback is None else dict(self.rollback.points),
            "meter": {} if meter is None else meter.to_plain(),
        }

    def load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore `extra_state()` from a checkpoint."""
        self.train_losses = [float(x) for x in extra["train_losses"]]
        counts = Counter(extra["moves"]), Counter(extra["decisions"])
        self.tally = _Tally(*counts, refused=int(extra["refused"]), embargoed=int(extra["embargoed"]))
        self.timeline = [Snapshot(int(step), Counter(states)) for step, states in extra["timeline"]]
        self.generation = Counter({int(slot): int(n) for slot, n in extra["generation"].items()})
        if self.rollback is not None:
            self.rollback.points = dict(extra["rollback"])
        if getattr(self, "meter", None) is not None:
            self.meter.load_plain(extra["meter"])
