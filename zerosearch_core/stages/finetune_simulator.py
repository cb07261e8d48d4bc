"""Stage ``finetune_simulator``: fine-tune the simulation LLM on real-search documents, then measure whether its
*useful* documents contain the answer more often than its *noisy* ones (:mod:`zerosearch_core.simulator.finetune`).
With ``simulator.mode: prompted`` the base model is saved as it is and measured with the few-shot prompt.

Run: ``python -m zerosearch_core.cli finetune_simulator --params params.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from zerosearch_core.artifacts import write_dir_atomically, write_text_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer, save_policy
from zerosearch_core.simulator.engine import SimulatedSearchEngine
from zerosearch_core.simulator.finetune import measure_answer_rates, render_samples, train_simulator
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.stages import StageHooks, StageResult

PARAMS = (
    "seed",
    "search.top_k",
    "model.dtype",
    "rollout.max_doc_chars",
    "simulator.base_model",
    "simulator.finetune",
    "simulator.lora_rank",
    "simulator.learning_rate",
    "simulator.epochs",
    "simulator.batch_size",
    "simulator.max_length",
    "simulator.answer_aware",  # its held-out check renders the serving prompt
    "simulator.save_every_steps",
    "simulator.eval_questions",
    "simulator.mode",
    "simulator.doc_words",
    "simulator.max_new_tokens",
    "simulator.temperature",
    "simulator.type_check",
    "simulator.type_check_attempts",
    "paths.policy_dir",
    "paths.simulator_sft_dir",
    "paths.simulator_checkpoints_dir",
    "paths.simulator_dir",
    "paths.simulator_metrics",
)


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Fine-tune, save, and measure the simulator."""
    sim = cfg.simulator
    base = sim.base_model if sim.base_model is not None else cfg.paths.policy_dir
    sft_dir = Path(cfg.paths.simulator_sft_dir)
    checkpoints = Path(cfg.paths.simulator_checkpoints_dir)
    if sim.mode == "prompted":  # the paper's prompt-only baseline: the base model as it is, asked few-shot
        losses: list[float] = []
        model, start = load_causal_lm(base, cfg.model.dtype), "not fine-tuned (simulator.mode: prompted)"
    else:
        model, losses, start = train_simulator(
            sim, base, sft_dir, checkpoints, cfg.seed, cfg.model.dtype, hooks.log_step
        )
    tokenizer = load_tokenizer(base)
    llm = LocalLLM(model, tokenizer)
    engine = SimulatedSearchEngine(llm, sim, cfg.rollout.max_doc_chars, {"model": "fine-tuned"})
    rates, samples = measure_answer_rates(
        engine, sft_dir, sim.eval_questions, cfg.search.top_k, cfg.seed, hooks.progress
    )
    stats = engine.stats
    if sim.type_check != "as_written":  # the model's own rates too, so the check's share is visible
        plain = SimulatedSearchEngine(
            llm, dataclasses.replace(sim, type_check="as_written"), cfg.rollout.max_doc_chars, {"model": "fine-tuned"}
        )
        as_written, _ = measure_answer_rates(
            plain, sft_dir, sim.eval_questions, cfg.search.top_k, cfg.seed, hooks.progress, "answer rates as written"
        )
        rates.update({f"{k}_as_written": as_written[k] for k in ("useful_answer_rate", "noisy_answer_rate")})
        rates.update(type_resamples=float(stats.type_resamples), type_unmet=float(stats.type_unmet))
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
    return StageResult(
        metrics=summary,
        artifacts=(target / "samples.md", Path(cfg.paths.simulator_metrics)),
        tags={"run_start": start},
    )
