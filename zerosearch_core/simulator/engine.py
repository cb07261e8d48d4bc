"""The simulated search engine: an LLM writes the documents, useful or noisy as the curriculum draws.

Per episode, :meth:`SimulatedSearchEngine.open_session` binds the question, its golden answers, the noise
probability and a seed; every search then draws the document type from that episode's own ``random.Random(seed)``
(noisy with probability ``noise_prob``), renders the simulator prompt and parses the generated documents. The same
seed gives the same types and, with a seeded LLM, the same documents.

Modes: ``finetuned`` (a simulator trained on real-search data) and ``prompted`` (any instruct model, with a worked
example in the prompt). Generated text that is not in the asked-for format is parsed as far as it goes and the
problems are counted (:class:`SimulatorStats`); output with no usable document raises
:class:`~zerosearch_core.search.base.SearchBackendError`, which the run's error budget counts, so a broken simulator
fails the run instead of feeding empty documents to training.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from zerosearch_core.config import SimulatorConfig
from zerosearch_core.search.base import (
    EMPTY_QUERY,
    Document,
    EpisodeContext,
    SearchBackendError,
    SearchResult,
    SearchSession,
)
from zerosearch_core.simulator.llm import LLMClient, LocalLLM
from zerosearch_core.simulator.prompts import (
    DocType,
    ParsedDocuments,
    choose_doc_type,
    contains_answer,
    parse_documents,
    render_simulator_prompt,
)

if TYPE_CHECKING:
    from zerosearch_core.models.vllm_backend import VLLMSettings

logger = logging.getLogger(__name__)

FEW_SHOT_EXAMPLE = (
    "Example of the format, for the query 'eiffel tower height':\n"
    "Doc 1: (Title: Eiffel Tower) The Eiffel Tower is a wrought-iron lattice tower in Paris. It is 330 metres tall.\n"
    "Doc 2: (Title: Gustave Eiffel) Gustave Eiffel was a French engineer whose company built the tower.\n\n"
)


@dataclass
class SimulatorStats:
    """Counts of what the simulator produced, for the run's metrics."""

    searches: int = 0
    useful: int = 0
    noisy: int = 0
    missing_documents: int = 0
    overlong_documents: int = 0
    unnumbered: int = 0
    empty: int = 0
    type_resamples: int = 0
    """Outputs generated again because they broke their type (``simulator.type_check: resample``)."""
    type_unmet: int = 0
    """Searches still breaking their type after every attempt (returned as they were)."""
    latencies_s: list[float] = field(default_factory=list)


