"""One generic Prefect task that runs one DVC stage (``dvc repro --single-item <stage>``) in the project folder,
and the stage list, read from the pipeline's ``dvc.yaml`` (the DAG lives there and only there).

DVC owns caching and lineage, so no task sets a Prefect cache: an up-to-date stage is a fast no-op inside DVC.
:data:`RETRIES`: data and evaluation stages retry (a transient failure, e.g. a port race of the retriever server, is
worth a second try); training stages retry 0 times: rerunning one resumes from its own checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

RETRIES: dict[str, int] = {
    "generate_world": 0,
    "prepare_data": 2,
    "build_index": 2,
    "init_policy": 1,
    "collect_trajectories": 2,
    "build_simulator_sft": 2,
    "finetune_simulator": 0,  # resumes from its checkpoint
    "train_policy": 0,  # resumes from its checkpoint
    "evaluate": 2,
}
"""Prefect retries per stage; a stage not listed gets 0 (the safe default for anything that trains)."""

MLFLOW_RUN_LINE = "MLflow run: "
"""The line a stage prints on stderr to announce its MLflow run (``zerosearch_core.cli.MLFLOW_RUN_LINE``; a test
keeps the two equal without importing the CLI here)."""


def project_dir() -> Path:
    """The DVC project the tasks run in: ``ZEROSEARCH_PROJECT_DIR`` if set, else this repository."""
    return Path(os.environ.get("ZEROSEARCH_PROJECT_DIR", Path(__file__).resolve().parents[1]))


class StageFailed(RuntimeError):
    """``dvc repro`` exited non-zero; the message carries the end of its output."""


def stage_environment() -> dict[str, str]:
    """The environment for DVC: this interpreter's folder first on PATH (``scripts/stage-python`` falls back to the
    ``python3`` there when the project has no ``.venv``), and the Prefect flow run's id and page for MLflow to tag
    each stage's run with."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run_id = flow_run.get_id()
    if run_id is not None:
        env["ZEROSEARCH_PIPELINE_RUN"] = str(run_id)
        if flow_run.ui_url:
            env["ZEROSEARCH_PIPELINE_RUN_URL"] = str(flow_run.ui_url)
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
    # the stage announces its MLflow run; after a retry the last announcement is the run that counted
    links = [line.split(MLFLOW_RUN_LINE, 1)[1] for line in lines if MLFLOW_RUN_LINE in line]
    outcome = {"stage": stage, "seconds": round(time.perf_counter() - started, 2), "skipped": skipped}
    return {**outcome, "mlflow_run": links[-1] if links else None}


