"""Prompt templates of the policy: the search protocol instructions and the no-search ("direct") baseline.

Wording is this project's own; the protocol (``<think>``, ``<search>``, ``<information>``, ``<answer>``) is the one
Search-R1 and ZeroSearch train with. :func:`build_prompt_ids` turns a question into the prompt ids every episode
(training, validation, evaluation) starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from zerosearch_core.search.base import Document

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SEARCH_INSTRUCTIONS = (
    "Answer the question below. Think step by step inside <think> and </think> whenever you receive new "
    "information. If you are missing knowledge, search for it by writing a query inside <search> and </search>; "
    "the top results will come back inside <information> and </information>. You may search as many times as "
    "you need. When you are sure, give only the final short answer inside <answer> and </answer>, for example "
    "<answer> Marie Curie </answer>.\nQuestion: {question}"
)

DIRECT_INSTRUCTIONS = (
    "Answer the question below from your own knowledge. Think step by step inside <think> and </think>, then "
    "give only the final short answer inside <answer> and </answer>, for example <answer> Marie Curie </answer>."
    "\nQuestion: {question}"
)

INVALID_ACTION_OBSERVATION = (
    "\nYour last turn had no valid action. Search with <search> query </search> or answer with "
    "<answer> answer </answer>.\n"
)

EMPTY_QUERY_OBSERVATION = (
    "\n\n<information>Empty query. Put a search query inside <search> and </search>.</information>\n\n"
)

SEARCH_FAILED_OBSERVATION = "\n\n<information>The search failed; no documents came back.</information>\n\n"


def render_policy_prompt(question: str, mode: str) -> str:
    """The user message for one question.

    Args:
        question: The benchmark question, as it is.
        mode: ``"search"`` (multi-turn protocol) or ``"direct"`` (answer without searching).

    Returns:
        The instruction text with the question filled in.

    >>> render_policy_prompt("Who wrote Hamlet?", "direct").endswith("Question: Who wrote Hamlet?")
    True
    """
    match mode:
        case "search":
            return SEARCH_INSTRUCTIONS.format(question=question.strip())
        case "direct":
            return DIRECT_INSTRUCTIONS.format(question=question.strip())
        case _:
            raise ValueError(f"Unknown prompt mode {mode!r}; use 'search' or 'direct'.")


def render_documents(documents: Sequence[Document], max_doc_chars: int) -> str:
    """Format retrieved documents the way Search-R1 shows them to the policy.

    >>> render_documents([Document("1", "Paris", "Capital of France.", 1.0)], 100)
    'Doc 1(Title: Paris) Capital of France.'
    """
    return "\n".join(
        f"Doc {i}(Title: {doc.title}) {doc.text[:max_doc_chars]}" for i, doc in enumerate(documents, start=1)
    )


def render_information_block(documents: Sequence[Document], max_doc_chars: int) -> str:
    """The ``<information>`` block appended after a search (its tokens get loss mask 0).

    >>> render_information_block([], 10)
    '\\n\\n<information></information>\\n\\n'
    """
    return f"\n\n<information>{render_documents(documents, max_doc_chars)}</information>\n\n"


PROMPT_TEXTS: tuple[str, ...] = (
    SEARCH_INSTRUCTIONS,
    DIRECT_INSTRUCTIONS,
    INVALID_ACTION_OBSERVATION,
    EMPTY_QUERY_OBSERVATION,
    SEARCH_FAILED_OBSERVATION,
    "Doc 1(Title: ) Doc 2(Title: ) Doc 3(Title: )",
)
"""Every fixed text the policy reads, for training a tokenizer that encodes the protocol compactly."""


def build_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    mode: str,
    use_chat_template: bool,
    template: str | None = None,
) -> list[int]:
    """Prompt ids for one question, through the chat template when asked for and available.

    Args:
        tokenizer: The policy's tokenizer.
        question: The question.
        mode: ``"search"`` or ``"direct"``.
        use_chat_template: Wrap the message in the tokenizer's chat template.
        template: A search-mode prompt of one's own (e.g. the exact one a released checkpoint was trained with),
            with ``{question}`` where the question goes; None uses :func:`render_policy_prompt`.
    """
    if template is not None and mode == "search":
        user_message = template.replace("{question}", question)
    else:
        user_message = render_policy_prompt(question, mode)
    if use_chat_template and tokenizer.chat_template is not None:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(str(rendered), add_special_tokens=False)["input_ids"])
    return list(tokenizer(user_message, add_special_tokens=False)["input_ids"])
