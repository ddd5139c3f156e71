"""Data-parallel training over several processes (``torchrun``, DistributedDataParallel).

``torchrun --nproc-per-node 2 -m sddhr.cli train ... --out D`` starts two processes; the
command sees ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` from torchrun and
:func:`session` joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, where rank
``r`` uses ``cuda:LOCAL_RANK``). Nothing changes for a single process.

How a run is split (:func:`sddhr.train.train` does this when a group is initialised):

* ``batch_size`` is the **global** batch. Every rank draws the same shuffled (and
  augmented) global batch from the epoch's generator and keeps its contiguous share
  (:func:`shard`); each rank's loss is weighted by its share so that the averaged
  gradient is the gradient of the global batch's mean loss, also for a short last batch.
* Batch norm uses the statistics of the global batch (:class:`GlobalBatchNorm`; torch's
  ``SyncBatchNorm`` does not run on CPU) and an activation quantiser's first calibration
  sees the whole global batch (:func:`prepare_model`), so a deterministic recipe
  (``float``, ``conventional``) follows the single-process run to float rounding.
* Randomness of the hardware models (S-DDHR sampling, weight noise) is independent per
  rank and reproducible: rank ``r`` of epoch ``e`` seeds torch / numpy / random from
  :func:`rank_seed` ``(seed, e, r)``; rank 0 uses the single-process seed.
* Only rank 0 takes the run lock and writes the checkpoint (atomically), ``metrics.csv``,
  TensorBoard files and progress lines; it decides whether the run starts, resumes or is
  refused and sends that decision (and a resumed state) to the other ranks
  (:func:`broadcast`), so every rank stops with the same error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn

from .config import SpecError

if TYPE_CHECKING:
    from .nn.quant import ActQuantizer

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's rank and the world size (``World(0, 1)`` without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def _env_int(name: str, default: str, lo: int, hi: int | None, hint: str) -> int:
    raw = os.environ.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
        raise SpecError(f"{name} must be an integer {bound}{hint}, got {raw!r}; start distributed training with "
                        "torchrun (torchrun --nproc-per-node N -m sddhr.cli train ...)")
    return value


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent); 0, a negative or a non-integer value
    is a :class:`SpecError` naming the variable and the allowed range."""
    return _env_int("WORLD_SIZE", "1", 1, None, " (the number of processes)")


def env_ranks(size: int) -> tuple[int, int]:
    """``(RANK, LOCAL_RANK)`` of this process, checked against the world ``size``: a rank
    outside 0 .. size - 1 would wait for ever (torch's default: 30 minutes) for ranks that
    never come, so it is refused at once naming the variable and the range."""
    rank = _env_int("RANK", "0", 0, size - 1, f" below WORLD_SIZE={size}")
    local = _env_int("LOCAL_RANK", "0", 0, size - 1, f" below WORLD_SIZE={size}")
    return rank, local


@contextlib.contextmanager
def session(device: str = "cpu") -> Iterator[str]:
    """Join the torchrun process group for the block (nothing when ``WORLD_SIZE`` is 1);
    yields this rank's device (``cuda`` -> ``cuda:LOCAL_RANK``)."""
    import torch.distributed as dist

    if env_world_size() <= 1 or dist.is_initialized():
        yield device
        return
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise SpecError(f"WORLD_SIZE is set but {key} is not: start distributed training with torchrun "
                            "(torchrun --nproc-per-node N -m sddhr.cli train ...)")
    _, local = env_ranks(env_world_size())
    cuda = str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank ``rank`` in epoch ``epoch``: the single-process epoch seed for rank
    0, an independent stream (``SeedSequence([seed, epoch, 7, rank])``) for the others."""
    key = [seed, epoch, 7] if rank == 0 else [seed, epoch, 7, rank]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def shard(w: World, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rank ``w.rank``'s contiguous share of each tensor's first dimension."""
    n = len(tensors[0])
    if n < w.size:
        raise SpecError(f"a global batch of {n} samples cannot be split over {w.size} processes: raise "
                        "--batch-size (it is the global batch) or use fewer processes")
    return tuple(torch.tensor_split(t, w.size)[w.rank] for t in tensors)


def broadcast(obj: T, w: World) -> T:
    """``obj`` of rank 0 on every rank (pickled between this run's own processes)."""
    if w.size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], w: World) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64)."""
    if w.size <= 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------- global batch statistics


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch (all ranks).

    Same parameters and buffers as ``BatchNorm1d`` / ``2d`` (checkpoints do not change);
    mean and variance come from two all-reduces that carry gradients, as torch's
    ``SyncBatchNorm`` does on GPUs. Evaluation uses the running statistics as usual."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        running_mean, running_var, batches = self.running_mean, self.running_var, self.num_batches_tracked
        if not self.training or not self.track_running_stats:
            return super().forward(x)
        if running_mean is None or running_var is None or batches is None:  # kept with track_running_stats
            raise RuntimeError(f"{type(self).__name__}: track_running_stats is set but a running buffer is None")
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n_local = x.numel() // x.shape[1]
        head = torch.cat([x.sum(dims), x.new_tensor([float(n_local)])])
        head = all_reduce(head)
        n = head[-1].detach()
        mean = head[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            batches.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(batches)
            count = float(n)
            running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            running_var.mul_(1 - m).add_(var.detach() * (count / max(count - 1, 1.0)), alpha=m)
        return y


def _gathered_calibrate(quantizer: ActQuantizer, original: Callable[[torch.Tensor], None], x: torch.Tensor) -> None:
    """Calibrate on the global batch: the shares of every rank, in rank order."""
    import torch.distributed as dist

    size = dist.get_world_size()
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    most = int(max(int(s) for s in sizes))
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    original(torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]))


def prepare_model(model: nn.Module) -> nn.Module:
    """Global-batch statistics in ``model`` (in place): its batch norms become
    :class:`GlobalBatchNorm` and its activation quantisers calibrate on the global batch."""
    import functools

    from .nn.quant import ActQuantizer

    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            # the class swapped in place: same parameters and buffers, so checkpoints do not change
            m.__class__ = GlobalBatchNorm  # type: ignore[assignment]
        elif isinstance(m, ActQuantizer):
            # this one object's calibration wrapped (an instance attribute over the method)
            m.calibrate = functools.partial(_gathered_calibrate, m, m.calibrate)  # type: ignore[method-assign]
    return model


def wrap(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` for training across the ranks (DistributedDataParallel); unchanged alone."""
    if world().size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    prepare_model(model)
    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    # modes that leave some parameters unused (float mode skips the activation quantisers)
    return DDP(model, device_ids=ids, find_unused_parameters=True)


__all__ = ["GlobalBatchNorm", "World", "all_sum", "broadcast", "env_ranks", "env_world_size", "prepare_model",
           "rank_seed",
           "session", "shard", "world", "wrap"]
