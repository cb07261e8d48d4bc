"""QA metrics and rewards, exactly as the field scores open-domain QA.

SQuAD-style answer normalisation (lower-case, drop ASCII punctuation, drop the articles a/an/the, fold white space),
then three metrics against the golden answers (the best over them):

- ``em``: strict exact match (SQuAD, the NQ-open official scorer, Search-R1's tables);
- ``cover_em``: a normalised golden answer contained in the normalised prediction (ZeroSearch's ``em_check``, which
  its tables report as "EM"; FlashRAG's ``acc``; Search-R1's ``subem``);
- ``f1``: token F1, with HotpotQA's rule that yes/no/noanswer only match themselves unless ``yes_no_exact`` is off
  (ZeroSearch's F1 reward gives partial credit there).

The answer of a response is its **last** ``<answer>…</answer>`` span, for the RL reward and for evaluation alike (as
ZeroSearch and Search-R1 do), so a reward is the same number evaluation reports for that response. Pure functions
only: no printing, no RNG.
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


def cover_exact_match(prediction: str | None, golden_answers: Sequence[str]) -> float:
    """1.0 when a normalised golden answer occurs in the normalised prediction, else 0.0 (a golden answer that
    normalises to nothing matches nothing).

    >>> cover_exact_match("It was Ross Bagdasarian, known as David Seville.", ["David Seville"])
    1.0
    >>> cover_exact_match("Seville", ["David Seville"]), cover_exact_match(None, ["x"])
    (0.0, 0.0)
    """
    if prediction is None:
        return 0.0
    normalized = normalize_answer(prediction)
    return float(any(gold and gold in normalized for gold in (normalize_answer(g) for g in golden_answers)))


def f1_score(prediction: str | None, golden_answers: Sequence[str], yes_no_exact: bool = True) -> float:
    """Token-level F1 of the prediction against the best-matching golden answer.

    Args:
        prediction: The extracted answer; None scores 0.
        golden_answers: Every acceptable answer.
        yes_no_exact: HotpotQA's rule: a yes/no/noanswer prediction or golden answer scores 1 on an exact match and
            0 otherwise (no partial credit for "yes, he did").

    Returns:
        The highest F1 over the golden answers, in [0, 1].

    >>> round(f1_score("Barack Obama", ["Obama"]), 3)
    0.667
    >>> f1_score("yes", ["no"]), f1_score("yes he did", ["yes"]), round(f1_score("yes he did", ["yes"], False), 3)
    (0.0, 0.0, 0.5)
    """
    if prediction is None or not golden_answers:
        return 0.0
    return max(_f1_single(prediction, gold, yes_no_exact) for gold in golden_answers)


def _f1_single(prediction: str, gold: str, yes_no_exact: bool) -> float:
    pred_norm, gold_norm = normalize_answer(prediction), normalize_answer(gold)
    if yes_no_exact and (pred_norm in _SPECIAL_F1_ANSWERS or gold_norm in _SPECIAL_F1_ANSWERS):
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


METRICS: tuple[str, ...] = ("em", "cover_em", "f1")
"""Every metric evaluation reports, and the choices of ``reward.metric``."""


def answer_metrics(
    prediction: str | None, golden_answers: Sequence[str], yes_no_exact: bool = True
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one extracted answer.

    >>> answer_metrics("the Fab Four (the Beatles)", ["Beatles"])
    {'em': 0.0, 'cover_em': 1.0, 'f1': 0.5}
    """
    return {
        "em": exact_match(prediction, golden_answers),
        "cover_em": cover_exact_match(prediction, golden_answers),
        "f1": f1_score(prediction, golden_answers, yes_no_exact),
    }


def searched_bridge(queries: Sequence[str], bridge: str | None) -> bool:
    """Whether a search after the first names ``bridge`` (case-insensitive): the multi-hop question's second search
    went for the right entity. The first search does not count (the bridge may be in the question).

    >>> searched_bridge(["mentor of Alira", "Which city is Doran Kelby from?"], "doran kelby")
    True
    >>> searched_bridge(["Doran Kelby"], "Doran Kelby"), searched_bridge(["a", "b"], None)
    (False, False)
    """
    return bool(bridge) and any(str(bridge).lower() in str(query).lower() for query in list(queries)[1:])


def bridge_search_bonus(queries: Sequence[str], bridge: str | None, weight: float) -> float:
    """``weight`` when a search after the first names ``bridge`` (case-insensitive), else 0: the process term of
    ``reward.bridge_bonus`` for multi-hop questions (``bridge`` None or empty for the others).

    >>> bridge_search_bonus(["mentor of Alira Venhold", "Which city is Doran Kelby from?"], "Doran Kelby", 0.2)
    0.2
    >>> bridge_search_bonus(["Doran Kelby"], "Doran Kelby", 0.2), bridge_search_bonus(["a", "b"], None, 0.2)
    (0.0, 0.0)
    """
    return weight if weight != 0 and searched_bridge(queries, bridge) else 0.0


def answer_reward(response: str, golden_answers: Sequence[str], metric: str = "f1", yes_no_exact: bool = True) -> float:
    """The RL reward of one response: ``metric`` of its extracted (last) answer, the very number evaluation reports
    for it; 0 without an answer span. A response with several spans is scored on its last one (and counted as
    malformed in the rollout metrics).

    Args:
        response: The policy's generated text.
        golden_answers: Every acceptable answer.
        metric: One of :data:`METRICS`.
        yes_no_exact: HotpotQA's yes/no rule for F1 (see :func:`f1_score`).

    Returns:
        The reward in [0, 1].

    >>> answer_reward("<answer>Paris</answer>", ["Paris"], metric="em")
    1.0
    >>> answer_reward("<answer>Rome</answer><answer>Paris</answer>", ["Paris"])
    1.0
    >>> answer_reward("no answer tag", ["Paris"])
    0.0
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown reward metric {metric!r}; use one of {METRICS}.")
    return answer_metrics(extract_answer(response), golden_answers, yes_no_exact)[metric]
