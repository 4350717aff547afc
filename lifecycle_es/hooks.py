"""Transition hooks: handlers called before and after transitions, sync or async.

As in DevCycle's agent lifecycle (seeds/004), a handler's error is logged and never blocks the
transition: by the time a pre-transition hook runs, the gates have passed and the decision is
taken; a hook observes it (saves a checkpoint, notifies a service) but cannot veto it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lifecycle_es.errors import ConfigError
from lifecycle_es.spec import Spec

__all__ = ["TRANSITION_POINTS", "Handler", "Hooks"]

Handler = Callable[[str, Mapping[str, Any]], Awaitable[None] | None]
"""Called as `handler(point, data)`; `data` has entity, spec, from_state, to_state, trigger,
reason and step. A coroutine function is awaited."""

TRANSITION_POINTS = ("pre_transition", "post_transition")
"""The points every spec has; specs add named ones (the run spec's 'pre_stop', ...)."""

# stdlib logging, as everywhere in the package: a library configures nothing, so without the
# application's own set-up a failure goes to stderr (logging's last resort), never to stdout.
_log = logging.getLogger("lifecycle_es.hooks")


@dataclass(frozen=True, slots=True)
class _Registration:
    point: str
    handler: Handler
    spec: str | None


class Hooks:
    """The handlers of one lifecycle, by hook point and optionally by spec."""

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []
        self._pending: set[asyncio.Task[None]] = set()

    def on(self, point: str, handler: Handler, *, spec: str | None = None) -> None:
        """Call `handler` at `point` ('pre_transition', 'post_transition' or a spec's hook name)."""
        if not callable(handler):
            raise ConfigError(f"hook handler for {point!r} must be callable")
        self._registrations.append(_Registration(point, handler, spec))

    def __bool__(self) -> bool:
        return bool(self._registrations)

    def fire(self, phase: Literal["pre", "post"], spec: Spec, data: Mapping[str, Any]) -> None:
        """Call every handler of `phase` that applies to a transition of `spec` into data's to_state."""
        points = (f"{phase}_transition", *spec.hook_points(phase, data["to_state"]))
        for reg in self._registrations:
            if reg.point in points and reg.spec in (None, spec.name):
                self._call(reg, data)

    def _call(self, reg: _Registration, data: Mapping[str, Any]) -> None:
        try:
            result = reg.handler(reg.point, data)
            if inspect.isawaitable(result):
                self._await(reg, result)
        except Exception:
            # Hooks never block a transition (seeds/004); the failure is logged, not lost.
            entity = data.get("entity")
            _log.exception(
                "hook handler failed at %s for %r",
                reg.point,
                entity,
                extra={"point": reg.point, "entity": entity},
            )

    def _await(self, reg: _Registration, awaitable: Awaitable[None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(_as_coroutine(awaitable))
            return
        task = loop.create_task(_as_coroutine(awaitable))
        self._pending.add(task)
        task.add_done_callback(lambda t: self._done(reg, t))

    def _done(self, reg: _Registration, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "async hook handler failed at %s",
                reg.point,
                exc_info=task.exception(),
                extra={"point": reg.point},
            )


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable
