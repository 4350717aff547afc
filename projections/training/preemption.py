"""`PreemptionGuard`: stop a training loop cleanly at a step boundary when the machine is going away.

A loop enters it in one line and asks `guard.should_stop(step)` at each step boundary. The
guard installs SIGTERM and SIGINT handlers (and SIGUSR1, SLURM's `--signal` warning, when asked)
and polls notice sources (`projections.training.notices`) on a thread; a handler or poller only
records the notice, and the stop itself happens on the loop's thread at the next boundary:

- a preemption notice (SIGTERM, SIGUSR1, a file, a callable, a cloud metadata poller): save,
  then `running -> interrupted`. The run spec has no `stopping -> interrupted` edge, so the save
  runs before that move, where the spec's `pre_stop` hook point puts it, and the run never
  shows `stopping` on this path;
- a manual stop (SIGINT, `request_stop()`): `running -> stopping`, save, `stopping -> stopped`.

The final move's attrs say what happened: `checkpoint_saved` (true only if the save callback
returned), `notice_source`, `notice_reason`, the save's error type and message when it raised,
and the signals that arrived during the save (recorded, never acted on, so the save finishes).
Leaving the block without a notice (or `complete()`) records `running -> terminated`, the end a
follower (`tail --follow`) waits for. `exit_code` is what the process should exit with; the
guard never exits itself.

Under DDP every rank enters a guard, and only the log's writer (the leader) records: the others
pass `record=False`. A notice on any rank is its vote at the next lifecycle boundary
(`LifecycleSync.request_stop`); the boundary's all-reduce tells every rank, and each calls
`stop(step)` there, so all checkpoint at the same step and end together.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Self

from lifecycle_es.errors import ConfigError, UsageError
from lifecycle_es.session import Lifecycle
from lifecycle_es.specs import RunState
from projections.training.notices import NoticeSource, Poller, cloud_sources

__all__ = ["REQUEUE_EXIT_CODE", "Notice", "PreemptionGuard"]

REQUEUE_EXIT_CODE = 128 + signal.SIGTERM
"""143: the code of a process ended by SIGTERM, which torchrun reports and SLURM and most requeue
wrappers read as "preempted, run again". A stop on a signal exits 128 + that signal's number
(SIGUSR1: 138, SIGINT: 130); a notice from a poller exits 143 as if its SIGTERM had come."""

_log = logging.getLogger("projections.training.preemption")

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True, slots=True)
class Notice:
    """Why a run is asked to stop: where the notice came from and what it said."""

    source: str
    """'signal', 'manual', or a notice source's name ('file', 'aws', 'gce', ...)."""
    reason: str
    """The signal's name or the source's reason."""
    manual: bool
    """True for a stop a person asked for (SIGINT, `request_stop`): the run ends `stopped`."""
    signum: int | None = None
    """The signal's number, for a notice that was a signal."""

    @property
    def exit_code(self) -> int:
        """The exit code a process stopped by this notice should use (see `REQUEUE_EXIT_CODE`)."""
        if self.signum is not None:
            return 128 + self.signum
        return 0 if self.manual else REQUEUE_EXIT_CODE


