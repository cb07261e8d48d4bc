"""GRPO through TRL's ``GRPOTrainer`` (pinned trl==1.16.0), via its public extension points only.

* ``rollout_func`` runs this project's multi-turn search protocol (:func:`zerosearch_core.agent.loop.run_episodes`) on
  the trainer's own model and returns the sampled ids with ``env_mask`` = the loss mask, so retrieved-document
  tokens get no loss (TRL multiplies it into the completion mask and the loss normaliser). TRL hands each prompt
  already repeated ``num_generations`` times; one completion is returned per prompt, in order.
* The curriculum's noise probability comes from ``trainer.state.global_step``, so a resumed run gets the same value.
* ``reward_funcs`` is :func:`zerosearch_core.agent.rewards.answer_reward` on the text the policy sampled.
* Checkpoints are TRL's own (``checkpoint-N``: weights, optimizer, scheduler, RNG states, trainer state);
  a rerun resumes from the last one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from zerosearch_core.agent.loop import sampled_ids
from zerosearch_core.agent.rewards import answer_reward, bridge_search_bonus
from zerosearch_core.artifacts import checkpoint_is_final, last_complete_checkpoint
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import PolicyBackend, open_policy_backend
from zerosearch_core.rl import distributed
from zerosearch_core.rl.episodes import EpisodeRequest, RLSetup, run_step_episodes, validate_step
from zerosearch_core.search.base import SearchEngine, SearchErrorBudget
from zerosearch_core.seeding import derive_seed

logger = logging.getLogger(__name__)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental; the pin covers it


def make_grpo_config(setup: RLSetup, output_dir: Path) -> Any:
    """Translate ``train`` (the knobs the paper varies) into TRL's ``GRPOConfig``."""
    from trl import GRPOConfig

    train = setup.train
    on_cpu = not torch.cuda.is_available()
    batch = train.prompts_per_step * train.group_size  # sequences each rank generates and trains on per step
    micro = train.micro_batch_size or batch  # TRL accumulates batch / micro passes; it generates the batch once
    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=on_cpu,
        bf16=not on_cpu and setup.dtype == "bfloat16",
        gradient_checkpointing=train.gradient_checkpointing,
        report_to=[],
        max_steps=train.total_steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        num_generations=train.group_size,
        num_iterations=train.epochs_per_step,
        max_completion_length=setup.protocol.rollout.max_total_tokens,
        temperature=train.temperature,
        learning_rate=train.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=train.warmup_steps,
        max_grad_norm=train.max_grad_norm,
        beta=train.kl_coef,
        epsilon=train.clip_eps,
        loss_type="grpo",
        logging_steps=1,
        save_strategy="steps",
        save_steps=train.save_every_steps,
        save_total_limit=2,
        seed=setup.rl_seed % 2**32,
        data_seed=setup.rl_seed % 2**32,
        dataloader_num_workers=0,
    )


class SearchRollout:
    """The ``rollout_func``: multi-turn search episodes on the trainer's model, with the curriculum's noise."""

    def __init__(
        self, setup: RLSetup, engine: SearchEngine, golden: dict[str, tuple[str, ...]], backend: PolicyBackend
    ) -> None:
        self.setup = setup
        self.engine = engine
        self.backend = backend
        self.golden = golden
        self.error_budget = SearchErrorBudget(setup.protocol.max_error_rate)
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        step = int(trainer.state.global_step)
        setup = self.setup
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        generator = self.backend.generator(
            model, setup.train.temperature, derive_seed(setup.rl_seed, "grpo", step), weights_version=step
        )
        requests = [
            EpisodeRequest(question, self.golden[question], derive_seed(setup.rl_seed, step, question, index))
            for index, question in enumerate(prompts)
        ]
        was_training = model.training
        model.eval()
        step_episodes = run_step_episodes(generator, tokenizer, self.engine, requests, step, setup, self.error_budget)
        model.train(was_training)
        episodes = step_episodes.trajectories
        masks = [
            list(e.loss_mask) if setup.train.mask_retrieved_tokens else [1] * len(e.response_ids) for e in episodes
        ]
        sampled = [generator.decode(sampled_ids(e)) for e in episodes]
        self.last_stats = {**step_episodes.statistics, "vllm_sync_gap": self.backend.last_sync_gap}
        return {
            "prompt_ids": step_episodes.prompt_ids,
            "completion_ids": [list(e.response_ids) for e in episodes],
            "logprobs": [list(e.logprobs) for e in episodes],  # sampling log-probs; 0 on masked (inserted) tokens
            "env_mask": masks,
            "sampled_text": sampled,
            "queries": [list(e.queries) for e in episodes],
        }


