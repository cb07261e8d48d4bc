"""The cold start's SFT trajectories: one protocol episode per training question, built with the real retriever, in
exactly the token layout the agent loop produces (loss on sampled tokens only).

With ``cold_start.sft_search_share`` below 1, a seeded share per question form gives up at once instead
(``<answer> unknown </answer>``, no search), so the start searches only sometimes and RL has to learn that searching
pays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from transformers import PreTrainedTokenizerBase

from zerosearch_core.agent.prompts import build_prompt_ids, render_information_block
from zerosearch_core.config import RolloutConfig
from zerosearch_core.policy.cold_start.drills import encode_text, encode_texts, question_form
from zerosearch_core.search.base import EpisodeContext, SearchBackendError, SearchEngine, run_searches

NO_SEARCH_ANSWER = "unknown"
"""What the cold start's non-searching SFT trajectories answer (``cold_start.sft_search_share`` below 1)."""


@dataclass(frozen=True)
class SFTExample:
    """One protocol trajectory: token ids and the loss mask (1 on tokens the policy should learn to write)."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    searches: bool
    """Whether the trajectory searches before it answers."""


def form_search_shares(forms: Sequence[str], share: float, spread: float, seed: int) -> dict[str, float]:
    """A search share per question form, spread evenly over ``share ± spread`` (clipped to [0, 1]) in a seeded
    order, so the start searches some kinds of question more often than others; every form gets ``share`` when
    ``spread`` is 0 or there is one form.

    >>> form_search_shares(["b", "a", "c"], 0.5, 0.3, seed=0) == {"a": 0.2, "b": 0.8, "c": 0.5}
    True
    """
    ordered = sorted(set(forms))
    random.Random(seed).shuffle(ordered)
    if len(ordered) == 1 or spread == 0:
        return {form: share for form in ordered}
    step = 2 * spread / (len(ordered) - 1)
    return {form: round(min(1.0, max(0.0, share - spread + i * step)), 6) for i, form in enumerate(ordered)}


def build_sft_examples(
    questions: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
    search_share: float = 1.0,
    seed: int = 0,
    form_shares: dict[str, float] | None = None,
    learn_search_choice: bool = True,
    multi_hop_share: float = 0.0,
) -> list[SFTExample]:
    """One trajectory per question: search the question with the real engine, then answer with the first golden
    answer; or, for a seeded ``1 - search_share`` of the questions, give up at once (:data:`NO_SEARCH_ANSWER`).

    A multi-hop question (a ``decomposition`` of two or more queries) that searches searches every hop in a seeded
    ``multi_hop_share`` of cases: the question, then each later query of its decomposition (the bridge entity's
    question, written from what the first search returned), then the answer. In the other cases it searches once
    and gives up, so the start searches again only sometimes and RL has room to learn that it pays.

    Args:
        questions: Normalised benchmark rows (``question``, ``golden_answers``, ``id``).
        tokenizer: The policy's tokenizer.
        engine: The real search engine.
        rollout: Prompt and document formatting (chat template, ``max_doc_chars``).
        top_k: Documents per search.
        search_share: Share of the trajectories that search (rounded to a whole number of questions).
        seed: Picks which questions search.
        form_shares: A share per :func:`question_form` (:func:`form_search_shares`) that replaces
            ``search_share`` within each form; a form it lacks gets ``search_share``.
        learn_search_choice: Whether the choice to search, the ``<search>`` tag (the first token the policy
            writes), is learned. False makes reading lessons: the query (the question copied) and the answer after
            the retrieved block are learned, the choice to search is not.
        multi_hop_share: Share of the searching multi-hop questions that search every hop (the rest search once
            and give up). Rows without a ``decomposition`` column, or with fewer than two queries, are single-hop.
    """
    rng = random.Random(seed)
    if form_shares is None:
        searching = set(rng.sample(range(len(questions)), round(search_share * len(questions))))
    else:
        by_form: dict[str, list[int]] = {}
        for position, question in enumerate(questions["question"].tolist()):
            by_form.setdefault(question_form(str(question)), []).append(position)
        searching = set()
        for form in sorted(by_form):
            positions = by_form[form]
            searching |= set(rng.sample(positions, round(form_shares.get(form, search_share) * len(positions))))
    rows = list(questions.itertuples(index=False))
    answers_of = [[a for a in row.golden_answers if str(a).strip()] for row in rows]
    for row, answers in zip(rows, answers_of, strict=True):
        if not answers:
            raise ValueError(f"Question {row.id} has no golden answer; validation should have rejected it.")
    decompositions = _decompositions(questions)
    multi_hop = sorted(p for p in searching if len(decompositions[p]) >= 2)
    every_hop = set(rng.sample(multi_hop, round(multi_hop_share * len(multi_hop)))) if multi_hop else set()
    hop_queries = {
        p: [str(rows[p].question), *decompositions[p][1:]] if p in every_hop else [str(rows[p].question)]
        for p in sorted(searching)
    }
    requests = [(query, answers_of[p]) for p, queries in hop_queries.items() for query in queries]
    found = iter(search_calls(tokenizer, engine, rollout, top_k, requests))
    calls = {p: [next(found) for _ in queries] for p, queries in hop_queries.items()}
    give_up = encode_text(tokenizer, f"<answer> {NO_SEARCH_ANSWER} </answer>")
    examples = []
    for position, (row, answers) in enumerate(zip(rows, answers_of, strict=True)):
        prompt = build_prompt_ids(tokenizer, str(row.question), "search", rollout.use_chat_template)
        if position not in searching:
            examples.append(SFTExample(tuple(prompt + give_up), tuple([0] * len(prompt) + [1] * len(give_up)), False))
            continue
        gives_up = position in multi_hop and position not in every_hop
        answer = give_up if gives_up else encode_text(tokenizer, f"<answer> {answers[0]} </answer>")
        ids, mask = list(prompt), [0] * len(prompt)
        for hop, (search, information) in enumerate(calls[position]):
            learn_tag = int(learn_search_choice or hop > 0)
            ids += search + information
            mask += [learn_tag] + [1] * (len(search) - 1) + [0] * len(information)
        examples.append(SFTExample(tuple(ids + answer), tuple(mask + [1] * len(answer)), True))
    return examples


def _decompositions(questions: pd.DataFrame) -> list[list[str]]:
    """Each row's search query per hop (empty where the benchmark gives none)."""
    if "decomposition" not in questions.columns:
        return [[] for _ in range(len(questions))]
    return [[str(q) for q in queries] for queries in questions["decomposition"].tolist()]


def search_calls(
    tokenizer: PreTrainedTokenizerBase,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
    questions: Sequence[tuple[str, Sequence[str]]],
) -> list[tuple[list[int], list[int]]]:
    """For each ``(question, answers)``, the ids of ``<search> question </search>`` and of the block the real engine
    returns for it, as the rollout lays them out; the searches go to the engine together (one retrieval call for
    the in-process index).

    Raises:
        SearchBackendError: A search failed.
    """
    requests = [
        (engine.open_session(EpisodeContext(question, tuple(answers), 0.0, 0)), question)
        for question, answers in questions
    ]
    outcomes = run_searches(requests, top_k) if requests else []
    blocks = []
    for outcome in outcomes:
        if isinstance(outcome, SearchBackendError):
            raise outcome
        blocks.append(render_information_block(outcome.documents, rollout.max_doc_chars))
    searches = [f"<search> {question} </search>" for question, _ in questions]
    encoded = encode_texts(tokenizer, searches + blocks)
    return list(zip(encoded[: len(searches)], encoded[len(searches) :], strict=True))
