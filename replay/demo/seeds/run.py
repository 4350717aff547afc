"""The seeds demo's training loop, and the replay that folds its log again.

Every step: `surgery.tick(step)` (time in state and the alpha ramps follow the training clock),
forward, the loss plus the training seeds' reconstruction loss, backward, gradients averaged
over the ranks, `optimizer.step()`. Every `eval_every` steps the leader measures each live
seed (`SeedMeter`), records the metrics, lets the `SeedDriver` decide and fire one action per
seed, and registers a new seed in each slot whose seed failed once the slot's embargo allows
(a refused registration is counted); then every rank folds what the log gained into the seed
surgery. The leader writes, every rank reads: the ranks stay identical because they apply the
same records to the same weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bus import Log
from lifecycle_es import BUILTIN_SPECS, Lifecycle, SlotEmbargoedError
from lifecycle_es.controllers import SeedDriver
from lifecycle_es.errors import ConfigError
from lifecycle_es.registry import EntityState, Registry
from lifecycle_es.specs import RunState
from projections.seeds import AlphaSchedule, RollbackPoints, SeedSurgery
from projections.state_tensors import StateTensors
from projections.training.checkpoint_manager import CheckpointManager
from replay.demo.seeds.controllers import build_controller
from replay.demo.seeds.metrics import SeedMeter
from replay.demo.seeds.model import SeedsModel, SeedsTask, parameter_count
from replay.demo.seeds.options import SeedsOptions

__all__ = ["Progress", "SeedsRun", "Snapshot", "replay_seeds"]

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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.options, self.log, self.rank, self.world_size = options, log, rank, world_size
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
        if options.lifecycle:
            if log is None:
                raise ConfigError("a run with the lifecycle needs a log to write its decisions to")
            self._wire(log, rollback_dir)

    def _wire(self, log: Log, rollback_dir: Path | None) -> None:
        rollback = None if rollback_dir is None else RollbackPoints(CheckpointManager(rollback_dir))
        self.surgery = SeedSurgery(
            {0: self.model.seed_layer},
            self.optimizer,
            tensors=StateTensors(dict(BUILTIN_SPECS)),
            schedule=AlphaSchedule(),
            rollback=rollback,
            model=self.model,
        )
        if self.rank == 0:
            self.lc = Lifecycle(log)
            self.driver = SeedDriver(build_controller(self.options))
            budget = parameter_count(self.options.width) * 4.0
            self.meter = SeedMeter(self.model, self.task, budget)

    # -- training ------------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> None:
        """Train for `options.steps` steps, deciding every `eval_every`."""
        if self.lc is not None:
            self.lc.start(config=self.options.to_json(), seed=self.options.seed, world_size=self.world_size)
            for slot in range(self.options.chunks):
                self._register(slot, step=0)
        self._follow()
        every = self.options.eval_every
        for step in range(self.options.steps):
            if self.surgery is not None:
                self.surgery.tick(step)
            self.train_losses.append(self._train_step(step))
            last = step == self.options.steps - 1
            if step and step % every == 0 and self.surgery is not None:
                self._evaluate(step)
            if progress is not None and (step % every == 0 or last):
                recent = self.train_losses[-every:]
                progress(step + 1, sum(recent) / len(recent), self.states())
        if self.lc is not None:  # so `runs` lists it completed and `tail --follow` stops at its end
            end = max(self.options.steps - 1, self.lc.registry.step)
            self.lc.set_run_state(
                RunState.TERMINATED, reason="training completed", step=end, attrs={"completed": True}
            )

    def _train_step(self, step: int) -> float:
        x, y = self.task.batch(step)
        if self.world_size > 1:  # each rank its share of the batch
            x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
        self.optimizer.zero_grad(set_to_none=False)
        task_loss = (self.model(x) - y).square().mean()
        (task_loss + self.model.seed_loss()).backward()
        if self.world_size > 1:
            _average_gradients(self.model, self.world_size)
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
        self._follow()

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

    def _follow(self) -> None:
        """Fold what the log gained into the seed surgery (every rank the same records)."""
        if self.surgery is None or self.log is None:
            return
        if self.world_size > 1:
            torch.distributed.barrier()  # the leader's records are on the log
        records = self.log.read(self.surgery.seq)
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


def _average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """All-reduce every gradient and divide by the ranks: DDP's result, shapes free to change."""
    import torch.distributed as dist

    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world_size)


def replay_seeds(log: Log, options: SeedsOptions) -> tuple[Registry, StateTensors, torch.Tensor]:
    """Fold a seeds-demo log again, ticking the clock as the run did; return registry, tensors, alpha.

    No training: the registry and the state tensors come from the events, and alpha from the
    folded facts and the clock, so they equal the live run's.
    """
    records = log.read(0)
    lc = Lifecycle(log)
    tensors, schedule = StateTensors(dict(BUILTIN_SPECS)), AlphaSchedule()
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_step.setdefault(int(r.get("step", 0)), []).append(r)
    first = by_step.get(0, [])
    tensors.apply(first)
    schedule.apply(first)
    for step in range(options.steps):
        tensors.advance(step)
        schedule.tick(tensors, step)
        batch = by_step.get(step, [])
        if step and batch:
            tensors.apply(batch)
            schedule.apply(batch)
    return lc.registry, tensors, schedule.alpha
