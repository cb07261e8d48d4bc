"""One Prefect task per DVC stage; each runs ``dvc repro --single-item <stage>`` in the project folder.

DVC owns caching and lineage, so no task sets a Prefect cache: an up-to-date stage is a fast no-op inside DVC.
Data and evaluation stages retry (a transient failure, e.g. a port race of the retriever server, is worth a
second try); training retries 0 times: rerunning it resumes from its own checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run


def project_dir() -> Path:
    """The DVC project the tasks run in: ``ZEROSEARCH_PROJECT_DIR`` if set, else this repository."""
    return Path(os.environ.get("ZEROSEARCH_PROJECT_DIR", Path(__file__).resolve().parents[1]))


class StageFailed(RuntimeError):
    """``dvc repro`` exited non-zero; the message carries the end of its output."""


def stage_environment() -> dict[str, str]:
    """The environment for DVC: this interpreter's folder first on PATH (the stage commands call ``python``), and
    the Prefect flow run id for MLflow to tag each stage's run with."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run_id = flow_run.get_id()
    if run_id is not None:
        env["ZEROSEARCH_PIPELINE_RUN"] = str(run_id)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    return env


def run_dvc_stage(stage: str, pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Run one DVC stage (and only it) and stream its output to the Prefect log.

    Args:
        stage: The stage name.
        pipeline: The ``dvc.yaml`` that defines it (``toy/dvc.yaml`` for the toy-world profile).

    Returns:
        ``{"stage", "seconds", "skipped"}``; ``skipped`` is True when DVC found the stage up to date.

    Raises:
        StageFailed: The stage failed; see the log for its full output.
    """
    target = stage if pipeline == "dvc.yaml" else f"{pipeline}:{stage}"
    started = time.perf_counter()
    lines = stream_command(["repro", "--single-item", target], f"dvc stage {stage!r}")
    skipped = any("didn't change, skipping" in line for line in lines)
    return {"stage": stage, "seconds": round(time.perf_counter() - started, 2), "skipped": skipped}


def stream_command(dvc_args: list[str], what: str) -> list[str]:
    """Run ``dvc <dvc_args>`` in the project folder, streaming its output to the Prefect log.

    Returns:
        The output lines.

    Raises:
        StageFailed: DVC exited non-zero; the message holds the end of its output.
    """
    logger = get_run_logger()
    command = [sys.executable, "-m", "dvc", *dvc_args]
    folder = project_dir()
    logger.info("Running %s in %s", " ".join(command[1:]), folder)
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=stage_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            logger.info("%s", line)
    returncode = process.wait()
    if returncode != 0:
        tail = "\n".join(lines[-25:])
        raise StageFailed(f"{what} failed with exit code {returncode}:\n{tail}")
    return lines


def run_cli(arguments: list[str]) -> str:
    """Run ``python -m zerosearch_core.cli <arguments>`` in the project folder; its log goes to the Prefect log.

    Returns:
        What the command printed on stdout.

    Raises:
        StageFailed: The command exited non-zero.
    """
    logger = get_run_logger()
    command = [sys.executable, "-m", "zerosearch_core.cli", *arguments]
    result = subprocess.run(command, cwd=project_dir(), env=stage_environment(), capture_output=True, text=True)
    for line in result.stderr.splitlines():
        if line.strip():
            logger.info("%s", line)
    if result.returncode != 0:
        raise StageFailed(
            f"zerosearch {arguments[0]} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result.stdout


def read_metrics(path: Path) -> dict[str, Any]:
    """A DVC metrics file as a dict (small: EM/F1 per benchmark)."""
    return dict(json.loads(path.read_text()))


@task(name="generate_world", retries=0, cache_policy=NO_CACHE)
def generate_world(pipeline: str = "toy/dvc.yaml") -> dict[str, Any]:
    """Generate the synthetic world (toy profile only)."""
    return run_dvc_stage("generate_world", pipeline)


@task(name="prepare_data", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare_data(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Normalise and validate the benchmarks."""
    return run_dvc_stage("prepare_data", pipeline)


@task(name="build_index", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def build_index(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Build the corpus and retrieval index."""
    return run_dvc_stage("build_index", pipeline)


@task(name="init_policy", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def init_policy(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Materialise the initial policy."""
    return run_dvc_stage("init_policy", pipeline)


@task(name="collect_trajectories", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def collect_trajectories(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Record real-search interactions for the simulator."""
    return run_dvc_stage("collect_trajectories", pipeline)


@task(name="build_simulator_sft", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def build_simulator_sft(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Label and balance the simulator SFT data."""
    return run_dvc_stage("build_simulator_sft", pipeline)


@task(name="finetune_simulator", retries=0, cache_policy=NO_CACHE)
def finetune_simulator(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Fine-tune the simulator. No Prefect retries: a rerun resumes from its checkpoint."""
    return run_dvc_stage("finetune_simulator", pipeline)


@task(name="train_policy", retries=0, cache_policy=NO_CACHE)
def train_policy(pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Curriculum RL. No Prefect retries: a rerun of the stage resumes from its own checkpoint instead."""
    return run_dvc_stage("train_policy", pipeline)


@task(name="evaluate", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def evaluate(metrics_path: str = "metrics/eval.json", pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Evaluate with real search; return the metrics document."""
    outcome = run_dvc_stage("evaluate", pipeline)
    return {**outcome, "metrics": read_metrics(project_dir() / metrics_path)}
