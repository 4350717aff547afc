"""Collectives the synchronized lifecycle needs, as no-ops without a process group.

Single-process code takes the same path as a DDP rank (torchtitan's rule): with no process
group initialised, every helper here returns its input or does nothing, and
`Replicated` is the model itself. Tensors travel on the CPU under gloo and on the current CUDA
device under NCCL. Digests are 64-bit values written as 16 hex digits (`ModelSurgery.digest`).
`process_group` is where a rank joins the default group and leaves it in step with the others.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Replicated",
    "active",
    "broadcast_training_state",
    "digest_range",
    "gather_digests",
    "named_state",
    "process_group",
    "rank",
    "signed",
    "sum_in_place",
    "unsigned",
    "world_size",
]

_log = logging.getLogger("projections.training.distributed")

Group = Any
"""A `torch.distributed` process group, or None for the default (world) group."""


def active(group: Group = None) -> bool:
    """Return whether a process group is initialised (the collectives below then communicate)."""
    return dist.is_available() and dist.is_initialized()


def rank(group: Group = None) -> int:
    """Return this process's global rank: 0 without a process group."""
    return dist.get_rank() if active(group) else 0


def world_size(group: Group = None) -> int:
    """Return the number of ranks in `group`: 1 without a process group."""
    return dist.get_world_size(group) if active(group) else 1


