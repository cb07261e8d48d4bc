"""Build the configured search engine: ``open_search_engine(cfg.search, index_dir)``.

``open_training_engine(cfg)`` gives the engine RL trains against: the simulator or the real retriever.

Backends: ``in_process`` (search the local index directly) and ``http`` (a retriever server; with ``search.url``
null, one is started on ``search.host`` for as long as the ``with`` block lasts, so the stage exercises the same HTTP
path a remote retriever would).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zerosearch_core.config import PipelineConfig, SearchConfig
from zerosearch_core.search.base import SearchEngine
from zerosearch_core.search.http import HttpSearchEngine, create_retriever_app, free_port, running_server
from zerosearch_core.search.local import LocalSearchEngine, load_retriever, read_manifest

logger = logging.getLogger(__name__)


@contextmanager
def open_search_engine(cfg: SearchConfig, index_dir: Path) -> Iterator[SearchEngine]:
    """Yield the search engine ``cfg`` asks for, and release what it started on exit.

    Args:
        cfg: The ``search`` section.
        index_dir: Where ``build_index`` wrote the index (used unless ``cfg.url`` points elsewhere).

    Raises:
        ValueError: An unknown backend (the config loader normally prevents this).
    """
    match cfg.backend:
        case "in_process":
            yield LocalSearchEngine(load_retriever(index_dir), read_manifest(index_dir))
        case "web":
            from zerosearch_core.search.web import WebSearchEngine

            assert cfg.web_url is not None  # checked by SearchConfig
            yield WebSearchEngine(cfg.web_url, cfg.web_api_key_env, cfg.timeout_s, cfg.max_retries)
        case "http" if cfg.url is not None:
            yield HttpSearchEngine(cfg.url, cfg.timeout_s, cfg.max_retries)
        case "http":
            manifest = read_manifest(index_dir)
            app = create_retriever_app(load_retriever(index_dir), manifest)
            with running_server(app, cfg.host, free_port(cfg.host)) as url:
                logger.info("Started a retriever server at %s for this stage", url)
                yield HttpSearchEngine(url, cfg.timeout_s, cfg.max_retries)
        case other:
            raise ValueError(f"Unknown search.backend {other!r}; valid kinds are 'in_process', 'http' and 'web'.")


@contextmanager
def open_training_engine(cfg: PipelineConfig) -> Iterator[SearchEngine]:
    """The engine RL trains against: the simulator (``train.search_engine: simulated``) or the real retriever."""
    match cfg.train.search_engine:
        case "real":
            with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
                yield engine
        case "simulated":
            yield make_simulated_engine(cfg)
        case other:
            raise ValueError(f"Unknown train.search_engine {other!r}; valid kinds are 'simulated' and 'real'.")


def make_simulated_engine(cfg: PipelineConfig) -> SearchEngine:
    """The simulator behind ``simulator.url`` (an OpenAI-compatible server), or in process from
    ``paths.simulator_dir``."""
    from zerosearch_core.search.simulated import LLMClient, LocalLLM, SimulatedSearchEngine

    sim = cfg.simulator
    llm: LLMClient
    if sim.url is not None:
        from zerosearch_core.search.simulator_server import OpenAICompatibleLLM

        client = OpenAICompatibleLLM(sim.url, "simulator", sim.request_timeout_s, sim.max_retries)
        client.check_health()
        llm, where = client, sim.url
    else:
        from zerosearch_core.models import load_causal_lm, load_tokenizer

        simulator_dir = Path(cfg.paths.simulator_dir)
        if not (simulator_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"No simulator at {simulator_dir}; run `dvc repro finetune_simulator` first, point simulator.url at a "
                "running simulator server, or train against real search with train.search_engine: real."
            )
        llm = LocalLLM(load_causal_lm(simulator_dir, cfg.model.dtype), load_tokenizer(simulator_dir))
        where = str(simulator_dir)
    return SimulatedSearchEngine(llm, sim, cfg.rollout.max_doc_chars, {"model": where})
