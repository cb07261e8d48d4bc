"""simulator.type_check: resample generates again an output that breaks its document type, keeps a noisy output's
clean documents, counts what it could not fix, and leaves outputs alone with as_written. A real tiny model checks
that the attempts are seeded (the same search gives the same documents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models import load_causal_lm, load_tokenizer
from zerosearch_core.search.base import EpisodeContext
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.llm import LocalLLM


class QueuedLLM:
    """Answers each call with its next scripted outputs (one per prompt) and records the calls."""

    def __init__(self, outputs: list[list[str]]) -> None:
        self.outputs = outputs
        self.calls: list[tuple[list[str], int]] = []

    def complete(self, prompts, max_new_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        self.calls.append((list(prompts), seed))
        batch = self.outputs.pop(0)
        assert len(batch) == len(prompts)
        return batch


def _engine(cfg: PipelineConfig, llm, check: str = "resample", attempts: int = 2) -> SimulatedSearchEngine:  # type: ignore[no-untyped-def]
    sim = dataclasses.replace(cfg.simulator, type_check=check, type_check_attempts=attempts)
    return SimulatedSearchEngine(llm, sim, 300, {"model": "scripted"})


LEAKY = "Doc 1: (Title: Paris) Paris is the capital.\nDoc 2: (Title: Rome) Rome is old."
CLEAN = "Doc 1: (Title: Oslo) Oslo is cold.\nDoc 2: (Title: Bern) Bern is small."
USEFUL = "Doc 1: (Title: France) The capital of France is Paris.\nDoc 2: (Title: Rome) Rome is old."


def _search(engine: SimulatedSearchEngine, noise: float, seed: int = 1):  # type: ignore[no-untyped-def]
    return engine.open_session(EpisodeContext("Capital of France?", ("Paris",), noise, seed)).search("capital", 2)


def test_a_noisy_output_that_states_the_answer_is_generated_again(cfg: PipelineConfig) -> None:
    llm = QueuedLLM([[LEAKY], [CLEAN]])
    engine = _engine(cfg, llm)
    result = _search(engine, 1.0)
    assert result.message == "noisy"
    # the clean document of the first attempt stays, the next attempt tops it up; no document states Paris
    assert [d.title for d in result.documents] == ["Rome", "Oslo"]
    assert len(llm.calls) == 2 and llm.calls[0][1] != llm.calls[1][1]  # a fresh seed for the second attempt
    assert (engine.stats.type_resamples, engine.stats.type_unmet, engine.stats.searches) == (1, 0, 1)


def test_a_useful_output_without_the_answer_is_generated_again(cfg: PipelineConfig) -> None:
    llm = QueuedLLM([[CLEAN], [USEFUL]])
    engine = _engine(cfg, llm)
    result = _search(engine, 0.0)
    assert result.message == "useful" and "Paris" in result.documents[0].text
    assert engine.stats.type_resamples == 1


def test_what_the_attempts_cannot_fix_is_counted_and_kept_honest(cfg: PipelineConfig) -> None:
    llm = QueuedLLM([[LEAKY], [LEAKY], [LEAKY]])
    engine = _engine(cfg, llm, attempts=2)
    noisy = _search(engine, 1.0)
    assert [d.title for d in noisy.documents] == ["Rome"]  # only the clean one; the shortfall is counted as missing
    assert (engine.stats.type_resamples, engine.stats.type_unmet, engine.stats.missing_documents) == (2, 1, 1)
    llm = QueuedLLM([[CLEAN], [CLEAN], [CLEAN]])
    engine = _engine(cfg, llm, attempts=2)
    useful = _search(engine, 0.0)
    assert [d.title for d in useful.documents] == ["Oslo", "Bern"] and engine.stats.type_unmet == 1


def test_a_batch_resamples_only_the_searches_that_broke_their_type(cfg: PipelineConfig) -> None:
    llm = QueuedLLM([[LEAKY, USEFUL], [CLEAN]])
    engine = _engine(cfg, llm)
    noisy = engine.open_session(EpisodeContext("Capital of France?", ("Paris",), 1.0, 1))
    useful = engine.open_session(EpisodeContext("Capital of France?", ("Paris",), 0.0, 2))
    results = engine.search_batch([(noisy, "capital"), (useful, "capital")], 2)
    assert len(llm.calls[1][0]) == 1  # the second call holds only the noisy search
    assert [r.message for r in results] == ["noisy", "useful"]  # type: ignore[union-attr]


def test_as_written_uses_the_output_as_it_came(cfg: PipelineConfig) -> None:
    llm = QueuedLLM([[LEAKY]])
    engine = _engine(cfg, llm, check="as_written")
    result = _search(engine, 1.0)
    assert [d.title for d in result.documents] == ["Paris", "Rome"] and engine.stats.type_resamples == 0


def test_resampling_with_a_real_model_is_seeded(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    llm = LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))
    sim_cfg = dataclasses.replace(cfg, simulator=dataclasses.replace(cfg.simulator, max_new_tokens=24))
    runs = []
    for _ in range(2):
        engine = _engine(sim_cfg, llm, attempts=2)
        result = _search(engine, 0.0, seed=5)  # the untrained model never writes Paris: every attempt runs
        runs.append(([d.text for d in result.documents], engine.stats.type_resamples))
    assert runs[0] == runs[1] and runs[0][1] == 2
