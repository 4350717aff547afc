"""Transition hooks: handlers called before and after transitions, sync or async.

As in DevCycle's agent lifecycle (seeds/004), a handler's error is logged and never blocks the
transition: by the time a pre-transition hook runs, the gates have passed and the decision is
taken; a hook observes it (saves a checkpoint, notifies a service) but cannot veto it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lifecycle_es.errors import ConfigError
from lifecycle_es.spec import Spec

__all__ = ["FAILURES_KEPT", "TRANSITION_POINTS", "Handler", "HookFailure", "Hooks"]

Handler = Callable[[str, Mapping[str, Any]], Awaitable[None] | None]
"""Called as `handler(point, data)`; `data` has entity, spec, from_state, to_state, trigger,
reason, step, triggered_by and metadata. A coroutine handler is run to its end before the next
handler is called: `fire_async` awaits it in the caller's loop; `fire` runs it with
`asyncio.run`, in a helper thread when the calling thread already runs a loop (so inside a loop,
prefer the async API, whose handlers share the caller's loop)."""

TRANSITION_POINTS = ("pre_transition", "post_transition")
"""The points every spec has; specs add named ones (the run spec's 'pre_stop', ...)."""

FAILURES_KEPT = 100
"""How many handler failures `Hooks.failures` keeps, newest last."""

# stdlib logging, as everywhere in the package: a library configures nothing, so without the
# application's own set-up a failure goes to stderr (logging's last resort), never to stdout.
_log = logging.getLogger("lifecycle_es.hooks")


@dataclass(frozen=True, slots=True)
class _Registration:
    point: str
    handler: Handler
    spec: str | None


@dataclass(frozen=True, slots=True)
class HookFailure:
    """One handler failure: where it happened, for which entity, and the error as text."""

    point: str
    entity: str | None
    error: str


class Hooks:
    """The handlers of one lifecycle, by hook point and optionally by spec."""

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []
        self.failures: deque[HookFailure] = deque(maxlen=FAILURES_KEPT)
        """The latest handler failures (each also logged), newest last."""

    def on(self, point: str, handler: Handler, *, spec: str | None = None) -> None:
        """Call `handler` at `point` ('pre_transition', 'post_transition' or a spec's hook name)."""
        if not callable(handler):
            raise ConfigError(f"hook handler for {point!r} must be callable")
        self._registrations.append(_Registration(point, handler, spec))

    def __bool__(self) -> bool:
        return bool(self._registrations)

    def fire(self, phase: Literal["pre", "post"], spec: Spec, data: Mapping[str, Any]) -> None:
        """Call every handler of `phase` that applies to a transition of `spec` into data's to_state,
        in registration order, each run to its end."""
        for reg in self._matching(phase, spec, data):
            try:
                result = reg.handler(reg.point, data)
                if inspect.isawaitable(result):
                    _run_to_end(result)
            except Exception as e:
                self._failed(reg, data, e)

    async def fire_async(self, phase: Literal["pre", "post"], spec: Spec, data: Mapping[str, Any]) -> None:
        """`fire` inside an event loop: coroutine handlers are awaited in the caller's loop, in order."""
        for reg in self._matching(phase, spec, data):
            try:
                result = reg.handler(reg.point, data)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                self._failed(reg, data, e)

    def _matching(self, phase: str, spec: Spec, data: Mapping[str, Any]) -> list[_Registration]:
        points = (f"{phase}_transition", *spec.hook_points(phase, data["to_state"]))
        return [r for r in self._registrations if r.point in points and r.spec in (None, spec.name)]

    def _failed(self, reg: _Registration, data: Mapping[str, Any], error: Exception) -> None:
        # Hooks never block a transition (seeds/004); the failure is logged and kept, not lost.
        entity = data.get("entity")
        self.failures.append(HookFailure(reg.point, entity, f"{type(error).__name__}: {error}"))
        _log.error(
            "hook handler failed at %s for %r",
            reg.point,
            entity,
            exc_info=error,
            extra={"point": reg.point, "entity": entity},
        )


def _run_to_end(awaitable: Awaitable[None]) -> None:
    """Run a coroutine handler to its end from sync code, with or without a running loop here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_as_coroutine(awaitable))
        return
    # asyncio.run refuses to nest in a running loop, so the handler gets a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _as_coroutine(awaitable)).result()


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable
