"""Data-parallel training under torchrun: the process group, each rank's place, and the replicas' agreement.

torchrun (``python -m torch.distributed.run``) starts one process per device and tells each its
place through the environment: ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``,
``MASTER_PORT``, read by torch's ``env://`` rendezvous). Without ``WORLD_SIZE`` a run is a plain
single process and no process group is made. On CUDA each rank trains on device ``LOCAL_RANK``
over NCCL; on the CPU the ranks talk over gloo.

DistributedDataParallel averages the gradients but never re-broadcasts the parameters after its
construction, so the replicas stay identical only if every rank applies the same update
(optimiser step and max-norm) bit for bit. :meth:`Replicas.check_in_sync` compares a SHA-256 of
every rank's parameters after each epoch and stops the run when they differ.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dropnet.core.errors import ConfigError, DropnetError
from dropnet.trainer.device import resolve_device

logger = logging.getLogger(__name__)

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
"""The variables torchrun sets that place a process; WORLD_SIZE alone decides whether a run is distributed."""


@dataclass(frozen=True)
class Replicas:
    """This process's place among the ranks of a data-parallel run (the process group is initialised)."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, evaluates and shows progress."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch of indices: every ``world_size``-th, from ``rank`` (sizes differ by ≤ 1)."""
        return batch[self.rank :: self.world_size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (every rank gets the sum)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on all ranks), in rank order, on every rank."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return parts

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        dist.barrier()

    def broadcast_json(self, value: Any, device: torch.device) -> Any:
        """Rank 0's JSON-able ``value`` on every rank (no pickles: the JSON bytes travel as a tensor)."""
        data = json.dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=device)
        dist.broadcast(size, src=0)
        payload = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
        if self.is_main:
            payload.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(payload, src=0)
        return json.loads(payload.cpu().numpy().tobytes())

    def check_in_sync(self, model: nn.Module, epoch: int) -> None:
        """Stop the run (on every rank) when any rank's parameters differ from rank 0's after ``epoch``."""
        digest = parameter_digest(model)
        logger.debug("rank %d of %d: parameters after epoch %d: sha256 %s", self.rank, self.world_size, epoch, digest.hex())
        device = next(model.parameters()).device
        local = torch.tensor(np.frombuffer(digest, dtype=np.uint8), device=device)
        digests = [bytes(d.cpu().numpy()) for d in self.gather(local)]
        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise DropnetError(
                f"the replicas' parameters diverged in epoch {epoch}: rank(s) {differing} differ from rank 0 "
                f"(sha256 {digests[0].hex()[:16]}… on rank 0, {digests[differing[0]].hex()[:16]}… on rank "
                f"{differing[0]}); every rank must apply the same optimiser step and max-norm bit for bit, and "
                "DistributedDataParallel never re-broadcasts parameters, so the run cannot continue. Resume from "
                "the last checkpoint (all ranks load the same weights)"
            )


def parameter_digest(model: nn.Module) -> bytes:
    """SHA-256 of the model's parameters (names, shapes and raw bytes, in registration order)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype};".encode())
        digest.update(param.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.digest()


def environment() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from torchrun's variables, or None when ``WORLD_SIZE`` is not set."""
    if "WORLD_SIZE" not in os.environ:
        return None
    values = []
    for name in ENV_VARS:
        raw = os.environ.get(name)
        try:
            values.append(int(raw))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name} is {raw!r}; a distributed run needs {', '.join(ENV_VARS)} set to integers, as torchrun "
                "sets them (launch with: torchrun --nproc-per-node N -m dropnet train ...)"
            ) from None
    world, rank, local = values
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(
            f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}: expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE "
            "and LOCAL_RANK >= 0"
        )
    return rank, local, world


def is_main_process() -> bool:
    """True for a plain run and for rank 0 of a torchrun job."""
    place = environment()
    return place is None or place[0] == 0


@contextlib.contextmanager
def training_processes(device_name: str) -> Iterator[tuple[Replicas | None, torch.device]]:
    """The device this process trains on and, under torchrun, its :class:`Replicas` (else None).

    Under torchrun the default process group is initialised here (NCCL on CUDA, one device per
    local rank; gloo on the CPU) and destroyed after a successful run, unless the caller had
    initialised it. After a failure it is left to the process's exit, where torchrun stops the
    other ranks.
    """
    place = environment()
    device = resolve_device(device_name)
    if place is None:
        yield None, device
        return
    rank, local_rank, world_size = place
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ConfigError(
                f"LOCAL_RANK {local_rank} needs CUDA device {local_rank}, but only {visible} are visible; "
                f"start at most {visible} processes per node (torchrun --nproc-per-node {visible})"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    elif (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise ConfigError(
            f"the process group already initialised has rank {dist.get_rank()} of {dist.get_world_size()}, but "
            f"the environment says RANK={rank}, WORLD_SIZE={world_size}"
        )
    replicas = Replicas(rank, local_rank, world_size)
    if replicas.is_main:
        logger.info("data-parallel training: %d processes, backend %s", world_size, dist.get_backend())
    yield replicas, device
    if owned:  # only after success: a rank that failed may leave its peers inside a collective
        gc.collect()  # DistributedDataParallel sits in reference cycles; freed at exit, it aborts the process
        dist.barrier()  # no rank tears its connections down while a peer still uses them
        dist.destroy_process_group()
