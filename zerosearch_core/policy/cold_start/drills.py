"""Reading drills, reading lessons and the pre-training text of the cold start: read, split, packed into blocks.

A drill is one passage and a question whose answer the passage states; distractor drills put other people's passages
after the asked-for one. Reading lessons are the world's own questions with their real BM25 block, in the search
protocol's layout.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformers import PreTrainedTokenizerBase

PRETRAIN_BLOCK_TOKENS = 128
"""Length of one packed pre-training block."""


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


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


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
                decomposition = [str(q) for q in record.get("decomposition", [])]
                rows.append(
                    {
                        "id": str(record["id"]),
                        "question": str(record["question"]),
                        "golden_answers": answers,
                        "decomposition": decomposition,
                    }
                )
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
    # held out: the first single-hop questions of the shuffle (the reading bar asks one search's block); the
    # lessons trained on: the next ``examples`` of any kind (without two-hop lessons, the same draws as before)
    single = [p for p in order if len(rows[p]["decomposition"]) < 2]
    held_positions = single[:heldout] if len(single) < len(order) else order[examples : examples + heldout]
    taken = set(held_positions)
    train_positions = [p for p in order if p not in taken][:examples]
    train = frame.iloc[sorted(train_positions)].reset_index(drop=True)
    held = frame.iloc[sorted(held_positions)].reset_index(drop=True)
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
        prefix, answer = encode_text(tokenizer, drill.prefix), encode_text(tokenizer, " " + drill.answer) + eos
        sequences.append(prefix + answer)
        masks.append([0] * len(prefix) + [1] * len(answer))
    return sequences, masks


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
