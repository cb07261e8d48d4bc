"""Model factory: a tiny causal LM and a BPE tokenizer trained here, or a pretrained checkpoint, saved by path.

On CPU (``model.source: tiny``) :func:`build_tiny_policy` trains a byte-level BPE tokenizer on the corpus, with the
search protocol tags (:data:`PROTOCOL_TAGS`) and ChatML markers as special tokens and a chat template, and builds a
small Qwen2 or Llama model from a config. On GPU (``model.source: pretrained``) the checkpoint named by
``model.name_or_path`` (e.g. ``Qwen/Qwen2.5-3B-Instruct``) is loaded unchanged. Either way the result is written with
``save_pretrained`` to ``paths.policy_dir``, and every later stage loads it with :func:`load_causal_lm` by path.

Stage: ``python -m zerosearch_core.cli init_policy --params params.yaml``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from zerosearch_core.artifacts import fingerprint
from zerosearch_core.config import ModelConfig

logger = logging.getLogger(__name__)

PROTOCOL_TAGS: tuple[str, ...] = (
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
    "<answer>",
    "</answer>",
)
"""The tags of the search protocol; the tiny tokenizer keeps each as one special token."""

PAD_TOKEN = "<|endoftext|>"
CHAT_START = "<|im_start|>"
CHAT_END = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the protocol tags as special tokens and a ChatML chat template.

    Args:
        texts: Training text (the corpus passages).
        vocab_size: Target vocabulary size, special tokens included.

    Returns:
        A fast tokenizer whose eos is ``<|im_end|>`` and pad is ``<|endoftext|>``.
    """
    special_tokens = [PAD_TOKEN, CHAT_START, CHAT_END, *PROTOCOL_TAGS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=CHAT_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[CHAT_START, *PROTOCOL_TAGS],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The architecture config of the tiny policy, sized by ``cfg`` and the tokenizer's vocabulary."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    match cfg.architecture:
        case "qwen2":
            return Qwen2Config(**common)
        case "llama":
            return LlamaConfig(**common)
        case other:
            raise ValueError(f"Unknown model.architecture {other!r}; use 'qwen2' or 'llama'.")


def build_tiny_policy(
    cfg: ModelConfig, texts: Iterable[str], seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Train the tokenizer on ``texts`` and initialise a tiny model with weights seeded by ``seed``.

    Returns:
        The randomly initialised model and its tokenizer.
    """
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    config = tiny_model_config(cfg, tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # weight init reads torch's global generator; restore it afterwards
    try:
        model: PreTrainedModel = (
            Qwen2ForCausalLM(config) if isinstance(config, Qwen2Config) else LlamaForCausalLM(config)  # type: ignore[arg-type]
        )
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target_dir: Path) -> None:
    """Write model and tokenizer with ``save_pretrained`` so that any stage can load them by path."""
    target_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""``tokenizer_class`` values of a tokenizer that is its ``tokenizer.json`` and nothing else, as
:func:`train_tokenizer` saves it."""


def saved_tokenizer_class(name_or_path: str | Path) -> str | None:
    """The ``tokenizer_class`` of a tokenizer saved in a local folder (None for a hub id or a folder without one)."""
    config = Path(name_or_path) / "tokenizer_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    return value if isinstance(value, str) else None


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer by path (or hub id where the internet is available), left-padded for generation.

    A tokenizer trained here (:func:`train_tokenizer`) loads from its ``tokenizer.json`` exactly as it was saved.
    ``AutoTokenizer`` would build the tokenizer class registered for the model's type instead (``Qwen2Tokenizer``
    for the tiny qwen2 policy), whose own pre-tokenizer splits digits: "Doc 1" became "Doc", " ", "1" in every stage
    after ``init_policy``, where the cold start had learned "Doc", " 1".
    """
    if saved_tokenizer_class(name_or_path) in GENERIC_TOKENIZER_CLASSES:
        tokenizer: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(str(name_or_path))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


TOKENIZER_PROBE = "<search> Doc 1(Title: Ada) born 1815 </search>\n\n<answer> London </answer>"
"""A text with the protocol's tags and digits, whose ids :func:`tokenizer_identity` hashes."""


def tokenizer_identity(name_or_path: str | Path) -> str:
    """What the stages read a local checkpoint's text as: the class :func:`load_tokenizer` builds and its ids for
    :data:`TOKENIZER_PROBE`; a hub id is its own identity. A resumed run must have seen its text as the policy
    now sees it: the same tokenizer files loaded another way (Qwen2Tokenizer instead of the tokenizer trained here)
    gave other ids for every "Doc 1"."""
    if not Path(name_or_path).is_dir():
        return str(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    return fingerprint({"class": type(tokenizer).__name__, "probe": list(ids)})


def load_causal_lm(name_or_path: str | Path, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM by path exactly as a real checkpoint would be loaded.

    Args:
        name_or_path: A folder written by :func:`save_policy`, or a hub id such as ``Qwen/Qwen2.5-3B-Instruct``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
    """
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=_DTYPES[dtype])
    model.eval()
    return model


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
