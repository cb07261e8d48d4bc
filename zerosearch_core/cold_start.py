"""Cold start of a policy trained from scratch: causal-LM pre-training on the corpus, then SFT on protocol trajectories.

A tiny model built by :func:`~zerosearch_core.models.build_tiny_policy` knows neither language nor the search
protocol, so RL would never see a reward. ``init_policy`` can therefore warm it up (``cold_start`` in the params):

1. **Pre-training**: next-token prediction on the corpus passages, packed into fixed-length blocks
   (``pretrain_corpus_repeat`` times), optionally mixed with extra texts (``cold_start.pretrain_texts``, e.g. the
   toy world's reading drills, which teach a model trained from scratch to read an answer out of a passage), at a
   cosine or constant rate (``pretrain_schedule``).
2. **SFT**: one trajectory per training question, built with the *real* retriever, in exactly the token layout the
   rollout engine produces: the prompt, ``<search> question </search>`` (sampled), the ``<information>`` block
   (inserted, loss mask 0), then ``<answer> golden answer </answer>`` (sampled). Loss falls on sampled tokens only.
   With ``cold_start.sft_search_share`` below 1, a seeded share of the trajectories gives up at once instead
   (``<answer> unknown </answer>``, no search), so the start searches only sometimes and RL has to learn that
   searching pays.

Why each choice, with what was measured, is in the README ("The toy world": what it does not show).

The point is a *weak* start that can emit the tags; its real-search score is the baseline that RL must beat.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.config import ColdStartConfig, RolloutConfig
from zerosearch_core.prompts import PROMPT_TEXTS, build_prompt_ids, render_information_block
from zerosearch_core.search.base import EpisodeContext, SearchEngine
from zerosearch_core.simulator.prompts import SIMULATOR_TEXTS

PRETRAIN_BLOCK_TOKENS = 128
"""Length of one packed pre-training block."""

StepCallback = Callable[[str, int, float], None]
"""Called with (phase, step, loss) after every optimizer step."""


NO_SEARCH_ANSWER = "unknown"
"""What the cold start's non-searching SFT trajectories answer (``cold_start.sft_search_share`` below 1)."""


@dataclass(frozen=True)
class SFTExample:
    """One protocol trajectory: token ids and the loss mask (1 on tokens the policy should learn to write)."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    searches: bool
    """Whether the trajectory searches before it answers."""


def pack_blocks(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block: int) -> list[list[int]]:
    """Tokenise ``texts``, join them with eos and cut the stream into blocks of ``block`` tokens (the tail is kept
    as a shorter block, so no text is dropped)."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(int(eos))
    return [stream[i : i + block] for i in range(0, len(stream), block)]


