"""Embargo is bound to the slot: nothing grows into it until the backoff, counted from entering
the embargo, has passed, and a success resets the count (seeds/000's cooldown manager)."""

from __future__ import annotations

import pytest

from lifecycle_es import InvalidTransitionError, Lifecycle, LifecycleConfig, SlotEmbargoedError
from lifecycle_es.specs import KasminaState, ModuleState

K, M = KasminaState, ModuleState
GROW = {"available_slots": 1}


def cull_seed(lc: Lifecycle, entity: str, step: int) -> None:
    """Register a Kasmina seed in slot 0 of layer 0 at `step`, train it and cull it 100 steps later."""
    lc.register(entity, "kasmina", layer=0, slot=0, step=step)
    lc.transition(entity, K.GERMINATED, step=step)
    lc.transition(entity, K.TRAINING, step=step)
    lc.transition(entity, K.CULLED, step=step + 100)


def test_a_new_seed_in_a_culled_slot_is_refused_until_the_backoff_ends() -> None:
    """After a cull at step 100 the slot refuses new seeds until step 200 and records nothing."""
    lc = Lifecycle()
    cull_seed(lc, "s0", 0)
    before = lc.registry.seq
    with pytest.raises(SlotEmbargoedError, match="slot 0 of layer 0: slot is embargoed until step 200"):
        lc.register("s1", "kasmina", layer=0, slot=0, step=199)
    assert lc.registry.seq == before and "s1" not in lc.registry
    assert lc.register("s1", "kasmina", layer=0, slot=0, step=200).state == K.DORMANT


def test_the_backoff_doubles_per_embargo_in_a_row_and_other_slots_are_free() -> None:
    """A second cull in the same slot embargoes it for 200 steps; a neighbouring slot is never held."""
    lc = Lifecycle()
    cull_seed(lc, "s0", 0)  # culled at 100: until 200
    cull_seed(lc, "s1", 200)  # culled at 300: until 500
    lc.register("other", "kasmina", layer=0, slot=1, step=300)
    with pytest.raises(SlotEmbargoedError, match="until step 500"):
        lc.register("s2", "kasmina", layer=0, slot=0, step=499)
    lc.register("s2", "kasmina", layer=0, slot=0, step=500)


def test_a_rolled_back_graft_embargoes_its_slot() -> None:
    """ROLLED_BACK is an embargo state: the graft that hurt keeps its slot empty for the cooldown."""
    lc = Lifecycle()
    lc.register("s0", "kasmina", layer=0, slot=0)
    lc.transition("s0", K.GERMINATED)
    lc.transition("s0", K.TRAINING)
    lc.transition("s0", K.GRAFTING, step=100, metrics={"reconstruction_loss": 0.0})
    lc.transition("s0", K.ROLLED_BACK, step=120)
    with pytest.raises(SlotEmbargoedError, match="until step 220"):
        lc.register("s1", "kasmina", layer=0, slot=0, step=150)


def test_the_backoff_counts_from_entering_the_embargo_not_from_the_failure() -> None:
    """A module pruned at step 0 and embargoed at step 50 keeps its slot shut until 150, not 100."""
    lc = Lifecycle()
    lc.register("m", "module", slot=0)
    lc.transition("m", M.INSTANTIATED, metrics=GROW)
    lc.transition("m", M.TRAINING)
    lc.transition("m", M.PRUNED)
    assert lc.registry.slot_failures(lc.registry.get("m")) is None  # pruned, not embargoed
    lc.transition("m", M.EMBARGOED, step=50)
    assert lc.registry.slot_failures(lc.registry.get("m")) == (1, 50)
    with pytest.raises(InvalidTransitionError, match="embargoed until step 150"):
        lc.transition("m", M.DORMANT, step=149)
    assert lc.transition("m", M.DORMANT, step=150).state == M.DORMANT


def test_a_module_already_in_the_slot_cannot_grow_while_it_is_embargoed() -> None:
    """A module registered while its neighbour was only pruned may not instantiate once the slot
    is embargoed: the growth edge is gated by `not_embargoed`, whatever the entity."""
    lc = Lifecycle()
    lc.register("m1", "module", slot=0)
    lc.transition("m1", M.INSTANTIATED, metrics=GROW)
    lc.transition("m1", M.TRAINING)
    lc.transition("m1", M.PRUNED, step=10)
    lc.register("m2", "module", slot=0, step=10)  # the pruned slot is free and not embargoed
    lc.transition("m1", M.EMBARGOED, step=10)
    with pytest.raises(InvalidTransitionError) as caught:
        lc.transition("m2", M.INSTANTIATED, metrics=GROW, step=50)
    assert caught.value.reasons == ("not_embargoed: slot is embargoed until step 110",)
    assert lc.transition("m2", M.INSTANTIATED, metrics=GROW, step=110).state == M.INSTANTIATED


def test_a_recycled_pruned_slot_is_not_embargoed() -> None:
    """Pruning and recycling (no embargo) leaves the slot free at once, as seeds/000's can_recycle says."""
    lc = Lifecycle()
    lc.register("m", "module", slot=0)
    lc.transition("m", M.INSTANTIATED, metrics=GROW)
    lc.transition("m", M.TRAINING)
    lc.transition("m", M.PRUNED, step=5)
    lc.transition("m", M.DORMANT, step=5)
    assert lc.transition("m", M.INSTANTIATED, metrics=GROW, step=5).state == M.INSTANTIATED


def test_a_success_in_the_slot_resets_the_backoff() -> None:
    """After a fossilized seed the next cull embargoes the slot for the base cooldown again."""
    params = {"not_embargoed": {"base_cooldown": 10, "exponential": 1}}
    lc = Lifecycle(config=LifecycleConfig(gate_params=params))
    cull_seed(lc, "s0", 0)  # count 1, until 110
    lc.register("s1", "kasmina", layer=0, slot=0, step=110)
    walk = [
        (K.GERMINATED, 110, {}),
        (K.TRAINING, 110, {}),
        (K.GRAFTING, 210, {"reconstruction_loss": 0.0}),
        (K.STABILIZATION, 260, {}),
        (K.EVALUATING, 280, {}),
        (K.FINE_TUNING, 310, {"performance_delta": 0.1, "stability_score": 0.9}),
        (K.FOSSILIZED, 360, {"total_improvement": 0.1, "final_stability": 0.99}),
    ]
    for target, step, metrics in walk:
        lc.transition("s1", target, step=step, metrics=metrics)
    assert lc.registry.slot_failures(lc.registry.get("s1")) is None
    cull_seed(lc, "s2", 360)  # culled at 460: the base 10 again, not 20
    with pytest.raises(SlotEmbargoedError, match="until step 470"):
        lc.register("s3", "kasmina", layer=0, slot=0, step=469)
