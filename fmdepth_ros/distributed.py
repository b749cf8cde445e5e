"""Process-group helpers for multi-GPU / multi-node training launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them (``env://`` initialisation) and picks the backend: NCCL on
CUDA, Gloo on CPU. Without those variables (a plain ``fmdepth train``) everything here is a
no-op for a single process, so the trainer has one code path.
"""

from dataclasses import dataclass
import os
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0             # global rank, 0..world_size-1
    world_size: int = 1       # number of processes (GPUs) in the job
    local_rank: int = 0       # rank on this node (selects the GPU)
    device: str = 'cpu'       # torch device string of this process, e.g. 'cuda:1'
    backend: Optional[str] = None  # 'nccl' / 'gloo' when a process group is up, else None

    @property
    def is_main(self) -> bool:
        """Tell whether this process logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Tell whether a process group with more than one process is running."""
        return self.backend is not None and self.world_size > 1


def launched_by_torchrun() -> bool:
    """Tell whether the torchrun environment variables (RANK, WORLD_SIZE) are set."""
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ


def init_distributed(device: str = 'cpu', backend: Optional[str] = None) -> DistInfo:
    """Join the process group described by the environment (``env://``) if there is one.

    Args:
        device: 'cpu' or 'cuda' (already resolved, not 'auto'). On CUDA each process uses
            GPU ``LOCAL_RANK``.
        backend: override the backend ('nccl' on CUDA and 'gloo' on CPU by default).

    Returns:
        A :class:`DistInfo`; single-process defaults when not launched by torchrun.
    """
    if not launched_by_torchrun():
        return DistInfo(device='cuda:0' if device == 'cuda' else device)
    rank = int(os.environ['RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    if device == 'cuda':
        torch.cuda.set_device(local_rank)
        dev = f'cuda:{local_rank}'
    else:
        dev = 'cpu'
    if world_size <= 1:
        return DistInfo(rank=rank, world_size=1, local_rank=local_rank, device=dev)
    backend = backend or ('nccl' if device == 'cuda' else 'gloo')
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method='env://',
                                rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev,
                    backend=backend)


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (safe to call when none was created)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one process)."""
    if info.distributed:
        dist.barrier()


def any_flag(info: DistInfo, flag: bool) -> bool:
    """Return True when ``flag`` is set on any process (e.g. Ctrl-C seen by one rank)."""
    if not info.distributed:
        return bool(flag)
    device = info.device if info.backend == 'nccl' else 'cpu'
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_objects(info: DistInfo, obj: Any) -> List[Any]:
    """Gather one picklable object per rank, in rank order (``[obj]`` for one process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = ['DistInfo', 'launched_by_torchrun', 'init_distributed', 'cleanup_distributed',
           'barrier', 'any_flag', 'all_gather_objects', 'broadcast_object']
