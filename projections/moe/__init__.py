"""The Mixture-of-Experts side of the expert lifecycle: what lives in the model, in torch.

`ExpertLayer` is the protocol a user's MoE layer meets for the lifecycle to run its experts,
and `MoELayer` the reference layer that meets it; `BasinTracker` measures, every evaluation,
each expert's routing share, its basin over token types, co-activation and weight similarity
(the signals the expert coordinator decides from); `ModelSurgery` folds the coordinator's
decisions into the model and its optimizer state at a step boundary, under the masked or the
resize strategy, the same way on every rank.
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
from projections.moe.surgery import ModelSurgery, Strategy, optimizer_params_match

__all__ = [
    "BasinReadout",
    "BasinTracker",
    "ExpertLayer",
    "MoELayer",
    "ModelSurgery",
    "RoutedLayer",
    "ShareBasis",
    "Strategy",
    "basin_breadth",
    "layer_metrics",
    "masked_contribution",
    "optimizer_params_match",
    "revival_affinity",
    "revival_metrics",
]