class PreemptionGuard:
    """A context a training loop enters to stop at a step boundary on a preemption notice."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        save: Callable[[int], object] | None = None,
        sources: Sequence[NoticeSource] = (),
        sigusr1: bool = False,
        spot: bool | None = None,
        poll_interval: float = 5.0,
        record: bool = True,
    ) -> None:
        """`save(step)` writes the checkpoint (a returned path is recorded); `sources` are polled
        every `poll_interval` seconds; `spot` adds the AWS and GCE metadata pollers (None: when
        the run's `RunStarted` config says `"spot": true`); `record=False` (a DDP rank that
        does not write the log) stops and saves without recording the run's moves."""
        if not isinstance(lifecycle, Lifecycle):
            raise ConfigError(f"PreemptionGuard takes a Lifecycle, got {type(lifecycle).__name__}")
        if save is not None and not callable(save):
            raise ConfigError("PreemptionGuard(save=...) must be callable")
        interval = poll_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if not isinstance(record, bool):
            raise ConfigError(f"record must be a bool, got {type(record).__name__}")
        self._record = record
        self._lc = lifecycle
        self._save = save
        self._sources = tuple(sources) + (cloud_sources() if self._on_spot(spot) else ())
        self._signals = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGUSR1,) if sigusr1 else ())
        self._interval = float(poll_interval)
        self._previous: dict[int, _SignalHandler] = {}
        self._poller: Poller | None = None
        self._notice: Notice | None = None
        self._received: list[Notice] = []
        self._saving = False
        self._during_save: list[str] = []
        self._outcome: RunState | None = None

    def _on_spot(self, spot: bool | None) -> bool:
        if spot is None:
            return self._lc.registry.run_config.get("spot") is True
        return bool(spot)

    # -- what the loop sees ----------------------------------------------------------------

    @property
    def notice(self) -> Notice | None:
        """The notice that stops (or stopped) the run, or None."""
        return self._notice

    @property
    def received(self) -> tuple[Notice, ...]:
        """Every notice received, in order, the acting one first (later signals included)."""
        return tuple(self._received)

    @property
    def outcome(self) -> RunState | None:
        """The state the guard moved the run to (interrupted, stopped, terminated), or None."""
        return self._outcome

    @property
    def exit_code(self) -> int:
        """The code the process should exit with: 0 unless a notice stopped the run."""
        if self._notice is None or self._outcome is RunState.TERMINATED:
            return 0
        return self._notice.exit_code

    def should_stop(self, step: int) -> bool:
        """True once the run has stopped; on the first boundary after a notice, stop it at `step`."""
        if self._outcome is not None:
            return True
        if self._notice is None:
            return False
        self._stop(self._notice, step)
        return True

    def stop(self, step: int, notice: Notice | None = None) -> None:
        """Stop the run at `step` now: for a rank that learns at a boundary that another rank
        received a notice. `notice` defaults to this rank's own, else one naming the others."""
        if self._outcome is not None:
            raise UsageError(f"the run already ended {self._outcome.value}; it cannot stop again")
        chosen = notice or self._notice or Notice(source="rank", reason="another rank's notice", manual=False)
        if self._notice is None:
            self._notify(chosen)
        self._stop(chosen, step)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask for a manual stop at the next boundary (the run ends `stopped`)."""
        self._notify(Notice(source="manual", reason=reason, manual=True))

    def complete(self, step: int | None = None) -> None:
        """Record that training finished: `running -> terminated`."""
        if self._outcome is not None:
            raise UsageError(f"the run already ended {self._outcome.value}; it cannot complete too")
        self._move(RunState.TERMINATED, "training completed", step, {"completed": True})
        self._outcome = RunState.TERMINATED

    # -- entering and leaving --------------------------------------------------------------

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            raise UsageError(
                "PreemptionGuard must be entered on the main thread: Python runs signal handlers only there"
            )
        if self._previous:
            raise UsageError("this PreemptionGuard is already entered; a guard is entered once at a time")
        if self._record and self._lc.registry.run_state != RunState.RUNNING:
            raise UsageError(f"the run must be running to be guarded, it is {self._lc.registry.run_state}")
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        if self._sources:
            self._poller = Poller(self._sources, self._on_source, interval=self._interval)
            self._poller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._poller is not None:
                self._poller.stop()
            # A block that raised did not complete: its run keeps its state for whoever handles it.
            if exc_type is None and self._outcome is None:
                self.complete()
        finally:
            self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            # None means a handler not installed from Python; the default is the nearest we can set.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    # -- notices ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes, possibly inside the save: record only.
        name = signal.Signals(signum).name
        if self._saving:
            self._during_save.append(name)
        self._notify(Notice(source="signal", reason=name, manual=signum == signal.SIGINT, signum=signum))

    def _on_source(self, source: str, reason: str) -> None:
        self._notify(Notice(source=source, reason=reason, manual=False))

    def _notify(self, notice: Notice) -> None:
        # No lock: a lock taken here could be held by the very frame a signal interrupted. The
        # first notice wins; a race between the poller and a signal loses neither from `received`.
        self._received.append(notice)
        if self._notice is None:
            self._notice = notice

    # -- the stop --------------------------------------------------------------------------

    def _stop(self, notice: Notice, step: int) -> None:
        # info, not warning: the stop is expected and the log records it; a CLI says so itself
        _log.info("stopping at step %d on %s notice: %s", step, notice.source, notice.reason)
        if notice.manual:
            self._move(RunState.STOPPING, notice.reason, step, {})
            attrs = self._checkpoint(notice, step)
            final = RunState.STOPPED
        else:
            attrs = self._checkpoint(notice, step)
            final = RunState.INTERRUPTED
        self._move(final, notice.reason, step, attrs)
        self._outcome = final

    def _move(self, to: RunState, reason: str, step: int | None, attrs: dict[str, Any]) -> None:
        if not self._record:
            return
        latest = self._lc.registry.step
        if step is not None and step < latest:
            # A resumed run replaying steps the log already holds stops behind the log's latest
            # step; the log's steps never go back, so the move is recorded there, with its own.
            attrs, step = {**attrs, "training_step": step}, latest
        self._lc.set_run_state(to, reason=reason, step=step, attrs=attrs)

    def _checkpoint(self, notice: Notice, step: int) -> dict[str, Any]:
        """Run the save callback and return the attrs that say truthfully how it went."""
        attrs: dict[str, Any] = {"notice_source": notice.source, "notice_reason": notice.reason}
        if self._save is None:
            attrs["checkpoint_saved"] = False
            return attrs
        self._saving = True
        try:
            result = self._save(step)
        except Exception as e:
            # The save is the user's code and may fail in any way; the run must still end
            # cleanly, so the failure is recorded on the log and logged with its traceback.
            _log.exception("pre-stop checkpoint at step %d failed", step)
            attrs.update(checkpoint_saved=False, save_error_type=type(e).__name__, save_error=str(e)[:1000])
        else:
            attrs["checkpoint_saved"] = True
            if isinstance(result, (str, os.PathLike)):
                attrs["checkpoint_path"] = os.fsdecode(result)
        finally:
            self._saving = False
        attrs["signals_during_save"] = list(self._during_save)
        return attrs
