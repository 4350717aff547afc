"""What the seeds demo's ranks agree on: gradients, stop votes and the step a resume starts from.

Each is a collective over the default process group; the run calls them only with more than one rank.
"""

from __future__ import annotations

import torch

from lifecycle_es.errors import UsageError

__all__ = ["any_rank", "average_gradients", "same_on_every_rank"]


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """All-reduce every gradient and divide by the ranks: DDP's result, shapes free to change."""
    import torch.distributed as dist

    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world_size)


def same_on_every_rank(step: int) -> None:
    """Refuse a resume whose ranks found checkpoints of different steps."""
    import torch.distributed as dist

    low, high = torch.tensor([step]), torch.tensor([-step])
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MIN)
    first, last = int(low.item()), -int(high.item())
    if first != last:
        raise UsageError(f"the ranks' newest checkpoints are of steps {first} to {last}: resume needs one")


def any_rank(vote: bool) -> bool:
    """Whether any rank voted yes."""
    import torch.distributed as dist

    votes = torch.tensor([int(vote)])
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())
