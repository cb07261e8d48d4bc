"""Benchmark, each engine side by side: multi-turn rollout throughput vs plain batched generation, and seconds per
training step.

Run after the profile's ``finetune_simulator`` (it uses the initial policy and the simulator of the params file). The
default is the toy profile, whose cold start really searches (the smoke policy issues no search at all)::

    dvc repro toy/dvc.yaml:finetune_simulator
    .venv/bin/python perf/rollout_throughput.py [--params toy/params.yaml] [--episodes 64] [--steps 4]

Prints, for ``rollout.engine`` hf and vllm:
* sampled tokens/s of whole multi-turn episodes through the search protocol against the simulated engine (noise
  probability 0.25; the simulator on the same engine), with the share of the time the simulator's searches took;
* the policy's tokens/s counting generation time only, and the same engine's plain batched generation of the same
  number of tokens per sequence on the same prompts (the ceiling); their ratio (goal: >= 0.8);
* mean seconds per training step for GRPO (TRL) and PPO (first step excluded as warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.config import PipelineConfig, load_config  # noqa: E402
from zerosearch_core.data.benchmarks import (
    load_benchmark,  # noqa: E402
    sample_questions,  # noqa: E402
)
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import open_policy_backend
from zerosearch_core.rl.registry import get_trainer  # noqa: E402
from zerosearch_core.search.base import EpisodeContext, SearchEngine, SearchErrorBudget  # noqa: E402
from zerosearch_core.stages.sections import open_training_engine, rl_setup  # noqa: E402


def rollout_vs_generate(cfg: PipelineConfig, episodes: int) -> dict[str, float]:
    """Time whole episodes, then plain generation of the same token count per sequence, with ``rollout.engine``."""
    policy_dir = Path(cfg.paths.policy_dir)
    tokenizer = load_tokenizer(policy_dir)
    simulated = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, search_engine="simulated"))
    with open_training_engine(simulated) as engine:  # what RL trains against (needs finetune_simulator)
        started = time.perf_counter()
        with open_policy_backend(cfg.rollout, policy_dir, tokenizer, cfg.model.dtype, 0) as backend:
            startup_s = time.perf_counter() - started
            model = load_causal_lm(policy_dir) if backend.vllm is None else None
            generator = backend.generator(model, 1.0, seed=0)
            figures = rollout_vs_generate_with(cfg, engine, tokenizer, generator, episodes, backend, model)
    return {**figures, "startup_s": startup_s}


def rollout_vs_generate_with(  # type: ignore[no-untyped-def]
    cfg: PipelineConfig, engine: SearchEngine, tokenizer, generator, episodes: int, backend, model
) -> dict[str, float]:
    """The timings of :func:`rollout_vs_generate` against ``engine``."""
    questions = sample_questions(load_benchmark(Path(cfg.paths.benchmarks_dir), cfg.train.questions), episodes, 0)
    prompts = [build_prompt_ids(tokenizer, q, "search", cfg.rollout.use_chat_template) for q in questions["question"]]
    golden = questions["golden_answers"].map(tuple)
    sessions = [
        engine.open_session(EpisodeContext(q, g, 0.25, i))
        for i, (q, g) in enumerate(zip(questions["question"], golden, strict=True))
    ]
    timed = TimedGenerator(generator)
    started = time.perf_counter()
    trajectories = run_episodes(timed, prompts, list(sessions), cfg.rollout, cfg.search.top_k, SearchErrorBudget(1.0))
    rollout_s = time.perf_counter() - started
    sampled = sum(sum(t.loss_mask) for t in trajectories)
    per_sequence = max(1, round(sampled / len(trajectories)))

    started = time.perf_counter()
    if backend.vllm is not None:
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=1.0, max_tokens=per_sequence, ignore_eos=True, seed=i)
            for i in range(len(prompts))
        ]
        backend.vllm.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    else:
        _plain_hf_generate(model, tokenizer, prompts, per_sequence, cfg.rollout.batch_size)
    plain_s = time.perf_counter() - started
    plain_tokens = per_sequence * len(prompts)
    return {
        "episodes": float(len(trajectories)),
        "mean_searches": statistics.fmean(t.searches for t in trajectories),
        "mean_turns": statistics.fmean(t.turns for t in trajectories),
        "rollout_tokens_per_s": sampled / rollout_s,
        "policy_tokens_per_s": sampled / timed.seconds,
        "search_share": 1.0 - timed.seconds / rollout_s,
        "plain_tokens_per_s": plain_tokens / plain_s,
        "sampled_tokens": float(sampled),
        "rollout_s": rollout_s,
    }


class TimedGenerator:
    """A :class:`~zerosearch_core.agent.loop.PolicyGenerator` that adds up the time spent generating, so that the
    protocol's own overhead (turns, stops, re-reading the prompt) can be told from the searches' time."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.stop_ids = inner.stop_ids
        self.seconds = 0.0

    def generate(self, sequences, max_new_tokens, seeds=None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return self.inner.generate(sequences, max_new_tokens, seeds)
        finally:
            self.seconds += time.perf_counter() - started

    def decode(self, ids):  # type: ignore[no-untyped-def]
        return self.inner.decode(ids)

    def encode(self, text):  # type: ignore[no-untyped-def]
        return self.inner.encode(text)


@torch.no_grad()
def _plain_hf_generate(model, tokenizer, prompts, per_sequence: int, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), int(tokenizer.pad_token_id))
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=per_sequence,
            min_new_tokens=per_sequence,
            do_sample=True,
            temperature=1.0,
            top_k=None,
            top_p=None,
            pad_token_id=int(tokenizer.pad_token_id),
        )


