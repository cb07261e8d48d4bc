"""Stage ``init_policy``: build the tiny policy and tokenizer (CPU), or copy a pretrained checkpoint (GPU), then
optionally warm it up (``cold_start``: pre-training on the corpus and SFT on real-search protocol trajectories).

Run: ``python -m zerosearch_core.cli init_policy --params params.yaml``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.cold_start import (
    Drill,
    ReadingLessons,
    SFTExample,
    add_distractors,
    build_sft_examples,
    by_form_text,
    form_search_shares,
    mean_by_form,
    plot_cold_start,
    question_form,
    read_drills,
    read_pretrain_texts,
    read_reading_lessons,
    reading_by_form,
    reading_scores,
    run_cold_start,
    split_heldout_drills,
    tokenizer_texts,
)
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.evaluation import evaluate_benchmark
from zerosearch_core.models import (
    build_tiny_policy,
    load_causal_lm,
    load_tokenizer,
    parameter_count,
    save_policy,
)
from zerosearch_core.rollout import PolicyBackend, SearchProtocol
from zerosearch_core.search.base import SearchErrorBudget
from zerosearch_core.search.local import PASSAGES_FILE, BM25Retriever, LocalSearchEngine
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.stages import StageHooks, StageResult

logger = logging.getLogger(__name__)

COLD_START_DIR = "cold_start"


PARAMS = (
    "seed",
    "model",
    "cold_start",
    "rollout.use_chat_template",  # the SFT trajectories' prompt and documents; not the generation engine
    "rollout.max_doc_chars",
    "rollout.max_turns",  # the reading check's episodes
    "rollout.max_new_tokens_per_turn",
    "rollout.max_total_tokens",
    "rollout.batch_size",
    "search",
    "paths.benchmarks_dir",
    "paths.index_dir",
    "paths.policy_dir",
)
"""The config keys this stage reads (DVC tracks them; see scripts/sync_dvc_deps.py)."""


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Materialise the initial policy in ``paths.policy_dir``: build the tiny model or copy a pretrained one, then
    run the configured cold start."""
    target = Path(cfg.paths.policy_dir)
    corpus_texts: list[str] = []
    if cfg.model.source == "tiny" or cfg.cold_start.pretrain_steps:  # the corpus trains the tokenizer or the LM
        passages = pd.read_parquet(Path(cfg.paths.index_dir) / PASSAGES_FILE)
        corpus_texts = (passages["title"] + "\n" + passages["text"]).tolist()
    extra_texts: list[str] = []
    heldout_drills: list[Drill] = []
    answer_drills: list[Drill] = []
    cold = cfg.cold_start
    if cold.pretrain_texts is not None:
        path = Path(cold.pretrain_texts)
        extra_texts = read_pretrain_texts(path)
        if cold.pretrain_reading_bar > 0 or cold.pretrain_texts_loss == "answer":
            heldout = cold.pretrain_heldout if cold.pretrain_reading_bar > 0 else 0
            train_drills, heldout_drills = split_heldout_drills(read_drills(path), heldout, path)
            extra_texts = extra_texts[: len(train_drills)]
            question_first = cold.pretrain_drill_layout == "question_first"
            if cold.pretrain_distractors or question_first:
                train_drills = add_distractors(
                    train_drills,
                    cold.pretrain_distractors,
                    derive_seed(cfg.seed, "drill_distractors"),
                    question_first,
                )
                heldout_drills = add_distractors(
                    heldout_drills,
                    cold.pretrain_distractors,
                    derive_seed(cfg.seed, "heldout_drill_distractors"),
                    question_first,
                )
            if cold.pretrain_texts_loss == "answer":
                answer_drills = train_drills
    sft_questions = _sft_questions(cfg)
    tokenizer: PreTrainedTokenizerBase
    if cfg.model.source == "tiny":
        texts = tokenizer_texts(corpus_texts, sft_questions["question"].tolist(), extra_texts)
        model, tokenizer = build_tiny_policy(cfg.model, texts, seed=derive_seed(cfg.seed, "init_policy"))
    else:
        assert cfg.model.name_or_path is not None  # checked by ModelConfig
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        model = load_causal_lm(cfg.model.name_or_path, cfg.model.dtype)
    metrics = {"parameters": float(parameter_count(model)), "vocab_size": float(len(tokenizer))}
    if extra_texts:
        metrics["cold_start.pretrain_texts"] = float(len(extra_texts))
    lessons, lesson_engine = _reading_lessons(cfg)
    form_shares = None
    if cfg.cold_start.sft_search_spread > 0:  # one share per form of the world's questions
        form_shares = form_search_shares(
            [question_form(str(q)) for q in sft_questions["question"].tolist()],
            cfg.cold_start.sft_search_share,
            cfg.cold_start.sft_search_spread,
            derive_seed(cfg.seed, "cold_start_search_forms"),
        )
        for form, share in sorted(form_shares.items()):
            logger.info("Cold start searches %.0f%% of the SFT questions of the form %r", 100 * share, form)
    examples: list[SFTExample] = []
    lesson_examples: list[SFTExample] = []
    if len(sft_questions):
        with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
            examples = build_sft_examples(
                sft_questions,
                tokenizer,
                engine,
                cfg.rollout,
                cfg.search.top_k,
                cfg.cold_start.sft_search_share,
                derive_seed(cfg.seed, "cold_start_search"),
                form_shares,
            )
    if lessons is not None and lesson_engine is not None:
        # Every lesson searches; the query and the answer after the retrieved block are learned, the choice to
        # search (the <search> tag) is not: the lessons teach searching and reading, while whether to search is
        # learned from the world's questions alone (sft_search_share).
        lesson_examples = build_sft_examples(
            lessons.train, tokenizer, lesson_engine, cfg.rollout, cfg.search.top_k, 1.0, 0, learn_search_choice=False
        )
        examples += lesson_examples
        metrics["cold_start.reading_examples"] = float(len(lessons.train))
    if examples:
        metrics["cold_start.sft_examples"] = float(len(examples))
        metrics["cold_start.sft_searching_examples"] = float(sum(e.searches for e in examples))

    def on_step(phase: str, step: int, loss: float) -> None:
        if hooks.log_step is not None:
            hooks.log_step({f"cold_start.{phase}_loss": loss}, step)

    def on_reading(phase: str, step: int, accuracy: float) -> None:
        if phase == "pretrain":
            checked = "drill and lesson" if lesson_reading is not None else "drill"
            logger.info(
                "Pre-training step %d: held-out %s accuracy of the least-read form %.2f", step, checked, accuracy
            )
        else:
            logger.info(
                "SFT step %d: held-out lessons of the least-read form read when made to search %.2f", step, accuracy
            )
        if hooks.log_step is not None:
            hooks.log_step({f"cold_start.{phase}_reading_accuracy": accuracy}, step)

    sft_reading: Callable[[], float] | None = None  # the SFT's reading check: held-out lessons, made to search
    lesson_reading: Callable[[], float] | None = None  # the same check among the pre-training's drill checks
    if lessons is not None and lesson_engine is not None and len(lessons.heldout):
        read_forms = functools.partial(
            reading_by_form, model, tokenizer, lessons.heldout, lesson_engine, cfg.rollout, cfg.search.top_k
        )

        def least_read_lesson_form() -> float:  # a start that never reads one kind of question fails
            by_form = read_forms()
            logger.info("Held-out lessons read when made to search, by form: %s", by_form_text(by_form))
            return min(by_form.values())

        if cold.sft_reading_bar > 0:
            sft_reading = least_read_lesson_form
        if cold.pretrain_lesson_every and cold.pretrain_reading_bar > 0:
            lesson_reading = least_read_lesson_form

    curves = run_cold_start(
        model,
        tokenizer,
        cfg.cold_start,
        corpus_texts,
        examples,
        derive_seed(cfg.seed, "cold_start"),
        on_step,
        extra_texts,
        heldout_drills,
        on_reading,
        answer_drills,
        sft_reading,
        lesson_examples,
        lesson_reading,
    )
    if curves["reading"]:
        metrics["cold_start.pretrain_steps_run"] = float(len(curves["pretrain"]))
        metrics["cold_start.pretrain_reading_accuracy"] = curves["reading"][-1]
        if curves["reading"][-1] < cfg.cold_start.pretrain_reading_bar:
            logger.warning(
                "Pre-training stopped at pretrain_max_steps=%d with held-out drill accuracy %.2f (least-read form), "
                "below the bar %.2f: this cold start may not read every form; raise cold_start.pretrain_max_steps.",
                cfg.cold_start.pretrain_max_steps,
                curves["reading"][-1],
                cfg.cold_start.pretrain_reading_bar,
            )
    if curves["sft_reading"]:
        kept = int(curves["sft_kept"][0])
        metrics["cold_start.sft_steps_run"] = float(len(curves["sft"]))
        metrics["cold_start.sft_attempts_run"] = float(len(set(curves["sft_attempt"])))
        metrics["cold_start.sft_kept_attempt"] = float(kept + 1)
        best = max(
            acc for acc, attempt in zip(curves["sft_reading"], curves["sft_attempt"], strict=True) if attempt == kept
        )
        if len(set(curves["sft_attempt"])) > 1:
            logger.info(
                "SFT ran %d attempts (cold_start.sft_restarts=%d); kept attempt %d",
                len(set(curves["sft_attempt"])),
                cold.sft_restarts,
                kept + 1,
            )
        if curves["sft_reading"][-1] < cold.sft_reading_bar and best < cold.sft_reading_bar:
            logger.warning(
                "SFT ended %d attempt(s) below the bar %.2f (best: %.2f of the least-read question form's held-out "
                "lessons read when made to search): this cold start does not read every kind of question (the "
                "reading check below names the forms). On the toy world a longer SFT did not mend such a start (a "
                "plateau); raise cold_start.sft_restarts for more fresh draws.",
                len(set(curves["sft_attempt"])),
                cold.sft_reading_bar,
                best,
            )
    for phase, losses in curves.items():
        if losses and phase in ("pretrain", "sft"):
            metrics[f"cold_start.{phase}_final_loss"] = losses[-1]
            logger.info("Cold start %s: %d steps, loss %.3f -> %.3f", phase, len(losses), losses[0], losses[-1])
    if lessons is not None and lesson_engine is not None and len(lessons.heldout):
        metrics.update(_reading_check(cfg, model, tokenizer, lessons, lesson_engine))

    def write(folder: Path) -> None:
        save_policy(model, tokenizer, folder)
        if any(curves.values()):
            report = folder / COLD_START_DIR
            report.mkdir()
            (report / "losses.json").write_text(json.dumps(curves) + "\n")
            plot_cold_start(curves, report / "losses.png")
            if examples:
                sample = str(tokenizer.decode(list(examples[0].input_ids)))
                (report / "sft_example.txt").write_text(sample + "\n")

    write_dir_atomically(target, write)
    artifacts = (target / COLD_START_DIR,) if any(curves.values()) else ()
    return StageResult(metrics=metrics, artifacts=artifacts)


