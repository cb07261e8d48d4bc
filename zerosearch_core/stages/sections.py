"""Where the whole config is cut into the sections a wing takes: stages call these, the library below never sees
:class:`~zerosearch_core.config.PipelineConfig`. Not a stage (the registry does not list it); tools may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zerosearch_core.agent.loop import SearchProtocol
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.vllm_backend import running_vllm_server
from zerosearch_core.rl.episodes import RLSetup
from zerosearch_core.search.base import SearchEngine
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.simulator.engine import open_simulated_engine, simulator_vllm_settings


def rl_setup(cfg: PipelineConfig) -> RLSetup:
    """The sections policy RL reads."""
    return RLSetup(
        train=cfg.train,
        curriculum=cfg.curriculum,
        reward=cfg.reward,
        protocol=SearchProtocol.from_sections(cfg.rollout, cfg.search),
        dtype=cfg.model.dtype,
        rl_seed=cfg.seed + cfg.train.seed,
        validation_seed=cfg.seed,
        policy_dir=Path(cfg.paths.policy_dir),
        checkpoints_dir=Path(cfg.paths.checkpoints_dir),
    )


@contextmanager
def open_training_engine(cfg: PipelineConfig) -> Iterator[SearchEngine]:
    """The engine RL trains against: the simulator (``train.search_engine: simulated``) or the real retriever."""
    match cfg.train.search_engine:
        case "real":
            with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
                yield engine
        case "simulated":
            simulator_dir = Path(cfg.paths.simulator_dir)
            sim = cfg.simulator
            if sim.url is None and sim.engine == "vllm_server":
                settings = simulator_vllm_settings(sim, cfg.model.dtype)
                with running_vllm_server(simulator_dir, settings, "simulator") as url:
                    served = dataclasses.replace(sim, url=url)
                    yield open_simulated_engine(served, simulator_dir, cfg.model.dtype, cfg.rollout.max_doc_chars)
            else:
                yield open_simulated_engine(sim, simulator_dir, cfg.model.dtype, cfg.rollout.max_doc_chars)
        case other:
            raise ValueError(f"Unknown train.search_engine {other!r}; valid kinds are 'simulated' and 'real'.")
