"""A what-if compares decisions without the split direction only the training loop can compute."""

from __future__ import annotations

from lifecycle_es import Action, DecisionMade
from replay._decision_diff import _changed


def _split(**metrics: object) -> DecisionMade:
    return DecisionMade(
        run_id="direction",
        step=10,
        action=Action.SPLIT,
        layer=0,
        entity="L0_E0",
        reason="sustained_overload",
        metrics_at_decision={"share": 0.5, **metrics},
        seed=1,
    )


def test_a_re_decided_split_without_the_loops_direction_is_the_same_decision() -> None:
    """A recorded split's loop-added direction is no difference when the what-if has none, but
    another direction is."""
    recorded = _split(direction=[1.0, 0.0])
    assert _changed(recorded, _split()) == ()
    assert _changed(recorded, _split(direction=[0.0, 1.0])) == ("metrics_at_decision.direction",)
    assert _changed(recorded, _split(share=0.6)) == ("metrics_at_decision.share",)