def _reading_lessons(cfg: PipelineConfig) -> tuple[ReadingLessons | None, LocalSearchEngine | None]:
    """The reading lessons and a BM25 engine over their own corpus (both None when ``cold_start.reading_corpus``
    is null)."""
    cold = cfg.cold_start
    if cold.reading_corpus is None or cold.reading_questions is None:
        return None, None
    lessons = read_reading_lessons(
        Path(cold.reading_corpus),
        Path(cold.reading_questions),
        cold.reading_examples,
        cold.reading_heldout,
        derive_seed(cfg.seed, "reading_lessons"),
    )
    engine = LocalSearchEngine(BM25Retriever.build(lessons.passages), {"retriever": "bm25", "corpus": "lessons"})
    return lessons, engine


def _reading_check(
    cfg: PipelineConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lessons: ReadingLessons,
    engine: LocalSearchEngine,
) -> dict[str, float]:
    """Greedy EM on the held-out lesson questions, searching the lessons' corpus: overall, the share of questions
    searched, and EM on the searched ones (reading itself; the start gives up on the rest by design); and EM made
    to search (:func:`reading_scores`), overall, per question form and of the least-read form."""
    generator = PolicyBackend(tokenizer).generator(model, 0.0, derive_seed(cfg.seed, "reading_check"))
    run = evaluate_benchmark(
        "reading_heldout",
        lessons.heldout,
        "search",
        generator,
        tokenizer,
        engine,
        SearchProtocol.from_sections(cfg.rollout, cfg.search),
        derive_seed(cfg.seed, "reading_check"),
        SearchErrorBudget(0.0),
    )
    logger.info(
        "Reading check on %d held-out lesson questions: searched %.0f%%, EM when searching %.2f",
        len(run.predictions),
        100 * run.metrics["search_rate"],
        run.metrics["em_when_searching"],
    )
    scores = reading_scores(model, tokenizer, lessons.heldout, engine, cfg.rollout, cfg.search.top_k)
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


def _sft_questions(cfg: PipelineConfig) -> pd.DataFrame:
    """The seeded sample of questions the cold-start SFT is built from (empty when SFT is off)."""
    name = cfg.cold_start.sft_questions
    if name is None:
        return pd.DataFrame({"id": [], "question": [], "golden_answers": []})
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), name)
    return benchmark_data.sample_questions(frame, cfg.cold_start.sft_examples, derive_seed(cfg.seed, "cold_start_sft"))
