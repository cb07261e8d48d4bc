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
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.config import ColdStartConfig, RolloutConfig
from zerosearch_core.prompts import PROMPT_TEXTS, build_prompt_ids, render_information_block
from zerosearch_core.search.base import EpisodeContext, SearchBackendError, SearchEngine, run_searches
from zerosearch_core.simulator.prompts import SIMULATOR_TEXTS

logger = logging.getLogger(__name__)

PRETRAIN_BLOCK_TOKENS = 128
"""Length of one packed pre-training block."""

StepCallback = Callable[[str, int, float], None]
"""Called with (phase, step, loss) after every optimizer step."""
StopCheck = Callable[[int], bool]
"""Called with the step number after each training step; True ends training there."""


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


_NAME_RUN = re.compile(r"(?<=\s)[A-Z][\w'.-]*(?:\s+[A-Z][\w'.-]*)*")


def question_form(question: str) -> str:
    """The question with its names taken out (runs of capitalised words after the first word), so questions that
    ask the same thing of different people share a form.

    >>> question_form("Which city is the mentor of Alira Venhold from?")
    'Which city is the mentor of … from?'
    """
    return _NAME_RUN.sub("…", question)


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
        form_shares: A share per :func:`question_form` (:func:`form_search_shares`) that replaces
            ``search_share`` within each form; a form it lacks gets ``search_share``.
        learn_search_choice: Whether the choice to search, the ``<search>`` tag (the first token the policy
            writes), is learned. False makes reading lessons: the query (the question copied) and the answer after
            the retrieved block are learned, the choice to search is not.
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
    searched = sorted(searching)
    found = _search_calls(tokenizer, engine, rollout, top_k, [(str(rows[p].question), answers_of[p]) for p in searched])
    calls = dict(zip(searched, found, strict=True))
    give_up = _encode(tokenizer, f"<answer> {NO_SEARCH_ANSWER} </answer>")
    examples = []
    for position, (row, answers) in enumerate(zip(rows, answers_of, strict=True)):
        prompt = build_prompt_ids(tokenizer, str(row.question), "search", rollout.use_chat_template)
        if position not in searching:
            examples.append(SFTExample(tuple(prompt + give_up), tuple([0] * len(prompt) + [1] * len(give_up)), False))
            continue
        answer = _encode(tokenizer, f"<answer> {answers[0]} </answer>")
        search, information = calls[position]
        ids = prompt + search + information + answer
        search_mask = [int(learn_search_choice)] + [1] * (len(search) - 1)
        mask = [0] * len(prompt) + search_mask + [0] * len(information) + [1] * len(answer)
        examples.append(SFTExample(tuple(ids), tuple(mask), True))
    return examples


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
    from zerosearch_core.rewards import answer_metrics, extract_answer

    rows = list(questions.itertuples(index=False))
    calls = _search_calls(
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


def _search_calls(
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
    encoded = _encode_many(tokenizer, searches + blocks)
    return list(zip(encoded[: len(searches)], encoded[len(searches) :], strict=True))


def _encode_many(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


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
    stop: StopCheck | None = None,
    interleaved: Interleaved | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps on batches drawn (seeded, without replacement per epoch) from
    ``sequences``; the loss covers positions whose mask is 1 (every token when ``masks`` is None). The learning
    rate decays to 0 along a cosine (``schedule="cosine"``) or stays at ``learning_rate`` (``"constant"``).
    ``stop``, called with the step number after every step, ends training early when it returns True (the steps
    before are those of a run without it). With ``interleaved``, every ``interleaved.every``-th step draws its
    batch from ``interleaved``'s sequences instead (a pool of its own, so batches of short and long texts are
    never padded to one width).

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
    pools: list[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]] | None]] = [(sequences, masks)]
    if interleaved is not None:
        pools.append((interleaved.sequences, interleaved.masks))
    orders: list[list[int]] = [[] for _ in pools]
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        pool = 1 if interleaved is not None and step % interleaved.every == 0 else 0
        (texts, text_masks), order = pools[pool], orders[pool]
        if len(order) < batch_size:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order.extend(fresh)
        picked, orders[pool] = order[:batch_size], order[batch_size:]
        input_ids, _, labels = _collate(
            [texts[i] for i in picked], None if text_masks is None else [text_masks[i] for i in picked], pad_id
        )
        # Right padding under a causal mask: no real token sees a pad, so no attention mask is needed, and without
        # one the attention takes its fast causal path (about a fifth faster on the CPU for SFT batches).
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(phase, step, losses[-1])
        if stop is not None:
            model.eval()
            stopping = stop(step)
            model.train()
            if stopping:
                break
    model.eval()
    return losses


