"""Serve the index that ``build_index`` wrote over HTTP (not a DVC stage: a long-running service).

Run: ``zerosearch serve_retriever --params params.yaml``; it binds ``search.host``:``search.port``
(127.0.0.1:8000 by default) and answers ``POST /retrieve`` and ``GET /health`` until interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from zerosearch_core.config import PipelineConfig
from zerosearch_core.search.http import create_retriever_app
from zerosearch_core.search.local import load_retriever, read_manifest

logger = logging.getLogger(__name__)


def run(cfg: PipelineConfig) -> None:
    """Load the index and serve it until interrupted."""
    index_dir = Path(cfg.paths.index_dir)
    app = create_retriever_app(load_retriever(index_dir), read_manifest(index_dir))
    logger.info("Serving %s at http://%s:%d", index_dir, cfg.search.host, cfg.search.port)
    uvicorn.run(app, host=cfg.search.host, port=cfg.search.port, log_level="info")