@contextlib.contextmanager
def process_group(backend: str = "gloo", **options: Any) -> Iterator[None]:
    """Join the default process group for the block (`dist.init_process_group(backend, **options)`,
    torchrun's environment by default) and leave it so that every rank can.

    A block that ends normally waits at a barrier until every rank is done with the group, then
    destroys it: no rank tears its connections down, or exits, while a peer still has work on
    them (under gloo that work would meet closed sockets; and once DDP has wrapped a model,
    `destroy_process_group` does not stop gloo's threads, which then run on through interpreter
    exit). A block that raises destroys the group at once: a failed peer may never reach the
    barrier.
    """
    dist.init_process_group(backend, **options)
    try:
        yield
    except BaseException:
        dist.destroy_process_group()
        raise
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _device(group: Group) -> torch.device:
    """Return where collective tensors must live for the group's backend."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_in_place(tensors: Iterable[torch.Tensor], group: Group = None) -> None:
    """Sum tensors across ranks in place: one all-reduce per dtype, on one flattened buffer."""
    if not active(group):
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    device = _device(group)
    for dtype in sorted(by_dtype, key=str):  # the same collective order on every rank
        parts = by_dtype[dtype]
        flat = torch.cat([t.detach().reshape(-1).to(device) for t in parts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for t in parts:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


def signed(digest: str) -> int:
    """Return a 16-hex-digit digest as the signed int64 a collective carries."""
    value = int(digest, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned(value: int) -> str:
    """Return the 16-hex-digit digest an int64 from a collective carries (`signed`'s inverse)."""
    return f"{value & ((1 << 64) - 1):016x}"


def digest_range(digest: str, group: Group = None) -> tuple[str, str]:
    """Return the smallest and largest of every rank's digest (as signed int64s), with one all-reduce.

    MAX of (d, ~d) gives max(d) and ~min(d) at once; `~` reverses the order of int64 without
    overflow. Equal results mean every rank holds the same digest.
    """
    if not active(group):
        return digest, digest
    value = signed(digest)
    both = torch.tensor([value, ~value], dtype=torch.int64, device=_device(group))
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    high, low = int(both[0]), ~int(both[1])
    return unsigned(low), unsigned(high)


def gather_digests(digest: str, group: Group = None) -> list[str]:
    """Return every rank's digest, by rank: the slow path, taken once ranks disagree."""
    if not active(group):
        return [digest]
    mine = torch.tensor([signed(digest)], dtype=torch.int64, device=_device(group))
    out = [torch.empty_like(mine) for _ in range(world_size(group))]
    dist.all_gather(out, mine, group=group)
    return [unsigned(int(t)) for t in out]


def broadcast_training_state(
    named: Iterable[tuple[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    src: int,
    group: Group = None,
) -> None:
    """Overwrite parameters, buffers and their optimizer state on every rank with rank `src`'s.

    `named` lists (name, tensor) in one order shared by every rank (sorted names); the state
    keys and shapes must already agree, which a structure digest checks first (see
    `LifecycleSync`). Non-tensor state values (a float `step`) travel as float64.
    """
    if not active(group):
        return
    device = _device(group)
    with torch.no_grad():
        for _, tensor in named:
            _broadcast(tensor, src, group, device)
            state = optimizer.state.get(tensor, {}) if isinstance(tensor, nn.Parameter) else {}
            for key in sorted(state):
                value = state[key]
                if isinstance(value, torch.Tensor):
                    _broadcast(value, src, group, device)
                else:
                    carrier = torch.tensor([float(value)], dtype=torch.float64)
                    _broadcast(carrier, src, group, device)
                    state[key] = type(value)(carrier.item())


def _broadcast(tensor: torch.Tensor, src: int, group: Group, device: torch.device) -> None:
    if tensor.device == device:
        dist.broadcast(tensor, src=src, group=group)
        return
    moved = tensor.detach().to(device)
    dist.broadcast(moved, src=src, group=group)
    tensor.copy_(moved)


_DDP_TAKES_INIT_SYNC = "init_sync" in inspect.signature(nn.parallel.DistributedDataParallel).parameters


class Replicated:
    """A model and the DDP wrapper around it, rebuilt whenever surgery changes its parameters.

    Call it like the model. Without a process group it is the model itself. Pass `rewrap` as
    `ModelSurgery(on_rewrap=...)`: the old wrapper's hooks are removed and a new one is built
    over the same module with `init_sync=False`, so a divergence is found by the digest check
    instead of being hidden by DDP's broadcast (reference/ddp-structural-changes.md section 1).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        find_unused_parameters: bool = False,
        init_sync: bool = True,
        group: Group = None,
        **ddp_options: Any,
    ) -> None:
        """Wrap `module`; `init_sync` applies to this first wrap only (DDP's own default).

        `find_unused_parameters` is needed when some expert can get no token on some rank (a
        sparse top-k dispatch); `ddp_options` go to every `DistributedDataParallel` built.
        """
        self.module = module
        self.group = group
        self.options: dict[str, Any] = {
            "find_unused_parameters": find_unused_parameters,
            "process_group": group,
            **ddp_options,
        }
        self.rewraps = 0
        """How many times the wrapper was rebuilt after surgery."""
        self.wrapper: nn.Module = self._wrap(init_sync)

    def _wrap(self, init_sync: bool) -> nn.Module:
        if not active(self.group):
            return self.module
        options = dict(self.options)
        if _DDP_TAKES_INIT_SYNC:
            options["init_sync"] = init_sync
        elif not init_sync:
            _log.warning(
                "torch %s has no DDP init_sync: each re-wrap broadcasts rank 0's "
                "parameters, which can hide a divergence of the others",
                torch.__version__,
            )
        return nn.parallel.DistributedDataParallel(self.module, **options)

    def rewrap(self) -> None:
        """Drop the wrapper and build a new one over the module's current parameters."""
        old = self.wrapper
        if old is self.module:
            return
        remove = getattr(old, "_remove_autograd_hooks", None)
        if callable(remove):  # private in torch; the destructor does it too, later
            remove()
        self.wrapper = self.module  # no reference to the old wrapper may survive
        del old
        self.wrapper = self._wrap(init_sync=False)
        self.rewraps += 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapper(*args, **kwargs)


def named_state(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Return a module's parameters and buffers (prefixed `buffer:`) by name, sorted: the
    order in which a repair broadcasts them."""
    named: dict[str, torch.Tensor] = dict(module.named_parameters())
    named.update((f"buffer:{n}", b) for n, b in module.named_buffers())
    return sorted(named.items())
