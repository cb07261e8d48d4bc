"""Supervised fine-tuning of the simulation LLM on real-search documents, and the measurement of whether its *useful*
documents contain the answer more often than its *noisy* ones.

TRL ``SFTTrainer`` on chat prompt/completion pairs (loss on the documents only), full or LoRA (peft, merged before
saving), checkpoints every ``simulator.save_every_steps`` with resume from the last complete one. On held-out
questions the fine-tuned simulator writes useful and noisy documents for the same query; the share that contains a
golden answer is reported for each type. Stage: ``finetune_simulator``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from zerosearch_core.artifacts import (
    checkpoint_identity,
    checkpoint_is_final,
    code_digest,
    file_sha256,
    last_complete_checkpoint,
    prepare_resumable_dir,
)
from zerosearch_core.config import SimulatorConfig, config_to_dict, is_service_key
from zerosearch_core.models.build import load_causal_lm, load_tokenizer, tokenizer_identity
from zerosearch_core.search.base import Document, EpisodeContext, SearchBackendError, SearchResult, SearchSession
from zerosearch_core.seeding import derive_seed
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.prompts import contains_answer
from zerosearch_core.simulator.sft_data import HELDOUT_FILE, TRAIN_FILE, documents_of

logger = logging.getLogger(__name__)

StepLogger = Callable[[dict[str, float], int], None]
"""Receives a training step's metrics and the step number."""

ANSWER_RATE_BATCH = 64
"""Searches per simulator call when measuring answer rates (32 held-out queries, useful and noisy, in one)."""


class LossRelay(TrainerCallback):
    """Forwards the SFT loss per logging step."""

    def __init__(self, log_step: StepLogger | None) -> None:
        self.log_step = log_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is None or "loss" not in logs:
            return
        if self.log_step is not None:
            self.log_step({"sft_loss": float(logs["loss"])}, int(state.global_step))


