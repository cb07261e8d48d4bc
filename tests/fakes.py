"""Test doubles shared across the suite: a policy that emits scripted turns and a search session with fixed
documents, both on real token ids of the tiny tokenizer, so episode layouts and masks can be asserted exactly."""

from __future__ import annotations

from collections.abc import Sequence

from zerosearch_core.search.base import Document, SearchBackendError, SearchResult

DOCS = (Document("d1", "Hamlet", "Hamlet is a tragedy by William Shakespeare.", 3.0),)


class AnsweringPolicy:
    """Searches the question it finds in its sequence once, then answers with ``answer(question, seen)``, where
    ``seen`` is everything after the question (the retrieved block). Real token ids of the tiny tokenizer; what it
    writes depends only on the sequence it continues."""

    def __init__(self, tokenizer, answers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.answers = answers
        self.stop_ids = {tokenizer.eos_token_id}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def answer(self, question: str, seen: str) -> str:
        return self.answers[question]

    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[tuple[list[int], list[float]]]:
        out = []
        for sequence in sequences:
            text = self.decode(sequence)
            question = next(q for q in self.answers if q in text)
            seen = text.split(question)[-1]
            searched = "<information>" in seen  # the prompt itself names the tags, before the question
            ids = self.encode(
                f"<answer> {self.answer(question, seen)} </answer>" if searched else f"<search> {question} </search>"
            )
            out.append((ids, [0.0] * len(ids)))
        return out


class ScriptedPolicy:
    """Emits fixed turns (as real token ids of the tiny tokenizer) and records what it was shown."""

    def __init__(self, tokenizer, turns: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.turns = [self.encode(t) for t in turns]
        self.stop_ids = {tokenizer.eos_token_id}
        self.seen: list[list[int]] = []

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[tuple[list[int], list[float]]]:
        self.seen.extend(list(s) for s in sequences)
        turn = self.turns[min(len(self.seen) - 1, len(self.turns) - 1)]
        return [(turn[:max_new_tokens], [0.0] * len(turn[:max_new_tokens])) for _ in sequences]


class FakeSession:
    def __init__(self, fail: bool = False) -> None:
        self.queries: list[str] = []
        self.fail = fail

    def search(self, query: str, top_k: int) -> SearchResult:
        self.queries.append(query)
        if self.fail:
            raise SearchBackendError("backend down")
        return SearchResult(documents=DOCS[:top_k], status="ok", latency_s=0.0)