class SimulatedSearchEngine:
    """A :class:`~zerosearch_core.search.base.SearchEngine` whose documents an LLM writes."""

    def __init__(self, llm: LLMClient, cfg: SimulatorConfig, max_doc_chars: int, description: dict[str, str]) -> None:
        self.llm = llm
        self.cfg = cfg
        self.max_doc_chars = max_doc_chars
        self.description = description
        self.stats = SimulatorStats()

    def open_session(self, ctx: EpisodeContext) -> SimulatedSearchSession:
        """Bind one episode: its question, answers, noise probability and seeded generator."""
        return SimulatedSearchSession(self, ctx, random.Random(ctx.seed))

    def describe(self) -> dict[str, str]:
        """Facts for cards and logs."""
        return {"backend": "simulated", "mode": self.cfg.mode, **self.description}

    def search_batch(
        self, requests: Sequence[tuple[SearchSession, str]], top_k: int
    ) -> list[SearchResult | SearchBackendError]:
        """Serve several sessions' searches with one simulator call (one generate batch, or concurrent requests).

        Each session draws its document type and seed from its own generator, in the order of its own searches, so
        an episode's types do not depend on its batch-mates. With ``simulator.type_check: resample``, outputs that
        break their type are generated again (up to ``simulator.type_check_attempts`` more times, fresh seeds from
        the session's generator): a useful output must contain a golden answer; a noisy output keeps only its
        documents that contain none, topped up from the next attempts. Returns each search's result, or the
        :class:`SearchBackendError` of a search whose output held no usable document.
        """
        outcomes: list[SearchResult | SearchBackendError | None] = [None] * len(requests)
        asked: list[_Asked] = []
        for index, (session, query) in enumerate(requests):
            if not isinstance(session, SimulatedSearchSession) or session.engine is not self:
                raise TypeError("search_batch serves only sessions this engine opened.")
            if not query.strip():
                outcomes[index] = EMPTY_QUERY
                continue
            doc_type = choose_doc_type(session.ctx.noise_prob, session.rng)
            session.calls += 1
            prompt = self.render_prompt(session.ctx, query, doc_type, top_k)
            asked.append(_Asked(index, session, doc_type, prompt, answer_aware=self.cfg.answer_aware))
        started = time.perf_counter()
        resample = self.cfg.type_check == "resample"
        pending = asked
        for attempt in range(1 + (self.cfg.type_check_attempts if resample else 0)):
            if not pending:
                break
            if attempt:
                self.stats.type_resamples += len(pending)
            seeds = [a.session.rng.randrange(2**31) for a in pending]
            try:
                texts = self.llm.complete(
                    [a.prompt for a in pending], self.cfg.max_new_tokens, self.cfg.temperature, seeds[0]
                )
                if len(texts) != len(pending):
                    raise SearchBackendError(f"The simulator answered {len(texts)} of {len(pending)} prompts.")
            except SearchBackendError as err:
                for a in pending:
                    outcomes[a.index] = err
                pending = []
                break
            for a, text in zip(pending, texts, strict=True):
                a.take(parse_documents(text, top_k, self.max_doc_chars), top_k, keep_clean=resample)
            pending = [a for a in pending if not a.type_met(top_k)] if resample else []
        latency = (time.perf_counter() - started) / max(len(asked), 1)
        for a in asked:
            if outcomes[a.index] is None:
                outcomes[a.index] = self._finish(a, requests[a.index][1], top_k, latency)
        finished = [o for o in outcomes if o is not None]
        assert len(finished) == len(requests)  # every request got a result or an error above
        return finished

    def _finish(self, asked: _Asked, query: str, top_k: int, latency: float) -> SearchResult | SearchBackendError:
        parsed = asked.result(top_k)
        stats = self.stats
        stats.searches += 1
        stats.useful += asked.doc_type == "useful"
        stats.noisy += asked.doc_type == "noisy"
        stats.missing_documents += parsed.missing
        stats.overlong_documents += parsed.overlong
        stats.unnumbered += parsed.unnumbered
        stats.latencies_s.append(latency)
        if self.cfg.type_check == "resample" and not asked.type_met(top_k):
            stats.type_unmet += 1
        if parsed.empty:
            stats.empty += 1
            return SearchBackendError(f"The simulator returned no usable document for query {query!r}.")
        return SearchResult(documents=parsed.documents, status="ok", latency_s=latency, message=asked.doc_type)

    def render_prompt(self, ctx: EpisodeContext, query: str, doc_type: str, top_k: int) -> str:
        """The simulator prompt of one search (with a worked example in prompted mode)."""
        prompt = render_simulator_prompt(
            query,
            ctx.question,
            ctx.gold_answers,
            doc_type,  # type: ignore[arg-type]
            top_k,
            self.cfg.doc_words,
            self.cfg.answer_aware,
        )
        return FEW_SHOT_EXAMPLE + prompt if self.cfg.mode == "prompted" else prompt


