"""Split a sweep across processes started by `torchrun` / `accelerate launch`; merge on rank 0.

    torchrun --nproc_per_node 2 -m analysis.accuracy --quick     # two CPU processes (gloo)
    torchrun --nproc_per_node 8 -m analysis.efficiency           # eight GPUs (nccl), one method each

The launchers set RANK / WORLD_SIZE / MASTER_ADDR in the environment; without them
`world()` is a single process and nothing else changes. Work units are dealt out
round-robin (`mine`), each rank computes its own, and `gather` hands rank 0 every rank's
results in unit order, so the merged results are the same as a single process's (the way
lmms-eval scales evaluation); timings are, only where each process has a device of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the launch; joins the process group when there is more than one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return World(dist.get_rank(), dist.get_world_size())


def mine(units: list[T], w: World) -> list[tuple[int, T]]:
    """(index, unit) pairs this rank computes: every size-th unit from its rank."""
    return [(i, u) for i, u in enumerate(units) if i % w.size == w.rank]


def gather(results: list[tuple[int, object]], w: World) -> list | None:
    """Rank 0: every rank's (index, result) merged and put back in unit order, results only;
    other ranks: None. Every rank must call it."""
    if w.size == 1:
        return [r for _, r in sorted(results, key=lambda x: x[0])]
    parts: list[list[tuple[int, object]] | None] = [None] * w.size if w.main else []
    dist.gather_object(results, parts if w.main else None, dst=0)
    if not w.main:
        return None
    merged = [pair for part in parts for pair in (part or [])]
    return [r for _, r in sorted(merged, key=lambda x: x[0])]


def close(w: World) -> None:
    if w.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
