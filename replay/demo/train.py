"""The demo's training loop, with the expert lifecycle wired in the way DESIGN.md section 7 gives.

The lifecycle is one object, `projections.training.ExpertLifecycle`, built from the model, its
optimizer and the log. Every step is forward, backward, `optimizer.step()`, then
`lifecycle.record(types)` (references only: no device work, no host sync) and
`lifecycle.after_step(step, revival=...)` (the batch's MoE inputs, computed only at an
evaluation: parked experts are scored on them for a revival, and a split pushes its pair apart
along them). Every `lifecycle_eval_interval` steps that runs the step boundary,
through `LifecycleSync`: routing counters summed over ranks -> basin metrics -> (leader)
`MetricsObserved` (the basin metrics, and the run's mean training loss since the last
evaluation, which no controller reads), the coordinator's decisions and `StepSealed` in one
batch -> every rank folds the batch into model surgery and the state tensors -> digests agree.
Every `checkpoint_every` steps, at such a boundary, the leader saves a checkpoint
(`lifecycle.checkpoints`) that a restarted run resumes from. In one process with no process
group that is the same code with nothing communicated. Under DDP each rank trains on its shard
of every batch (every world_size-th token), so N ranks see the tokens one process sees. With the
lifecycle off the same loop trains the same model on the same tokens and never changes its
experts.

Under `run(guarded=True)` the loop runs inside a `PreemptionGuard`: a SIGTERM, SIGINT or notice
on any rank stops every rank at the next evaluation boundary (a rank's notice is its vote in
that boundary's all-reduce), where the leader saves a checkpoint and records the run
`interrupted` (or `stopped`); a run started with `RankOptions(resume=True)` continues from the
newest intact checkpoint and ends with the `final_digest` of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import JsonValue

from bus import Log
from lifecycle_es import ConfigError
from projections.training import (
    Boundary,
    ExpertLifecycle,
    PreemptionGuard,
    Replicated,
    SyncConfig,
    check_resumable,
    distributed,
    resume_run,
    run_digest,
)
from replay.demo.options import DemoOptions, demo_config, demo_model
from replay.demo.task import Batch, Task

__all__ = ["DemoOptions", "DemoRun", "PhaseLoss", "RankOptions", "Tick", "demo_config", "demo_model"]

_log = logging.getLogger("replay.demo")


@dataclass(frozen=True, slots=True)
class Tick:
    """Where training stands, for a progress display."""

    step: int
    steps: int
    loss: float
    """Mean training loss since the previous tick."""
    experts: dict[int, int]
    """Routing experts per layer."""
    phase: str


@dataclass(frozen=True, slots=True)
class PhaseLoss:
    """The held-out loss on a phase's data, measured at the phase's last step."""

    phase: str
    step: int
    loss: float


@dataclass(slots=True)
class Timeline:
    """What the run did over time: experts per layer at each checkpoint, losses per phase."""

    experts: list[tuple[int, dict[int, int]]] = field(default_factory=list)
    phase_losses: list[PhaseLoss] = field(default_factory=list)
    loss_sum: float = 0.0
    """Sum of every step's training loss."""

    def to_plain(self) -> dict[str, Any]:
        """Return the timeline as checkpoint data."""
        return {
            "experts": [[step, {str(k): v for k, v in n.items()}] for step, n in self.experts],
            "phase_losses": [[p.phase, p.step, p.loss] for p in self.phase_losses],
            "loss_sum": self.loss_sum,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Timeline:
        """Rebuild a timeline from `to_plain()`."""
        return cls(
            experts=[(int(step), {int(k): int(v) for k, v in n.items()}) for step, n in plain["experts"]],
            phase_losses=[PhaseLoss(str(a), int(b), float(c)) for a, b, c in plain["phase_losses"]],
            loss_sum=float(plain["loss_sum"]),
        )


@dataclass(frozen=True, kw_only=True)
class RankOptions:
    """How a demo run takes part in a multi-rank run; the defaults suit one process."""

    sync: SyncConfig = field(default_factory=SyncConfig)
    """The leader, the seal timeout and whether a divergence is repaired."""
    checkpoint_dir: Path | None = None
    """Where the leader writes checkpoints (None: no checkpoints)."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps (a multiple of the evaluation interval); 0: never."""
    resume: bool = False
    """Start from the checkpoint the log records last (or replay the log from step 0 if none)."""
    find_unused_parameters: bool = False
    """Passed to DDP; the demo's MoE layers compute every slot densely, so none is ever unused."""


class DemoRun:
    """One demo training run: the model, the task, and (optionally) the lifecycle on a log.

    Under a `torch.distributed` process group every rank builds the same run on the same log
    URL; rank 0 (the leader) decides and the others follow (see `LifecycleSync`).
    """

    def __init__(
        self,
        options: DemoOptions,
        log: Log | None = None,
        *,
        ranks: RankOptions | None = None,
        metadata: Mapping[str, JsonValue] | None = None,
    ) -> None:
        """`metadata` (what resumes the run: `projections.training.run_metadata`) goes in `RunStarted`."""
        if options.lifecycle and log is None:
            raise ConfigError("a demo run with the lifecycle needs a log")
        self.options = options
        self.ranks = ranks or RankOptions()
        if self.ranks.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.ranks.checkpoint_every}")
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.task = Task(seed=options.seed, steps=options.steps, batch_size=options.batch_size)
        self.model = demo_model(options, self.task)
        self.replicated = Replicated(self.model, find_unused_parameters=self.ranks.find_unused_parameters)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay
        )
        self.timeline = Timeline()
        self.lifecycle = self._lifecycle(log) if log is not None and options.lifecycle else None
        self._loss = torch.zeros(())
        self._since_tick = 0
        self._eval_loss = torch.zeros(())
        """This rank's training loss summed since the previous evaluation step (no host read)."""
        self._since_eval = 0
        self.digest: str | None = None
        """The digest every rank agreed on at the end of `run()` (None without the lifecycle)."""
        self.metadata = dict(metadata or {})
        self.final_digest: str | None = None
        """`run_digest` at the end of `run()`: the same for a resumed and an uninterrupted run."""
        self.stopped_at: int | None = None
        """The step a guarded run stopped at on a notice (None if it ran to the end)."""
        self.exit_code = 0
        """What the process should exit with: the guard's (143 after a preemption notice)."""
        self._guard: PreemptionGuard | None = None
        self._boundary: Boundary | None = None

    def _lifecycle(self, log: Log) -> ExpertLifecycle:
        """The expert lifecycle of the model's MoE layers, on `log`: all the wiring the loop needs."""
        config = demo_config(self.options)
        every, interval = self.ranks.checkpoint_every, config.lifecycle_eval_interval
        if every and (every % interval or self.ranks.checkpoint_dir is None):
            raise ConfigError(
                f"checkpoint_every must be a multiple of the evaluation interval "
                f"({interval}) and needs a checkpoint_dir, got {every}"
            )
        return ExpertLifecycle(
            self.model,
            self.optimizer,
            log,
            num_types=self.task.num_types,
            config=config,
            layers=self.model.layers(),
            initial_experts=self.options.initial_experts,
            strategy=self.options.strategy,
            replicated=self.replicated,  # surgery re-wraps DDP around resized parameters
            sync=self.ranks.sync,
        )

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> int:
        """Record the run's start and its initial experts (or resume); return the first step to train."""
        if self.lifecycle is not None:
            lifecycle = self.lifecycle
            if self.ranks.resume:
                check_resumable(lifecycle.lc)
            checkpoint = lifecycle.start(
                seed=self.options.seed,
                config={"demo": self.options.to_json()},
                resume=self.ranks.resume,
                metadata=self.metadata,
            )
            if self.ranks.resume and lifecycle.sync.is_leader:
                source = "the log (no checkpoint)" if checkpoint is None else f"step {checkpoint.step}"
                resume_run(lifecycle.lc, step=0 if checkpoint is None else checkpoint.step, source=source)
            if checkpoint is None:
                return 1
            self.load_extra_state(checkpoint.extra)
            return checkpoint.step + 1
        for layer in self.model.layers().values():
            mask = torch.zeros(layer.capacity, dtype=torch.bool)
            mask[: self.options.initial_experts] = True
            layer.set_active(mask)
        return 1

    def train_step(self, step: int) -> Boundary | None:
        """Train on this rank's shard of step `step`'s batch; at an evaluation step, run the
        lifecycle and return its boundary."""
        batch = self.task.batch(step).shard(self.rank, self.world_size)
        losses = (self.replicated(batch.x) - batch.y).square().mean(dim=-1)  # per token: the need signal
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.optimizer.step()
        detached = loss.detach()
        self._loss += detached
        self._since_tick += 1
        lifecycle = self.lifecycle
        boundary = (
            None
            if lifecycle is None
            else self._lifecycle_step(lifecycle, step, batch, detached, losses.detach())
        )
        if step == self.task.phase_end(self.task.phase_index(step)):
            self._evaluate(step)
        # after _evaluate, so that the checkpoint's timeline holds this step's phase loss
        if boundary is not None and not boundary.stop:  # a stop's checkpoint is the guard's
            self._maybe_checkpoint(boundary)
        return boundary

    def _lifecycle_step(
        self,
        lifecycle: ExpertLifecycle,
        step: int,
        batch: Batch,
        loss: torch.Tensor,
        losses: torch.Tensor,
    ) -> Boundary | None:
        """Record the step's routing and loss; at an evaluation step, run the lifecycle's boundary,
        with the batch's MoE inputs for revival and split directions (computed only there)."""
        lifecycle.record(batch.types, losses)
        if self._guard is not None and self._guard.notice is not None:
            lifecycle.sync.request_stop()  # this rank's vote, summed at the boundary below
        self._eval_loss += loss
        self._since_eval += 1
        inputs = functools.partial(self.model.layer_inputs, batch.x)
        boundary = lifecycle.after_step(step, metrics=self._loss_since_eval, revival=inputs)
        if boundary is not None:
            self._eval_loss.zero_()
            self._since_eval = 0
            self.timeline.experts.append((step, lifecycle.routing_counts()))
        return boundary

    def _loss_since_eval(self) -> dict[str, float]:
        # The run's own metric, for the report: the leader's mean training loss since the last
        # evaluation, one host read per evaluation. No controller reads run metrics.
        return {"loss": float(self._eval_loss) / self._since_eval}

    def _maybe_checkpoint(self, boundary: Boundary) -> None:
        """Write a training checkpoint at the boundaries `checkpoint_every` names."""
        every, directory = self.ranks.checkpoint_every, self.ranks.checkpoint_dir
        if self.lifecycle is not None and every and directory is not None and boundary.step % every == 0:
            self.lifecycle.checkpoints.save(directory, boundary, extra=self.extra_state())

    def run(
        self,
        tick: Callable[[Tick], None] | None = None,
        ticks: int = 100,
        after_step: Callable[[int], None] | None = None,
        *,
        guarded: bool = False,
    ) -> Timeline:
        """Train every step, calling `tick` about `ticks` times and `after_step(step)` after each
        step's boundary; return the timeline. The lifecycle's digests are verified at the end.

        `guarded` runs the loop in a `PreemptionGuard` (call it on the main thread): a notice
        stops the run at the next evaluation boundary with a checkpoint, and `exit_code` says
        what the process should exit with.
        """
        first = self.start()
        self._guard = self._new_guard() if guarded else None
        with self._guard or contextlib.nullcontext():
            self._train(first, tick, ticks, after_step)
            lifecycle = self.lifecycle
            if lifecycle is not None and self.stopped_at is None:
                self.digest = lifecycle.finish(self.options.steps)
                lifecycle.lc.catch_up()
                self.final_digest = run_digest(lifecycle.surgery, lifecycle.lc.registry)
                _log.info("rank %d finished with digest %s", self.rank, self.final_digest)
                if self._guard is not None:
                    self._guard.complete(self.options.steps)
        self.exit_code = 0 if self._guard is None else self._guard.exit_code
        return self.timeline

    def _train(
        self,
        first: int,
        tick: Callable[[Tick], None] | None,
        ticks: int,
        after_step: Callable[[int], None] | None,
    ) -> None:
        every = max(1, self.options.steps // ticks)
        for step in range(first, self.options.steps + 1):
            boundary = self.train_step(step)
            if after_step is not None:
                after_step(step)
            if step % every == 0 or step == self.options.steps:
                self._tick(step, tick)
            if self._guard is not None and boundary is not None and boundary.stop:
                self._boundary = boundary
                self._guard.stop(step)
                self.stopped_at = step
                return

    def _new_guard(self) -> PreemptionGuard:
        if self.lifecycle is None:
            raise ConfigError("a guarded demo run needs the lifecycle: its stops are lifecycle boundaries")
        return PreemptionGuard(
            self.lifecycle.lc, save=self._save_at_stop, record=self.lifecycle.sync.is_leader
        )

    def _save_at_stop(self, step: int) -> str | None:
        """The guard's pre-stop save: a high-priority checkpoint of the stop boundary."""
        directory = self.ranks.checkpoint_dir
        if directory is None:
            raise ConfigError("the demo run has no checkpoint_dir: the stop could not be checkpointed")
        assert self.lifecycle is not None and self._boundary is not None and self._boundary.step == step
        path = self.lifecycle.checkpoints.save(
            directory, self._boundary, extra=self.extra_state(), priority="high", replayed_too=True
        )
        return None if path is None else str(path)

    def _tick(self, step: int, tick: Callable[[Tick], None] | None) -> None:
        loss = float(self._loss) / max(self._since_tick, 1)  # the one host read per tick
        self.timeline.loss_sum += loss * self._since_tick
        self._loss.zero_()
        self._since_tick = 0
        if tick is not None:
            phase = self.task.phases[self.task.phase_index(step)].name
            tick(Tick(step=step, steps=self.options.steps, loss=loss, experts=self.experts(), phase=phase))

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        index = self.task.phase_index(step)
        batch = self.task.eval_batch(index)
        loss = torch.nn.functional.mse_loss(self.model(batch.x), batch.y)
        self.timeline.phase_losses.append(PhaseLoss(self.task.phases[index].name, step, float(loss)))

    # -- checkpoint data -----------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """Return what a checkpoint needs besides the model, optimizer and projections."""
        assert self.lifecycle is not None
        return {
            "task": self.task.state(),
            "basin": self.lifecycle.basin.state(),
            "timeline": self.timeline.to_plain(),
            "tick_loss": self._loss.clone(),
            "since_tick": self._since_tick,
        }

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore `extra_state()` from a checkpoint."""
        assert self.lifecycle is not None
        self.task.load_state(extra["task"])
        self.lifecycle.basin.load_state(extra["basin"])
        self.timeline = Timeline.from_plain(extra["timeline"])
        self._loss = extra.get("tick_loss", torch.zeros(()))  # absent from older checkpoints
        self._since_tick = int(extra.get("since_tick", 0))

    # -- reading -------------------------------------------------------------------------------

    def experts(self) -> dict[int, int]:
        """Return how many experts route in each layer now."""
        if self.lifecycle is not None:
            return self.lifecycle.routing_counts()
        return {i: int(layer.active.sum()) for i, layer in self.model.layers().items()}

    @property
    def mean_loss(self) -> float:
        """Mean training loss over the run's steps, as `run()` measured it at its ticks."""
        return self.timeline.loss_sum / self.options.steps
