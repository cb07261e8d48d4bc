"""Generation backends for the agent loop, and the weight sync between trainer and vLLM.

A :class:`~zerosearch_core.agent.loop.PolicyGenerator` is :class:`HFPolicyGenerator` (transformers ``generate`` on the
trainer's model) or :class:`VLLMPolicyGenerator` (a vLLM engine in process). :class:`PolicyBackend`, opened by
:func:`open_policy_backend` from ``rollout.engine``, hands one to each rollout and keeps vLLM's weights in step with
the trainer's (checked on a probe text, :class:`WeightSyncError` when they drift).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.config import RolloutConfig
from zerosearch_core.seeding import derive_seed

if TYPE_CHECKING:
    from zerosearch_core.models.vllm_backend import VLLMEngine
from zerosearch_core.agent.loop import STOP_STRINGS, PolicyGenerator, Sampled


class HFPolicyGenerator:
    """:class:`PolicyGenerator` on transformers ``generate`` with the model it is given (``rollout.engine: hf``)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, temperature: float, seed: int):
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.stop_ids = {i for i in (tokenizer.eos_token_id,) if i is not None}
        # When every stop string is one token (the tiny tokenizer makes the tags special tokens), stop on ids: far
        # cheaper than transformers' stop-string matching. Otherwise (e.g. Qwen's tokenizer) match the strings.
        tag_ids = [self.encode(stop) for stop in STOP_STRINGS]
        self.tag_stop_ids = {ids[0] for ids in tag_ids} if all(len(ids) == 1 for ids in tag_ids) else set()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens added around it."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids with special tokens (the protocol tags) kept."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    @torch.no_grad()
    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[Sampled]:
        """Left-pad the batch, generate, and cut each row at its own stop; log-probs come from the same logits.

        transformers samples the whole batch from one stream, so ``seeds`` is not used: the generator's own seeded
        stream makes a run reproducible (a row's sample then depends on its batch-mates)."""
        pad_id = int(self.tokenizer.pad_token_id)
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
        sampling = self.temperature > 0
        # Generation reads torch's global RNG; fork it so that a seeded run is reproducible and isolated.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
            output = self.model.generate(  # type: ignore[operator]  # transformers types generate loosely
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=self.temperature if sampling else None,
                top_p=None,
                top_k=None,
                stop_strings=None if self.tag_stop_ids else list(STOP_STRINGS),
                tokenizer=self.tokenizer,
                pad_token_id=pad_id,
                eos_token_id=sorted(self.stop_ids | self.tag_stop_ids),
                output_logits=True,
                return_dict_in_generate=True,
            )
        new_tokens = output.sequences[:, width:]  # (B, N)
        logits = torch.stack(output.logits, dim=1).float()  # (B, N, V)
        if sampling:
            logits = logits / self.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens[..., None]).squeeze(-1)  # (B, N)
        results = []
        for ids, row_logprobs in zip(new_tokens.tolist(), logprobs.tolist(), strict=True):
            kept = self.cut_at_stop(ids)
            results.append((kept, row_logprobs[: len(kept)]))
        return results

    def cut_at_stop(self, ids: list[int]) -> list[int]:
        """Keep ids up to and including the first eos or the token that completes a stop string."""
        text = ""
        for position, token_id in enumerate(ids):
            if token_id in self.stop_ids or token_id in self.tag_stop_ids:
                return ids[: position + 1]
            if self.tag_stop_ids:
                continue
            text += self.decode([token_id])
            if any(stop in text[-32:] for stop in STOP_STRINGS):
                return ids[: position + 1]
        return ids


