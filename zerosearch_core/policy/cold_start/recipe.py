"""The cold start's recipe, as ``init_policy`` runs it: the texts the tokenizer is trained on, and the steps that take a
tiny model from random weights to a policy that can emit the search protocol.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.agent.loop import SearchProtocol
from zerosearch_core.agent.prompts import PROMPT_TEXTS
from zerosearch_core.config import ColdStartConfig, ModelConfig, RolloutConfig, SearchConfig
from zerosearch_core.evaluation.benchmarks import evaluate_benchmark
from zerosearch_core.models.build import build_tiny_policy, load_causal_lm, load_tokenizer, parameter_count, save_policy
from zerosearch_core.models.generation import PolicyBackend
from zerosearch_core.policy.cold_start.drills import (
    Drill,
    ReadingLessons,
    add_distractors,
    question_form,
    read_drills,
    read_pretrain_texts,
    read_reading_lessons,
    split_heldout_drills,
)
from zerosearch_core.policy.cold_start.reading import mean_by_form, reading_by_form, reading_scores
from zerosearch_core.policy.cold_start.report import by_form_text, plot_cold_start
from zerosearch_core.policy.cold_start.sft_data import SFTExample, build_sft_examples, form_search_shares
from zerosearch_core.policy.cold_start.training import StepCallback, run_cold_start
from zerosearch_core.search.base import SearchErrorBudget
from zerosearch_core.search.local import BM25Retriever, LocalSearchEngine
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.simulator.prompts import SIMULATOR_TEXTS

logger = logging.getLogger(__name__)

FIXED_TEXT_WEIGHT = 20
"""How many times the tokenizer sees each fixed prompt text (they recur in every example)."""


TOKENIZER_EXTRA_TEXTS = 2000
"""How many of ``cold_start.pretrain_texts`` the tiny tokenizer is trained on (the first ones; they repeat a few
templates, so more adds nothing)."""


def tokenizer_texts(corpus_texts: Sequence[str], questions: Sequence[str], extra_texts: Sequence[str]) -> list[str]:
    """What a tiny tokenizer is trained on: the corpus, the fixed texts of the protocol and of the simulator (which
    starts from this model) weighted as if frequent, the SFT questions (so prompts stay short), and the first
    :data:`TOKENIZER_EXTRA_TEXTS` extra pre-training texts.

    >>> texts = tokenizer_texts(["a passage"], ["a question?"], ["drill"] * 3000)
    >>> texts[0], texts.count("a question?"), texts.count("drill")
    ('a passage', 1, 2000)
    """
    fixed_texts = list(PROMPT_TEXTS + SIMULATOR_TEXTS) * FIXED_TEXT_WEIGHT
    return [*corpus_texts, *fixed_texts, *questions, *extra_texts[:TOKENIZER_EXTRA_TEXTS]]


@dataclass(frozen=True)
class ColdStartSetup:
    """What the cold start reads: its sections of the config and the inputs the stage loaded."""

    model: ModelConfig
    cold_start: ColdStartConfig
    rollout: RolloutConfig
    search: SearchConfig
    seed: int
    index_dir: Path
    corpus_texts: list[str]
    """The corpus passages (title and text), empty when neither the tokenizer nor pre-training needs them."""
    sft_questions: pd.DataFrame
    """The seeded sample of training questions the SFT trajectories are built from (empty when SFT is off)."""


@dataclass
class ColdStart:
    """A warmed-up policy and what the stage reports and saves of it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: dict[str, float]
    curves: dict[str, list[float]]
    examples: list[SFTExample]


@dataclass
class _Drills:
    extra_texts: list[str] = field(default_factory=list)
    heldout: list[Drill] = field(default_factory=list)
    answer: list[Drill] = field(default_factory=list)


def run_recipe(setup: ColdStartSetup, log_step: Callable[[dict[str, float], int], None] | None) -> ColdStart:
    """Build or load the policy, then run the configured cold start: drills, SFT trajectories, reading checks.

    Args:
        setup: The sections and inputs the cold start reads.
        log_step: Called with ``({metric: value}, step)`` for every training and reading-check step.

    Returns:
        The trained model and tokenizer, the stage's metrics, the training curves and the SFT examples.
    """
    cold = setup.cold_start
    drills = _read_drills(cold, setup.seed)
    model, tokenizer = _start_model(setup, drills.extra_texts)
    metrics = {"parameters": float(parameter_count(model)), "vocab_size": float(len(tokenizer))}
    if drills.extra_texts:
        metrics["cold_start.pretrain_texts"] = float(len(drills.extra_texts))
    lessons, lesson_engine = open_reading_lessons(cold, setup.seed)
    examples, lesson_examples = _sft_examples(setup, tokenizer, lessons, lesson_engine, metrics)
    sft_reading, lesson_reading = _reading_bars(setup, model, tokenizer, lessons, lesson_engine)
    curves = run_cold_start(
        model,
        tokenizer,
        cold,
        setup.corpus_texts,
        examples,
        derive_seed(setup.seed, "cold_start"),
        _step_logger(log_step),
        drills.extra_texts,
        drills.heldout,
        _reading_logger(log_step, lesson_reading is not None),
        drills.answer,
        sft_reading,
        lesson_examples,
        lesson_reading,
    )
    metrics.update(curve_metrics(curves, cold))
    if lessons is not None and lesson_engine is not None and len(lessons.heldout):
        metrics.update(_reading_check(setup, model, tokenizer, lessons, lesson_engine))
    return ColdStart(model, tokenizer, metrics, curves, examples)


def _read_drills(cold: ColdStartConfig, seed: int) -> _Drills:
    """The extra pre-training texts, the held-out drills of the reading bar and the drills trained on the answer."""
    drills = _Drills()
    if cold.pretrain_texts is None:
        return drills
    path = Path(cold.pretrain_texts)
    drills.extra_texts = read_pretrain_texts(path)
    if cold.pretrain_reading_bar > 0 or cold.pretrain_texts_loss == "answer":
        heldout = cold.pretrain_heldout if cold.pretrain_reading_bar > 0 else 0
        train_drills, drills.heldout = split_heldout_drills(read_drills(path), heldout, path)
        drills.extra_texts = drills.extra_texts[: len(train_drills)]
        question_first = cold.pretrain_drill_layout == "question_first"
        if cold.pretrain_distractors or question_first:
            train_drills = add_distractors(
                train_drills, cold.pretrain_distractors, derive_seed(seed, "drill_distractors"), question_first
            )
            if drills.heldout:  # none without a reading bar: nothing to mix
                drills.heldout = add_distractors(
                    drills.heldout,
                    cold.pretrain_distractors,
                    derive_seed(seed, "heldout_drill_distractors"),
                    question_first,
                )
        if cold.pretrain_texts_loss == "answer":
            drills.answer = train_drills
    return drills


