"""Build the configured real search engine: ``open_search_engine(cfg.search, index_dir)``.

Backends: ``in_process`` (search the local index directly) and ``http`` (a retriever server; with ``search.url``
null, one is started on ``search.host`` for as long as the ``with`` block lasts, so the stage exercises the same HTTP
path a remote retriever would).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zerosearch_core.config import SearchConfig
from zerosearch_core.netutil import free_port
from zerosearch_core.search.base import SearchEngine
from zerosearch_core.search.http import HttpSearchEngine, create_retriever_app, running_server
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
