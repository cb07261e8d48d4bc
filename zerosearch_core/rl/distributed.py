"""Which process of a launch this is (``accelerate launch`` / ``torchrun`` set ``RANK`` and ``WORLD_SIZE``), and the
few collective steps the stages need: the main process writes artifacts and logs to MLflow, the others train.

Without a launcher every function here is the one-process case: rank 0 of 1, barriers do nothing.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes in this launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes artifacts, checkpoints of its own and MLflow runs."""
    return rank() == 0


def init_process_group() -> None:
    """Join the launch's process group (gloo on CPU, nccl on GPU) through accelerate, once; nothing to do alone."""
    if world_size() > 1:
        import torch  # here, not at the top: the stages without a model start faster without it

        if torch.distributed.is_initialized():
            return
        from accelerate import PartialState

        PartialState()


def barrier() -> None:
    """Wait for every process of the launch (a no-op alone)."""
    if world_size() > 1:
        import torch

        if torch.distributed.is_initialized():
            torch.distributed.barrier()
