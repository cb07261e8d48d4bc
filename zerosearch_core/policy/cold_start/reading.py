"""Reading checks of the cold start: how often greedy continuations state the answer a passage or a retrieved block
holds, overall and per question form.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.config import RolloutConfig
from zerosearch_core.policy.cold_start.drills import Drill, drill_form, encode_text, question_form
from zerosearch_core.policy.cold_start.sft_data import search_calls
from zerosearch_core.search.base import SearchEngine


def greedy_continuations(
    model: PreTrainedModel, contexts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int
) -> list[list[int]]:
    """The greedy continuation of every context (ids), batched with left padding so all continue at one column."""
    width = max(len(ids) for ids in contexts)
    input_ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, ids in enumerate(contexts):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]  # transformers types generate loosely
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return [out[row, width:].tolist() for row in range(len(contexts))]


def reading_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
    batch_size: int = 32,
    max_new_tokens: int = 16,
) -> float:
    """EM of ``model`` made to search: each question is searched with ``engine`` (its text as the query), the
    retrieved block inserted as the rollout does it, and the model's greedy continuation scored by its
    ``<answer>`` span. This measures reading alone, whatever the model would have chosen to do first.
    """
    scores = reading_scores(model, tokenizer, questions, engine, rollout, top_k, batch_size, max_new_tokens)
    return sum(scores) / len(scores) if scores else 0.0


def reading_by_form(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
) -> dict[str, float]:
    """:func:`reading_accuracy` per :func:`question_form` of ``questions``: a start that never reads one kind of
    question shows here, where the overall figure drops only by that kind's share."""
    scores = reading_scores(model, tokenizer, questions, engine, rollout, top_k)
    return mean_by_form(questions["question"].tolist(), scores)


def mean_by_form(questions: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """The mean of ``scores`` per :func:`question_form` of the ``questions`` they score, forms sorted.

    >>> mean_by_form(["Where is Ana?", "Where is Bo?", "Who is Cy?"], [1.0, 0.0, 1.0])
    {'Where is …?': 0.5, 'Who is …?': 1.0}
    """
    by_form: dict[str, list[float]] = {}
    for question, score in zip(questions, scores, strict=True):
        by_form.setdefault(question_form(str(question)), []).append(score)
    return {form: sum(values) / len(values) for form, values in sorted(by_form.items())}


def reading_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
    batch_size: int = 32,
    max_new_tokens: int = 16,
) -> list[float]:
    """The EM of each question of :func:`reading_accuracy`, in order."""
    from zerosearch_core.agent.rewards import answer_metrics, extract_answer

    rows = list(questions.itertuples(index=False))
    calls = search_calls(
        tokenizer, engine, rollout, top_k, [(str(row.question), [str(a) for a in row.golden_answers]) for row in rows]
    )
    contexts: list[list[int]] = []
    for row, (search, information) in zip(rows, calls, strict=True):
        prompt = build_prompt_ids(tokenizer, str(row.question), "search", rollout.use_chat_template)
        contexts.append(prompt + search + information)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    scores: list[float] = []
    was_training = model.training
    model.eval()
    golden = questions["golden_answers"].tolist()
    for start in range(0, len(contexts), batch_size):
        continued = greedy_continuations(model, contexts[start : start + batch_size], pad_id, max_new_tokens)
        for row, ids in enumerate(continued):
            text = str(tokenizer.decode(ids))  # the tags are special tokens: keep them
            answers = [str(a) for a in golden[start + row]]
            scores.append(answer_metrics(extract_answer(text), answers)["em"])
    model.train(was_training)
    return scores


def drill_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, drills: Sequence[Drill], batch_size: int = 50
) -> float:
    """Share of ``drills`` whose greedy continuation of the prefix is the answer, token for token (the answer
    encoded as pre-training learns it, after a space)."""
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    correct = 0
    for start in range(0, len(drills), batch_size):
        batch = drills[start : start + batch_size]
        answers = [encode_text(tokenizer, " " + d.answer) for d in batch]
        contexts = [encode_text(tokenizer, d.prefix) for d in batch]
        continued = greedy_continuations(model, contexts, pad_id, max(len(a) for a in answers))
        correct += sum(ids[: len(answer)] == answer for ids, answer in zip(continued, answers, strict=True))
    return correct / len(drills) if drills else 0.0


def drill_accuracy_by_form(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, drills: Sequence[Drill]
) -> dict[str, float]:
    """:func:`drill_accuracy` per :func:`drill_form`: each kind of question comes to be read at its own step."""
    by_form: dict[str, list[Drill]] = {}
    for drill in drills:
        by_form.setdefault(drill_form(drill), []).append(drill)
    return {form: drill_accuracy(model, tokenizer, group) for form, group in sorted(by_form.items())}