def make_reward_func(metric: str, yes_no_exact: bool, bridge_bonus: float = 0.0) -> Callable[..., list[float | None]]:
    """A TRL reward function: the answer reward of the text each episode sampled, plus ``bridge_bonus`` when a later
    search names the question's bridge entity (:func:`~zerosearch_core.agent.rewards.bridge_search_bonus`)."""

    def answer_f1(
        prompts: list[Any],
        completions: list[Any],
        sampled_text: list[str],
        golden_answers: list[Any],
        queries: list[list[str]] | None = None,
        bridge: list[str] | None = None,
        **_: Any,
    ) -> list[float | None]:
        episode_queries = queries if queries is not None else [[] for _ in sampled_text]
        bridges = bridge if bridge is not None else [""] * len(sampled_text)
        return [
            answer_reward(text, [str(a) for a in gold], metric, yes_no_exact)
            + bridge_search_bonus(asked, name, bridge_bonus)
            for text, gold, asked, name in zip(sampled_text, golden_answers, episode_queries, bridges, strict=True)
        ]

    answer_f1.__name__ = f"answer_{metric}"
    return answer_f1


class MetricsRelay(TrainerCallback):
    """Forwards TRL's per-step logs, the rollout statistics and, at checkpoint steps, the validation EM/F1 to a
    callback (the CLI logs them to MLflow)."""

    def __init__(
        self,
        rollout: SearchRollout,
        validate: Callable[[Any, int], dict[str, float]],
        on_step: Callable[[dict[str, float]], None] | None,
    ) -> None:
        self.rollout = rollout
        self.validate = validate
        self.on_step = on_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is None or "loss" not in logs or not distributed.is_main_process():
            return  # under a launcher, rank 0 validates and reports
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        metrics.update(self.rollout.last_stats)
        metrics["reward_mean"] = metrics.get("reward", 0.0)
        metrics["step"] = float(state.global_step)
        if state.global_step % args.save_steps == 0 or state.global_step == state.max_steps:
            metrics.update(self.validate(kwargs["model"], int(state.global_step)))
        logger.info(
            "step %d: reward %.3f, noise p %.3f", state.global_step, metrics["reward_mean"], metrics["noise_prob"]
        )
        if self.on_step is not None:
            self.on_step(metrics)


def run_grpo(
    setup: RLSetup,
    questions: pd.DataFrame,
    validation: pd.DataFrame,
    engine: SearchEngine,
    validation_engine: SearchEngine,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[Any, Any]:
    """Train with GRPO from ``setup.policy_dir``, resuming from the last checkpoint; return (model, tokenizer)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    policy_dir = setup.policy_dir
    output_dir = setup.checkpoints_dir
    tokenizer = load_tokenizer(policy_dir)
    model = load_causal_lm(policy_dir, setup.dtype)  # loaded by path, so TRL can rebuild the reference from it
    golden = {
        str(q): tuple(str(a) for a in g)
        for q, g in zip(questions["question"], questions["golden_answers"], strict=True)
    }
    dataset = Dataset.from_dict(
        {
            "prompt": questions["question"].astype(str).tolist(),
            "golden_answers": [list(g) for g in questions["golden_answers"]],
            "bridge": [str(b) if isinstance(b, str) else "" for b in questions.get("bridge", [None] * len(questions))],
        }
    )
    resume = last_complete_checkpoint(output_dir)
    if resume is not None and checkpoint_is_final(Path(resume)):
        logger.info("Training already finished at %s; loading it instead of training further", resume)
        return load_causal_lm(resume, setup.dtype), tokenizer
    rollout_cfg = setup.protocol.rollout
    with open_policy_backend(rollout_cfg, policy_dir, tokenizer, setup.dtype, setup.rl_seed) as backend:
        rollout = SearchRollout(setup, engine, golden, backend)

        def validate(model: Any, step: int) -> dict[str, float]:
            return validate_step(setup, model, tokenizer, validation, validation_engine, backend, step)

        trainer = GRPOTrainer(
            model=model,
            reward_funcs=make_reward_func(setup.reward.metric, setup.reward.yes_no_exact, setup.reward.bridge_bonus),
            args=make_grpo_config(setup, output_dir),
            train_dataset=dataset,
            processing_class=tokenizer,
            rollout_func=rollout,
            callbacks=[MetricsRelay(rollout, validate, on_step)],
        )
        # TRL's progress callback prints every log dict to stdout; MetricsRelay logs one readable line per step.
        trainer.remove_callback(ProgressCallback)
        if resume is not None:
            logger.info("Resumed from %s", resume)
        trainer.train(resume_from_checkpoint=resume)
    return trainer.accelerator.unwrap_model(trainer.model), tokenizer