def train_simulator(
    sim: SimulatorConfig,
    base: str,
    sft_dir: Path,
    output_dir: Path,
    seed: int,
    dtype: str,
    log_step: StepLogger | None,
) -> tuple[Any, list[float], str]:
    """Fine-tune (or resume) the simulator on ``sft_dir``'s train split.

    Args:
        sim: The ``simulator`` section.
        base: The starting checkpoint (``simulator.base_model``, or the initial policy).
        sft_dir: The SFT data (``build_simulator_sft``'s output).
        output_dir: Checkpoints; a rerun of the same run (same sections, data and base weights) resumes there.
        seed: The root seed.
        dtype: Weight dtype.
        log_step: Receives the SFT loss per logging step.

    Returns:
        The trained model (LoRA merged), the logged losses, and how the run started
        (:func:`~zerosearch_core.artifacts.run_start`).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in (sft_dir / TRAIN_FILE).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    run_identity = {
        "simulator": {k: v for k, v in config_to_dict(sim).items() if not is_service_key(f"simulator.{k}")},
        "seed": seed,
        "data": file_sha256(sft_dir / TRAIN_FILE),
        "base_weights": checkpoint_identity(base),  # a rebuilt base policy must not resume old checkpoints
        "base_tokenizer": tokenizer_identity(base),  # nor one whose text now reads as other ids
        "code": code_digest(__name__),  # nor checkpoints of other code
    }
    start = prepare_resumable_dir(output_dir, run_identity, what="paths.simulator_checkpoints_dir")
    logger.info("Simulator fine-tuning in %s: %s", output_dir, start)
    tokenizer = load_tokenizer(base)
    tokenizer.padding_side = "right"
    on_cpu = not torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=sim.epochs,
        learning_rate=sim.learning_rate,
        per_device_train_batch_size=sim.batch_size,
        max_length=sim.max_length,
        completion_only_loss=True,
        save_strategy="steps",
        save_steps=sim.save_every_steps,
        save_total_limit=2,
        logging_steps=1,
        report_to=[],
        use_cpu=on_cpu,
        bf16=not on_cpu and dtype == "bfloat16",
        gradient_checkpointing=False,
        seed=seed % 2**32,
        dataloader_num_workers=0,
    )
    peft_config = None
    if sim.finetune == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=sim.lora_rank, lora_alpha=2 * sim.lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    relay = LossRelay(log_step)
    trainer = SFTTrainer(
        model=load_causal_lm(base, dtype),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[relay],
    )
    trainer.remove_callback(ProgressCallback)
    resume = last_complete_checkpoint(output_dir)
    if resume is not None and checkpoint_is_final(Path(resume)):
        logger.info("Resumed simulator fine-tuning from %s, which had finished: loading it", resume)
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        losses = [float(entry["loss"]) for entry in state["log_history"] if "loss" in entry]
        return load_causal_lm(resume, dtype), losses, start
    if resume is not None:
        logger.info("Resumed simulator fine-tuning from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    # from the trainer state, which a resumed run restores, so the curve covers the whole run
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    model = trainer.model
    if sim.finetune == "lora":
        model = model.merge_and_unload()  # type: ignore[operator,union-attr]  # a peft model here
    model.eval()  # type: ignore[union-attr]
    return model, losses, start


def measure_answer_rates(
    engine: SimulatedSearchEngine,
    sft_dir: Path,
    eval_questions: int,
    top_k: int,
    seed: int,
    progress: Callable[[int, str], Callable[[int], None]] | None = None,
    label: str = "simulator answer rates",
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Ask for useful and noisy documents for the same held-out queries; report how often each contains an answer.

    Args:
        engine: The simulator to measure.
        sft_dir: The SFT data folder, whose held-out split holds the queries and their real documents.
        eval_questions: How many held-out interactions to measure on.
        top_k: Documents per query.
        seed: The root seed.
        progress: Makes the progress bar of the searches, described by ``label``.
    """
    heldout = [json.loads(line) for line in (sft_dir / HELDOUT_FILE).read_text().splitlines()]
    heldout = heldout[:eval_questions]
    hits = {"useful": 0, "noisy": 0, "real": 0}
    failures = 0
    samples = []
    # Every query's useful and noisy search goes to the simulator at once, in batches of ANSWER_RATE_BATCH searches
    # (one generate call each, with its resamples), not one search at a time: 64 one-by-one searches took 85 s of
    # the quickstart's finetune_simulator on 2 cores.
    requests: list[tuple[SearchSession, str]] = []
    for index, item in enumerate(heldout):
        for noise in (0.0, 1.0):
            ctx = EpisodeContext(
                item["question"], tuple(item["golden_answers"]), noise, derive_seed(seed, "sim-eval", index)
            )
            requests.append((engine.open_session(ctx), item["query"]))
    outcomes: list[SearchResult | SearchBackendError] = []
    advance = progress(len(requests), label) if progress is not None else None
    for start in range(0, len(requests), ANSWER_RATE_BATCH):
        batch = requests[start : start + ANSWER_RATE_BATCH]
        outcomes += engine.search_batch(batch, top_k)
        if advance is not None:
            advance(len(batch))
    for index, item in enumerate(heldout):
        row: dict[str, Any] = {"question": item["question"], "answers": item["golden_answers"], "query": item["query"]}
        hits["real"] += contains_answer(documents_of(item), item["golden_answers"])
        for offset, kind in enumerate(("useful", "noisy")):
            outcome = outcomes[2 * index + offset]
            if isinstance(outcome, SearchBackendError):
                failures += 1  # counted; an unusable output contains no answer
                documents: tuple[Document, ...] = ()
            else:
                documents = outcome.documents
            hits[kind] += contains_answer(documents, item["golden_answers"])
            row[kind] = [f"({d.title}) {d.text}" for d in documents]
        samples.append(row)
    count = max(len(heldout), 1)
    metrics = {
        "useful_answer_rate": hits["useful"] / count,
        "noisy_answer_rate": hits["noisy"] / count,
        "useful_minus_noisy": (hits["useful"] - hits["noisy"]) / count,
        "real_documents_answer_rate": hits["real"] / count,
        "heldout_queries": float(len(heldout)),
        "unusable_outputs": float(failures),
    }
    return metrics, samples


def render_samples(samples: list[dict[str, Any]]) -> str:
    """Sample simulator outputs, useful beside noisy, as Markdown."""
    lines = ["# Simulator samples (held-out questions)", ""]
    for sample in samples:
        lines += [
            f"## {sample['question']}",
            f"answers: {', '.join(sample['answers'])}; query: `{sample['query']}`",
            "",
        ]
        for kind in ("useful", "noisy"):
            lines.append(f"**{kind}**")
            lines += [f"- {doc}" for doc in sample[kind]] or ["- (no usable document)"]
            lines.append("")
    return "\n".join(lines)
