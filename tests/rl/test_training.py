"""Policy RL: batch alignment, updates that follow the reward, TRL rollout_func contract, resume (in process and
after kill -9)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from zerosearch_core.agent.loop import Trajectory
from zerosearch_core.config import ConfigError, PipelineConfig, config_to_dict
from zerosearch_core.data.benchmarks import normalize, read_raw
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.models.generation import PolicyBackend
from zerosearch_core.rl.curriculum import noise_probability
from zerosearch_core.rl.grpo import SearchRollout, make_reward_func
from zerosearch_core.rl.ppo import PolicyTrainer, build_token_batch, token_logprobs
from zerosearch_core.search.local import BM25Retriever, LocalSearchEngine
from zerosearch_core.stages import StageHooks, build_index, init_policy, prepare_data
from zerosearch_core.stages.sections import rl_setup


def _trajectory(prompt: list[int], response: list[int], mask: list[int]) -> Trajectory:
    return Trajectory(
        tuple(prompt), tuple(response), tuple(mask), (0.0,) * len(response), "", None, 0, "eos", 1, 0, (), 0, 0, 0
    )


def test_token_batch_aligns_the_loss_mask_with_next_token_predictions() -> None:
    batch = build_token_batch(
        [_trajectory([1, 2, 3], [4, 5, 6], [1, 0, 1]), _trajectory([7], [8, 9], [1, 1])],
        [1.0, 0.0],
        pad_id=0,
        mask_retrieved=True,
    )
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]]
    # position j predicts token j+1: token 4 is predicted at position 2, token 5 (retrieved) at 3, token 6 at 4
    assert batch.loss_mask.tolist() == [[0, 0, 1, 0, 1], [1, 1, 0, 0, 0]]
    ablation = build_token_batch([_trajectory([1, 2, 3], [4, 5, 6], [1, 0, 1])], [1.0], pad_id=0, mask_retrieved=False)
    assert ablation.loss_mask.tolist() == [[0, 0, 1, 1, 1]]


@pytest.fixture
def small_engine(corpus: pd.DataFrame) -> LocalSearchEngine:
    return LocalSearchEngine(BM25Retriever.build(corpus.head(300).reset_index(drop=True)), {"corpus_sha256": "test"})


@pytest.fixture
def train_questions(cfg: PipelineConfig, benchmarks_dir: Path) -> pd.DataFrame:
    spec = next(f for f in cfg.data.files if f.name == "multihop_train")
    return normalize(read_raw(spec, benchmarks_dir), spec).head(200)


def _train_cfg(cfg: PipelineConfig, policy_dir: Path, algorithm: str, **train: object) -> PipelineConfig:
    rollout = dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=6, max_turns=2, batch_size=8)
    settings = dict(algorithm=algorithm, total_steps=4, prompts_per_step=2, group_size=2, learning_rate=0.01)
    train_cfg = dataclasses.replace(cfg.train, **{**settings, **train})  # type: ignore[arg-type]
    paths = dataclasses.replace(cfg.paths, policy_dir=str(policy_dir))
    return dataclasses.replace(cfg, rollout=rollout, train=train_cfg, paths=paths)


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_an_update_moves_probability_towards_the_rewarded_answer(
    algorithm: str, cfg: PipelineConfig, tiny_policy_dir: Path, small_engine: LocalSearchEngine
) -> None:
    trainer = PolicyTrainer(
        rl_setup(_train_cfg(cfg, tiny_policy_dir, algorithm, kl_coef=0.0)), tiny_policy_dir, small_engine
    )
    tokenizer = trainer.tokenizer
    prompt = list(tokenizer("Question: capital of France?", add_special_tokens=False)["input_ids"])
    good = list(tokenizer("<answer> Paris </answer>", add_special_tokens=False)["input_ids"])
    bad = list(tokenizer("<answer> Rome </answer>", add_special_tokens=False)["input_ids"])
    batch = build_token_batch(
        [_trajectory(prompt, good, [1] * len(good)), _trajectory(prompt, bad, [1] * len(bad))], [1.0, 0.0], 0, True
    )

    def sequence_logprob(row: int) -> float:
        with torch.no_grad():
            return float((token_logprobs(trainer.policy, batch)[row] * batch.loss_mask[row]).sum())

    before = sequence_logprob(0) - sequence_logprob(1)
    with torch.no_grad():
        old = token_logprobs(trainer.policy, batch)
        values = trainer.critic(batch) if trainer.critic is not None else None
    from zerosearch_core.rl.ppo import advantages_for

    for _ in range(3):
        advantages, returns = advantages_for(algorithm, batch, torch.zeros_like(old), trainer.train, values)
        trainer._optimise(batch, old, advantages, returns, values)
    assert sequence_logprob(0) - sequence_logprob(1) > before + 0.01


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_micro_batches_give_the_whole_batchs_update_with_gradient_checkpointing_on(
    algorithm: str, cfg: PipelineConfig, tiny_policy_dir: Path, small_engine: LocalSearchEngine
) -> None:
    """train.micro_batch_size splits the batch into passes whose gradients add up to the whole batch's: after two
    optimizer steps the policy (and critic) weights are those of the one-pass run, with checkpointing on too."""
    from zerosearch_core.rl.ppo import advantages_for

    tokenizer = load_tokenizer(tiny_policy_dir)
    prompt = list(tokenizer("Question: capital of France?", add_special_tokens=False)["input_ids"])
    responses = ["<answer> Paris </answer>", "<answer> Rome </answer>", "<search> France </search>", "<answer> x"]
    trajectories = []
    for text in responses:  # unequal lengths and masks, so the micro-batches hold unequal numbers of loss tokens
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        trajectories.append(_trajectory(prompt, ids, [1] * (len(ids) - 1) + [0]))
    batch = build_token_batch(trajectories, [1.0, 0.0, 0.5, 0.0], 0, True)

    def trained(**train: object) -> list[torch.Tensor]:
        torch.manual_seed(0)
        setup = rl_setup(_train_cfg(cfg, tiny_policy_dir, algorithm, kl_coef=0.0, **train))
        trainer = PolicyTrainer(setup, tiny_policy_dir, small_engine)
        with torch.no_grad():
            old = token_logprobs(trainer.policy, batch)
            values = trainer.critic(batch) if trainer.critic is not None else None
        advantages, returns = advantages_for(algorithm, batch, torch.zeros_like(old), trainer.train, values)
        for _ in range(2):
            metrics = trainer._optimise(batch, old, advantages, returns, values)
        assert metrics["grad_norm"] > 0
        models = [trainer.policy] + ([trainer.critic] if trainer.critic is not None else [])
        return [p.detach().clone() for model in models for p in model.parameters()]

    whole = trained(micro_batch_size=None)
    for split in (trained(micro_batch_size=1), trained(micro_batch_size=3, gradient_checkpointing=True)):
        assert len(split) == len(whole)
        assert max(float((a - b).abs().max()) for a, b in zip(whole, split, strict=True)) < 1e-5
    initial = load_causal_lm(tiny_policy_dir)
    assert any(not torch.equal(a, b) for a, b in zip(initial.parameters(), whole, strict=False))  # it did train


def test_grpo_micro_batches_are_trls_gradient_accumulation_over_one_generation(cfg: PipelineConfig) -> None:
    from zerosearch_core.rl.grpo import make_grpo_config

    def grpo(**train: object) -> Any:
        setup = rl_setup(_train_cfg(cfg, Path("unused"), "grpo", prompts_per_step=4, group_size=4, **train))
        return make_grpo_config(setup, Path("unused"))

    whole, split = grpo(micro_batch_size=None), grpo(micro_batch_size=4, gradient_checkpointing=True)
    assert (whole.per_device_train_batch_size, whole.gradient_accumulation_steps) == (16, 1)
    assert (split.per_device_train_batch_size, split.gradient_accumulation_steps) == (4, 4)
    assert whole.generation_batch_size == split.generation_batch_size == 16  # one generation per update
    assert split.gradient_checkpointing and not whole.gradient_checkpointing
    with pytest.raises(ConfigError, match="must divide prompts_per_step x group_size = 16"):
        grpo(micro_batch_size=3)
    with pytest.raises(ConfigError, match=r"must be within \[1, 16\]"):
        grpo(micro_batch_size=17)


def test_ppo_resume_reproduces_an_uninterrupted_run(
    cfg: PipelineConfig,
    tiny_policy_dir: Path,
    small_engine: LocalSearchEngine,
    train_questions: pd.DataFrame,
    tmp_path: Path,
) -> None:
    run_cfg = _train_cfg(cfg, tiny_policy_dir, "ppo")
    straight = PolicyTrainer(rl_setup(run_cfg), tiny_policy_dir, small_engine)
    for _ in range(4):
        straight.train_step(train_questions)

    first = PolicyTrainer(rl_setup(run_cfg), tiny_policy_dir, small_engine)
    for _ in range(2):
        first.train_step(train_questions)
    checkpoint = first.save_checkpoint(tmp_path / "ckpt")
    assert {
        "policy",
        "optimizer.pt",
        "scheduler.pt",
        "critic",
        "critic_optimizer.pt",
        "rng.pt",
        "trainer_state.json",
    } <= {p.name for p in checkpoint.iterdir()}
    resumed = PolicyTrainer(rl_setup(run_cfg), tiny_policy_dir, small_engine)
    resumed.load_checkpoint(checkpoint)
    assert resumed.state.step == 2
    for _ in range(2):
        resumed.train_step(train_questions)

    for expected, got in zip(straight.state.history, resumed.state.history, strict=True):
        for key in ("noise_prob", "reward_mean", "policy_loss", "value_loss", "kl", "response_tokens_mean"):
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
    assert resumed.state.history[2]["noise_prob"] == pytest.approx(noise_probability(2, 4, 0.0, 0.5, 4.0))
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_grpo_rollout_func_returns_ids_and_env_mask_at_the_curriculum_noise(
    cfg: PipelineConfig, tiny_policy_dir: Path, small_engine: LocalSearchEngine
) -> None:
    run_cfg = _train_cfg(cfg, tiny_policy_dir, "grpo")
    tokenizer = load_tokenizer(tiny_policy_dir)
    model = load_causal_lm(tiny_policy_dir)
    seen: list[float] = []

    class RecordingEngine:
        def open_session(self, ctx):
            seen.append(ctx.noise_prob)
            return small_engine.open_session(ctx)

    golden = {"q one?": ("a",), "q two?": ("b",)}
    rollout = SearchRollout(rl_setup(run_cfg), RecordingEngine(), golden, PolicyBackend(tokenizer))
    trainer = SimpleNamespace(
        state=SimpleNamespace(global_step=3),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        model=model,
        processing_class=tokenizer,
    )
    out = rollout(["q one?", "q one?", "q two?", "q two?"], trainer)
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 4
    for completion, mask in zip(out["completion_ids"], out["env_mask"], strict=True):
        assert len(completion) == len(mask) and set(mask) <= {0, 1}
    assert seen == [pytest.approx(noise_probability(3, 4, 0.0, 0.5, 4.0))] * 4
    assert rollout.last_stats["noise_prob"] == seen[0]
    reward = make_reward_func("f1", True)
    assert reward([], [], sampled_text=["<answer> a </answer>", "none"], golden_answers=[["a"], ["b"]]) == [1.0, 0.0]


STEPS = 30


def _prepare_project(cfg: PipelineConfig, root: Path) -> Path:
    files = tuple(f for f in cfg.data.files if f.name in ("multihop_train", "multihop_val", "bamboogle_test"))
    small = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=("bamboogle_test",)),
        train=dataclasses.replace(
            cfg.train, total_steps=STEPS, save_every_steps=3, prompts_per_step=2, group_size=2, search_engine="real"
        ),
        rollout=dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=8, max_turns=2),
    )
    prepare_data.run(small, StageHooks())
    build_index.run(small, StageHooks())
    init_policy.run(small, StageHooks())
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(config_to_dict(small), sort_keys=False))
    return params


def _run_cli(params: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zerosearch_core.cli", "train_policy", "--params", str(params)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_during_training_then_rerun_resumes_from_the_last_checkpoint(
    cfg: PipelineConfig, tmp_path: Path
) -> None:
    params = _prepare_project(cfg, tmp_path)
    checkpoints = Path(cfg.paths.checkpoints_dir)
    process = _run_cli(params, tmp_path)
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not Path(cfg.paths.trained_policy_dir).exists()

    rerun = _run_cli(params, tmp_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert "Resumed from" in output and "checkpoint-" in output
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], order_by=["start_time DESC"])
    assert runs.iloc[0]["tags.run_start"] == "resumed"  # the rerun says in MLflow that it resumed
    history = [
        json.loads(line)
        for line in (Path(cfg.paths.trained_policy_dir) / "training/history.jsonl").read_text().splitlines()
    ]
    assert [h["step"] for h in history] == [float(step) for step in range(1, STEPS + 1)]
    for entry in history:  # the step-k rollout ran at global step k-1
        assert entry["noise_prob"] == pytest.approx(noise_probability(int(entry["step"]) - 1, STEPS, 0.0, 0.5, 4.0))
    assert [h["step"] for h in history if "val_em" in h] == [float(s) for s in range(3, STEPS + 1, 3)]
    summary = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert 0.0 <= summary["val_f1_last"] <= 1.0
    assert summary["algorithm"] == "grpo" and summary["steps"] == float(STEPS)
    assert load_causal_lm(cfg.paths.trained_policy_dir).config.model_type == "qwen2"

    # rerunning a finished run loads its last checkpoint: no extra step, no curriculum step past the end
    again = _run_cli(params, tmp_path)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert "Training already finished" in output
    assert max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")) == STEPS


def test_checkpoints_of_another_configuration_are_not_resumed(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    from zerosearch_core.stages.train_policy import FINGERPRINT_FILE, _prepare_checkpoints

    run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)))
    checkpoints, start = _prepare_checkpoints(run_cfg)
    assert start == "afresh"
    (checkpoints / "checkpoint-2").mkdir()
    assert _prepare_checkpoints(run_cfg) == (checkpoints, "resumed")
    assert (checkpoints / "checkpoint-2").is_dir()  # same run: kept for resuming
    changed = dataclasses.replace(run_cfg, train=dataclasses.replace(run_cfg.train, learning_rate=0.5))
    assert _prepare_checkpoints(changed)[1] == "afresh (the checkpoints of another run were cleared)"
    assert not (checkpoints / "checkpoint-2").exists()  # another run: cleared
    assert (checkpoints / FINGERPRINT_FILE).read_text().strip() != ""


@pytest.mark.parametrize(
    ("section", "change", "resumes"),
    [
        ("simulator", {"temperature": 0.3}, False),
        ("simulator", {"max_new_tokens": 17}, False),
        ("simulator", {"doc_words": 11}, False),
        ("simulator", {"serve_port": 18999, "request_timeout_s": 3.0}, True),
        ("search", {"port": 18998, "timeout_s": 1.0}, True),
        ("search", {"top_k": 2}, False),
    ],
)
def test_only_a_run_with_the_same_simulator_and_search_resumes(
    cfg: PipelineConfig, tiny_policy_dir: Path, section: str, change: dict[str, object], resumes: bool
) -> None:
    """A changed simulator or retrieval setting starts afresh (it used to republish the old policy); a service
    knob (port, timeout) resumes."""
    from zerosearch_core.stages.train_policy import prepare_checkpoints_dir

    run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)))
    checkpoints = prepare_checkpoints_dir(run_cfg)
    (checkpoints / "checkpoint-6").mkdir()
    changed = dataclasses.replace(run_cfg, **{section: dataclasses.replace(getattr(run_cfg, section), **change)})
    prepare_checkpoints_dir(changed)
    assert (checkpoints / "checkpoint-6").is_dir() is resumes


def test_new_simulator_weights_or_training_data_start_afresh(
    cfg: PipelineConfig, tiny_policy_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from zerosearch_core.stages.train_policy import prepare_checkpoints_dir

    simulator = tmp_path / "simulator"
    shutil.copytree(tiny_policy_dir, simulator)
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    (benchmarks / f"{cfg.train.questions}.parquet").write_bytes(b"first")
    paths = dataclasses.replace(
        cfg.paths, policy_dir=str(tiny_policy_dir), simulator_dir=str(simulator), benchmarks_dir=str(benchmarks)
    )
    run_cfg = dataclasses.replace(cfg, paths=paths)
    checkpoints = prepare_checkpoints_dir(run_cfg)
    (checkpoints / "checkpoint-6").mkdir()
    prepare_checkpoints_dir(run_cfg)
    assert (checkpoints / "checkpoint-6").is_dir()
    weights = simulator / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # another simulator
    prepare_checkpoints_dir(run_cfg)
    assert not (checkpoints / "checkpoint-6").exists()
    (checkpoints / "checkpoint-6").mkdir()
    (benchmarks / f"{cfg.train.questions}.parquet").write_bytes(b"second")  # other training questions
    prepare_checkpoints_dir(run_cfg)
    assert not (checkpoints / "checkpoint-6").exists()


def test_a_policy_whose_text_now_reads_as_other_ids_starts_afresh(
    cfg: PipelineConfig, tiny_policy_dir: Path, tmp_path: Path
) -> None:
    """The same weights and tokenizer files, loaded another way (AutoTokenizer's Qwen2Tokenizer instead of the
    tokenizer trained here, as before load_tokenizer was fixed), give other ids: a run trained on those must not be
    resumed or republished."""
    import json
    import shutil

    from zerosearch_core.models.build import tokenizer_identity
    from zerosearch_core.stages.train_policy import prepare_checkpoints_dir

    policy = tmp_path / "policy"
    shutil.copytree(tiny_policy_dir, policy)
    run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, policy_dir=str(policy)))
    checkpoints = prepare_checkpoints_dir(run_cfg)
    (checkpoints / "checkpoint-6").mkdir()
    before = tokenizer_identity(policy)
    config = policy / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "Qwen2Tokenizer"}))
    assert tokenizer_identity(policy) != before  # digits are split: "Doc 1" reads as other ids
    prepare_checkpoints_dir(run_cfg)
    assert not (checkpoints / "checkpoint-6").exists()
    assert tokenizer_identity("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"  # a hub id, not loaded


def test_training_against_a_missing_simulator_says_what_to_run(cfg: PipelineConfig) -> None:
    from zerosearch_core.stages.sections import open_training_engine

    with pytest.raises(FileNotFoundError, match="dvc repro finetune_simulator"):
        with open_training_engine(cfg):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_two_ranks_under_accelerate_launch_train_one_policy(
    algorithm: str, cfg: PipelineConfig, tmp_path: Path
) -> None:
    """`accelerate launch --num_processes 2` on CPU (gloo): both ranks train on their share of each step's questions,
    gradients are averaged (the ranks end with identical weights although they saw different episodes), and rank 0
    alone writes the checkpoints, the history and the trained policy."""
    params = _prepare_project(cfg, tmp_path)
    run = yaml.safe_load(params.read_text())
    # in micro-batches of 4 sequences with checkpointing, as the GPU profiles train (TRL accumulates for GRPO)
    run["train"].update(algorithm=algorithm, total_steps=4, save_every_steps=2, prompts_per_step=4)
    run["train"].update(micro_batch_size=4, gradient_checkpointing=True)
    params.write_text(yaml.safe_dump(run, sort_keys=False))
    # --multi_gpu is accelerate's torchrun launcher; without a GPU the ranks join a gloo group on CPU
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = subprocess.run(
        [*launch, "-m", "zerosearch_core.cli", "train_policy", "--params", str(params)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    digests = dict(re.findall(r"rank (\d) of 2 finished training: weights (\w+)", output))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output[-4000:]
    history = (Path(cfg.paths.trained_policy_dir) / "training/history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [1.0, 2.0, 3.0, 4.0]  # one writer, no duplicates
    checkpoints = Path(cfg.paths.checkpoints_dir)
    saved = sorted(p.name for p in checkpoints.iterdir() if p.is_dir())
    assert saved, "no checkpoint"
    assert load_causal_lm(cfg.paths.trained_policy_dir).config.model_type == "qwen2"


@pytest.mark.reliability
def test_a_code_change_on_the_training_path_starts_afresh_and_a_cosmetic_one_resumes(
    cfg: PipelineConfig, tiny_policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reward changed to return 0 used to resume the finished checkpoint and republish the old policy: the run
    identity now covers the code the stage runs (the same files DVC tracks as its deps)."""
    import shutil

    from zerosearch_core import artifacts
    from zerosearch_core.stages import train_policy

    copy = tmp_path / "code"
    shutil.copytree(Path(artifacts.__file__).parents[1] / "zerosearch_core", copy / "zerosearch_core")
    monkeypatch.setattr(train_policy, "code_digest", lambda module: artifacts.code_digest(module, copy))
    run_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)))
    checkpoints = train_policy.prepare_checkpoints_dir(run_cfg)
    (checkpoints / "checkpoint-6").mkdir()
    card = copy / "zerosearch_core/evaluation/card.py"
    card.write_text(card.read_text() + "\n# the card reworded\n")
    train_policy.prepare_checkpoints_dir(run_cfg)
    assert (checkpoints / "checkpoint-6").is_dir()  # rendering code is not on the training path: resumed
    rewards = copy / "zerosearch_core/agent/rewards.py"
    rewards.write_text(
        rewards.read_text().replace("def answer_reward(", "def _old_answer_reward(", 1)
        + ("\n\ndef answer_reward(response, golden_answers, metric='f1', yes_no_exact=True):\n    return 0.0\n")
    )
    train_policy.prepare_checkpoints_dir(run_cfg)
    assert not (checkpoints / "checkpoint-6").exists()  # the reward's code changed: started afresh
    assert json.loads((checkpoints / "run_fingerprint.json").read_text())["code"]
