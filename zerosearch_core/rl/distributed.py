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


COLLECTIVE_TIMEOUT_ENV = "ZEROSEARCH_COLLECTIVE_TIMEOUT_S"
"""Seconds a collective (a gradient all-reduce, a barrier) may wait for the other ranks before the run fails; 600 by
default. A rank that dies (a machine lost) then fails the others within this time instead of torch's 30 minutes."""


def collective_timeout_s() -> float:
    """:data:`COLLECTIVE_TIMEOUT_ENV`, or 600 s.

    Raises:
        ValueError: The variable is set but not a positive number (named, with the fix).
    """
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; unset it or fix it.")
    return seconds


def init_process_group() -> None:
    """Join the launch's process group (gloo on CPU, nccl on GPU) through accelerate, once, with collectives bounded
    by :func:`collective_timeout_s`; nothing to do alone."""
    if world_size() > 1:
        import datetime

        import torch  # here, not at the top: the stages without a model start faster without it

        if torch.distributed.is_initialized():
            return
        from accelerate import PartialState

        PartialState(timeout=datetime.timedelta(seconds=collective_timeout_s()))


def barrier() -> None:
    """Wait for every process of the launch (a no-op alone)."""
    if world_size() > 1:
        import torch

        if torch.distributed.is_initialized():
            torch.distributed.barrier()
