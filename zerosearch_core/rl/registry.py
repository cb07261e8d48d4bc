"""RL algorithms by name: ``train.algorithm`` → the function that trains the policy.

Every trainer has the same signature (:data:`Trainer`) and returns the trained ``(model, tokenizer)``. Adding an
algorithm is one function registered with :func:`register_trainer` plus its value in ``TrainConfig.algorithm``.
Trainer modules import their framework (TRL) inside functions, so importing this registry stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from zerosearch_core.rl import grpo, ppo
from zerosearch_core.rl.episodes import RLSetup
from zerosearch_core.search.base import SearchEngine

StepCallback = Callable[[dict[str, float]], None]
Trainer = Callable[[RLSetup, pd.DataFrame, pd.DataFrame, SearchEngine, SearchEngine, StepCallback | None], Any]
"""``(setup, questions, validation, engine, validation_engine, on_step) -> (model, tokenizer)``."""

TRAINERS: dict[str, Trainer] = {
    "grpo": grpo.run_grpo,  # TRL GRPOTrainer
    "ppo": ppo.train_policy,  # GAE with a value model
    "reinforce": ppo.train_policy,  # REINFORCE++ with a group-mean baseline
}
"""Algorithm name → its trainer."""


def register_trainer(name: str, trainer: Trainer) -> None:
    """Register ``trainer`` as the trainer of algorithm ``name``.

    Raises:
        ValueError: ``name`` is registered already.

    >>> register_trainer("grpo", ppo.train_policy)
    Traceback (most recent call last):
    ...
    ValueError: RL algorithm 'grpo' is registered already (run_grpo).
    """
    if name in TRAINERS:
        raise ValueError(f"RL algorithm {name!r} is registered already ({TRAINERS[name].__name__}).")
    TRAINERS[name] = trainer


def get_trainer(name: str) -> Trainer:
    """The trainer of algorithm ``name``.

    Raises:
        ValueError: No trainer is registered under ``name``; the message lists those that are.
    """
    if name not in TRAINERS:
        raise ValueError(f"Unknown train.algorithm {name!r}; valid ones are {sorted(TRAINERS)}.")
    return TRAINERS[name]
