"""Stage ``build_simulator_sft``: label real-search interactions useful or noisy and build balanced SFT data.

Each interaction's documents are labelled (``simulator.labeller``: golden-answer containment, or an LLM judge).
Questions are split into train and held-out (``simulator.heldout_fraction``, seeded). The train split is balanced
(``simulator.balance``) by keeping a seeded sample of the larger class the size of the smaller one, or by repeating
the smaller class up to the larger one's size; the dropped or repeated count is reported, not hidden.
Each row is a chat prompt (query, question, answers, type, count, length) and the real documents as the target.
Great Expectations checks balance, empty targets, golden-answer leakage into noisy targets and length bounds; a
failure fails the stage and writes no data. Run: ``python -m zerosearch_core.cli build_simulator_sft``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.errors import DataValidationError
from zerosearch_core.search.base import Document
from zerosearch_core.seeding import derive_seed
from zerosearch_core.simulator import (
    DocType,
    contains_answer,
    label_by_containment,
    parse_judge_reply,
    render_documents_target,
    render_judge_prompt,
    render_simulator_prompt,
)
from zerosearch_core.stages import StageResult
from zerosearch_core.validation import validate_simulator_sft

TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"

T = TypeVar("T")


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


def label_interactions(cfg: PipelineConfig, interactions: list[dict[str, Any]]) -> tuple[list[DocType], int]:
    """A label per interaction, and how many the judge left undecided (labelled by containment instead)."""
    if cfg.simulator.labeller == "containment":
        return [label_by_containment(documents_of(i), i["golden_answers"]) for i in interactions], 0
    from zerosearch_core.models import load_causal_lm, load_tokenizer
    from zerosearch_core.search.simulated import LocalLLM

    assert cfg.simulator.judge_model is not None  # checked by SimulatorConfig
    judge = LocalLLM(
        load_causal_lm(cfg.simulator.judge_model, cfg.model.dtype), load_tokenizer(cfg.simulator.judge_model)
    )
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


def sft_row(cfg: PipelineConfig, interaction: dict[str, Any], doc_type: str, index: int) -> dict[str, Any]:
    """One chat-format SFT example with the fields its validation needs."""
    documents = documents_of(interaction)
    prompt = render_simulator_prompt(
        interaction["query"],
        interaction["question"],
        interaction["golden_answers"],
        doc_type,  # type: ignore[arg-type]
        len(documents),
        cfg.simulator.doc_words,
    )
    completion = render_documents_target(documents, cfg.simulator.doc_words)
    return {
        "id": f"{interaction['id']}#{index}",
        "question_id": interaction["id"],
        "doc_type": doc_type,
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
        "noisy_leaks_answer": doc_type == "noisy" and contains_answer(documents, interaction["golden_answers"]),
        "documents": len(documents),
        "max_doc_words": max(min(len(d.text.split()), cfg.simulator.doc_words) for d in documents),
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


def run(cfg: PipelineConfig) -> StageResult:
    """Label, split, balance, validate and write the SFT data."""
    interactions = read_interactions(Path(cfg.paths.trajectories))
    labels, undecided = label_interactions(cfg, interactions)
    question_ids = sorted({i["id"] for i in interactions})
    rng = random.Random(derive_seed(cfg.seed, "simulator_split"))
    heldout_ids = set(rng.sample(question_ids, max(1, round(len(question_ids) * cfg.simulator.heldout_fraction))))
    train = [(i, label) for i, label in zip(interactions, labels, strict=True) if i["id"] not in heldout_ids]
    heldout = [{**i, "label": label} for i, label in zip(interactions, labels, strict=True) if i["id"] in heldout_ids]
    by_label = {kind: [pair for pair in train if pair[1] == kind] for kind in ("useful", "noisy")}
    balanced = balance_classes(by_label, cfg.simulator.balance, rng)
    distinct = len({id(pair) for pair in balanced})  # a repeated row is the same (interaction, label) object
    rows = [sft_row(cfg, interaction, label, n) for n, (interaction, label) in enumerate(balanced)]
    frame = pd.DataFrame(
        rows,
        columns=[
            "id",
            "question_id",
            "doc_type",
            "prompt",
            "completion",
            "noisy_leaks_answer",
            "documents",
            "max_doc_words",
        ],
    )
    report_dir = Path(cfg.paths.simulator_sft_dir + "_report")
    checked = frame.assign(completion=frame["completion"].map(lambda m: m[0]["content"] if m else ""))
    outcome = validate_simulator_sft(
        checked, cfg.search.top_k, cfg.simulator.doc_words, cfg.simulator.balance_tolerance, report_dir
    )
    if not outcome.success:
        raise DataValidationError(outcome.summary(), report_dir)
    counts = Counter(labels)

    def write(folder: Path) -> None:
        frame.to_json(folder / TRAIN_FILE, orient="records", lines=True, force_ascii=False)
        (folder / HELDOUT_FILE).write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in heldout))

    write_dir_atomically(Path(cfg.paths.simulator_sft_dir), write)
    metrics = {
        "interactions": float(len(interactions)),
        "labelled_useful": float(counts["useful"]),
        "labelled_noisy": float(counts["noisy"]),
        "judge_undecided": float(undecided),
        "train_rows": float(len(frame)),
        "dropped_for_balance": float(len(train) - distinct),
        "repeated_for_balance": float(len(balanced) - distinct),
        "heldout_interactions": float(len(heldout)),
    }
    return StageResult(metrics=metrics, artifacts=(report_dir,))
