"""Simulator SFT data: real-search interactions labelled useful or noisy, split and balanced.

Each interaction's documents are labelled (``simulator.labeller``): golden-answer containment, an LLM judge, or the
paper's *outcome* rule (useful when the episode that searched ended with an answer whose reward reaches
``simulator.outcome_threshold``). How often the labeller agrees with containment is reported. A noisy-labelled target
that contains a golden answer would teach the simulator to leak it, so it is left out of the noisy class and counted.
With ``simulator.noisy_source: lower_ranked`` each useful-labelled query also yields a noisy target from the same real
search: its highest-ranked results within ``simulator.noisy_pool`` that contain no golden answer (real documents, in
rank order; a query with fewer than its document count of such results yields none, counted).
Questions are split into train and held-out (``simulator.heldout_fraction``, seeded). The train split is balanced
(``simulator.balance``) by keeping a seeded sample of the larger class the size of the smaller one, or by repeating
the smaller class up to the larger one's size; the dropped or repeated count is reported, not hidden.
Each row is a chat prompt (query, question, answers, type, count, length) and the real documents as the target.
Stage: ``build_simulator_sft``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from zerosearch_core.config import SimulatorConfig
from zerosearch_core.search.base import Document
from zerosearch_core.seeding import derive_seed
from zerosearch_core.simulator.prompts import (
    DocType,
    contains_answer,
    label_by_containment,
    parse_judge_reply,
    render_documents_target,
    render_judge_prompt,
    render_simulator_prompt,
)

TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"

T = TypeVar("T")

SFT_COLUMNS: tuple[str, ...] = (
    "id",
    "question_id",
    "doc_type",
    "prompt",
    "completion",
    "noisy_leaks_answer",
    "documents",
    "max_doc_words",
)


def read_interactions(path: Path) -> list[dict[str, Any]]:
    """The collected interactions; a missing file names the stage that writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro collect_trajectories` first.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def documents_of(interaction: dict[str, Any]) -> list[Document]:
    """The interaction's documents as :class:`Document` values."""
    return [
        Document(str(d["id"]), str(d["title"]), str(d["text"]), float(d["score"])) for d in interaction["documents"]
    ]


def label_interactions(
    sim: SimulatorConfig, dtype: str, interactions: list[dict[str, Any]]
) -> tuple[list[DocType], int]:
    """A label per interaction, and how many the judge left undecided (labelled by containment instead)."""
    if sim.labeller == "containment":
        return [label_by_containment(documents_of(i), i["golden_answers"]) for i in interactions], 0
    if sim.labeller == "outcome":
        return [label_by_outcome(i, sim.outcome_threshold) for i in interactions], 0
    from zerosearch_core.models.build import load_causal_lm, load_tokenizer
    from zerosearch_core.simulator.llm import LocalLLM

    assert sim.judge_model is not None  # checked by SimulatorConfig
    judge = LocalLLM(load_causal_lm(sim.judge_model, dtype), load_tokenizer(sim.judge_model))
    labels: list[DocType] = []
    undecided = 0
    for interaction in interactions:
        prompt = render_judge_prompt(interaction["question"], interaction["golden_answers"], documents_of(interaction))
        verdict = parse_judge_reply(judge.complete([prompt], 4, 0.0, 0)[0])
        if verdict is None:
            undecided += 1
            verdict = label_by_containment(documents_of(interaction), interaction["golden_answers"])
        labels.append(verdict)
    return labels, undecided


def label_by_outcome(interaction: dict[str, Any], threshold: float) -> DocType:
    """The paper's labeller: ``useful`` when the interaction's episode ended with a reward of at least ``threshold``.

    >>> label_by_outcome({"id": "q", "reward": 1.0}, 1.0), label_by_outcome({"id": "q", "reward": 0.4}, 1.0)
    ('useful', 'noisy')
    """
    if "reward" not in interaction:
        raise ValueError(
            f"Interaction {interaction['id']!r} carries no episode reward, which simulator.labeller: outcome needs; "
            "collect with simulator.query_source: policy (`dvc repro collect_trajectories`) or use labeller: "
            "containment."
        )
    return "useful" if float(interaction["reward"]) >= threshold else "noisy"


def lower_ranked_noisy(interaction: dict[str, Any]) -> dict[str, Any] | None:
    """A noisy interaction derived from the same real search: its highest-ranked results (shown and lower-ranked)
    that contain no golden answer, as many as the interaction shows; None when there are fewer such results.

    >>> doc = lambda i, text: {"id": i, "title": "", "text": text, "score": 0.0}
    >>> item = {"id": "q", "golden_answers": ["Paris"], "documents": [doc("1", "Paris"), doc("2", "Rome")],
    ...         "lower_ranked": [doc("3", "Paris again"), doc("4", "Oslo")]}
    >>> [d["id"] for d in lower_ranked_noisy(item)["documents"]]
    ['2', '4']
    """
    shown = interaction["documents"]
    pool = [*shown, *interaction.get("lower_ranked", [])]
    clean = [
        d
        for d, doc in zip(pool, documents_of({"documents": pool}), strict=True)
        if not contains_answer([doc], interaction["golden_answers"])
    ]
    if len(clean) < len(shown):
        return None
    return {**interaction, "documents": clean[: len(shown)], "lower_ranked": [], "derived": "lower_ranked"}


def sft_row(
    interaction: dict[str, Any], doc_type: str, index: int, doc_words: int, answer_aware: bool = True
) -> dict[str, Any]:
    """One chat-format SFT example with the fields its validation needs."""
    documents = documents_of(interaction)
    prompt = render_simulator_prompt(
        interaction["query"],
        interaction["question"],
        interaction["golden_answers"],
        doc_type,  # type: ignore[arg-type]
        len(documents),
        doc_words,
        answer_aware,
    )
    completion = render_documents_target(documents, doc_words)
    return {
        "id": f"{interaction['id']}#{index}",
        "question_id": interaction["id"],
        "doc_type": doc_type,
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
        "noisy_leaks_answer": doc_type == "noisy" and contains_answer(documents, interaction["golden_answers"]),
        "documents": len(documents),
        "max_doc_words": max(min(len(d.text.split()), doc_words) for d in documents),
    }


def balance_classes(by_class: dict[str, list[T]], how: str, rng: random.Random) -> list[T]:
    """The items of every class, evened out to the same count per class, in class order.

    ``downsample``: a seeded sample of each class the size of the smallest. ``oversample``: every item of every
    class, the smaller classes repeated up to the largest one's size (whole copies, then a seeded sample for the
    remainder). An empty class stays empty either way; the balance check then reports it.

    >>> balance_classes({"a": [1, 2, 3], "b": [4]}, "oversample", random.Random(0))
    [1, 2, 3, 4, 4, 4]
    >>> len(balance_classes({"a": [1, 2, 3], "b": [4]}, "downsample", random.Random(0)))
    2
    """
    if how == "downsample":
        keep = min(len(items) for items in by_class.values())
        return [item for items in by_class.values() for item in rng.sample(items, keep)]
    if how != "oversample":
        raise ValueError(f"Unknown balance {how!r}; use 'downsample' or 'oversample'.")
    target = max(len(items) for items in by_class.values())
    out: list[T] = []
    for items in by_class.values():
        if items:
            copies, remainder = divmod(target, len(items))
            out.extend(items * copies + rng.sample(items, remainder))
    return out


@dataclass(frozen=True)
class SFTData:
    """Balanced SFT rows, the held-out interactions with their labels, and the counts behind them."""

    frame: pd.DataFrame
    heldout: list[dict[str, Any]]
    metrics: dict[str, float]


def build_sft_data(interactions: list[dict[str, Any]], sim: SimulatorConfig, dtype: str, seed: int) -> SFTData:
    """Label the interactions, split their questions into train and held-out, and balance the train split.

    Args:
        interactions: The collected real-search interactions.
        sim: The ``simulator`` section (labeller, split, balance, document length).
        dtype: Weight dtype of an LLM judge.
        seed: The root seed (the split and the balancing draw derive from it).
    """
    labels, undecided = label_interactions(sim, dtype, interactions)
    contained = [contains_answer(documents_of(i), i["golden_answers"]) for i in interactions]
    question_ids = sorted({i["id"] for i in interactions})
    rng = random.Random(derive_seed(seed, "simulator_split"))
    heldout_ids = set(rng.sample(question_ids, max(1, round(len(question_ids) * sim.heldout_fraction))))
    train: list[tuple[dict[str, Any], DocType]] = []
    leaking = derived = short = 0
    for interaction, label, leaks in zip(interactions, labels, contained, strict=True):
        if interaction["id"] in heldout_ids:
            continue
        if label == "noisy" and leaks:
            leaking += 1  # a noisy target that states the answer would teach the simulator to leak it
            continue
        train.append((interaction, label))
        if label == "useful" and sim.noisy_source == "lower_ranked":
            noisy = lower_ranked_noisy(interaction)
            if noisy is None:
                short += 1
            else:
                derived += 1
                train.append((noisy, "noisy"))
    heldout = [{**i, "label": label} for i, label in zip(interactions, labels, strict=True) if i["id"] in heldout_ids]
    by_label = {kind: [pair for pair in train if pair[1] == kind] for kind in ("useful", "noisy")}
    balanced = balance_classes(by_label, sim.balance, rng)
    distinct = len({id(pair) for pair in balanced})  # a repeated row is the same (interaction, label) object
    rows = [
        sft_row(interaction, label, n, sim.doc_words, sim.answer_aware)
        for n, (interaction, label) in enumerate(balanced)
    ]
    frame = pd.DataFrame(rows, columns=list(SFT_COLUMNS))
    counts = Counter(labels)
    agree = sum((label == "useful") == leaks for label, leaks in zip(labels, contained, strict=True))
    metrics = {
        "interactions": float(len(interactions)),
        "labelled_useful": float(counts["useful"]),
        "labelled_noisy": float(counts["noisy"]),
        "labeller_containment_agreement": agree / max(len(interactions), 1),
        "judge_undecided": float(undecided),
        "noisy_leaking_left_out": float(leaking),
        "derived_noisy": float(derived),
        "derived_noisy_too_few_results": float(short),
        "train_rows": float(len(frame)),
        "dropped_for_balance": float(len(train) - distinct),
        "repeated_for_balance": float(len(balanced) - distinct),
        "heldout_interactions": float(len(heldout)),
    }
    return SFTData(frame, heldout, metrics)
