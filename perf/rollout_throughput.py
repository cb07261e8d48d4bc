"""Benchmark: multi-turn rollout throughput vs plain batched ``generate``, and seconds per training step.

Run after ``dvc repro finetune_simulator`` (it uses the initial policy and the simulator of ``params.yaml``)::

    .venv/bin/python perf/rollout_throughput.py [--params params.yaml] [--episodes 64] [--steps 4]

Prints:
* generated (sampled) tokens/s of whole multi-turn episodes through the search protocol against the simulated
  engine (noise probability 0.25), and of plain batched ``generate`` producing the same number of tokens per
  sequence on the same model and prompts; their ratio (goal: >= 0.9);
* mean seconds per training step for GRPO (TRL) and PPO on the CPU profile (first step excluded as warm-up).
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

from zerosearch_core.config import PipelineConfig, load_config  # noqa: E402
from zerosearch_core.data.benchmarks import (
    load_benchmark,  # noqa: E402
    sample_questions,  # noqa: E402
)
from zerosearch_core.models import load_causal_lm, load_tokenizer  # noqa: E402
from zerosearch_core.prompts import build_prompt_ids  # noqa: E402
from zerosearch_core.rl.registry import get_trainer  # noqa: E402
from zerosearch_core.rollout import HFPolicyGenerator, run_episodes  # noqa: E402
from zerosearch_core.search.base import EpisodeContext, SearchEngine, SearchErrorBudget  # noqa: E402
from zerosearch_core.stages.sections import open_training_engine, rl_setup  # noqa: E402


def rollout_vs_generate(cfg: PipelineConfig, episodes: int) -> None:
    """Time whole episodes, then plain generate of the same token count per sequence."""
    policy_dir = Path(cfg.paths.policy_dir)
    tokenizer, model = load_tokenizer(policy_dir), load_causal_lm(policy_dir)
    simulated = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, search_engine="simulated"))
    with open_training_engine(simulated) as engine:  # what RL trains against (needs `dvc repro finetune_simulator`)
        rollout_vs_generate_with(cfg, engine, tokenizer, model, episodes)


def rollout_vs_generate_with(cfg: PipelineConfig, engine: SearchEngine, tokenizer, model, episodes: int) -> None:  # type: ignore[no-untyped-def]
    """The timings of :func:`rollout_vs_generate` against ``engine``."""
    questions = sample_questions(load_benchmark(Path(cfg.paths.benchmarks_dir), cfg.train.questions), episodes, 0)
    prompts = [build_prompt_ids(tokenizer, q, "search", cfg.rollout.use_chat_template) for q in questions["question"]]
    golden = questions["golden_answers"].map(tuple)
    sessions = [
        engine.open_session(EpisodeContext(q, g, 0.25, i))
        for i, (q, g) in enumerate(zip(questions["question"], golden, strict=True))
    ]
    generator = HFPolicyGenerator(model, tokenizer, temperature=1.0, seed=0)

    started = time.perf_counter()
    trajectories = run_episodes(
        generator, prompts, list(sessions), cfg.rollout, cfg.search.top_k, SearchErrorBudget(1.0)
    )
    rollout_s = time.perf_counter() - started
    sampled = sum(sum(t.loss_mask) for t in trajectories)
    per_sequence = max(1, round(sampled / len(trajectories)))

    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(prompts), cfg.rollout.batch_size):
            batch = prompts[start : start + cfg.rollout.batch_size]
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
    plain_s = time.perf_counter() - started
    plain_tokens = per_sequence * len(prompts)
    rollout_rate, plain_rate = sampled / rollout_s, plain_tokens / plain_s
    print(
        f"episodes: {len(trajectories)}, mean turns {statistics.fmean(t.turns for t in trajectories):.2f}, "
        f"mean searches {statistics.fmean(t.searches for t in trajectories):.2f}"
    )
    print(f"multi-turn rollout : {sampled} sampled tokens in {rollout_s:.2f}s = {rollout_rate:.0f} tokens/s")
    print(f"plain generate     : {plain_tokens} tokens in {plain_s:.2f}s = {plain_rate:.0f} tokens/s")
    print(f"ratio rollout/plain: {rollout_rate / plain_rate:.2f} (goal >= 0.9)")


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
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    cfg = load_config(args.params)
    print(f"# {' '.join(sys.argv)}  (torch threads: {torch.get_num_threads()})")
    rollout_vs_generate(cfg, args.episodes)
    for algorithm in ("grpo", "ppo"):
        print(
            f"{algorithm} seconds/step : {seconds_per_step(cfg, algorithm, args.steps):.2f} "
            f"({cfg.train.prompts_per_step} prompts x {cfg.train.group_size} rollouts)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
