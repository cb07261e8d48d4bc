"""simulator.type_check: resample generates again an output that breaks its document type, keeps a noisy output's
clean documents, counts what it could not fix, and leaves outputs alone with as_written. A real tiny model checks
that the attempts are seeded (the same search gives the same documents)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
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


class TypeObeyingLLM:
    """Writes a document with the prompt's answer for a useful prompt and one without for a noisy prompt, except
    the noisy prompts of the queries in ``leak`` (a document that states the answer); records each call's size."""

    def __init__(self, leak: set[str]) -> None:
        self.leak = leak
        self.sizes: list[int] = []

    def complete(self, prompts, max_new_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        self.sizes.append(len(prompts))
        outputs = []
        for prompt in prompts:
            answer = prompt.split("\nAnswer: ")[1].splitlines()[0]
            query = prompt.rsplit("Query: ", 1)[1].splitlines()[0]
            useful = "must be useful" in prompt
            text = f"{query} is {answer}." if useful or query in self.leak else f"{query} is unknown."
            outputs.append(f"Doc 1: (Title: {query}) {text}")
        return outputs


def test_answer_rates_are_measured_in_batches_useful_beside_noisy(cfg: PipelineConfig, tmp_path: Path) -> None:
    from zerosearch_core.simulator.finetune import ANSWER_RATE_BATCH, measure_answer_rates
    from zerosearch_core.simulator.prompts import SIMULATOR_TEMPLATE
    from zerosearch_core.simulator.sft_data import HELDOUT_FILE

    assert "\nAnswer: {answers}\n" in SIMULATOR_TEMPLATE  # what TypeObeyingLLM reads the answer from
    queries = [f"person {i}" for i in range(40)]  # 80 searches: more than one batch
    rows = [
        {"question": f"Q{i}?", "golden_answers": [f"answer{i}"], "query": q,
         "documents": [{"id": "1", "title": q, "text": f"{q} is answer{i}." if i % 4 else "nothing", "score": 1.0}]}
        for i, q in enumerate(queries)
    ]  # fmt: skip
    (tmp_path / HELDOUT_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    llm = TypeObeyingLLM(leak={"person 0", "person 1"})
    bars: list[tuple[int, str, int]] = []

    def progress(total: int, label: str):  # type: ignore[no-untyped-def]
        def advance(count: int) -> None:
            bars.append((total, label, count))

        return advance

    engine = _engine(cfg, llm, check="as_written")
    metrics, samples = measure_answer_rates(engine, tmp_path, 40, 1, seed=3, progress=progress)
    assert llm.sizes == [ANSWER_RATE_BATCH, 80 - ANSWER_RATE_BATCH]  # one simulator call per batch of searches
    assert [count for _, _, count in bars] == llm.sizes and {b[:2] for b in bars} == {(80, "simulator answer rates")}
    assert metrics["useful_answer_rate"] == 1.0 and metrics["noisy_answer_rate"] == 2 / 40
    assert metrics["real_documents_answer_rate"] == 30 / 40 and metrics["unusable_outputs"] == 0
    # each sample holds its own query's useful and noisy documents
    assert samples[5]["useful"] == ["(person 5) person 5 is answer5."]
    assert samples[5]["noisy"] == ["(person 5) person 5 is unknown."]
    assert samples[1]["noisy"] == ["(person 1) person 1 is answer1."]