def seconds_per_step(cfg: PipelineConfig, algorithm: str, steps: int) -> float:
    """Mean wall time of training steps 2..steps of a fresh run with ``algorithm``."""
    from zerosearch_core.search.registry import open_search_engine

    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(_: dict[str, float]) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as scratch:
        paths = dataclasses.replace(cfg.paths, checkpoints_dir=str(Path(scratch) / "ckpt"))
        train = dataclasses.replace(cfg.train, algorithm=algorithm, total_steps=steps, save_every_steps=steps)
        run_cfg = dataclasses.replace(
            cfg, paths=paths, train=train, search=dataclasses.replace(cfg.search, backend="in_process", url=None)
        )
        questions = load_benchmark(Path(cfg.paths.benchmarks_dir), cfg.train.questions)
        validation = sample_questions(
            load_benchmark(Path(cfg.paths.benchmarks_dir), cfg.train.validation_questions), 4, 0
        )
        with open_search_engine(run_cfg.search, Path(cfg.paths.index_dir)) as engine:
            last[0] = time.perf_counter()
            get_trainer(algorithm)(rl_setup(run_cfg), questions, validation, engine, engine, on_step)
    return statistics.fmean(times[1:-1]) if len(times) > 2 else statistics.fmean(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("toy/params.yaml"))
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    args = parser.parse_args()
    base = load_config(args.params)
    print(f"# {' '.join(sys.argv)}  (torch threads: {torch.get_num_threads()}, {args.episodes} episodes)")
    rows: dict[str, dict[str, float]] = {}
    for engine in args.engines:
        cfg = dataclasses.replace(
            base,
            rollout=dataclasses.replace(base.rollout, engine=engine),
            simulator=dataclasses.replace(base.simulator, engine=engine),  # the simulator on the same engine
        )
        rows[engine] = rollout_vs_generate(cfg, args.episodes)
        for algorithm in ("grpo", "ppo"):
            rows[engine][f"{algorithm}_s_per_step"] = seconds_per_step(cfg, algorithm, args.steps)
    print(
        "| engine | start s | searches/episode | episode tokens/s (with search) | time in search | policy tokens/s "
        "(generation only) | plain tokens/s | policy/plain | GRPO s/step | PPO s/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for engine, row in rows.items():
        print(
            f"| {engine} | {row['startup_s']:.1f} | {row['mean_searches']:.2f} | {row['rollout_tokens_per_s']:.0f} | "
            f"{row['search_share']:.0%} | {row['policy_tokens_per_s']:.0f} | {row['plain_tokens_per_s']:.0f} | "
            f"{row['policy_tokens_per_s'] / row['plain_tokens_per_s']:.2f} | "
            f"{row['grpo_s_per_step']:.2f} | {row['ppo_s_per_step']:.2f} |"
        )
    if "hf" in rows and "vllm" in rows:
        speedup = rows["vllm"]["rollout_tokens_per_s"] / rows["hf"]["rollout_tokens_per_s"]
        print(f"vLLM / transformers, multi-turn rollout tokens/s: {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
