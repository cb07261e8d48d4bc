"""Stage ``build_index``: load the Wikipedia passage corpus and build the BM25 (or dense) index with a manifest.

Run: ``python -m zerosearch_core.cli build_index --params params.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data.corpus import corpus_sha256, load_corpus
from zerosearch_core.search.local import BM25Retriever, DenseRetriever, write_index
from zerosearch_core.stages import StageHooks, StageResult

logger = logging.getLogger(__name__)


PARAMS = (
    "search.corpus_source",
    "search.max_passages",
    "search.retriever",
    "search.dense_model_path",
    "paths.index_dir",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Load the corpus, build the configured index, and write both with a manifest holding the corpus hash."""
    passages = load_corpus(cfg.search.corpus_source, cfg.search.max_passages)
    sha = corpus_sha256(passages)
    logger.info("Corpus %s: %d passages, sha256 %s", cfg.search.corpus_source, len(passages), sha)
    retriever: BM25Retriever | DenseRetriever
    match cfg.search.retriever:
        case "bm25":
            retriever = BM25Retriever.build(passages)
        case "dense":
            retriever = DenseRetriever.build(passages, cfg.search.dense_model_path)
        case other:
            raise ValueError(f"Unknown search.retriever {other!r}; use 'bm25' or 'dense'.")
    manifest: dict[str, object] = {
        "corpus_source": cfg.search.corpus_source,
        "corpus_sha256": sha,
        "passages": len(passages),
    }
    if isinstance(retriever, DenseRetriever):
        manifest["dense_model_path"] = retriever.model_path
    index_dir = Path(cfg.paths.index_dir)
    write_dir_atomically(index_dir, lambda folder: write_index(retriever, folder, manifest))
    return StageResult(metrics={"passages": float(len(passages))}, artifacts=(index_dir / "manifest.json",))
