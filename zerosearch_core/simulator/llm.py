"""The simulator's LLM clients: :class:`LLMClient` is what the simulated engine and the server generate through;
:class:`LocalLLM` runs a transformers model in this process, :class:`VLLMChat` a vLLM engine in this process (the
OpenAI-compatible client is :class:`zerosearch_core.simulator.client.OpenAICompatibleLLM`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

if TYPE_CHECKING:
    from zerosearch_core.models.vllm_backend import VLLMEngine


class LLMClient(Protocol):
    """Generates completions for chat prompts (a local model, or an OpenAI-compatible server)."""

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion per user message, in order."""
        ...


class LocalLLM:
    """:class:`LLMClient` on a transformers model in this process (chat template applied when there is one)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        """Batched generation for user messages, seeded by ``seed``."""
        return self.complete_rendered([self.render(p) for p in prompts], max_new_tokens, temperature, seed)

    @torch.no_grad()
    def complete_rendered(
        self,
        texts: Sequence[str],
        max_new_tokens: int,
        temperature: float,
        seed: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Batched, left-padded generation of already rendered texts.

        Args:
            should_stop: Asked after every generated token; True ends the generation there (the server's way of
                cancelling a batch nobody waits for any more). The texts are then cut short.
        """
        self.tokenizer.padding_side = "left"
        criteria = StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop is not None else None
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = temperature > 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2**31)
            output = self.model.generate(  # type: ignore[operator]
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_k=None,
                top_p=None,
                pad_token_id=int(self.tokenizer.pad_token_id),
                stopping_criteria=criteria,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
        return [str(t) for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def render(self, prompt: str) -> str:
        """A user message through the chat template (unchanged when the tokenizer has none)."""
        return render_user_message(self.tokenizer, prompt)


class _StopWhen(StoppingCriteria):
    """Ends generation for every row once ``should_stop()`` says so."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        stop = bool(self.should_stop())
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class VLLMChat:
    """:class:`LLMClient` on a vLLM engine in this process: the same chat rendering as :class:`LocalLLM`, and prompt
    ``i`` of a call sampled with its own seed ``seed + i``, as the OpenAI client asks a server to, so that in process
    and behind vLLM's server the same seeds give the same documents."""

    def __init__(self, engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase) -> None:
        self.engine = engine
        self.tokenizer = tokenizer

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        """One completion per user message, ending at eos or the budget."""
        ids = [
            list(self.tokenizer(render_user_message(self.tokenizer, p), add_special_tokens=False)["input_ids"])
            for p in prompts
        ]
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        seeds = [seed + index for index in range(len(prompts))]
        outputs = self.engine.generate(ids, max_new_tokens, temperature, seeds, stop_token_ids=eos)
        return [str(self.tokenizer.decode(out, skip_special_tokens=True)) for out, _ in outputs]


def render_user_message(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """A user message through the tokenizer's chat template (unchanged when it has none)."""
    if tokenizer.chat_template is None:
        return prompt
    messages = [{"role": "user", "content": prompt}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
