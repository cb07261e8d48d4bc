"""PPO and REINFORCE++ for the search policy, written small on torch: rollouts, rewards, advantages, updates,
checkpoints and resume. (GRPO runs in TRL's ``GRPOTrainer``: :mod:`zerosearch_core.rl.grpo`.)

One step: the curriculum gives the noise probability for this step; ``prompts_per_step`` training questions are
drawn (seeded); each is rolled out ``group_size`` times through the search protocol; the F1 (or EM) of each answer is
the reward; advantages come from the algorithm (``reinforce``: REINFORCE++ returns with a group-mean baseline;
``ppo``: GAE with a value model), with the KL to the initial policy as a per-token penalty in the reward; the clipped
objective is minimised over the sampled tokens only (retrieved tokens are masked, unless
``train.mask_retrieved_tokens`` is false). A checkpoint (policy, optimizer, scheduler, value model, RNG states,
step) is written every ``save_every_steps``; a rerun resumes from the last one with the same curriculum value.

Stage: ``python -m zerosearch_core.cli train_policy --params params.yaml``.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.agent.loop import PolicyGenerator, Trajectory, sampled_ids
from zerosearch_core.agent.rewards import answer_reward, bridge_search_bonus
from zerosearch_core.artifacts import remove_path, write_dir_atomically
from zerosearch_core.config import TrainConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer, save_policy
from zerosearch_core.models.generation import HFPolicyGenerator, PolicyBackend, open_policy_backend
from zerosearch_core.rl import distributed
from zerosearch_core.rl.advantages import (
    compute_gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    reinforce_advantages,
    token_rewards,
    value_loss,
)
from zerosearch_core.rl.episodes import EpisodeRequest, RLSetup, StepEpisodes, run_step_episodes, validate_step
from zerosearch_core.search.base import SearchEngine, SearchErrorBudget
from zerosearch_core.seeding import derive_seed

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
LATEST_FILE = "latest"


@dataclass
class TokenBatch:
    """Trajectories as right-padded tensors in *predicted-token* space (position j predicts token j + 1)."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    loss_mask: torch.Tensor  # (B, L-1): 1 where the predicted token is a trained response token
    scores: torch.Tensor  # (B,)


