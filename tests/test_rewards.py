"""Metrics against golden (prediction, answers) pairs, answer extraction and the RL reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch_core.agent.rewards import (
    answer_metrics,
    answer_reward,
    count_answer_spans,
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_score,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "rewards.json").read_text())["cases"]


def test_golden_table_is_large_enough() -> None:
    assert len(GOLDEN) >= 30


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{c['prediction']!r}->{c['answers']!r}" for c in GOLDEN])
def test_golden_em_and_f1(case: dict) -> None:
    assert exact_match(case["prediction"], case["answers"]) == case["em"]
    assert f1_score(case["prediction"], case["answers"]) == pytest.approx(case["f1"], abs=1e-6)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>x</think><answer> Paris </answer>", "Paris"),
        ("<answer>first</answer> then <answer>second</answer>", "second"),
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
        ("<answer></answer>", ""),
        ("no tags at all", None),
        ("<answer>never closed", None),
        ("</answer>Paris<answer>", None),
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_reward_scores_the_last_answer_span_and_zero_without_one() -> None:
    assert answer_reward("<answer>Barack Obama</answer>", ["Obama"]) == pytest.approx(2 / 3)
    assert answer_reward("<answer>Barack Obama</answer>", ["Obama"], metric="em") == 0.0
    assert answer_reward("<answer>Barack Obama</answer>", ["Obama"], metric="cover_em") == 1.0
    assert answer_reward("<answer>b</answer><answer>a</answer>", ["a"]) == 1.0  # the last span, as evaluation
    assert answer_reward("<answer>a</answer><answer>b</answer>", ["a"]) == 0.0
    assert answer_reward("Paris", ["Paris"]) == 0.0
    assert count_answer_spans("<answer>a</answer><answer>b</answer>") == 2


def test_unknown_reward_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of"):
        answer_reward("<answer>a</answer>", ["a"], metric="bleu")


@pytest.mark.parametrize(
    ("prediction", "answers", "cover"),
    [
        ("David Seville", ["David Seville"], 1.0),
        ("It was Ross Bagdasarian, known as David Seville.", ["David Seville"], 1.0),  # a sentence that holds it
        ("The Beatles!", ["beatles"], 1.0),  # normalised on both sides: case, punctuation, articles
        ("Seville", ["David Seville"], 0.0),  # the prediction inside the gold is not enough
        ("nine", ["9"], 0.0),
        ("1930s", ["1930"], 1.0),  # containment is on characters, not tokens (as ZeroSearch's em_check)
        ("anything at all", ["the"], 0.0),  # a gold that normalises to nothing matches nothing
        ("", ["x"], 0.0),
        (None, ["x"], 0.0),
        ("Paris", [], 0.0),
    ],
)
def test_cover_em_is_normalised_containment(prediction: str | None, answers: list[str], cover: float) -> None:
    assert cover_exact_match(prediction, answers) == cover
    if cover == 1.0 and prediction is not None:
        assert answer_metrics(prediction, answers)["cover_em"] >= answer_metrics(prediction, answers)["em"]


def test_yes_no_rule_is_an_option_on_by_default() -> None:
    assert f1_score("yes he did", ["yes"]) == 0.0
    assert f1_score("yes he did", ["yes"], yes_no_exact=False) == pytest.approx(0.5)
    assert answer_reward("<answer>yes he did</answer>", ["yes"], yes_no_exact=False) == pytest.approx(0.5)


class PerPromptPolicy:
    """Answers each prompt with its own scripted response (one turn), on real token ids."""

    def __init__(self, tokenizer, responses: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.responses = responses
        self.stop_ids = {tokenizer.eos_token_id}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids):  # type: ignore[no-untyped-def]
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def generate(self, sequences, max_new_tokens, seeds=None):  # type: ignore[no-untyped-def]
        out = []
        for sequence in sequences:
            prompt = self.decode(sequence)
            response = next(text for question, text in self.responses.items() if question in prompt)
            ids = self.encode(response)
            out.append((ids, [0.0] * len(ids)))
        return out


def test_the_reward_of_every_trajectory_is_the_metric_evaluation_reports(cfg, tiny_policy_dir) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    import pandas as pd

    from zerosearch_core.agent.loop import SearchProtocol
    from zerosearch_core.evaluation.benchmarks import evaluate_benchmark
    from zerosearch_core.models.build import load_tokenizer
    from zerosearch_core.search.base import SearchErrorBudget

    tokenizer = load_tokenizer(tiny_policy_dir)
    cases = {
        "Capital of France?": "<answer> Paris </answer>",
        "Capital of Italy?": "<think>hm</think><answer> Paris </answer><answer> Rome </answer>",  # several spans
        "Capital of Spain?": "I do not know.",  # no span
        "Capital of Peru?": "<answer></answer>",
        "Is the sky blue?": "<answer> yes it is </answer>",
        "Who wrote Hamlet?": "<answer> it was William Shakespeare </answer>",
    }
    golds = [["Paris"], ["Rome"], ["Madrid"], ["Lima"], ["yes"], ["Shakespeare", "William Shakespeare"]]
    questions = pd.DataFrame({"id": [f"q{i}" for i in range(6)], "question": list(cases), "golden_answers": golds})
    policy = PerPromptPolicy(tokenizer, cases)
    protocol = SearchProtocol(dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64), 1, 0.0)
    for yes_no_exact in (True, False):
        run = evaluate_benchmark(
            "scripted",
            questions,
            "direct",
            policy,
            tokenizer,
            None,
            protocol,
            0,
            SearchErrorBudget(0.0),
            yes_no_exact=yes_no_exact,
        )
        for (_, row), gold in zip(run.predictions.iterrows(), golds, strict=True):
            sampled = cases[row["question"]]
            for metric in ("em", "cover_em", "f1"):
                reward = answer_reward(sampled, gold, metric, yes_no_exact)
                assert reward == pytest.approx(row[metric]), (row["question"], metric)
    scores = run.predictions.set_index("question")
    assert scores.loc["Capital of Italy?", "em"] == 1.0  # the last span, Rome
    assert scores.loc["Who wrote Hamlet?", "cover_em"] == 1.0 and scores.loc["Who wrote Hamlet?", "em"] == 0.0


def test_the_bridge_bonus_is_added_to_the_answer_reward_only_when_a_later_search_names_the_bridge() -> None:
    from zerosearch_core.rl.grpo import make_reward_func

    reward = make_reward_func("f1", True, bridge_bonus=0.25)
    texts = ["<answer> Varesk </answer>", "<answer> Varesk </answer>", "<answer> wrong </answer>"]
    queries = [["mentor of Alira", "Which city is Doran Kelby from?"], ["Doran Kelby"], ["a", "doran kelby"]]
    scores = reward([], [], texts, [["Varesk"]] * 3, queries=queries, bridge=["Doran Kelby"] * 3)
    assert scores == [1.25, 1.0, 0.25]  # the first search naming the bridge earns nothing: it was in the question
    plain = make_reward_func("f1", True)
    assert plain([], [], texts, [["Varesk"]] * 3, queries=queries, bridge=["Doran Kelby"] * 3) == [1.0, 1.0, 0.0]
