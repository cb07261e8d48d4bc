"""Test doubles shared across the suite: a policy that emits scripted turns and a search session with fixed
documents, both on real token ids of the tiny tokenizer, so episode layouts and masks can be asserted exactly."""

from __future__ import annotations

from collections.abc import Sequence

from zerosearch_core.search.base import Document, SearchBackendError, SearchResult

DOCS = (Document("d1", "Hamlet", "Hamlet is a tragedy by William Shakespeare.", 3.0),)


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
