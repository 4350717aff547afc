"""One rank of the seed layer's multi-rank test: `python -m tests.seeds._ranks URL RUN STRATEGY DIR`.

Started by `tests.ddp._harness.Ranks` with torchrun's environment. Each rank trains the rig on
its own data slice with gradients averaged over gloo, and at every step's boundary
`LifecycleSync` has the leader record the scripted `PLAN` transitions (a deterministic decider),
every rank fold them into its seed layer, and all ranks compare digests (a mismatch raises
`DivergenceError`). Each rank prints one JSON line: its final digest and layer rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import bus
from lifecycle_es import Lifecycle
from projections import Runner
from projections.seeds import RollbackPoints
from projections.training import CheckpointManager, LifecycleSync, distributed
from tests.seeds._rig import PLAN, STEPS, Rig, passing_gates, register_seeds


def _average(grads: list[torch.Tensor]) -> None:
    distributed.sum_in_place(grads)
    for grad in grads:
        grad.div_(dist.get_world_size())


def main(url: str, run: str, strategy: str, directory: Path) -> None:
    torch.set_num_threads(1)
    with distributed.process_group("gloo"):
        rank = dist.get_rank()
        log = bus.open(url, run)
        lc = Lifecycle(log, gates=passing_gates())
        if rank == 0:
            register_seeds(lc)
        dist.barrier()
        manager = CheckpointManager(directory / f"rank{rank}", durable=False)
        rig = Rig(strategy=strategy, rollback=RollbackPoints(manager), rank=rank, reduce_grads=_average)  # type: ignore[arg-type]
        sync = LifecycleSync(lc, Runner(log, [rig.surgery]), rig.surgery)
        digests = []
        for step in range(STEPS):
            rig.train_step(step)
            moves = PLAN.get(step, ())

            def decide(lc: Lifecycle, moves: object = moves) -> None:
                for entity, to in moves:  # type: ignore[attr-defined]
                    lc.transition(entity, to)

            digests.append(sync.at_boundary(step, decide).digest)
        report = {
            "rank": rank,
            "digest": rig.surgery.digest(),
            "verified": digests,
            "rows": rig.layer.row_chunks,
            "modes": rig.layer.modes.tolist(),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