def build_sft_examples(
    questions: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    engine: SearchEngine,
    rollout: RolloutConfig,
    top_k: int,
    search_share: float = 1.0,
    seed: int = 0,
) -> list[SFTExample]:
    """One trajectory per question: search the question with the real engine, then answer with the first golden
    answer; or, for a seeded ``1 - search_share`` of the questions, give up at once (:data:`NO_SEARCH_ANSWER`).

    Args:
        questions: Normalised benchmark rows (``question``, ``golden_answers``, ``id``).
        tokenizer: The policy's tokenizer.
        engine: The real search engine.
        rollout: Prompt and document formatting (chat template, ``max_doc_chars``).
        top_k: Documents per search.
        search_share: Share of the trajectories that search (rounded to a whole number of questions).
        seed: Picks which questions search.
    """
    searching = set(random.Random(seed).sample(range(len(questions)), round(search_share * len(questions))))
    examples = []
    for position, row in enumerate(questions.itertuples(index=False)):
        answers = [a for a in row.golden_answers if str(a).strip()]
        if not answers:
            raise ValueError(f"Question {row.id} has no golden answer; validation should have rejected it.")
        prompt = build_prompt_ids(tokenizer, str(row.question), "search", rollout.use_chat_template)
        if position not in searching:
            give_up = _encode(tokenizer, f"<answer> {NO_SEARCH_ANSWER} </answer>")
            examples.append(SFTExample(tuple(prompt + give_up), tuple([0] * len(prompt) + [1] * len(give_up)), False))
            continue
        answer = _encode(tokenizer, f"<answer> {answers[0]} </answer>")
        session = engine.open_session(EpisodeContext(str(row.question), tuple(answers), 0.0, 0))
        documents = session.search(str(row.question), top_k).documents
        search = _encode(tokenizer, f"<search> {row.question} </search>")
        information = _encode(tokenizer, render_information_block(documents, rollout.max_doc_chars))
        ids = prompt + search + information + answer
        mask = [0] * len(prompt) + [1] * len(search) + [0] * len(information) + [1] * len(answer)
        examples.append(SFTExample(tuple(ids), tuple(mask), True))
    return examples


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def train_causal_lm(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    masks: Sequence[Sequence[int]] | None,
    steps: int,
    batch_size: int,
    learning_rate: float,
    pad_id: int,
    seed: int,
    phase: str,
    on_step: StepCallback | None = None,
    schedule: str = "cosine",
) -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps on batches drawn (seeded, without replacement per epoch) from
    ``sequences``; the loss covers positions whose mask is 1 (every token when ``masks`` is None). The learning
    rate decays to 0 along a cosine (``schedule="cosine"``) or stays at ``learning_rate`` (``"constant"``).

    Returns:
        The loss of every step.
    """
    if not sequences:
        raise ValueError(f"{phase}: no training sequences; check the cold_start settings and the data.")
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"{phase}: unknown learning-rate schedule {schedule!r}; use 'cosine' or 'constant'.")

    def factor(step: int) -> float:
        return 1.0 if schedule == "constant" else 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            fresh = list(range(len(sequences)))
            rng.shuffle(fresh)
            order.extend(fresh)
        picked, order = order[:batch_size], order[batch_size:]
        input_ids, attention, labels = _collate(
            [sequences[i] for i in picked], None if masks is None else [masks[i] for i in picked], pad_id
        )
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(phase, step, losses[-1])
    model.eval()
    return losses


def _collate(
    sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]] | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 where padded or masked out)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, ids in enumerate(sequences):
        ids_t = torch.tensor(list(ids), dtype=torch.long)
        input_ids[row, : len(ids)] = ids_t
        attention[row, : len(ids)] = 1
        keep = torch.ones(len(ids), dtype=torch.bool) if masks is None else torch.tensor(list(masks[row])) == 1
        labels[row, : len(ids)] = torch.where(keep, ids_t, torch.full_like(ids_t, -100))
    return input_ids, attention, labels


def pretrain_sequences(
    corpus_texts: Sequence[str],
    extra_texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    corpus_repeat: int,
    block: int = PRETRAIN_BLOCK_TOKENS,
) -> list[list[int]]:
    """The pre-training mix: the corpus packed into blocks, each block ``corpus_repeat`` times, then every extra
    text as a sequence of its own (ending in eos, cut into blocks when longer than ``block``)."""
    sequences = pack_blocks(corpus_texts, tokenizer, block) * corpus_repeat
    for text in extra_texts:
        sequences.extend(pack_blocks([text], tokenizer, block))
    return sequences


def read_pretrain_texts(path: Path) -> list[str]:
    """The ``text`` field of every record of a .jsonl file (``cold_start.pretrain_texts``).

    Raises:
        FileNotFoundError: The file does not exist; the message says which stage writes it.
        ValueError: A line is not JSON or has no non-empty string ``text``; the message names the line.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"cold_start.pretrain_texts: {path} does not exist; generate it first (for the toy world's "
            "reading.jsonl, run the generate_world stage) or set pretrain_texts to null."
        )
    texts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not JSON ({error}); fix or regenerate the file.") from error
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{number} has no non-empty string 'text' field; fix or regenerate the file.")
            texts.append(text)
    if not texts:
        raise ValueError(f"{path} holds no texts; regenerate it or set cold_start.pretrain_texts to null.")
    return texts


def run_cold_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: ColdStartConfig,
    corpus_texts: Sequence[str],
    sft_examples: Sequence[SFTExample],
    seed: int,
    on_step: StepCallback | None = None,
    extra_texts: Sequence[str] = (),
) -> dict[str, list[float]]:
    """Pre-train on ``corpus_texts`` mixed with ``extra_texts`` (if ``cfg.pretrain_steps``; see
    :func:`pretrain_sequences`) and then SFT on ``sft_examples`` (if any).

    Returns:
        Loss curves keyed ``pretrain`` and ``sft`` (empty when a phase is off).
    """
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    curves: dict[str, list[float]] = {"pretrain": [], "sft": []}
    if cfg.pretrain_steps:
        blocks = pretrain_sequences(corpus_texts, extra_texts, tokenizer, cfg.pretrain_corpus_repeat)
        curves["pretrain"] = train_causal_lm(
            model,
            blocks,
            None,
            cfg.pretrain_steps,
            cfg.pretrain_batch_size,
            cfg.pretrain_learning_rate,
            pad_id,
            seed,
            "pretrain",
            on_step,
            cfg.pretrain_schedule,
        )
    if sft_examples and cfg.sft_steps:
        curves["sft"] = train_causal_lm(
            model,
            [e.input_ids for e in sft_examples],
            [e.loss_mask for e in sft_examples],
            cfg.sft_steps,
            cfg.sft_batch_size,
            cfg.sft_learning_rate,
            pad_id,
            seed + 1,
            "sft",
            on_step,
        )
    return curves


def plot_cold_start(curves: dict[str, list[float]], path: Path) -> None:
    """Loss curves of the pre-training and SFT phases, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [phase for phase, losses in curves.items() if losses]
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(5 * max(len(phases), 1), 3.5), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=False):
        ax.plot(range(1, len(curves[phase]) + 1), curves[phase])
        ax.set_title(f"cold start: {phase} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
