"""Up to 20 documents per query, end to end: the simulator's prompt and parsing, the real retriever over HTTP, the
rollout's information block and mask, and a clear config error above the supported maximum."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tests.fakes import AnsweringPolicy, ScriptedPolicy
from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.config import MAX_TOP_K, ConfigError, PipelineConfig, load_config
from zerosearch_core.models.build import load_tokenizer
from zerosearch_core.netutil import free_port
from zerosearch_core.search.base import EpisodeContext, SearchErrorBudget
from zerosearch_core.search.http import HttpSearchEngine, create_retriever_app, running_server
from zerosearch_core.search.local import BM25Retriever
from zerosearch_core.simulator.engine import SimulatedSearchEngine

ROOT = Path(__file__).resolve().parents[1]


class TwentyDocs:
    """An LLM client that writes exactly the documents it is asked for, numbered as the simulator's target is."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompts, max_new_tokens, temperature, seed):  # type: ignore[no-untyped-def]
        self.prompts.extend(prompts)
        return ["\n".join(f"Doc {i}: (Title: Page {i}) Text of page {i}." for i in range(1, 21)) for _ in prompts]


def test_the_simulator_asks_for_and_parses_twenty_documents(cfg: PipelineConfig) -> None:
    llm = TwentyDocs()
    engine = SimulatedSearchEngine(llm, cfg.simulator, 200, {"model": "scripted"})
    result = engine.open_session(EpisodeContext("Who?", ("Ann",), 0.0, 1)).search("who is ann", MAX_TOP_K)
    assert len(result.documents) == 20 and result.documents[-1].title == "Page 20"
    assert "20" in llm.prompts[0]  # the prompt asks for twenty
    assert engine.stats.missing_documents == 0


def test_the_real_retriever_and_the_rollout_carry_twenty_documents(
    cfg: PipelineConfig,
    corpus,
    tiny_policy_dir: Path,  # type: ignore[no-untyped-def]
) -> None:
    app = create_retriever_app(BM25Retriever.build(corpus.head(400)), {"corpus_sha256": "t"})
    tokenizer = load_tokenizer(tiny_policy_dir)
    policy = ScriptedPolicy(tokenizer, ["<search> history </search>", "<answer> x </answer>"])
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64, max_total_tokens=16384, max_doc_chars=60)
    with running_server(app, "127.0.0.1", free_port("127.0.0.1")) as url:
        engine = HttpSearchEngine(url, 10, 0)
        assert len(engine.retrieve(["history"], MAX_TOP_K)[0]) == 20
        session = engine.open_session(EpisodeContext("q", ("x",), 0.0, 0))
        prompt = policy.encode("Question: q\n")
        (trajectory,) = run_episodes(policy, [prompt], [session], rollout, MAX_TOP_K, SearchErrorBudget(0.0))
    text = trajectory.response_text
    assert "Doc 20(" in text and "Doc 21(" not in text
    inserted = [t for t, m in zip(trajectory.response_ids, trajectory.loss_mask, strict=True) if m == 0]
    assert "Doc 20(" in tokenizer.decode(inserted)  # every retrieved token is masked out of the loss


def test_more_than_twenty_documents_is_a_clear_config_error(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["search"]["top_k"] = 21
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"search.top_k=21 is out of range; it must be >= 1, <= 20"):
        load_config(path)


class ReadingOracle(AnsweringPolicy):
    """Answers with the golden answer only if one of the returned documents states it."""

    def answer(self, question: str, seen: str) -> str:
        golden = self.answers[question]
        return golden if golden.lower() in seen.lower() else "unknown"


def test_evaluation_searches_with_twenty_documents(cfg: PipelineConfig, corpus, tiny_policy_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Evaluation with top-k 20 on the real BM25 index of the real corpus: every search inserts twenty documents
    (three with top-k 3), and the score follows what those documents held."""
    import pandas as pd

    from zerosearch_core.agent.loop import SearchProtocol
    from zerosearch_core.evaluation.benchmarks import evaluate_benchmark
    from zerosearch_core.search.local import LocalSearchEngine

    retriever = BM25Retriever.build(corpus)
    rows = corpus.sample(8, random_state=3)
    # a question per real passage, answered by its title
    questions = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(rows))],
            "question": [f"Tell me about {t}?" for t in rows["title"]],
            "golden_answers": [[str(t)] for t in rows["title"]],
        }
    )
    tokenizer = load_tokenizer(tiny_policy_dir)
    policy = ReadingOracle(tokenizer, dict(zip(questions["question"], rows["title"], strict=True)))
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64, max_total_tokens=16384, max_doc_chars=80)
    twenty = SearchProtocol(rollout=rollout, top_k=MAX_TOP_K, max_error_rate=0.0)
    three = SearchProtocol(rollout=rollout, top_k=3, max_error_rate=0.0)
    engine = LocalSearchEngine(retriever, {"retriever": "bm25"})
    runs = {
        k: evaluate_benchmark("t", questions, "search", policy, tokenizer, engine, protocol, 0, SearchErrorBudget(0.0))
        for k, protocol in ((20, twenty), (3, three))
    }
    for k, run in runs.items():
        found = 0
        for text, golden in zip(run.predictions["response"], questions["golden_answers"], strict=True):
            assert f"Doc {k}(" in text and f"Doc {k + 1}(" not in text  # k documents inserted, no more
            found += golden[0].lower() in text.split("<information>", 1)[1].lower()
        assert run.metrics["n"] == 8 and run.metrics["mean_searches"] == 1.0
        assert run.metrics["em"] == pytest.approx(found / 8)  # scored on what the k documents held