def stream_command(dvc_args: list[str], what: str, extra_env: dict[str, str] | None = None) -> list[str]:
    """Run ``dvc <dvc_args>`` in the project folder, streaming its output to the Prefect log; ``extra_env`` is added
    to the environment unless already set there.

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
        env={**(extra_env or {}), **stage_environment()},
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
    return _captured([sys.executable, "-m", "zerosearch_core.cli", *arguments], f"zerosearch {arguments[0]}")


def dvc_output(dvc_args: list[str]) -> str:
    """What ``dvc <dvc_args>`` prints on stdout (its stderr goes to the Prefect log).

    Raises:
        StageFailed: DVC exited non-zero.
    """
    return _captured([sys.executable, "-m", "dvc", *dvc_args], f"dvc {' '.join(dvc_args)}")


def git_output(git_args: list[str]) -> str:
    """What ``git <git_args>`` prints on stdout in the project folder, stripped.

    Raises:
        StageFailed: git exited non-zero.
    """
    return _captured(["git", *git_args], f"git {' '.join(git_args)}").strip()


def _captured(command: list[str], what: str) -> str:
    """Run ``command`` in the project folder: stdout returned, stderr to the Prefect log, a failure raised."""
    result = subprocess.run(command, cwd=project_dir(), env=stage_environment(), capture_output=True, text=True)
    logger = get_run_logger()
    for line in result.stderr.splitlines():
        if line.strip():
            logger.info("%s", line)
    if result.returncode != 0:
        raise StageFailed(f"{what} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def pipeline_stages(pipeline: str = "dvc.yaml") -> list[str]:
    """The stage names of ``pipeline`` (relative to the project folder), in the order ``dvc.yaml`` lists them."""
    document = yaml.safe_load((project_dir() / pipeline).read_text())
    return list(document["stages"])


def stage_report(outcome: dict[str, Any], pipeline: str, flow_run_id: str | None) -> str:
    """The Markdown a stage task leaves in Prefect: whether DVC ran or skipped the stage, and how to find its MLflow
    run (each stage's run is tagged with the flow run's id).

    >>> print(stage_report({"stage": "evaluate", "seconds": 1.5, "skipped": True}, "dvc.yaml", "abc"))
    ### evaluate: up to date (DVC skipped it; nothing ran)
    <BLANKLINE>
    - pipeline `dvc.yaml`, 1.5 s
    - MLflow: no new run (the stage did not run)
    >>> ran = {"stage": "evaluate", "seconds": 9, "skipped": False}
    >>> print(stage_report({**ran, "mlflow_run": "http://127.0.0.1:5000/#/experiments/1/runs/ab12"}, "dvc.yaml", "x"))
    ### evaluate: ran
    <BLANKLINE>
    - pipeline `dvc.yaml`, 9 s
    - MLflow: http://127.0.0.1:5000/#/experiments/1/runs/ab12
    """
    stage = outcome["stage"]
    if outcome["skipped"]:
        lines = [f"### {stage}: up to date (DVC skipped it; nothing ran)", ""]
        mlflow_line = "- MLflow: no new run (the stage did not run)"
    elif outcome.get("mlflow_run"):
        lines = [f"### {stage}: ran", ""]
        mlflow_line = f"- MLflow: {outcome['mlflow_run']}"
    else:
        lines = [f"### {stage}: ran", ""]
        where = (
            f"tags.pipeline_run = '{flow_run_id}' and tags.stage = '{stage}'"
            if flow_run_id
            else f"tags.stage = '{stage}'"
        )
        mlflow_line = f"- MLflow: the run found by `{where}`"
    lines += [f"- pipeline `{pipeline}`, {outcome['seconds']} s", mlflow_line]
    return "\n".join(lines)


@task(name="dvc_stage", task_run_name="{stage}", retries=0, retry_delay_seconds=5, cache_policy=NO_CACHE)
def dvc_stage(stage: str, pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Run one DVC stage; ``{"stage", "seconds", "skipped"}``. It leaves a Markdown artifact (key
    ``stage-<name>``) saying whether the stage ran or was up to date, so skipped stages are told apart in the UI."""
    outcome = run_dvc_stage(stage, pipeline)
    run_id = flow_run.get_id()
    create_markdown_artifact(
        stage_report(outcome, pipeline, str(run_id) if run_id else None),
        key=f"stage-{stage.replace('_', '-')}",
        description=f"{stage}: {'up to date' if outcome['skipped'] else 'ran'}",
    )
    return outcome


def stage_task(stage: str) -> Task[..., dict[str, Any]]:
    """:func:`dvc_stage` named after ``stage``, with its retries from :data:`RETRIES`."""
    return dvc_stage.with_options(name=stage, retries=RETRIES.get(stage, 0))


def read_metrics(path: Path) -> dict[str, Any]:
    """A DVC metrics file as a dict (small: EM/F1 per benchmark)."""
    return dict(json.loads(path.read_text()))


def queue_busy(names: list[str]) -> bool:
    """Whether any of the experiments ``names`` is still queued or running in DVC's experiment queue.

    Raises:
        StageFailed: One of them failed; the message names it and the command that shows its log.
    """
    statuses = {}
    for line in dvc_output(["queue", "status"]).splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] in names:
            statuses[fields[1]] = fields[-1]
    failed = sorted(name for name, status in statuses.items() if status == "Failed")
    if failed:
        raise StageFailed(f"queued experiments failed: {failed}; `dvc queue logs <name>` shows each one's log.")
    return any(status in ("Queued", "Running") for status in statuses.values())
