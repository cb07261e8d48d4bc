"""Evaluation: scoring through the protocol, the metrics document, chart and card, and the evaluate stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.fakes import AnsweringPolicy
from zerosearch_core import cli
from zerosearch_core.agent.loop import SearchProtocol
from zerosearch_core.config import PipelineConfig, config_to_dict
from zerosearch_core.data.benchmarks import normalize, read_raw, sample_questions
from zerosearch_core.evaluation.benchmarks import evaluate_benchmark, metrics_document
from zerosearch_core.evaluation.card import render_eval_card
from zerosearch_core.models.build import load_tokenizer
from zerosearch_core.search.base import Document, SearchErrorBudget, SearchResult
from zerosearch_core.stages import StageHooks, build_index, evaluate, init_policy, prepare_data


class OneDocEngine:
    def open_session(self, ctx):
        return self

    def search(self, query: str, top_k: int) -> SearchResult:
        return SearchResult((Document("1", "T", "text", 1.0),), "ok", 0.0)

    def describe(self) -> dict[str, str]:
        return {"backend": "fake", "retriever": "none"}


@pytest.fixture
def bamboogle(cfg: PipelineConfig, benchmarks_dir: Path) -> pd.DataFrame:
    spec = next(f for f in cfg.data.files if f.name == "bamboogle_test")
    return normalize(read_raw(spec, benchmarks_dir), spec)


def test_oracle_scores_one_and_silence_scores_zero(
    cfg: PipelineConfig, tiny_policy_dir: Path, bamboogle: pd.DataFrame
) -> None:
    tokenizer = load_tokenizer(tiny_policy_dir)
    protocol = SearchProtocol.from_sections(cfg.rollout, cfg.search)
    questions = sample_questions(bamboogle, 6, seed=1)
    oracle = AnsweringPolicy(
        tokenizer, {q: a[0] for q, a in zip(questions["question"], questions["golden_answers"], strict=True)}
    )
    run = evaluate_benchmark(
        "bamboogle_test",
        questions,
        "search",
        oracle,
        tokenizer,
        OneDocEngine(),
        protocol,
        cfg.seed,
        SearchErrorBudget(0.0),
    )
    assert run.metrics["em"] == 1.0 and run.metrics["f1"] == 1.0 and run.metrics["n"] == 6
    assert run.metrics["mean_searches"] == 1.0 and run.metrics["answer_rate"] == 1.0
    assert run.predictions["prediction"].tolist() == [a[0] for a in questions["golden_answers"]]

    direct = evaluate_benchmark(
        "bamboogle_test",
        questions,
        "direct",
        oracle,
        tokenizer,
        OneDocEngine(),
        protocol,
        cfg.seed,
        SearchErrorBudget(0.0),
    )
    assert direct.metrics["em"] == 0.0 and direct.metrics["mean_searches"] == 0.0


def test_sample_is_seeded_and_bounded(bamboogle: pd.DataFrame) -> None:
    a, b = sample_questions(bamboogle, 10, seed=5), sample_questions(bamboogle, 10, seed=5)
    assert a["id"].tolist() == b["id"].tolist() and len(a) == 10
    assert sample_questions(bamboogle, 10, seed=6)["id"].tolist() != a["id"].tolist()
    assert len(sample_questions(bamboogle, None, seed=5)) == len(bamboogle) == 40  # the committed sample


def test_metrics_document_names_missing_benchmarks() -> None:
    from zerosearch_core.evaluation.benchmarks import BenchmarkRun

    runs = [
        BenchmarkRun("nq_dev", "search", pd.DataFrame(), {"em": 0.5, "cover_em": 1.0, "f1": 0.6, "n": 2.0}),
        BenchmarkRun("popqa_test", "search", pd.DataFrame(), {"em": 0.0, "cover_em": 0.0, "f1": 0.2, "n": 2.0}),
    ]
    document = metrics_document(runs, {"nq_dev": "nq", "popqa_test": "popqa"})
    assert document["search"]["average"] == {"em": 0.25, "cover_em": 0.5, "f1": 0.4}
    assert document["not_evaluated"] == ["triviaqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]


@pytest.mark.slow
def test_evaluate_stage_end_to_end_on_real_search(
    cfg: PipelineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tuple(
        f for f in cfg.data.files if f.name in ("bamboogle_test", "popqa_test", "multihop_train", "multihop_val")
    )
    small = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(
            cfg.eval, benchmarks=("bamboogle_test", "popqa_test"), policies=("initial", "trained")
        ),
        # the "trained" policy is the initial one here (training has its own tests), so both must score the same
        paths=dataclasses.replace(cfg.paths, trained_policy_dir=cfg.paths.policy_dir),
    )
    prepare_data.run(small, StageHooks())
    build_index.run(small, StageHooks())
    init_policy.run(small, StageHooks())
    result = evaluate.run(small, StageHooks())

    document = json.loads(Path(small.paths.eval_metrics).read_text())
    assert document["initial.search"] == document["search"] and document["initial.direct"] == document["direct"]
    for mode in ("search", "direct"):
        assert set(document[mode]) == {"bamboogle_test", "popqa_test", "average"}
        assert document[mode]["bamboogle_test"]["n"] == 2
        assert 0.0 <= document[mode]["average"]["em"] <= 1.0
    assert "triviaqa" in document["not_evaluated"]
    eval_dir = Path(small.paths.eval_dir)
    predictions = pd.read_json(eval_dir / "predictions.jsonl", lines=True)
    assert len(predictions) == 16 and set(predictions["mode"]) == {"search", "direct"}
    assert predictions.groupby("policy").size().to_dict() == {"initial": 8, "trained": 8}
    card = (eval_dir / "eval_card.md").read_text()
    corpus_hash = json.loads((Path(small.paths.index_dir) / "manifest.json").read_text())["corpus_sha256"]
    assert corpus_hash in card and "top-k 3" in card and "bm25 via http" in card
    assert (eval_dir / "em_f1_by_benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert result.metrics["search.bamboogle_test.em"] == document["search"]["bamboogle_test"]["em"]
    assert {"em", "cover_em", "f1"} <= set(document["search"]["average"]) and "cover-EM" in card
    assert "ZeroSearch's tables report cover-EM" in card and {"em", "cover_em", "f1"} <= set(predictions.columns)

    # Any checkpoint, scored by the standalone command, gets the numbers the stage wrote for it.
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config_to_dict(small), sort_keys=False))
    out = tmp_path / "checkpoint_eval"
    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts under the working folder
    arguments = ["--params", str(params), "--model", small.paths.policy_dir, "--out", str(out)]
    assert cli.main(["evaluate_checkpoint", *arguments, "--benchmarks", "bamboogle_test,popqa_test"]) == 0
    standalone = json.loads((out / "eval.json").read_text())
    assert standalone["search"] == document["initial.search"] and standalone["direct"] == document["initial.direct"]
    assert (out / "eval_card.md").is_file() and (out / "predictions.jsonl").is_file()
    assert cli.main(["evaluate_checkpoint", *arguments, "--benchmarks", "nope_test"]) == 2  # a clear config error
    template = tmp_path / "prompt.txt"
    template.write_text("Answer with <search> and <answer> tags. Question: {question}\n")
    templated = [*arguments, "--benchmarks", "bamboogle_test", "--prompt-file", str(template)]
    assert cli.main(["evaluate_checkpoint", *templated]) == 0
    assert "- prompt: a given template" in (out / "eval_card.md").read_text()
    predictions = pd.read_json(out / "predictions.jsonl", lines=True)
    assert "Answer with <search> and <answer> tags" not in " ".join(predictions["response"])  # prompt, not response


def test_card_lists_protocol_and_results(cfg: PipelineConfig) -> None:
    document = {
        "search": {
            "nq_dev": {"em": 0.5, "cover_em": 1.0, "f1": 0.5, "n": 2.0, "answer_rate": 1.0, "mean_searches": 1.0},
            "average": {"em": 0.5, "cover_em": 1.0, "f1": 0.5},
        },
        "not_evaluated": ["triviaqa"],
    }
    card = render_eval_card(
        document,
        SearchProtocol.from_sections(cfg.rollout, cfg.search),
        cfg.eval,
        {"policies": "m", "model_source": cfg.model.source, "seed": str(cfg.seed)},
        {"retriever": "bm25", "backend": "http", "corpus_sha256": "f00"},
        {"nq_dev": "x.parquet"},
    )
    assert "| search | nq_dev | 0.500 | 1.000 | 0.500 | 2 | 1.00 | 1.00 |" in card
    assert "sha256 `f00`" in card and "Not evaluated (no data in data.files): triviaqa." in card


def test_a_given_prompt_template_replaces_the_search_prompt_only(tiny_policy_dir: Path) -> None:
    from zerosearch_core.agent.prompts import build_prompt_ids

    tokenizer = load_tokenizer(tiny_policy_dir)
    template = "Use <search> query </search> as needed. Question: {question}\n"
    search = tokenizer.decode(build_prompt_ids(tokenizer, "Who wrote Hamlet?", "search", False, template))
    assert search == template.replace("{question}", "Who wrote Hamlet?")
    direct = build_prompt_ids(tokenizer, "Who wrote Hamlet?", "direct", False, template)
    assert direct == build_prompt_ids(tokenizer, "Who wrote Hamlet?", "direct", False)


def test_multi_hop_metrics_count_second_searches_and_later_queries_that_name_the_bridge() -> None:
    from zerosearch_core.evaluation.benchmarks import summarize

    frame = pd.DataFrame(
        {
            "em": [1.0, 0.0, 1.0],
            "cover_em": [1.0, 0.0, 1.0],
            "f1": [1.0, 0.0, 1.0],
            "prediction": ["a", "b", "c"],
            "turns": [3, 2, 2],
            "searches": [2, 1, 1],
            "invalid_actions": [0, 0, 0],
            "search_failures": [0, 0, 0],
            "response_tokens": [9, 5, 5],
            "bridge": ["Doran Kelby", "Doran Kelby", None],
            "bridge_queried": [True, False, False],
        }
    )
    metrics = summarize(frame)
    assert metrics["multi_search_rate"] == 1 / 3 and metrics["em_when_multi_search"] == 1.0
    assert metrics["bridge_query_rate"] == 0.5  # over the two questions that have a bridge
    assert "bridge_query_rate" not in summarize(frame.drop(columns=["bridge", "bridge_queried"]))
