"""The simulation LLM's side of ZeroSearch: prompt templates, document parsing, labelling and the SFT data builder.

A simulator is asked for ``k`` documents of one *type*: ``useful`` (they contain what answers the question) or
``noisy`` (plausible results that do not give the answer away). Its prompt carries the query, the question and its
golden answers, the type, the number of documents and their length. Golden renderings live in
``tests/golden/simulator_prompts.json``. Pure functions only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from zerosearch_core.agent.rewards import normalize_answer
from zerosearch_core.search.base import Document

DocType = Literal["useful", "noisy"]

_TYPE_INSTRUCTIONS: dict[str, str] = {
    "useful": (
        "The documents must be useful: taken together they contain the facts needed to answer the question, "
        "so that a reader finds the answer in them."
    ),
    "noisy": (
        "The documents must be noisy: plausible results for the query that are on a related topic but do not "
        "contain, state or imply the answer."
    ),
}

SIMULATOR_TEMPLATE = (
    "You are a web search engine. Write {num_documents} documents, each about {doc_words} words in the style of "
    "an encyclopedia, that a search for the query below would return.\n"
    "{type_instruction}\n"
    "Question: {question}\n"
    "Answer: {answers}\n"
    "Query: {query}\n"
    "Write one document per line, as: Doc 1: (Title: <title>) <text>"
)

SIMULATOR_TEXTS: tuple[str, ...] = (
    SIMULATOR_TEMPLATE,
    *_TYPE_INSTRUCTIONS.values(),
    "Doc 1: (Title: ) Doc 2: (Title: ) Doc 3: (Title: )",
)
"""The simulator's fixed prompt and output text, for training a tokenizer that encodes it compactly."""

_DOC_LINE = re.compile(r"^\s*(?:Doc(?:ument)?\s*)?(\d+)\s*[:.)]\s*(.*)$", re.IGNORECASE)
_TITLE = re.compile(r"^\(Title:\s*(.*?)\)\s*(.*)$", re.DOTALL)


NO_ANSWER_GIVEN = "(not given)"
"""What an answer-blind simulator prompt (``simulator.answer_aware: false``) writes after ``Answer:``."""


def render_simulator_prompt(
    query: str,
    question: str,
    golden_answers: Sequence[str],
    doc_type: DocType,
    num_documents: int,
    doc_words: int,
    answer_aware: bool = True,
) -> str:
    """The user message that asks the simulator for documents.

    Args:
        query: What the policy searched for.
        question: The training question (the simulator may use it; the policy never sees this prompt).
        golden_answers: Acceptable answers, joined with " | ".
        doc_type: ``"useful"`` or ``"noisy"``.
        num_documents: How many documents to write.
        doc_words: Their approximate length in words.
        answer_aware: Whether the prompt states the golden answers (the paper's simulator) or
            :data:`NO_ANSWER_GIVEN` (documents that state only what the query asks).

    >>> render_simulator_prompt("q", "Q?", ["A"], "useful", 2, 30).splitlines()[-2]
    'Query: q'
    >>> render_simulator_prompt("q", "Q?", ["A"], "useful", 2, 30, answer_aware=False).splitlines()[-3]
    'Answer: (not given)'
    """
    return SIMULATOR_TEMPLATE.format(
        num_documents=num_documents,
        doc_words=doc_words,
        type_instruction=_TYPE_INSTRUCTIONS[doc_type],
        question=question.strip(),
        answers=" | ".join(a.strip() for a in golden_answers) if answer_aware else NO_ANSWER_GIVEN,
        query=query.strip(),
    )