@dataclass(frozen=True)
class Interleaved:
    """A second pool of training sequences, one batch of which replaces every ``every``-th step's
    (:func:`train_causal_lm`)."""

    sequences: Sequence[Sequence[int]]
    masks: Sequence[Sequence[int]]
    every: int


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


@dataclass(frozen=True)
class ReadingLessons:
    """Reading lessons (``cold_start.reading_corpus``): a corpus of other people, indexed on its own, and the
    questions about them, split into those the SFT trains on and those held out to measure reading."""

    passages: pd.DataFrame
    train: pd.DataFrame
    heldout: pd.DataFrame


def read_reading_lessons(corpus: Path, questions: Path, examples: int, heldout: int, seed: int) -> ReadingLessons:
    """Load the lessons' corpus and questions and draw, seeded, ``examples`` questions to train on and the next
    ``heldout`` to measure reading on (no question in both).

    Raises:
        FileNotFoundError: A file is missing; the message says which stage writes it.
        ValueError: A question has no answer or is not JSON, or there are fewer questions than asked for.
    """
    from zerosearch_core.data.corpus import load_corpus

    for path in (corpus, questions):
        if not path.is_file():
            raise FileNotFoundError(
                f"cold_start reading lessons: {path} does not exist; generate it first (the toy world's "
                "generate_world stage writes it when world.reading_people > 0) or set reading_corpus and "
                "reading_questions to null."
            )
    passages = load_corpus(str(corpus))
    rows = []
    with questions.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                answers = [str(a) for a in record["answer"] if str(a).strip()]
                rows.append({"id": str(record["id"]), "question": str(record["question"]), "golden_answers": answers})
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{questions}:{number} is not a question record with id, question and answer ({error}); "
                    "regenerate the file."
                ) from error
            if not answers:
                raise ValueError(f"{questions}:{number} has no answer; regenerate the file.")
    if examples + heldout > len(rows):
        raise ValueError(
            f"cold_start.reading_examples={examples} plus reading_heldout={heldout} exceeds the {len(rows)} "
            f"questions in {questions}; lower them or raise world.reading_people."
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    frame = pd.DataFrame(rows)
    train = frame.iloc[sorted(order[:examples])].reset_index(drop=True)
    held = frame.iloc[sorted(order[examples : examples + heldout])].reset_index(drop=True)
    return ReadingLessons(passages=passages, train=train, heldout=held)


@dataclass(frozen=True)
class Drill:
    """A held-out pre-training text for the reading check: what the model reads and the answer it should write."""

    prefix: str
    answer: str


def read_drills(path: Path) -> list[Drill]:
    """Every record of a ``pretrain_texts`` file as a :class:`Drill`: its text less the final ``answer``.

    Raises:
        ValueError: A record has no ``answer`` that its text ends with (the line is named).
    """
    drills = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        answer, text = record.get("answer"), str(record.get("text", ""))
        if not isinstance(answer, str) or not answer or not text.endswith(answer):
            raise ValueError(
                f"{path}:{number} has no 'answer' that its text ends with, which cold_start.pretrain_reading_bar "
                "and pretrain_texts_loss: answer need; regenerate the file, or set the bar to 0 and the loss to all."
            )
        drills.append(Drill(prefix=text[: -len(answer)].rstrip(), answer=answer))
    return drills


DRILL_QUESTION = " Question: "
"""What parts a drill's passage from its question (``{passage} Question: {question} Answer:``)."""


def add_distractors(drills: Sequence[Drill], count: int, seed: int, question_first: bool = False) -> list[Drill]:
    """Each drill that has a passage, with ``count`` passages of other drills of ``drills`` (seeded) set after its
    own, as a search ranks the passage asked for first (``cold_start.pretrain_distractors``); a drill without one
    (a search drill) is kept as it is. With ``question_first`` (``cold_start.pretrain_drill_layout:
    question_first``), each reading drill asks its question before the passages, as the search protocol does
    (``Question: {question} {passages} Answer:``), even with ``count`` 0.

    Raises:
        ValueError: Fewer than ``count + 1`` drills have a passage.

    >>> drills = [Drill(f"{n} is a {job}. Question: What is {n}? Answer:", job) for n, job in
    ...           [("Ana", "baker"), ("Bo", "miner"), ("Cy", "mason")]]
    >>> mixed = add_distractors(drills, 1, seed=0)
    >>> [d.answer for d in mixed], all(d.prefix.count(" is a ") == 2 for d in mixed)
    (['baker', 'miner', 'mason'], True)
    >>> all(d.prefix.startswith(old.prefix.split(DRILL_QUESTION)[0] + " ") for d, old in zip(mixed, drills))
    True
    >>> all(d.prefix.endswith(old.prefix.split(DRILL_QUESTION)[1]) for d, old in zip(mixed, drills))
    True
    >>> add_distractors(drills[:1], 0, seed=0, question_first=True)[0].prefix
    'Question: What is Ana? Ana is a baker. Answer:'
    """
    parts = [drill.prefix.partition(DRILL_QUESTION) for drill in drills]
    pool = [i for i, (passage, sep, _) in enumerate(parts) if sep and passage.strip()]
    if count and len(pool) <= count:
        raise ValueError(
            f"cold_start.pretrain_distractors={count} needs more than {count} drills with a passage, and only "
            f"{len(pool)} have one; lower it or raise cold_start.pretrain_heldout (the held-out drills draw theirs "
            "from each other)."
        )
    rng = random.Random(seed)
    has_passage = set(pool)
    mixed = []
    for index, drill in enumerate(drills):
        if (not count and not question_first) or index not in has_passage:
            mixed.append(drill)
            continue
        others = [i for i in rng.sample(pool, count + 1) if i != index][:count] if count else []
        passages = " ".join(parts[i][0] for i in [index, *others])
        if question_first:
            question, tail = _split_question(parts[index][2])
            prefix = DRILL_QUESTION.lstrip() + question + " " + passages + tail
        else:
            prefix = passages + DRILL_QUESTION + parts[index][2]
        mixed.append(Drill(prefix=prefix, answer=drill.answer))
    return mixed


def _split_question(text: str) -> tuple[str, str]:
    """``text`` (what follows ``Question:``) as the question, up to its first ``?``, and the rest (``Answer:`` or
    ``<search>``, or passages then ``Answer:``); with no ``?``, all of it up to ``Answer:``."""
    mark = text.find("?")
    if mark < 0:
        mark = max(text.rfind(" Answer:"), 0) - 1
    return text[: mark + 1], text[mark + 1 :]


def drill_form(drill: Drill) -> str:
    """The :func:`question_form` of a drill's question, with what follows it (``Answer:`` or ``<search>``), so
    reading and search drills of one question are told apart; a drill that asks before its passages
    (``pretrain_drill_layout: question_first``) has the form of the same drill asked after them."""
    question, rest = _split_question(drill.prefix.partition(DRILL_QUESTION.lstrip())[2])
    tail = rest.strip()
    kind = "<search>" if tail.startswith("<search>") else tail.rpartition(" ")[2]
    return question_form(question + " " + kind)


def split_heldout_drills(drills: Sequence[Drill], count: int, path: Path) -> tuple[list[Drill], list[Drill]]:
    """The drills to pre-train on and the last ``count``, held out for the reading check.

    Raises:
        ValueError: ``count`` leaves nothing to train on.
    """
    if count and count >= len(drills):
        raise ValueError(
            f"cold_start.pretrain_heldout={count} leaves none of the {len(drills)} texts of {path} to pre-train on; "
            "lower it."
        )
    return list(drills[: len(drills) - count]), list(drills[len(drills) - count :])


def answer_drill_sequences(
    corpus_texts: Sequence[str],
    drills: Sequence[Drill],
    tokenizer: PreTrainedTokenizerBase,
    corpus_repeat: int,
    block: int = PRETRAIN_BLOCK_TOKENS,
) -> tuple[list[list[int]], list[list[int]]]:
    """The pre-training mix of ``pretrain_texts_loss: answer``: the corpus packed into blocks (every token learned),
    each ``corpus_repeat`` times, then every drill as its prefix (not learned) and its answer and eos (learned)."""
    sequences = pack_blocks(corpus_texts, tokenizer, block) * corpus_repeat
    masks = [[1] * len(ids) for ids in sequences]
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    for drill in drills:
        prefix, answer = _encode(tokenizer, drill.prefix), _encode(tokenizer, " " + drill.answer) + eos
        sequences.append(prefix + answer)
        masks.append([0] * len(prefix) + [1] * len(answer))
    return sequences, masks


def drill_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, drills: Sequence[Drill], batch_size: int = 50
) -> float:
    """Share of ``drills`` whose greedy continuation of the prefix is the answer, token for token (the answer
    encoded as pre-training learns it, after a space)."""
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    correct = 0
    for start in range(0, len(drills), batch_size):
        batch = drills[start : start + batch_size]
        answers = [_encode(tokenizer, " " + d.answer) for d in batch]
        contexts = [_encode(tokenizer, d.prefix) for d in batch]
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
    heldout_drills: Sequence[Drill] = (),
    on_reading: Callable[[str, int, float], None] | None = None,
    answer_drills: Sequence[Drill] = (),
    sft_reading: Callable[[], float] | None = None,
    pretrain_lessons: Sequence[SFTExample] = (),
    pretrain_lesson_reading: Callable[[], float] | None = None,
) -> dict[str, list[float]]:
    """Pre-train on ``corpus_texts`` mixed with ``extra_texts`` (if ``cfg.pretrain_steps``; see
    :func:`pretrain_sequences`) and then SFT on ``sft_examples`` (if any).

    With ``cfg.pretrain_reading_bar`` set, pre-training runs from ``pretrain_steps`` on until the accuracy on
    ``heldout_drills`` (checked every ``pretrain_check_every`` steps, each check passed to ``on_reading``) reaches
    the bar, or until ``pretrain_max_steps``. With ``answer_drills`` (``pretrain_texts_loss: answer``), those drills
    replace ``extra_texts`` in the mix and only their answers are learned (:func:`answer_drill_sequences`).
    With ``cfg.pretrain_lesson_every`` set, every that many pre-training steps trains on a batch of
    ``pretrain_lessons`` (protocol trajectories) instead, and the bar also holds for ``pretrain_lesson_reading``
    (the least-read form of held-out lessons, made to search): a check scores the lower of the two. In the
    same way, with ``cfg.sft_reading_bar`` set and ``sft_reading`` given (EM on held-out reading lessons made to
    search, :func:`reading_accuracy`), SFT runs from ``sft_steps`` on, checked at each multiple of ``sft_check_every``,
    until that EM reaches the bar or ``sft_max_steps`` (its cosine schedule then spans ``sft_max_steps``). If SFT
    ends below the bar, the whole cold start starts again from the weights ``model`` came with, pre-training and
    SFT with the next seeds (``seed + 2k`` and ``seed + 2k + 1`` for attempt ``k``), up to ``cfg.sft_restarts``
    times, and the attempt whose last SFT check read best is kept (the first to pass the bar ends the search). The
    steps and checks of a restart reach ``on_step`` and ``on_reading`` shifted by each phase's steps per earlier
    attempt (its max steps with a bar, else its steps).

    Returns:
        Loss curves keyed ``pretrain`` and ``sft`` (empty when a phase is off); ``reading``: the accuracy of every
        pre-training check, made at the steps ``reading_step``; ``sft_reading`` and ``sft_reading_step``: the
        same for the SFT checks (steps counted within their attempt); ``reading_attempt`` and ``sft_attempt``:
        the attempt of each check (0 first); ``sft_kept``: the attempt kept; ``sft_final_reading``: the kept
        attempt's last check, when it was made after its last step (it then measured the returned weights),
        else empty. ``pretrain`` and ``sft`` hold the kept attempt's losses.
    """
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    curves: dict[str, list[float]] = {
        "pretrain": [],
        "sft": [],
        "reading": [],
        "reading_step": [],
        "sft_reading": [],
        "sft_reading_step": [],
        "reading_attempt": [],
        "sft_attempt": [],
        "sft_kept": [],
        "sft_final_reading": [],
    }
    offsets = {"pretrain": 0, "sft": 0}  # each phase's steps in earlier attempts: restarts log on one rising axis

    def shifted_step(phase: str, step: int, loss: float) -> None:
        if on_step is not None:
            on_step(phase, step + offsets[phase], loss)

    def gate(phase: str, key: str, first: int, every: int, bar: float, check: Callable[[], float]) -> StopCheck:
        def stop(step: int) -> bool:
            if step < first or step % every:
                return False
            accuracy = check()
            curves[key].append(accuracy)
            curves[f"{key}_step"].append(float(step))
            if on_reading is not None:
                on_reading(phase, step + offsets[phase], accuracy)
            return accuracy >= bar

        return stop

    pretrain_stop = None
    if cfg.pretrain_reading_bar > 0 and heldout_drills:
        pretrain_stop = gate(
            "pretrain",
            "reading",
            cfg.pretrain_steps,
            cfg.pretrain_check_every,
            cfg.pretrain_reading_bar,
            lambda: _least_read(model, tokenizer, heldout_drills, pretrain_lesson_reading),
        )
    sft_stop = None
    if cfg.sft_reading_bar > 0 and sft_reading is not None:
        sft_stop = gate("sft", "sft_reading", cfg.sft_steps, cfg.sft_check_every, cfg.sft_reading_bar, sft_reading)
    masks: list[list[int]] | None = None
    blocks: list[list[int]] = []
    if cfg.pretrain_steps:
        if answer_drills:
            blocks, masks = answer_drill_sequences(corpus_texts, answer_drills, tokenizer, cfg.pretrain_corpus_repeat)
        else:
            blocks = pretrain_sequences(corpus_texts, extra_texts, tokenizer, cfg.pretrain_corpus_repeat)
    interleaved = None
    if cfg.pretrain_lesson_every and pretrain_lessons:
        interleaved = Interleaved(
            [e.input_ids for e in pretrain_lessons], [e.loss_mask for e in pretrain_lessons], cfg.pretrain_lesson_every
        )
    sft_sequences = [e.input_ids for e in sft_examples]
    sft_masks = [e.loss_mask for e in sft_examples]
    sft = bool(sft_examples) and cfg.sft_steps > 0
    restarts = cfg.sft_restarts if sft and sft_stop is not None else 0
    initial = _copy_state(model) if restarts else None
    pretrain_length = cfg.pretrain_max_steps if pretrain_stop else cfg.pretrain_steps
    sft_length = cfg.sft_max_steps if sft_stop else cfg.sft_steps
    kept: tuple[float, int, list[float], list[float], dict[str, torch.Tensor] | None] | None = None
    for attempt in range(restarts + 1):
        if attempt:  # a fresh draw of the whole cold start: the initial weights, the next seeds
            assert initial is not None
            model.load_state_dict(initial)
        offsets.update(pretrain=attempt * pretrain_length, sft=attempt * sft_length)
        pretrain_losses: list[float] = []
        if cfg.pretrain_steps:
            checks_before = len(curves["reading"])
            pretrain_losses = train_causal_lm(
                model,
                blocks,
                masks,
                pretrain_length,
                cfg.pretrain_batch_size,
                cfg.pretrain_learning_rate,
                pad_id,
                seed + 2 * attempt,
                "pretrain",
                shifted_step,
                cfg.pretrain_schedule,
                pretrain_stop,
                interleaved,
            )
            curves["reading_attempt"].extend([float(attempt)] * (len(curves["reading"]) - checks_before))
        if not sft:
            curves["pretrain"] = pretrain_losses
            break
        checks_before = len(curves["sft_reading"])
        sft_losses = train_causal_lm(
            model,
            sft_sequences,
            sft_masks,
            sft_length,
            cfg.sft_batch_size,
            cfg.sft_learning_rate,
            pad_id,
            seed + 2 * attempt + 1,
            "sft",
            shifted_step,
            stop=sft_stop,
        )
        checks = curves["sft_reading"][checks_before:]
        curves["sft_attempt"].extend([float(attempt)] * len(checks))
        last = checks[-1] if checks else -1.0
        if kept is None or last > kept[0]:
            kept = (last, attempt, pretrain_losses, sft_losses, _copy_state(model) if restarts else None)
        if sft_stop is None or last >= cfg.sft_reading_bar:
            break
    if kept is not None:
        last, attempt, curves["pretrain"], curves["sft"], state = kept
        if state is not None:
            model.load_state_dict(state)
        curves["sft_kept"] = [float(attempt)]
        steps = [s for s, a in zip(curves["sft_reading_step"], curves["sft_attempt"], strict=True) if a == attempt]
        if steps and steps[-1] == len(curves["sft"]):
            curves["sft_final_reading"] = [last]  # the kept attempt's last check measured these very weights
    return curves


