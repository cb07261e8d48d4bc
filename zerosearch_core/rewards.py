"""QA metrics and rewards, exactly as the field scores open-domain QA.

SQuAD-style answer normalisation (lower-case, drop ASCII punctuation, drop the articles a/an/the, fold white space),
exact match against any golden answer, token F1 (max over golden answers, with HotpotQA's rule that yes/no/noanswer
only match themselves), and answer extraction from ``<answer>…</answer>``. Evaluation and RL rewards both call these
functions, so a reported EM is the same number a reward would give. Pure functions only: no printing, no RNG.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_ANSWER_SPAN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SPECIAL_F1_ANSWERS = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Normalise an answer the SQuAD way.

    Args:
        text: A predicted or golden answer.

    Returns:
        Lower-cased text without ASCII punctuation or articles, with single spaces.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("An apple a day")
    'apple day'
    """
    lowered = text.lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punct)
    return " ".join(no_articles.split())


def exact_match(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised golden answer, else 0.0.

    Args:
        prediction: The extracted answer; None (no answer given) scores 0.
        golden_answers: Every acceptable answer.

    Returns:
        1.0 or 0.0.

    >>> exact_match("the Beatles", ["Beatles", "The Fab Four"])
    1.0
    >>> exact_match(None, ["Beatles"])
    0.0
    """
    if prediction is None:
        return 0.0
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(gold) for gold in golden_answers))


def f1_score(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """Token-level F1 of the prediction against the best-matching golden answer.

    Args:
        prediction: The extracted answer; None scores 0.
        golden_answers: Every acceptable answer.

    Returns:
        The highest F1 over the golden answers, in [0, 1].

    >>> round(f1_score("Barack Obama", ["Obama"]), 3)
    0.667
    >>> f1_score("yes", ["no"])
    0.0
    """
    if prediction is None or not golden_answers:
        return 0.0
    return max(_f1_single(prediction, gold) for gold in golden_answers)


def _f1_single(prediction: str, gold: str) -> float:
    pred_norm, gold_norm = normalize_answer(prediction), normalize_answer(gold)
    if pred_norm in _SPECIAL_F1_ANSWERS or gold_norm in _SPECIAL_F1_ANSWERS:
        return float(pred_norm == gold_norm)
    pred_tokens, gold_tokens = pred_norm.split(), gold_norm.split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def extract_answer(response: str) -> str | None:
    """The text of the last ``<answer>…</answer>`` span of a model response.

    Args:
        response: What the policy generated (not the prompt, which shows an example answer).

    Returns:
        The stripped answer text, or None when the response holds no closed answer span.

    >>> extract_answer("<think>hm</think><answer> Paris </answer>")
    'Paris'
    >>> extract_answer("<answer>unclosed") is None
    True
    """
    spans = _ANSWER_SPAN.findall(response)
    if not spans:
        return None
    return spans[-1].strip()


def count_answer_spans(response: str) -> int:
    """How many closed ``<answer>…</answer>`` spans a response holds (more than one is malformed).

    >>> count_answer_spans("<answer>a</answer><answer>b</answer>")
    2
    """
    return len(_ANSWER_SPAN.findall(response))


def answer_reward(response: str, golden_answers: Sequence[str], metric: str = "f1") -> float:
    """The RL reward of one response: F1 (or EM) of its extracted answer; 0 when malformed.

    A response with no answer span or with several is malformed and earns 0, as ZeroSearch does.

    Args:
        response: The policy's generated text.
        golden_answers: Every acceptable answer.
        metric: ``"f1"`` or ``"em"``.

    Returns:
        The reward in [0, 1].

    >>> answer_reward("<answer>Paris</answer>", ["Paris"], metric="em")
    1.0
    >>> answer_reward("<answer>Paris</answer><answer>Rome</answer>", ["Paris"])
    0.0
    """
    if count_answer_spans(response) != 1:
        return 0.0
    prediction = extract_answer(response)
    match metric:
        case "f1":
            return f1_score(prediction, golden_answers)
        case "em":
            return exact_match(prediction, golden_answers)
        case _:
            raise ValueError(f"Unknown reward metric {metric!r}; use 'f1' or 'em'.")