def render_documents_target(documents: Sequence[Document], max_words: int) -> str:
    """The SFT target: real documents in the format the prompt asks for, each cut to ``max_words`` words.

    >>> render_documents_target([Document("1", "Paris", "Capital of France.", 1.0)], 50)
    'Doc 1: (Title: Paris) Capital of France.'
    """
    lines = []
    for i, doc in enumerate(documents, start=1):
        text = " ".join(doc.text.split()[:max_words])
        lines.append(f"Doc {i}: (Title: {doc.title}) {text}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ParsedDocuments:
    """Documents parsed from simulator output, and what was off about it."""

    documents: tuple[Document, ...]
    missing: int
    overlong: int
    unnumbered: bool

    @property
    def empty(self) -> bool:
        """True when nothing usable came back."""
        return not self.documents


def parse_documents(text: str, expected: int, max_chars: int) -> ParsedDocuments:
    """Parse ``Doc i: (Title: t) text`` lines robustly.

    Numbered lines in other forms (``1.``, ``2)``) are accepted; text without numbering becomes one document;
    fewer documents than ``expected`` are reported as ``missing``; longer ones are cut to ``max_chars`` and counted.

    >>> parse_documents("Doc 1: (Title: A) x\\nDoc 2: y", 3, 100).missing
    1
    >>> parse_documents("just prose", 2, 100).unnumbered
    True
    """
    chunks: list[str] = []
    for line in text.splitlines():
        match = _DOC_LINE.match(line)
        if match:
            chunks.append(match.group(2).strip())
        elif chunks and line.strip():
            chunks[-1] = f"{chunks[-1]} {line.strip()}"
    unnumbered = not chunks and bool(text.strip())
    if unnumbered:
        chunks = [" ".join(text.split())]
    documents, overlong = [], 0
    for i, chunk in enumerate(c for c in chunks[:expected] if c):
        title_match = _TITLE.match(chunk)
        title, body = (title_match.group(1).strip(), title_match.group(2).strip()) if title_match else ("", chunk)
        if len(body) > max_chars:
            body, overlong = body[:max_chars], overlong + 1
        documents.append(Document(id=f"sim-{i + 1}", title=title, text=body, score=0.0))
    return ParsedDocuments(tuple(documents), max(0, expected - len(documents)), overlong, unnumbered)


def contains_answer(documents: Sequence[Document], golden_answers: Sequence[str]) -> bool:
    """Whether any normalised golden answer occurs in any normalised document (title and text).

    >>> contains_answer([Document("1", "T", "It was built in 1889.", 1.0)], ["1889"])
    True
    """
    haystack = " ".join(normalize_answer(f"{d.title} {d.text}") for d in documents)
    needles = [normalize_answer(a) for a in golden_answers if normalize_answer(a)]
    return any(f" {needle} " in f" {haystack} " for needle in needles)


def label_by_containment(documents: Sequence[Document], golden_answers: Sequence[str]) -> DocType:
    """The default labeller: ``useful`` when the documents contain a golden answer, else ``noisy``."""
    return "useful" if contains_answer(documents, golden_answers) else "noisy"


JUDGE_TEMPLATE = (
    "Do the documents below contain the answer to the question? The correct answer is: {answers}.\n"
    "Question: {question}\n"
    "Documents:\n{documents}\n"
    "Reply with one word: yes or no."
)


def render_judge_prompt(question: str, golden_answers: Sequence[str], documents: Sequence[Document]) -> str:
    """The LLM judge's prompt (the GPU profile's labeller)."""
    listing = "\n".join(f"{i}. {d.title}: {d.text}" for i, d in enumerate(documents, start=1))
    return JUDGE_TEMPLATE.format(answers=" | ".join(golden_answers), question=question.strip(), documents=listing)


def parse_judge_reply(reply: str) -> DocType | None:
    """``useful`` for a reply starting with yes, ``noisy`` for no, None when it says neither.

    >>> parse_judge_reply(" Yes, doc 2."), parse_judge_reply("no"), parse_judge_reply("maybe")
    ('useful', 'noisy', None)
    """
    words = re.findall(r"[a-z]+", reply.lower())
    if not words:
        return None
    return {"yes": "useful", "no": "noisy"}.get(words[0])  # type: ignore[return-value]


def choose_doc_type(noise_prob: float, rng: random.Random) -> DocType:
    """Draw the document type of one search: noisy with probability ``noise_prob``.

    >>> choose_doc_type(0.0, random.Random(1)), choose_doc_type(1.0, random.Random(1))
    ('useful', 'noisy')
    """
    return "noisy" if rng.random() < noise_prob else "useful"