class VLLMPolicyGenerator:
    """:class:`PolicyGenerator` on a :class:`~zerosearch_core.models.vllm_backend.VLLMEngine`: each row samples with
    its own seed, stops on the tags' ids (or strings, when a tag is several tokens) and eos, and returns vLLM's
    log-probs of the sampled tokens under the sampling distribution."""

    def __init__(self, engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase, temperature: float, seed: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.seed = seed
        self.calls = 0
        self.stop_ids = {i for i in (tokenizer.eos_token_id,) if i is not None}
        tag_ids = [self.encode(stop) for stop in STOP_STRINGS]
        single_token_tags = all(len(ids) == 1 for ids in tag_ids)
        self.stop_token_ids = sorted(self.stop_ids | ({ids[0] for ids in tag_ids} if single_token_tags else set()))
        self.stop_strings: tuple[str, ...] = () if single_token_tags else STOP_STRINGS

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens added around it."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids with special tokens (the protocol tags) kept."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[Sampled]:
        """One turn per sequence; row ``i`` samples with ``derive_seed(self.seed, seeds[i])`` (with no seeds, the
        call number and row), so a row's sample does not depend on its batch-mates."""
        if seeds is None:
            row_seeds = [derive_seed(self.seed, self.calls, row) for row in range(len(sequences))]
        else:
            row_seeds = [derive_seed(self.seed, seed) for seed in seeds]
        self.calls += 1
        return self.engine.generate(
            sequences, max_new_tokens, self.temperature, row_seeds, self.stop_token_ids, self.stop_strings
        )


class WeightSyncError(RuntimeError):
    """vLLM's log-probs differ from the trainer's model after a weight sync: the engine is not running the weights
    being trained, and every sample from it would be off-policy."""


class PolicyBackend:
    """Makes each rollout's :class:`PolicyGenerator`: transformers on the model it is given, or the vLLM engine
    given that model's weights first.

    With vLLM, :meth:`generator` loads the model's weights into the engine whenever ``weights_version`` (the optimizer
    step) differs from the last one loaded, and checks the sync: the engine's log-probs of a probe sequence must equal
    the model's to ``sync_tolerance``, or :class:`WeightSyncError` stops the run.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vllm: VLLMEngine | None = None,
        sync_tolerance: float = 1e-3,
    ) -> None:
        self.tokenizer = tokenizer
        self.vllm = vllm
        self.sync_tolerance = sync_tolerance
        self.synced_version: int | None = None
        self.syncs = 0
        self.last_sync_gap = 0.0
        self.probe_ids = list(tokenizer(SYNC_PROBE_TEXT, add_special_tokens=False)["input_ids"])

    @property
    def kind(self) -> str:
        """``hf`` or ``vllm``."""
        return "hf" if self.vllm is None else "vllm"

    def generator(
        self, model: PreTrainedModel | None, temperature: float, seed: int, weights_version: int | None = None
    ) -> PolicyGenerator:
        """The generator of one rollout with ``model``'s current weights.

        Args:
            model: The trainer's model; None with vLLM serves the weights the engine was started from.
            temperature: Sampling temperature (0: greedy).
            seed: Root seed of the rollout's sampling.
            weights_version: Which weights ``model`` holds (the optimizer step); None syncs on every call.
        """
        if self.vllm is None:
            if model is None:
                raise ValueError("The transformers backend generates with a model; pass the policy.")
            return HFPolicyGenerator(model, self.tokenizer, temperature, seed)
        if model is not None and (weights_version is None or weights_version != self.synced_version):
            self.sync(model)
            self.synced_version = weights_version
        return VLLMPolicyGenerator(self.vllm, self.tokenizer, temperature, seed)

    def sync(self, model: PreTrainedModel) -> float:
        """Load ``model``'s weights into the engine and check them; returns the probe's largest log-prob gap."""
        assert self.vllm is not None
        self.vllm.load_weights(model)
        self.syncs += 1
        gap = self.sync_gap(model)
        self.last_sync_gap = gap
        if gap > self.sync_tolerance:
            raise WeightSyncError(
                f"After loading the trainer's weights, vLLM's log-probs differ from the model's by up to {gap:.3g} "
                f"on the probe sequence (rollout.vllm_sync_tolerance {self.sync_tolerance:g}). The engine is not "
                "running the weights being trained; check that the model's parameter names match the checkpoint's "
                "(vLLM's reload_weights) or raise the tolerance for a lower-precision dtype."
            )
        return gap

    def sync_gap(self, model: PreTrainedModel) -> float:
        """Largest |log-prob difference| between the engine and ``model`` over the probe sequence's tokens."""
        assert self.vllm is not None
        served = torch.tensor(self.vllm.sequence_logprobs([self.probe_ids])[0])
        return float((served - model_sequence_logprobs(model, self.probe_ids)).abs().max())


SYNC_PROBE_TEXT = "Answer the question. <search> capital of France </search> <answer> Paris </answer>"
"""The sequence whose log-probs check a weight sync (any text the tokenizer can encode in a few tokens)."""


@torch.no_grad()
def model_sequence_logprobs(model: PreTrainedModel, ids: Sequence[int]) -> torch.Tensor:
    """Log-prob of each token after the first of ``ids`` under ``model`` (eval mode, float32), shape (len(ids) - 1,)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.tensor([list(ids)], device=device)).logits[0, :-1].float()  # (T-1, V)
    model.train(was_training)
    targets = torch.tensor(list(ids)[1:], device=device)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1).cpu()


@contextmanager
def open_policy_backend(
    cfg: RolloutConfig, model_dir: Path, tokenizer: PreTrainedTokenizerBase, dtype: str, seed: int
) -> Iterator[PolicyBackend]:
    """The ``rollout.engine`` backend for the policy at ``model_dir``: transformers (nothing to start) or a vLLM engine
    started from ``model_dir`` and stopped on exit."""
    if cfg.engine == "hf":
        yield PolicyBackend(tokenizer)
        return
    from zerosearch_core.models.vllm_backend import VLLMSettings, open_vllm_engine

    settings = VLLMSettings(
        dtype=dtype,
        max_model_len=cfg.max_total_tokens,
        kv_cache_gib=cfg.vllm_kv_cache_gib,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        enforce_eager=cfg.vllm_enforce_eager,
        seed=seed % 2**31,
    )
    with open_vllm_engine(model_dir, settings) as engine:
        yield PolicyBackend(tokenizer, engine, cfg.vllm_sync_tolerance)
