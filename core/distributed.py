"""torch.distributed helpers: init from torchrun's environment, rank queries, collectives.

Everything here is a no-op (or the identity) when the process was not launched by torchrun
(WORLD_SIZE unset or 1), so single-process code paths stay exactly as they are. Backend: NCCL
when CUDA is available, gloo otherwise (CPU tests).

What the stages do with it (see docs/scaling.md):
- harvest: batch i of a split goes to rank i % world; ranks advance in lock-step rounds, commit
  shards together at round boundaries, and rank 0 writes the one manifest;
- train: each rank takes its contiguous slice of the global batch; gradients are all-reduced by
  DDP, and the BatchTopK selection, AuxK normaliser, threshold, dead-latent counts and the b_dec
  initialisation are computed over the global batch; with a sharded dictionary (core/shard.py)
  each rank holds a block of latents instead, and reconstructions and top-k cuts are combined.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)
_JOINED = False  # set by init_from_env: this process is (or was) one rank of several


def world_size() -> int:
    """Number of ranks (1 when not launched by torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    """True when running under torchrun with more than one rank."""
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes shared files and shows progress."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group described by torchrun's env vars (idempotent); False when single-process."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    global _JOINED
    _JOINED = True
    atexit.register(_destroy)
    if not is_main():  # one copy of the INFO lines and progress bars; warnings and errors from every rank
        logging.getLogger("latentdiff").setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    log.info("distributed: %d ranks, backend %s", world_size(), backend)
    return True


def leave() -> None:
    """Every rank calls this together; afterwards each process runs alone (world size 1, no collectives).

    Used before the single-process stages of `latentdiff run` under torchrun: rank 0 goes on, the
    other ranks stop.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    os.environ["WORLD_SIZE"] = "1"


def exit_now(code: int = 0) -> NoReturn:
    """End a process that joined a torchrun process group: flush output, then `os._exit(code)`.

    Interpreter teardown after gloo collectives can abort a rank that has finished all its work
    ("terminate called without an active exception", SIGABRT: gloo's C++ threads and tensors
    outliving the interpreter); torchrun then reports the whole job as failed. Measured here with a
    2-rank DDP script on a loaded 2-core machine: 11 of 20 runs aborted at exit. Files are written
    atomically and closed before this is called, so skipping the teardown loses nothing.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def joined() -> bool:
    """True if this process ever joined a process group (even one it has left)."""
    return _JOINED


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device without an index becomes this rank's GPU (LOCAL_RANK)."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _comm_device() -> torch.device:
    """Where collective buffers must live for the backend (CUDA for NCCL, CPU for gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """A reduced copy of t over ranks ('sum', 'max', 'min'); t itself when single-process."""
    if not dist.is_initialized():
        return t
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    out = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out, op=ops[op])
    return out.to(t.device)


def all_gather_parts(t: Tensor) -> list[Tensor]:
    """Every rank's t, in rank order (dim 0 may differ between ranks; [t] when single-process)."""
    if not dist.is_initialized():
        return [t]
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = t.detach().to(dev).new_zeros((max(counts), *t.shape[1:]))
    padded[: t.shape[0]] = t.detach().to(dev)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return [p[:c].to(t.device) for p, c in zip(parts, counts)]


def all_gather_cat(t: Tensor) -> Tensor:
    """Every rank's t concatenated along dim 0, in rank order (t when single-process)."""
    return torch.cat(all_gather_parts(t)) if dist.is_initialized() else t


def gather_to_main(t: Tensor, dim: int = 0) -> Tensor | None:
    """Rank 0: every rank's t (equal shapes) concatenated along dim, on the CPU; None on other ranks.

    Point-to-point, one block at a time, so rank 0's device never holds more than one extra block
    (a sharded dictionary larger than one device is gathered in host memory). Single process: t on the CPU.
    """
    if not dist.is_initialized():
        return t.detach().cpu()
    dev = _comm_device()
    if rank() != 0:
        dist.send(t.detach().to(dev).contiguous(), dst=0)
        return None
    parts = [t.detach().cpu()]
    buf = torch.empty(t.shape, dtype=t.dtype, device=dev)
    for src in range(1, world_size()):
        dist.recv(buf, src=src)
        parts.append(buf.cpu())
    return torch.cat(parts, dim)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable obj, in rank order ([obj] when single-process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_slice(batch: Tensor) -> Tensor:
    """This rank's contiguous slice of a global batch [B, ...] (B must divide by the world size)."""
    w = world_size()
    if w == 1:
        return batch
    n = batch.shape[0]
    assert n % w == 0, f"global batch {n=} must be divisible by {w=}"
    per = n // w
    return batch[rank() * per : (rank() + 1) * per]


def global_topk_mask(values: Tensor, n_keep: int) -> Tensor:
    """Bool mask over local `values` [n]: this rank's share of the top `n_keep` over all ranks' values.

    Each rank proposes its local top n_keep (the global top n_keep is inside their union); the
    n_keep-th largest gathered value is the cut, and every value >= the cut is kept, ties included:
    the single-process rule of `crosscoder.batch_topk_flat`, so the kept set does not depend on the
    number of ranks or on how a top-k orders equal values.
    """
    local = values.topk(min(n_keep, values.numel()), sorted=False).values  # [c]
    cands = torch.cat(all_gather_parts(local))
    if n_keep >= cands.numel():
        return torch.ones_like(values, dtype=torch.bool)
    cut = cands.topk(n_keep, sorted=False).values.min()  # the global n_keep-th largest value
    return values >= cut
