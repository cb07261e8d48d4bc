"""Metrics against golden (prediction, answers) pairs, answer extraction and the RL reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch_core.rewards import answer_reward, count_answer_spans, exact_match, extract_answer, f1_score

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


def test_reward_is_zero_for_malformed_and_f1_otherwise() -> None:
    assert answer_reward("<answer>Barack Obama</answer>", ["Obama"]) == pytest.approx(2 / 3)
    assert answer_reward("<answer>Barack Obama</answer>", ["Obama"], metric="em") == 0.0
    assert answer_reward("<answer>a</answer><answer>b</answer>", ["a"]) == 0.0
    assert answer_reward("Paris", ["Paris"]) == 0.0
    assert count_answer_spans("<answer>a</answer><answer>b</answer>") == 2


def test_unknown_reward_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="use 'f1' or 'em'"):
        answer_reward("<answer>a</answer>", ["a"], metric="bleu")