def _start_model(setup: ColdStartSetup, extra_texts: list[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny model with a tokenizer trained on the cold start's texts, or the configured pretrained checkpoint."""
    if setup.model.source == "tiny":
        texts = tokenizer_texts(setup.corpus_texts, setup.sft_questions["question"].tolist(), extra_texts)
        return build_tiny_policy(setup.model, texts, seed=derive_seed(setup.seed, "init_policy"))
    assert setup.model.name_or_path is not None  # checked by ModelConfig
    return load_causal_lm(setup.model.name_or_path, setup.model.dtype), load_tokenizer(setup.model.name_or_path)


def _sft_examples(
    setup: ColdStartSetup,
    tokenizer: PreTrainedTokenizerBase,
    lessons: ReadingLessons | None,
    lesson_engine: LocalSearchEngine | None,
    metrics: dict[str, float],
) -> tuple[list[SFTExample], list[SFTExample]]:
    """The SFT trajectories of the world's questions (real search) and of the reading lessons; counts into metrics."""
    cold, questions = setup.cold_start, setup.sft_questions
    form_shares = None
    if cold.sft_search_spread > 0:  # one share per form of the world's questions
        form_shares = form_search_shares(
            [question_form(str(q)) for q in questions["question"].tolist()],
            cold.sft_search_share,
            cold.sft_search_spread,
            derive_seed(setup.seed, "cold_start_search_forms"),
        )
        for form, share in sorted(form_shares.items()):
            logger.info("Cold start searches %.0f%% of the SFT questions of the form %r", 100 * share, form)
    examples: list[SFTExample] = []
    lesson_examples: list[SFTExample] = []
    if len(questions):
        with open_search_engine(setup.search, setup.index_dir) as engine:
            examples = build_sft_examples(
                questions,
                tokenizer,
                engine,
                setup.rollout,
                setup.search.top_k,
                cold.sft_search_share,
                derive_seed(setup.seed, "cold_start_search"),
                form_shares,
                multi_hop_share=cold.sft_multi_hop_share,
            )
    if lessons is not None and lesson_engine is not None:
        # Every lesson searches; the query and the answer after the retrieved block are learned, the choice to
        # search (the <search> tag) is not: the lessons teach searching and reading, while whether to search is
        # learned from the world's questions alone (sft_search_share).
        lesson_examples = build_sft_examples(
            lessons.train,
            tokenizer,
            lesson_engine,
            setup.rollout,
            setup.search.top_k,
            1.0,
            0,
            learn_search_choice=False,
            multi_hop_share=1.0,  # a two-hop lesson (world.reading_two_hop) always searches its bridge
        )
        examples += lesson_examples
        metrics["cold_start.reading_examples"] = float(len(lessons.train))
    if examples:
        metrics["cold_start.sft_examples"] = float(len(examples))
        metrics["cold_start.sft_searching_examples"] = float(sum(e.searches for e in examples))
    return examples, lesson_examples


def _reading_bars(
    setup: ColdStartSetup,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lessons: ReadingLessons | None,
    lesson_engine: LocalSearchEngine | None,
) -> tuple[Callable[[], float] | None, Callable[[], float] | None]:
    """The SFT's reading check (held-out lessons, made to search) and the same check among the pre-training's drill
    checks, each the accuracy of the least-read question form; None where off."""
    cold = setup.cold_start
    if lessons is None or lesson_engine is None or not len(lessons.heldout):
        return None, None
    read_forms = functools.partial(
        reading_by_form, model, tokenizer, lessons.heldout, lesson_engine, setup.rollout, setup.search.top_k
    )

    def least_read_lesson_form() -> float:  # a start that never reads one kind of question fails
        by_form = read_forms()
        logger.info("Held-out lessons read when made to search, by form: %s", by_form_text(by_form))
        return min(by_form.values())

    sft_reading = least_read_lesson_form if cold.sft_reading_bar > 0 else None
    lesson_reading = least_read_lesson_form if cold.pretrain_lesson_every and cold.pretrain_reading_bar > 0 else None
    return sft_reading, lesson_reading


def _step_logger(log_step: Callable[[dict[str, float], int], None] | None) -> StepCallback:
    def on_step(phase: str, step: int, loss: float) -> None:
        if log_step is not None:
            log_step({f"cold_start.{phase}_loss": loss}, step)

    return on_step


def _reading_logger(
    log_step: Callable[[dict[str, float], int], None] | None, checks_lessons: bool
) -> Callable[[str, int, float], None]:
    def on_reading(phase: str, step: int, accuracy: float) -> None:
        if phase == "pretrain":
            checked = "drill and lesson" if checks_lessons else "drill"
            logger.info(
                "Pre-training step %d: held-out %s accuracy of the least-read form %.2f", step, checked, accuracy
            )
        else:
            logger.info(
                "SFT step %d: held-out lessons of the least-read form read when made to search %.2f", step, accuracy
            )
        if log_step is not None:
            log_step({f"cold_start.{phase}_reading_accuracy": accuracy}, step)

    return on_reading


def curve_metrics(curves: dict[str, list[float]], cold: ColdStartConfig) -> dict[str, float]:
    """The stage's metrics of the training curves, with a warning where a bar was not reached."""
    metrics: dict[str, float] = {}
    if curves["reading"]:
        metrics["cold_start.pretrain_steps_run"] = float(len(curves["pretrain"]))
        metrics["cold_start.pretrain_reading_accuracy"] = curves["reading"][-1]
        if curves["reading"][-1] < cold.pretrain_reading_bar:
            logger.warning(
                "Pre-training stopped at pretrain_max_steps=%d with held-out drill accuracy %.2f (least-read form), "
                "below the bar %.2f: this cold start may not read every form; raise cold_start.pretrain_max_steps.",
                cold.pretrain_max_steps,
                curves["reading"][-1],
                cold.pretrain_reading_bar,
            )
    if curves["sft_reading"]:
        metrics.update(_sft_attempt_metrics(curves, cold))
    for phase, losses in curves.items():
        if losses and phase in ("pretrain", "sft"):
            metrics[f"cold_start.{phase}_final_loss"] = losses[-1]
            logger.info("Cold start %s: %d steps, loss %.3f -> %.3f", phase, len(losses), losses[0], losses[-1])
    return metrics


def _sft_attempt_metrics(curves: dict[str, list[float]], cold: ColdStartConfig) -> dict[str, float]:
    kept = int(curves["sft_kept"][0])
    attempts = len(set(curves["sft_attempt"]))
    best = max(
        acc for acc, attempt in zip(curves["sft_reading"], curves["sft_attempt"], strict=True) if attempt == kept
    )
    if attempts > 1:
        logger.info(
            "SFT ran %d attempts (cold_start.sft_restarts=%d); kept attempt %d", attempts, cold.sft_restarts, kept + 1
        )
    if curves["sft_reading"][-1] < cold.sft_reading_bar and best < cold.sft_reading_bar:
        logger.warning(
            "SFT ended %d attempt(s) below the bar %.2f (best: %.2f of the least-read question form's held-out "
            "lessons read when made to search): this cold start does not read every kind of question (the "
            "reading check below names the forms). On the toy world a longer SFT did not mend such a start (a "
            "plateau); raise cold_start.sft_restarts for more fresh draws.",
            attempts,
            cold.sft_reading_bar,
            best,
        )
    return {
        "cold_start.sft_steps_run": float(len(curves["sft"])),
        "cold_start.sft_attempts_run": float(attempts),
        "cold_start.sft_kept_attempt": float(kept + 1),
    }


def open_reading_lessons(cold: ColdStartConfig, seed: int) -> tuple[ReadingLessons | None, LocalSearchEngine | None]:
    """The reading lessons and a BM25 engine over their own corpus (both None when ``cold_start.reading_corpus``
    is null)."""
    if cold.reading_corpus is None or cold.reading_questions is None:
        return None, None
    lessons = read_reading_lessons(
        Path(cold.reading_corpus),
        Path(cold.reading_questions),
        cold.reading_examples,
        cold.reading_heldout,
        derive_seed(seed, "reading_lessons"),
    )
    engine = LocalSearchEngine(BM25Retriever.build(lessons.passages), {"retriever": "bm25", "corpus": "lessons"})
    return lessons, engine


def _reading_check(
    setup: ColdStartSetup,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lessons: ReadingLessons,
    engine: LocalSearchEngine,
) -> dict[str, float]:
    """Greedy EM on the held-out lesson questions, searching the lessons' corpus: overall, the share of questions
    searched, and EM on the searched ones (reading itself; the start gives up on the rest by design); and EM made
    to search (:func:`reading_scores`), overall, per question form and of the least-read form."""
    generator = PolicyBackend(tokenizer).generator(model, 0.0, derive_seed(setup.seed, "reading_check"))
    run = evaluate_benchmark(
        "reading_heldout",
        lessons.heldout,
        "search",
        generator,
        tokenizer,
        engine,
        SearchProtocol.from_sections(setup.rollout, setup.search),
        derive_seed(setup.seed, "reading_check"),
        SearchErrorBudget(0.0),
    )
    logger.info(
        "Reading check on %d held-out lesson questions: searched %.0f%%, EM when searching %.2f",
        len(run.predictions),
        100 * run.metrics["search_rate"],
        run.metrics["em_when_searching"],
    )
    scores = reading_scores(model, tokenizer, lessons.heldout, engine, setup.rollout, setup.search.top_k)
    by_form = mean_by_form(lessons.heldout["question"].tolist(), scores)
    made_to_search = sum(scores) / len(scores)
    logger.info("Reading check, made to search: EM %.2f", made_to_search)
    for form, em in by_form.items():
        logger.info("Reading check, made to search, form %r: EM %.2f", form, em)
    metrics = {f"cold_start.reading_{key}": run.metrics[key] for key in ("em", "search_rate", "em_when_searching")}
    metrics.update({f"cold_start.reading_form.{form_slug(form)}": em for form, em in by_form.items()})
    metrics["cold_start.reading_least_read_form"] = min(by_form.values())
    return {**metrics, "cold_start.reading_em_made_to_search": made_to_search}


def form_slug(form: str) -> str:
    """A metric-name spelling of a :func:`question_form`.

    >>> form_slug("Which city is … from?")
    'which_city_is_from'
    """
    return re.sub(r"[^a-z0-9]+", "_", form.lower()).strip("_")


REPORT_DIR = "cold_start"
"""The folder inside a saved policy that holds its cold start's curves, plot and one SFT example."""


def save_start(start: ColdStart, folder: Path) -> None:
    """Save the policy to ``folder`` (an empty folder), with its cold-start report under :data:`REPORT_DIR` when it
    trained."""
    save_policy(start.model, start.tokenizer, folder)
    if any(start.curves.values()):
        report = folder / REPORT_DIR
        report.mkdir()
        (report / "losses.json").write_text(json.dumps(start.curves) + "\n")
        plot_cold_start(start.curves, report / "losses.png")
        if start.examples:
            sample = str(start.tokenizer.decode(list(start.examples[0].input_ids)))
            (report / "sft_example.txt").write_text(sample + "\n")
