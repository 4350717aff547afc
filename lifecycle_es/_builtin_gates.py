"""The built-in gates: seeds/000's structural, performance, stability and contribution checks, and
Kasmina's four metric validators (reference/seed-projects.md section 1.3).

Each body is a pure function of a `GateInput` and its parameters; `default_gates` puts them,
with their default parameters, into a new library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lifecycle_es import policies
from lifecycle_es._gate_library import EMBARGO_GATE, MIN_TIME_GATE, Gate, GateInput, GateLibrary, GateResult
from lifecycle_es.events import GateCategory

__all__ = ["default_gates"]


# -- helpers ---------------------------------------------------------------------------------


def _need(inp: GateInput, *names: str) -> str | None:
    missing = [n for n in names if n not in inp.metrics]
    return f"metric {', '.join(missing)} was not observed" if missing else None


def _fail(reason: str, **observed: float) -> GateResult:
    return GateResult(False, reason, observed)


def _verdict(passed: bool, ok: str, bad: str, **observed: float) -> GateResult:
    return GateResult(passed, ok if passed else bad, observed)


# -- structural: prerequisites about the system, not the entity's performance ----------------


def _min_time_in_state(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    spent = inp.entity.time_in_state(inp.step)
    minimum = int(p["min_steps"])
    state = inp.entity.state
    return _verdict(
        spent >= minimum,
        f"{spent} steps in {state} meet the minimum of {minimum}",
        f"Insufficient time in {state}: {spent} < {minimum} epochs",
        time_in_state=spent,
    )


def _slot_available(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "available_slots")) is not None:
        return _fail(missing)
    free = inp.metrics["available_slots"]
    return _verdict(free > 0, f"{free:g} slots free", "no slot is free", available_slots=free)


def _budget_permits(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    current = inp.metrics.get("current_params", 0.0)
    proposed = inp.metrics.get("proposed_params", 0.0)
    budget = inp.metrics.get("param_budget", p["param_budget"])
    return _verdict(
        current + proposed <= budget,
        f"{current + proposed:g} parameters fit the budget of {budget:g}",
        f"{current:g} + {proposed:g} parameters exceed the budget of {budget:g}",
        current_params=current,
        proposed_params=proposed,
    )


def _no_active_transitions(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    busy = inp.metrics.get("modules_in_transition")
    if busy is None:
        busy = float(inp.registry.count_transitional(inp.entity.spec, exclude=inp.entity.entity))
    return _verdict(
        busy == 0,
        "no other entity is mid-transition",
        f"{busy:g} other entities are mid-transition",
        modules_in_transition=busy,
    )


def _not_embargoed(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    until = policies.embargo_until(
        inp.registry, inp.entity, base=int(p["base_cooldown"]), exponential=bool(p["exponential"])
    )
    return _verdict(
        inp.step >= until,
        f"embargo ended at step {until}",
        f"slot is embargoed until step {until}",
        embargo_until=float(until),
    )


def _hysteresis(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    ok, reason, recent = policies.hysteresis(
        inp.entity,
        inp.step,
        min_time=int(p["min_time_in_state"]),
        max_transitions=int(p["max_transitions_per_window"]),
        window=int(p["window_size"]),
    )
    return GateResult(ok, reason, {"recent_transitions": float(recent)})


# -- performance ------------------------------------------------------------------------------


def _minimum_epochs_trained(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "epochs_trained")) is not None:
        return _fail(missing)
    n = inp.metrics["epochs_trained"]
    return _verdict(
        n >= p["min_epochs"],
        f"trained {n:g} epochs",
        f"trained {n:g} < {p['min_epochs']:g} epochs",
        epochs_trained=n,
    )


def _loss_improved(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "loss_at_instantiation", "current_loss")) is not None:
        return _fail(missing)
    base, now = inp.metrics["loss_at_instantiation"], inp.metrics["current_loss"]
    limit = base * (1 - p["threshold"])
    return _verdict(
        now < limit,
        f"loss {now:g} is below {limit:g}",
        f"loss {now:g} did not improve below {limit:g}",
        loss_at_instantiation=base,
        current_loss=now,
    )


def _no_regression(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "host_accuracy_at_blend", "current_accuracy")) is not None:
        return _fail(missing)
    base, now = inp.metrics["host_accuracy_at_blend"], inp.metrics["current_accuracy"]
    floor = base * (1 - p["tolerance"])
    return _verdict(
        now >= floor,
        f"accuracy {now:g} holds above {floor:g}",
        f"accuracy {now:g} regressed below {floor:g}",
        host_accuracy_at_blend=base,
        current_accuracy=now,
    )


# -- stability ----------------------------------------------------------------------------------


def _consistent_improvement(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    window = int(p["window"])
    history = inp.history("improvement")
    if len(history) < window:
        return _fail(f"only {len(history)} of {window} improvement observations")
    recent = history[-window:]
    mean = math.fsum(recent) / window
    variance = math.fsum((x - mean) ** 2 for x in recent) / window
    return _verdict(
        variance < p["variance_threshold"] and mean > 0,
        f"improvement mean {mean:g}, variance {variance:g}",
        f"improvement not consistent: mean {mean:g}, variance {variance:g}",
        improvement_mean=mean,
        improvement_variance=variance,
    )


def _gradient_health(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "module_grad_norm")) is not None:
        return _fail(missing)
    g = inp.metrics["module_grad_norm"]
    return _verdict(
        p["min_grad_norm"] < g < p["max_grad_norm"],
        f"gradient norm {g:g} is healthy",
        f"gradient norm {g:g} is outside ({p['min_grad_norm']:g}, {p['max_grad_norm']:g})",
        module_grad_norm=g,
    )


# -- contribution ---------------------------------------------------------------------------------


def _positive_contribution(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "module_contribution")) is not None:
        return _fail(missing)
    c = inp.metrics["module_contribution"]
    return _verdict(
        c > p["threshold"],
        f"contribution {c:g} is positive",
        f"contribution {c:g} is not above {p['threshold']:g}",
        module_contribution=c,
    )


def _contribution_above_cost(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    if (missing := _need(inp, "module_contribution")) is not None:
        return _fail(missing)
    c, cost = inp.metrics["module_contribution"], inp.metrics.get("module_cost", 0.0)
    return _verdict(
        c > cost,
        f"contribution {c:g} exceeds cost {cost:g}",
        f"contribution {c:g} does not exceed cost {cost:g}",
        module_contribution=c,
        module_cost=cost,
    )


def _unique_contribution(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    overlap = inp.metrics.get("contribution_overlap", 0.0)
    return _verdict(
        overlap < p["overlap_threshold"],
        f"overlap {overlap:g} is low",
        f"overlap {overlap:g} is not below {p['overlap_threshold']:g}",
        contribution_overlap=overlap,
    )


# -- Kasmina's four metric validators (reference/seed-projects.md section 1.3) -------------------


def _kasmina_reconstruction(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    loss = inp.metrics.get("reconstruction_loss", math.inf)
    limit = p["reconstruction_threshold"]
    return _verdict(
        loss <= limit,
        f"reconstruction loss {loss:g} <= {limit:g}",
        f"reconstruction loss {loss:g} > {limit:g}",
        **({"reconstruction_loss": loss} if math.isfinite(loss) else {}),
    )


def _kasmina_positive_evaluation(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    delta = inp.metrics.get("performance_delta", 0.0)
    stability = inp.metrics.get("stability_score", 0.0)
    return _verdict(
        delta > 0 and stability >= p["min_stability"],
        f"performance delta {delta:g} > 0 and stability {stability:g}",
        f"evaluation not positive: delta {delta:g}, stability {stability:g} "
        f"(needs > 0 and >= {p['min_stability']:g})",
        performance_delta=delta,
        stability_score=stability,
    )


def _kasmina_negative_evaluation(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    delta = inp.metrics.get("performance_delta", 0.0)
    error_rate = inp.metrics.get("error_rate", 0.0)
    errors = inp.metrics.get("error_count", 0.0)
    cull = delta < p["max_delta"] or error_rate > p["max_error_rate"] or errors > p["max_errors"]
    return _verdict(
        cull,
        "evaluation metrics warrant culling",
        "Evaluation metrics do not warrant culling",
        performance_delta=delta,
        error_rate=error_rate,
        error_count=errors,
    )


def _kasmina_improvement(inp: GateInput, p: Mapping[str, float]) -> GateResult:
    total = inp.metrics.get("total_improvement", 0.0)
    stability = inp.metrics.get("final_stability", 0.0)
    return _verdict(
        total >= p["min_improvement"] and stability >= p["min_stability"],
        f"improvement {total:g} with stability {stability:g}",
        f"improvement {total:g} or stability {stability:g} too low "
        f"(needs >= {p['min_improvement']:g} and >= {p['min_stability']:g})",
        total_improvement=total,
        final_stability=stability,
    )


_S, _P, _T, _C = (
    GateCategory.STRUCTURAL,
    GateCategory.PERFORMANCE,
    GateCategory.STABILITY,
    GateCategory.CONTRIBUTION,
)

_BUILTIN: tuple[Gate, ...] = (
    Gate(MIN_TIME_GATE, _S, _min_time_in_state, {"min_steps": 0}, "spec minimum time in state"),
    Gate("slot_available", _S, _slot_available, {}, "an empty slot exists for growth"),
    Gate(
        "budget_permits",
        _S,
        _budget_permits,
        {"param_budget": math.inf},
        "the parameter budget fits the proposed module",
    ),
    Gate("no_active_transitions", _S, _no_active_transitions, {}, "no other entity mid-transition"),
    Gate(
        EMBARGO_GATE,
        _S,
        _not_embargoed,
        {"base_cooldown": 100, "exponential": 1},
        "the slot's cooldown after a failure has ended",
    ),
    Gate(
        "hysteresis",
        _S,
        _hysteresis,
        {"min_time_in_state": 50, "max_transitions_per_window": 3, "window_size": 100},
        "debounce: minimum time in state and at most N transitions per window",
    ),
    Gate("minimum_epochs_trained", _P, _minimum_epochs_trained, {"min_epochs": 5}),
    Gate("loss_improved", _P, _loss_improved, {"threshold": 0.01}),
    Gate("no_regression", _P, _no_regression, {"tolerance": 0.02}),
    Gate("consistent_improvement", _T, _consistent_improvement, {"window": 10, "variance_threshold": 0.1}),
    Gate("gradient_health", _T, _gradient_health, {"max_grad_norm": 10.0, "min_grad_norm": 1e-6}),
    Gate("positive_contribution", _C, _positive_contribution, {"threshold": 0.0}),
    Gate("contribution_above_cost", _C, _contribution_above_cost, {}),
    Gate("unique_contribution", _C, _unique_contribution, {"overlap_threshold": 0.5}),
    Gate("kasmina.reconstruction", _P, _kasmina_reconstruction, {"reconstruction_threshold": 0.01}),
    Gate("kasmina.positive_evaluation", _P, _kasmina_positive_evaluation, {"min_stability": 0.8}),
    Gate(
        "kasmina.negative_evaluation",
        _P,
        _kasmina_negative_evaluation,
        {"max_delta": -0.05, "max_error_rate": 0.1, "max_errors": 5},
    ),
    Gate("kasmina.improvement", _T, _kasmina_improvement, {"min_improvement": 0.01, "min_stability": 0.95}),
)


def default_gates() -> GateLibrary:
    """Return a new library holding the built-in gates of seeds/000 and Kasmina's validators."""
    return GateLibrary(_BUILTIN)