@dataclass
class _Asked:
    """One search in a batch: its session, type and prompt, and the documents its attempts gave so far."""

    index: int
    session: SimulatedSearchSession
    doc_type: DocType
    prompt: str
    answer_aware: bool = True
    """False: the prompt gave no answer, so a useful output is not checked against the golden answers."""
    last: ParsedDocuments | None = None
    clean: list[Document] = field(default_factory=list)

    def take(self, parsed: ParsedDocuments, top_k: int, keep_clean: bool) -> None:
        """Record an attempt's output; with ``keep_clean`` (resampling) a noisy search also keeps its documents that
        hold no golden answer, across attempts."""
        self.last = parsed
        if keep_clean and self.doc_type == "noisy":
            answers = self.session.ctx.gold_answers
            for doc in parsed.documents:
                seen = {d.text for d in self.clean}
                if len(self.clean) < top_k and doc.text not in seen and not contains_answer([doc], answers):
                    self.clean.append(doc)

    def type_met(self, top_k: int) -> bool:
        """Whether the output obeys its type: useful contains a golden answer; noisy has top_k clean documents."""
        if self.doc_type == "noisy":
            return len(self.clean) >= top_k
        if not self.answer_aware:
            return self.last is not None
        return self.last is not None and contains_answer(self.last.documents, self.session.ctx.gold_answers)

    def result(self, top_k: int) -> ParsedDocuments:
        """What the search returns: the last output; for noisy with resampling, its clean documents when any."""
        assert self.last is not None
        if self.clean:  # only a resampled noisy search keeps clean documents
            documents = tuple(replace(d, id=f"sim-{i + 1}") for i, d in enumerate(self.clean))
            return ParsedDocuments(documents, top_k - len(documents), self.last.overlong, self.last.unnumbered)
        return self.last


@dataclass
class SimulatedSearchSession:
    """One episode's simulated searches."""

    engine: SimulatedSearchEngine
    ctx: EpisodeContext
    rng: random.Random
    calls: int = 0

    def search(self, query: str, top_k: int) -> SearchResult:
        """Draw the document type, ask the simulator, parse its documents.

        Raises:
            SearchBackendError: The simulator failed or wrote no usable document.
        """
        outcome = self.engine.search_batch([(self, query)], top_k)[0]
        if isinstance(outcome, SearchBackendError):
            raise outcome
        return outcome


def open_simulated_engine(
    cfg: SimulatorConfig, simulator_dir: Path, dtype: str, max_doc_chars: int
) -> SimulatedSearchEngine:
    """The simulator behind ``cfg.url`` (an OpenAI-compatible server), or in process from ``simulator_dir``.

    Args:
        cfg: The ``simulator`` section.
        simulator_dir: The fine-tuned simulator (``paths.simulator_dir``), used when ``cfg.url`` is null.
        dtype: Weight dtype of the in-process simulator (``model.dtype``).
        max_doc_chars: Characters kept of each document (``rollout.max_doc_chars``).

    Raises:
        FileNotFoundError: No simulator at ``simulator_dir`` and no ``cfg.url``; the message says how to get one.
    """
    llm: LLMClient
    if cfg.url is not None:
        from zerosearch_core.simulator.client import OpenAICompatibleLLM

        client = OpenAICompatibleLLM(cfg.url, "simulator", cfg.request_timeout_s, cfg.max_retries)
        client.check_health()
        llm, where = client, cfg.url
    else:
        from zerosearch_core.models.build import load_causal_lm, load_tokenizer

        if not (simulator_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"No simulator at {simulator_dir}; run `dvc repro finetune_simulator` first, point simulator.url at a "
                "running simulator server, or train against real search with train.search_engine: real."
            )
        if cfg.engine != "hf":  # vllm; vllm_server reaches here only outside a stage that starts the server
            from zerosearch_core.models.vllm_backend import VLLMEngine
            from zerosearch_core.simulator.llm import VLLMChat

            settings = simulator_vllm_settings(cfg, dtype)
            llm = VLLMChat(VLLMEngine(simulator_dir, settings), load_tokenizer(simulator_dir))
        else:
            llm = LocalLLM(load_causal_lm(simulator_dir, dtype), load_tokenizer(simulator_dir))
        where = f"{simulator_dir} ({cfg.engine})"
    return SimulatedSearchEngine(llm, cfg, max_doc_chars, {"model": where})


def simulator_vllm_settings(cfg: SimulatorConfig, dtype: str) -> VLLMSettings:
    """How the simulator's vLLM engine starts: room for a prompt as long as the SFT sequences plus the budget."""
    import torch

    from zerosearch_core.models.vllm_backend import VLLMSettings

    return VLLMSettings(
        dtype=dtype,
        max_model_len=cfg.max_length + cfg.max_new_tokens,
        kv_cache_gib=cfg.vllm_kv_cache_gib,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        enforce_eager=not torch.cuda.is_available(),  # compilation buys nothing on CPU and costs ~30 s of start-up
        seed=0,
    )
