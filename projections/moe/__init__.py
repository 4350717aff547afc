"""The Mixture-of-Experts side of the expert lifecycle: what lives in the model, in torch.

`ExpertLayer` is the protocol a user's MoE layer meets for the lifecycle to run its experts,
and `MoELayer` the reference layer that meets it; `BasinTracker` measures, every evaluation,
each expert's routing share, its basin over token types, co-activation and weight similarity
(the signals the expert coordinator decides from); `ModelSurgery` folds the coordinator's
decisions into the model and its optimizer state at a step boundary, under the masked or the
resize strategy, the same way on every rank. `TypeLossTracker` turns each token's training loss
into the need signal (the type loss gap) and `split_direction` gives a split the direction of
its parent's routed inputs.
"""

from projections.moe.basin import (
    BasinReadout,
    BasinTracker,
    RoutedLayer,
    ShareBasis,
    basin_breadth,
    layer_metrics,
)
from projections.moe.contribution import masked_contribution, revival_affinity, revival_metrics
from projections.moe.layer import ExpertLayer, MoELayer
from projections.moe.split_direction import principal_direction, split_direction
from projections.moe.surgery import ModelSurgery, Strategy, optimizer_params_match
from projections.moe.type_loss import TYPE_LOSS_GAP, TypeLossTracker, need_metrics

__all__ = [
    "TYPE_LOSS_GAP",
    "BasinReadout",
    "BasinTracker",
    "ExpertLayer",
    "MoELayer",
    "ModelSurgery",
    "RoutedLayer",
    "ShareBasis",
    "Strategy",
    "TypeLossTracker",
    "basin_breadth",
    "layer_metrics",
    "masked_contribution",
    "need_metrics",
    "optimizer_params_match",
    "principal_direction",
    "revival_affinity",
    "revival_metrics",
    "split_direction",
]
