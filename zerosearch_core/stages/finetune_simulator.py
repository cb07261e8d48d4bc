"""Stage ``finetune_simulator``: supervised fine-tuning of the simulation LLM on real-search documents, then a
measurement of whether its *useful* documents contain the answer more often than its *noisy* ones.

TRL ``SFTTrainer`` on chat prompt/completion pairs (loss on the documents only), full or LoRA (peft, merged before
saving), checkpoints every ``simulator.save_every_steps`` with resume. On held-out questions the fine-tuned simulator
writes useful and noisy documents for the same query; the share that contains a golden answer is reported for each
type (the same measurement on any profile). Sample outputs are written for people to read.
Run: ``python -m zerosearch_core.cli finetune_simulator --params params.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from zerosearch_core.artifacts import (
    checkpoint_identity,
    checkpoint_is_final,
    file_sha256,
    fingerprint,
    prepare_resumable_dir,
    write_dir_atomically,
    write_text_atomically,
)
from zerosearch_core.config import PipelineConfig, config_to_dict
from zerosearch_core.models import load_causal_lm, load_tokenizer, save_policy
from zerosearch_core.search.base import EpisodeContext, SearchBackendError
from zerosearch_core.search.simulated import LocalLLM, SimulatedSearchEngine
from zerosearch_core.seeding import derive_seed
from zerosearch_core.simulator import contains_answer
from zerosearch_core.stages import StageResult, StepLogger
from zerosearch_core.stages.build_simulator_sft import HELDOUT_FILE, TRAIN_FILE, documents_of

logger = logging.getLogger(__name__)


class LossRelay(TrainerCallback):
    """Forwards the SFT loss per logging step."""

    def __init__(self, log_step: StepLogger | None) -> None:
        self.log_step = log_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is None or "loss" not in logs:
            return
        if self.log_step is not None:
            self.log_step({"sft_loss": float(logs["loss"])}, int(state.global_step))


def base_model_path(cfg: PipelineConfig) -> str:
    """The simulator's starting checkpoint."""
    return cfg.simulator.base_model if cfg.simulator.base_model is not None else cfg.paths.policy_dir


def train_simulator(cfg: PipelineConfig, log_step: StepLogger | None) -> tuple[Any, list[float]]:
    """Fine-tune (or resume); return the trained model (LoRA merged) and the logged losses."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    sim = cfg.simulator
    base = base_model_path(cfg)
    rows = [json.loads(line) for line in (Path(cfg.paths.simulator_sft_dir) / TRAIN_FILE).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    output_dir = Path(cfg.paths.simulator_checkpoints_dir)
    run_identity = {
        "simulator": config_to_dict(sim),
        "seed": cfg.seed,
        "data": file_sha256(Path(cfg.paths.simulator_sft_dir) / TRAIN_FILE),
        "base_weights": checkpoint_identity(base),  # a rebuilt base policy must not resume old checkpoints
    }
    prepare_resumable_dir(output_dir, fingerprint(run_identity))
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
        bf16=not on_cpu and cfg.model.dtype == "bfloat16",
        gradient_checkpointing=False,
        seed=cfg.seed % 2**32,
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
        model=load_causal_lm(base, cfg.model.dtype),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[relay],
    )
    trainer.remove_callback(ProgressCallback)
    resume = get_last_checkpoint(str(output_dir))
    if resume is not None and checkpoint_is_final(Path(resume)):
        logger.info("Resumed simulator fine-tuning from %s, which had finished: loading it", resume)
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        losses = [float(entry["loss"]) for entry in state["log_history"] if "loss" in entry]
        return load_causal_lm(resume, cfg.model.dtype), losses
    if resume is not None:
        logger.info("Resumed simulator fine-tuning from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    # from the trainer state, which a resumed run restores, so the curve covers the whole run
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    model = trainer.model
    if sim.finetune == "lora":
        model = model.merge_and_unload()  # type: ignore[operator,union-attr]  # a peft model here
    model.eval()  # type: ignore[union-attr]
    return model, losses


def measure_answer_rates(
    cfg: PipelineConfig, engine: SimulatedSearchEngine
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Ask for useful and noisy documents for the same held-out queries; report how often each contains an answer."""
    heldout = [json.loads(line) for line in (Path(cfg.paths.simulator_sft_dir) / HELDOUT_FILE).read_text().splitlines()]
    heldout = heldout[: cfg.simulator.eval_questions]
    hits = {"useful": 0, "noisy": 0, "real": 0}
    failures = 0
    samples = []
    for index, item in enumerate(heldout):
        row: dict[str, Any] = {"question": item["question"], "answers": item["golden_answers"], "query": item["query"]}
        hits["real"] += contains_answer(documents_of(item), item["golden_answers"])
        for kind, noise in (("useful", 0.0), ("noisy", 1.0)):
            ctx = EpisodeContext(
                item["question"], tuple(item["golden_answers"]), noise, derive_seed(cfg.seed, "sim-eval", index)
            )
            try:
                documents = engine.open_session(ctx).search(item["query"], cfg.search.top_k).documents
            except SearchBackendError:
                failures += 1  # counted; an unusable output contains no answer
                documents = ()
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


def run(cfg: PipelineConfig, log_step: StepLogger | None = None) -> StageResult:
    """Fine-tune, save, and measure the simulator."""
    model, losses = train_simulator(cfg, log_step)
    tokenizer = load_tokenizer(base_model_path(cfg))
    engine = SimulatedSearchEngine(
        LocalLLM(model, tokenizer), cfg.simulator, cfg.rollout.max_doc_chars, {"model": "fine-tuned"}
    )
    rates, samples = measure_answer_rates(cfg, engine)
    stats = engine.stats
    summary = {
        **rates,
        **({"sft_loss_first": losses[0], "sft_loss_last": losses[-1]} if losses else {}),
        "missing_documents": float(stats.missing_documents),
        "overlong_documents": float(stats.overlong_documents),
        "unnumbered_outputs": float(stats.unnumbered),
    }
    target = Path(cfg.paths.simulator_dir)

    def write(folder: Path) -> None:
        save_policy(model, tokenizer, folder)
        (folder / "samples.md").write_text(render_samples(samples))

    write_dir_atomically(target, write)
    write_text_atomically(Path(cfg.paths.simulator_metrics), json.dumps(summary, indent=2) + "\n")
    return StageResult(metrics=summary, artifacts=(target / "samples.md", Path(cfg.paths.simulator_metrics)))