def build_token_batch(
    trajectories: Sequence[Trajectory], scores: Sequence[float], pad_id: int, mask_retrieved: bool
) -> TokenBatch:
    """Pad prompt + response ids into one batch and align the loss mask with next-token predictions.

    Args:
        trajectories: Finished episodes.
        scores: Their rewards.
        pad_id: Padding token id.
        mask_retrieved: Use the rollout's loss mask (True) or train on every response token (the ablation).
    """
    length = max(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
    input_ids = torch.full((len(trajectories), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    loss_mask = torch.zeros((len(trajectories), length - 1), dtype=torch.long)
    for row, traj in enumerate(trajectories):
        ids = list(traj.prompt_ids) + list(traj.response_ids)
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        response_mask = list(traj.loss_mask) if mask_retrieved else [1] * len(traj.response_ids)
        start = len(traj.prompt_ids) - 1  # the prediction of the first response token sits at the last prompt token
        loss_mask[row, start : start + len(response_mask)] = torch.tensor(response_mask, dtype=torch.long)
    return TokenBatch(input_ids, attention_mask, loss_mask, torch.tensor(list(scores), dtype=torch.float32))


def sampling_logprob_gap(trajectories: Sequence[Trajectory], trainer_logprobs: torch.Tensor) -> float:
    """Mean |log-prob the generator reported - the trainer's| over sampled tokens: ~1e-6 when the rollout engine
    runs the trainer's weights in float32, large when it does not (a stale or failed weight sync).

    Args:
        trajectories: The batch's episodes, in row order of ``trainer_logprobs``.
        trainer_logprobs: :func:`token_logprobs` of the batch, (B, L-1).
    """
    gaps: list[float] = []
    for row, traj in enumerate(trajectories):
        start = len(traj.prompt_ids) - 1
        for offset, (sampled, logprob) in enumerate(zip(traj.loss_mask, traj.logprobs, strict=True)):
            if sampled:
                gaps.append(abs(logprob - float(trainer_logprobs[row, start + offset])))
    return sum(gaps) / len(gaps) if gaps else 0.0


def token_logprobs(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """Log-probabilities of each next token under ``model``, (B, L-1)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)


def micro_batches(rows: int, size: int | None) -> list[slice]:
    """The row slices of a batch of ``rows`` taken ``size`` at a time (the last may be shorter); one slice for
    ``size`` None (``train.micro_batch_size: null``).

    >>> micro_batches(5, 2), micro_batches(5, None)
    ([slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)], [slice(0, 5, None)])
    """
    step = rows if size is None else size
    return [slice(start, min(start + step, rows)) for start in range(0, rows, max(step, 1))]


def batch_rows(batch: TokenBatch, rows: slice) -> TokenBatch:
    """The rows ``rows`` of ``batch`` (same padding and length)."""
    return TokenBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.loss_mask[rows], batch.scores[rows])


def chunked(function: Callable[[TokenBatch], torch.Tensor], batch: TokenBatch, size: int | None) -> torch.Tensor:
    """``function`` of ``batch`` computed ``size`` rows at a time and joined (for passes without gradients)."""
    parts = micro_batches(batch.input_ids.shape[0], size)
    if len(parts) == 1:
        return function(batch)
    return torch.cat([function(batch_rows(batch, rows)) for rows in parts])


class ValueModel(nn.Module):
    """A critic: the policy's transformer body with a scalar head, initialised from the policy checkpoint."""

    def __init__(self, body: PreTrainedModel) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, policy_path: str | Path) -> ValueModel:
        """Build a critic whose body is loaded from the policy checkpoint."""
        return cls(AutoModel.from_pretrained(str(policy_path)))

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """Value of the state before each predicted token, (B, L-1)."""
        hidden = self.body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1)[:, :-1]

    def save(self, folder: Path) -> None:
        """Write body (save_pretrained) and head."""
        self.body.save_pretrained(folder / "body")
        torch.save(self.head.state_dict(), folder / "head.pt")

    @classmethod
    def load(cls, folder: Path) -> ValueModel:
        """Read a critic written by :meth:`save`."""
        critic = cls(AutoModel.from_pretrained(str(folder / "body")))
        critic.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return critic


@dataclass
class TrainerState:
    """What a checkpoint restores besides weights: the step, RNG states and the metrics so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def advantages_for(
    algorithm: str,
    batch: TokenBatch,
    kl_per_token: torch.Tensor,
    train: TrainConfig,
    values: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token advantages (B, L-1) and, for PPO, the value targets (the KL to the reference enters the reward)."""
    mask = batch.loss_mask
    match algorithm:
        case "reinforce":
            # REINFORCE++ with a baseline: each score minus its group's mean, then returns, then batch whitening
            baseline_free = (
                group_advantages(batch.scores, train.group_size, scale=False) if train.group_size > 1 else batch.scores
            )
            shaped = token_rewards(baseline_free, mask) - train.kl_coef * kl_per_token * mask
            return reinforce_advantages(shaped, mask, train.gamma), None
        case "ppo":
            assert values is not None
            shaped = token_rewards(batch.scores, mask) - train.kl_coef * kl_per_token * mask
            advantages, returns = compute_gae(shaped, values, mask, train.gamma, train.lam)
            return masked_whiten(advantages, mask), returns
        case other:
            raise ValueError(
                f"train.algorithm {other!r} has no estimator here; use 'ppo' or 'reinforce' (grpo runs in TRL)."
            )


class PolicyTrainer:
    """Wires policy, reference, critic, optimizers and the search engine together for :meth:`train_step`."""

    def __init__(
        self, setup: RLSetup, policy_path: Path, engine: SearchEngine, backend: PolicyBackend | None = None
    ) -> None:
        self.setup = setup
        self.train = setup.train
        self.engine = engine
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(policy_path)
        self.policy = load_causal_lm(policy_path, setup.dtype)
        self.reference = load_causal_lm(policy_path, setup.dtype) if self.train.kl_coef > 0 else None
        self.critic = ValueModel.from_policy(policy_path) if self.train.algorithm == "ppo" else None
        if self.train.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
            if self.critic is not None:
                self.critic.body.gradient_checkpointing_enable()
        self._wrap_for_ranks()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.train.learning_rate)
        self.scheduler = _warmup_scheduler(self.optimizer, self.train.warmup_steps)
        self.critic_optimizer = (
            torch.optim.AdamW(self.critic.parameters(), lr=self.train.critic_learning_rate) if self.critic else None
        )
        self.backend = backend if backend is not None else PolicyBackend(self.tokenizer)
        # transformers samples from this one seeded stream (checkpointed with the rng state); vLLM seeds every
        # episode from its request seed instead.
        self.generator = HFPolicyGenerator(
            self.policy, self.tokenizer, self.train.temperature, derive_seed(setup.rl_seed, "train")
        )
        self.sampler = random.Random(derive_seed(setup.rl_seed, "questions"))
        self.error_budget = SearchErrorBudget(setup.protocol.max_error_rate)
        self.state = TrainerState()

    def _wrap_for_ranks(self) -> None:
        """Under a launcher, the models the optimizers step go through DistributedDataParallel, so that every
        backward averages gradients across ranks (and rank 0's weights are broadcast at the start)."""
        self.policy_step: nn.Module = self.policy
        self.critic_step: nn.Module | None = self.critic
        if distributed.world_size() > 1:
            distributed.init_process_group()
            self.policy_step = nn.parallel.DistributedDataParallel(self.policy)
            if self.critic is not None:
                self.critic_step = nn.parallel.DistributedDataParallel(self.critic)

    def sample_questions(self, questions: pd.DataFrame) -> pd.DataFrame:
        """This step's questions, drawn without replacement from the training set; under a launcher every rank
        draws the same ones and keeps its share (rank r: rows r, r + world, ...)."""
        rows = self.sampler.sample(range(len(questions)), self.train.prompts_per_step)
        rows = rows[distributed.rank() :: distributed.world_size()]
        return questions.iloc[rows].reset_index(drop=True)

    def rollout(self, questions: pd.DataFrame) -> tuple[StepEpisodes, list[float]]:
        """``group_size`` episodes per question at this step's noise probability, and their rewards."""
        requests, golds, bridges = [], [], []
        for row in questions.itertuples(index=False):
            for sample in range(self.train.group_size):
                seed = derive_seed(self.setup.rl_seed, self.state.step, row.id, sample)
                requests.append(EpisodeRequest(str(row.question), tuple(row.golden_answers), seed))
                golds.append([str(a) for a in row.golden_answers])
                bridges.append(getattr(row, "bridge", None))
        self.policy.eval()
        generator = self.rollout_generator()
        episodes = run_step_episodes(
            generator, self.tokenizer, self.engine, requests, self.state.step, self.setup, self.error_budget
        )
        reward = self.setup.reward
        scores = [
            answer_reward(self.generator.decode(sampled_ids(t)), gold, reward.metric, reward.yes_no_exact)
            + bridge_search_bonus(t.queries, bridge, reward.bridge_bonus)
            for t, gold, bridge in zip(episodes.trajectories, golds, bridges, strict=True)
        ]
        return episodes, scores

    def rollout_generator(self) -> PolicyGenerator:
        """This step's generator: the seeded transformers one, or vLLM given the policy's weights of this step."""
        if self.backend.vllm is None:
            return self.generator
        seed = derive_seed(self.setup.rl_seed, "train", self.state.step)
        return self.backend.generator(self.policy, self.train.temperature, seed, weights_version=self.state.step)

    def train_step(self, questions: pd.DataFrame) -> dict[str, float]:
        """One full RL step; returns its metrics."""
        episodes, scores = self.rollout(self.sample_questions(questions))
        trajectories = episodes.trajectories
        batch = build_token_batch(
            trajectories, scores, int(self.tokenizer.pad_token_id), self.train.mask_retrieved_tokens
        )
        micro = self.train.micro_batch_size
        with torch.no_grad():
            old_logprobs = chunked(functools.partial(token_logprobs, self.policy), batch, micro)
            reference = self.reference
            ref_logprobs = (
                chunked(functools.partial(token_logprobs, reference), batch, micro)
                if reference is not None
                else old_logprobs
            )
            old_values = chunked(self.critic, batch, micro) if self.critic is not None else None
        kl_old = kl_estimate(old_logprobs, ref_logprobs, "k1")
        advantages, returns = advantages_for(self.train.algorithm, batch, kl_old, self.train, old_values)
        metrics = self._optimise(batch, old_logprobs, advantages, returns, old_values)
        metrics.update(_rollout_metrics(episodes, scores, batch))
        if self.train.temperature == 1.0:  # the trainer's log-probs are of the unscaled distribution
            metrics["sampling_logprob_gap"] = sampling_logprob_gap(trajectories, old_logprobs)
        metrics["kl"] = float(masked_mean(kl_old, batch.loss_mask))
        self.state.step += 1
        metrics["step"] = float(self.state.step)
        self.state.history.append(metrics)
        return metrics

    def _optimise(
        self,
        batch: TokenBatch,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor | None,
        old_values: torch.Tensor | None,
    ) -> dict[str, float]:
        self.policy.train()
        totals = {"policy_loss": 0.0, "clip_fraction": 0.0, "value_loss": 0.0, "grad_norm": 0.0}
        epochs = self.train.epochs_per_step
        # Each micro-batch's token mean, weighted by its share of the batch's loss tokens, adds up to the whole
        # batch's token mean: the gradients (and the update) are the whole batch's, in less memory.
        parts = micro_batches(batch.input_ids.shape[0], self.train.micro_batch_size)
        tokens = batch.loss_mask.sum().clamp(min=1)
        weights = [float(batch.loss_mask[rows].sum() / tokens) for rows in parts]
        for _ in range(epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for rows, weight in zip(parts, weights, strict=True):
                part = batch_rows(batch, rows)
                logprobs = token_logprobs(self.policy_step, part)  # type: ignore[arg-type]  # DDP forwards the call
                loss, clip_fraction = ppo_policy_loss(
                    logprobs, old_logprobs[rows], advantages[rows], part.loss_mask, self.train.clip_eps
                )
                (loss * weight).backward()
                totals["policy_loss"] += loss.item() * weight / epochs
                totals["clip_fraction"] += clip_fraction.item() * weight / epochs
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            totals["grad_norm"] += float(grad_norm) / epochs
            if self.critic is not None and self.critic_optimizer is not None:
                assert returns is not None and old_values is not None
                assert self.critic_step is not None
                self.critic_optimizer.zero_grad(set_to_none=True)
                for rows, weight in zip(parts, weights, strict=True):
                    part = batch_rows(batch, rows)
                    values = self.critic_step(part)
                    critic_loss = value_loss(
                        values, old_values[rows], returns[rows], part.loss_mask, self.train.clip_eps
                    )
                    (critic_loss * weight).backward()
                    totals["value_loss"] += critic_loss.item() * weight / epochs
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.train.max_grad_norm)
                self.critic_optimizer.step()
        if self.critic is None:
            del totals["value_loss"]
        totals["learning_rate"] = float(self.scheduler.get_last_lr()[0])
        return totals

    def save_checkpoint(self, checkpoints_dir: Path) -> Path:
        """Write everything a resume needs into ``checkpoints_dir/step-N`` atomically and point ``latest`` at it."""
        target = checkpoints_dir / f"step-{self.state.step:06d}"

        def write(folder: Path) -> None:
            save_policy(self.policy, self.tokenizer, folder / "policy")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
            if self.critic is not None and self.critic_optimizer is not None:
                self.critic.save(folder / "critic")
                torch.save(self.critic_optimizer.state_dict(), folder / "critic_optimizer.pt")
            rng = {"generator": self.generator.generator.get_state(), "torch": torch.random.get_rng_state()}
            torch.save(rng, folder / "rng.pt")
            (folder / STATE_FILE).write_text(
                json.dumps(
                    {"step": self.state.step, "sampler": _encode_random(self.sampler), "history": self.state.history},
                    indent=1,
                )
            )

        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        write_dir_atomically(target, write)
        latest = checkpoints_dir / LATEST_FILE
        latest.with_suffix(".tmp").write_text(target.name)
        latest.with_suffix(".tmp").replace(latest)
        for old in sorted(checkpoints_dir.glob("step-*"))[:-2]:  # keep the last two
            remove_path(old)
        return target

    def load_checkpoint(self, folder: Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`."""
        self.policy = load_causal_lm(folder / "policy", self.setup.dtype)
        self.generator.model = self.policy
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.train.learning_rate)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler = _warmup_scheduler(self.optimizer, self.train.warmup_steps)
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        if self.critic is not None:
            self.critic = ValueModel.load(folder / "critic")
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.train.critic_learning_rate)
            self.critic_optimizer.load_state_dict(torch.load(folder / "critic_optimizer.pt", weights_only=True))
        self._wrap_for_ranks()
        rng = torch.load(folder / "rng.pt", weights_only=True)
        self.generator.generator.set_state(rng["generator"])
        torch.random.set_rng_state(rng["torch"])
        saved = json.loads((folder / STATE_FILE).read_text())
        self.sampler.setstate(_decode_random(saved["sampler"]))
        self.state = TrainerState(step=int(saved["step"]), history=list(saved["history"]))


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint ``latest`` points at, if any."""
    pointer = checkpoints_dir / LATEST_FILE
    if not pointer.is_file():
        return None
    folder = checkpoints_dir / pointer.read_text().strip()
    return folder if (folder / STATE_FILE).is_file() else None


def train_policy(
    setup: RLSetup,
    questions: pd.DataFrame,
    validation: pd.DataFrame,
    engine: SearchEngine,
    validation_engine: SearchEngine,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Train from ``setup.policy_dir`` (or resume from the last checkpoint) until ``train.total_steps`` against
    ``engine``; score the validation questions with ``validation_engine`` (real search) at every checkpoint."""
    tokenizer = load_tokenizer(setup.policy_dir)
    with open_policy_backend(
        setup.protocol.rollout, setup.policy_dir, tokenizer, setup.dtype, setup.rl_seed
    ) as backend:
        return _train(setup, questions, validation, engine, validation_engine, backend, on_step)


def _train(
    setup: RLSetup,
    questions: pd.DataFrame,
    validation: pd.DataFrame,
    engine: SearchEngine,
    validation_engine: SearchEngine,
    backend: PolicyBackend,
    on_step: Callable[[dict[str, float]], None] | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    checkpoints_dir = setup.checkpoints_dir
    train = setup.train
    trainer = PolicyTrainer(setup, setup.policy_dir, engine, backend)
    resume = latest_checkpoint(checkpoints_dir)
    if resume is not None:
        trainer.load_checkpoint(resume)
        logger.info("Resumed from %s at step %d", resume, trainer.state.step)
    while trainer.state.step < train.total_steps:
        metrics = trainer.train_step(questions)
        checkpoint_due = trainer.state.step % train.save_every_steps == 0 or trainer.state.step == train.total_steps
        main = distributed.is_main_process()  # under a launcher: rank 0 validates, logs and checkpoints
        if checkpoint_due and main:
            step = trainer.state.step
            metrics.update(
                validate_step(setup, trainer.policy, trainer.tokenizer, validation, validation_engine, backend, step)
            )
        logger.info(
            "step %d: reward %.3f, noise p %.3f", trainer.state.step, metrics["reward_mean"], metrics["noise_prob"]
        )
        if on_step is not None and main:
            on_step(metrics)
        if checkpoint_due:
            if main:
                trainer.save_checkpoint(checkpoints_dir)
            distributed.barrier()
    return trainer.policy, trainer.tokenizer


def _warmup_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


def _rollout_metrics(episodes: StepEpisodes, scores: Sequence[float], batch: TokenBatch) -> dict[str, float]:
    return {
        **episodes.statistics,
        "reward_mean": sum(scores) / len(episodes.trajectories),
        "trained_tokens": float(batch.loss_mask.sum()),
    }


def _encode_random(generator: random.Random) -> Any:
    version, internal, gauss = generator.getstate()
    return [version, list(internal), gauss]


def _decode_random(saved: Any) -> tuple[Any, ...]:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)
