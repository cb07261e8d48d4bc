"""The toy-world profile end to end, as one Prefect flow: the pipeline, the experiments, and the results table.

Run::

    python -m flows.toy                       # toy/dvc.yaml, toy/params.yaml, toy/experiments.yaml

1. Every stage of ``toy/dvc.yaml`` in order (``generate_world`` → … → ``evaluate``): the ZeroSearch run at the
   default parameters, plus the cold-start (before RL) row, which ``evaluate`` scores with ``eval.policies``.
2. Every experiment and seed of the plan as ``dvc exp run toy/dvc.yaml -S …`` (parameters only); the upstream
   stages are cached, so only ``train_policy`` and ``evaluate`` rerun. Each stage of each run is an MLflow run.
3. ``toy/results/results.md``, ``results.json`` and ``results.png``: real-search test EM per row, mean ± spread over
   seeds, also logged to MLflow. The workspace is put back to the default parameters and their outputs afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks import dvc_stages  # noqa: E402
from zerosearch_core.config import load_config  # noqa: E402
from zerosearch_core.experiments import (  # noqa: E402
    Experiment,
    load_plan,
    run_row,
    set_arguments,
    write_results,
)

PIPELINE = "toy/dvc.yaml"
PARAMS = "toy/params.yaml"
PLAN = "toy/experiments.yaml"
RESULTS_DIR = "toy/results"


@task(name="dvc_experiment", retries=0, cache_policy=NO_CACHE)
def dvc_experiment(experiment: Experiment, seed: int, tag: str, pipeline: str, params: str) -> dict[str, Any]:
    """``dvc exp run`` one experiment at one seed in the workspace and return its row of the results table."""
    cfg = load_config(dvc_stages.project_dir() / params)
    name = f"{experiment.name}-s{seed}-{tag}"
    started = time.perf_counter()
    dvc_stages.stream_command(
        ["exp", "run", pipeline, "-n", name, *set_arguments(params, experiment, seed)], f"experiment {name!r}"
    )
    document = json.loads((dvc_stages.project_dir() / cfg.paths.eval_metrics).read_text())
    row = run_row(experiment, seed, document)
    row.update(dvc_experiment=name, seconds=round(time.perf_counter() - started, 1))
    get_run_logger().info("%s: real-search test EM %.3f (%.0f s)", name, row["em"], row["seconds"])
    return row


class WorkspaceSnapshot:
    """What experiments in the workspace change and the DVC cache cannot give back: the parameter, lock and metrics
    files (``dvc exp run`` leaves the last experiment applied) and the training checkpoints (an uncached output),
    which are moved aside meanwhile. :meth:`restore` puts them back and checks the cached outputs out, so that
    ``dvc repro`` is a no-op again afterwards."""

    def __init__(self, root: Path, params: str, pipeline: str) -> None:
        cfg = load_config(root / params)
        lock = str(Path(pipeline).with_suffix(".lock"))
        metrics = [cfg.paths.eval_metrics, cfg.paths.train_metrics, cfg.paths.simulator_metrics]
        self.root = root
        self.pipeline = pipeline
        self.files = {name: (root / name).read_bytes() for name in [params, lock, *metrics] if (root / name).is_file()}
        self.checkpoints = root / cfg.paths.checkpoints_dir
        self.aside = self.checkpoints.with_name(f"{self.checkpoints.name}.before-experiments")
        if self.aside.exists():  # left by an interrupted run: the checkpoints dir holds an experiment's
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            self.aside.rename(self.checkpoints)
        if self.checkpoints.exists():
            self.checkpoints.rename(self.aside)

    def restore(self) -> None:
        """Write the files back, return the checkpoints, and check the matching outputs out of the DVC cache."""
        for name, content in self.files.items():
            (self.root / name).write_bytes(content)
        if self.aside.exists():
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            self.aside.rename(self.checkpoints)
        dvc_stages.stream_command(["checkout", self.pipeline], "dvc checkout")


@flow(name="zerosearch-toy", log_prints=True)
def toy_world(pipeline: str = PIPELINE, params: str = PARAMS, plan_file: str = PLAN) -> dict[str, Any]:
    """Run the toy profile, its experiments, and write the results table.

    Args:
        pipeline: The toy ``dvc.yaml``.
        params: Its parameter file.
        plan_file: The experiment plan (see :func:`zerosearch_core.experiments.load_plan`).

    Returns:
        The results table rows (label, mean and spread of real-search test EM, per seed values).
    """
    logger = get_run_logger()
    root = dvc_stages.project_dir()
    plan = load_plan(root / plan_file)
    stages = [
        dvc_stages.generate_world(pipeline),
        dvc_stages.prepare_data(pipeline),
        dvc_stages.build_index(pipeline),
        dvc_stages.init_policy(pipeline),
        dvc_stages.collect_trajectories(pipeline),
        dvc_stages.build_simulator_sft(pipeline),
        dvc_stages.finetune_simulator(pipeline),
        dvc_stages.train_policy(pipeline),
    ]
    cfg = load_config(root / params)
    stages.append(dvc_stages.evaluate(cfg.paths.eval_metrics, pipeline))
    for outcome in stages:
        logger.info("stage %s: %s", outcome["stage"], "up to date" if outcome["skipped"] else f"{outcome['seconds']}s")
    baseline = json.loads((root / cfg.paths.eval_metrics).read_text())
    tag = time.strftime("%Y%m%d%H%M%S")
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    pending = []
    for experiment in plan.experiments:
        for seed in experiment.seeds:
            if not experiment.overrides and seed == cfg.train.seed:  # the run the pipeline just made
                rows.append({**run_row(experiment, seed, baseline), "dvc_experiment": "workspace (the pipeline run)"})
            else:
                pending.append((experiment, seed))
    snapshot = WorkspaceSnapshot(root, params, pipeline)
    try:
        for experiment, seed in pending:
            rows.append(dvc_experiment(experiment, seed, tag, pipeline, params))
    finally:
        snapshot.restore()
        if rows:
            title = "Toy world: does RL with a simulated search engine help?"
            table = write_results(plan, rows, root / RESULTS_DIR, title)
            log_results(cfg.tracking.uri, cfg.tracking.experiment, root / RESULTS_DIR)
    for row in table:
        print(f"{row['label']}: EM {100 * row['em_mean']:.1f} ± {100 * row['em_std']:.1f} (n={row['n']})")
    return {"stages": stages, "results": table}


def log_results(uri: str, experiment: str, folder: Path) -> None:
    """Log the results folder as one MLflow run named ``results`` in the profile's experiment."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    summary = json.loads((folder / "results.json").read_text())["summary"]
    with mlflow.start_run(run_name="results", tags={"stage": "results"}):
        mlflow.log_metrics({f"em.{row['name']}": row["em_mean"] for row in summary})
        mlflow.log_artifacts(str(folder), artifact_path="results")


if __name__ == "__main__":
    toy_world()