def _least_read(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    drills: Sequence[Drill],
    lesson_reading: Callable[[], float] | None,
) -> float:
    """The pre-training check: the held-out drills' least-read form, or the held-out lessons' least-read form
    (``lesson_reading``) when that is lower."""
    by_form = drill_accuracy_by_form(model, tokenizer, drills)
    logger.info("Held-out drills read, by form: %s", by_form_text(by_form))
    least = min(by_form.values())
    return least if lesson_reading is None else min(least, lesson_reading())


def by_form_text(by_form: dict[str, float]) -> str:
    """``{form: score}`` as one log line.

    >>> by_form_text({"Which city is … from?": 0.5, "Who is …?": 1.0})
    "'Which city is … from?' 0.50, 'Who is …?' 1.00"
    """
    return ", ".join(f"{form!r} {score:.2f}" for form, score in by_form.items())


def _copy_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights (a tiny model's: a few MB)."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def plot_cold_start(curves: dict[str, list[float]], path: Path) -> None:
    """Loss curves of the pre-training and SFT phases, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = {
        "reading": ("cold start: held-out drill accuracy, least-read form", "pre-training step"),
        "sft_reading": ("cold start: held-out lessons read (made to search), least-read form", "SFT step"),
    }
    phases = [phase for phase in ("pretrain", "sft", "reading", "sft_reading") if curves.get(phase)]
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(5 * max(len(phases), 1), 3.5), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=False):
        if phase in checks:
            steps, values = curves[f"{phase}_step"], curves[phase]
            attempts = curves.get("sft_attempt", []) if phase == "sft_reading" else []
            if len(attempts) == len(values) and len(set(attempts)) > 1:  # SFT restarted: one line per attempt
                kept = curves["sft_kept"][0] if curves.get("sft_kept") else None
                for attempt in sorted(set(attempts)):
                    picked = [i for i, a in enumerate(attempts) if a == attempt]
                    label = f"attempt {int(attempt) + 1}" + (" (kept)" if attempt == kept else "")
                    ax.plot([steps[i] for i in picked], [values[i] for i in picked], marker="o", label=label)
                ax.legend()
            else:
                ax.plot(steps, values, marker="o")
            ax.set_title(checks[phase][0])
            ax.set_xlabel(checks[phase][1])
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            continue
        ax.plot(range(1, len(curves[phase]) + 1), curves[phase])
        ax.set_title(
            f"cold start: {phase} loss"
            + (
                " (kept attempt)"
                if phase == "sft" and curves.get("sft_attempt") and len(set(curves["sft_attempt"])) > 1
                else ""
            )
        )
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
