"""The toy-world profile end to end, as one Prefect flow: the pipeline, the experiments, and the results table.

Run::

    python -m flows.toy                       # toy/dvc.yaml, toy/params.yaml, toy/experiments.yaml

1. Every stage of ``toy/dvc.yaml`` in order (``generate_world`` → … → ``evaluate``): the ZeroSearch run at the
   default parameters, plus the cold-start (before RL) row, which ``evaluate`` scores with ``eval.policies``.
2. Every other experiment and seed of the plan as ``dvc exp run toy/dvc.yaml -S …`` (parameters only); the upstream
   stages are cached, so only ``train_policy`` and ``evaluate`` rerun. Each stage of each run is an MLflow run.
3. ``toy/results/results.md``, ``results.json`` and ``results.png``: real-search test EM per row, mean ± spread over
   seeds, also logged to MLflow. The workspace is put back to the default parameters and their outputs afterwards.

Like the pipeline flow, this holds no logic of its own: DVC runs the stages and experiments, and the CLI commands
``experiment_plan`` and ``experiment_results`` (zerosearch_core.experiments) plan the runs and write the table.
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

PIPELINE = "toy/dvc.yaml"
PARAMS = "toy/params.yaml"
PLAN = "toy/experiments.yaml"
RESULTS_DIR = "toy/results"
TITLE = "Toy world: does RL with a simulated search engine help?"


@task(name="dvc_experiment", retries=0, cache_policy=NO_CACHE)
def dvc_experiment(run: dict[str, Any], tag: str, pipeline: str, metrics_copy: Path, plan: dict[str, Any]) -> dict:
    """``dvc exp run`` one experiment at one seed in the workspace; keep a copy of its evaluation metrics."""
    name = f"{run['experiment']}-s{run['seed']}-{tag}"
    started = time.perf_counter()
    dvc_stages.stream_command(["exp", "run", pipeline, "-n", name, *run["set_arguments"]], f"experiment {name!r}")
    shutil.copyfile(dvc_stages.project_dir() / plan["eval_metrics"], metrics_copy)
    seconds = round(time.perf_counter() - started, 1)
    get_run_logger().info("%s finished in %.0f s", name, seconds)
    return {"dvc_experiment": name, "seconds": seconds}


class WorkspaceSnapshot:
    """What experiments in the workspace change and the DVC cache cannot give back: the parameter, lock and metrics
    files (``dvc exp run`` leaves the last experiment applied) and the training checkpoints (an uncached output),
    which are moved aside meanwhile. :meth:`restore` puts them back and checks the cached outputs out, so that
    ``dvc repro`` is a no-op again afterwards."""

    def __init__(self, root: Path, plan: dict[str, Any], pipeline: str) -> None:
        names = [*plan["restore_files"], str(Path(pipeline).with_suffix(".lock"))]
        self.root = root
        self.pipeline = pipeline
        self.files = {name: (root / name).read_bytes() for name in names if (root / name).is_file()}
        self.checkpoints = root / plan["checkpoints_dir"]
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
        plan_file: The experiment plan (see ``zerosearch_core.experiments.load_plan``).

    Returns:
        The stages' outcomes and the results table rows (label, mean and spread of real-search test EM, per seed).
    """
    logger = get_run_logger()
    root = dvc_stages.project_dir()
    plan = json.loads(dvc_stages.run_cli(["experiment_plan", "--params", params, "--plan", plan_file]))
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
    stages.append(dvc_stages.evaluate(plan["eval_metrics"], pipeline))
    for outcome in stages:
        logger.info("stage %s: %s", outcome["stage"], "up to date" if outcome["skipped"] else f"{outcome['seconds']}s")
    results = root / RESULTS_DIR
    (results / "runs").mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, Any]] = []
    tag = time.strftime("%Y%m%d%H%M%S")
    for run in (r for r in plan["runs"] if r["baseline"]):  # the run the pipeline just made
        copy = results / "runs" / f"{run['experiment']}-s{run['seed']}.json"
        shutil.copyfile(root / plan["eval_metrics"], copy)
        manifest.append({**_entry(run, copy), "dvc_experiment": "workspace (the pipeline run)"})
    snapshot = WorkspaceSnapshot(root, plan, pipeline)
    try:
        for run in (r for r in plan["runs"] if not r["baseline"]):
            copy = results / "runs" / f"{run['experiment']}-s{run['seed']}.json"
            manifest.append({**_entry(run, copy), **dvc_experiment(run, tag, pipeline, copy, plan)})
    finally:
        snapshot.restore()
        if manifest:
            (results / "runs.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in manifest))
            arguments = ["--params", params, "--plan", plan_file, "--runs", str(results / "runs.jsonl")]
            dvc_stages.run_cli(["experiment_results", *arguments, "--out", str(results), "--title", TITLE])
    table = json.loads((results / "results.json").read_text())["summary"]
    for row in table:
        print(f"{row['label']}: EM {100 * row['em_mean']:.1f} ± {100 * row['em_std']:.1f} (n={row['n']})")
    return {"stages": stages, "results": table}


def _entry(run: dict[str, Any], metrics_copy: Path) -> dict[str, Any]:
    relative = metrics_copy.relative_to(dvc_stages.project_dir())  # the CLI runs in the project folder
    return {"experiment": run["experiment"], "seed": run["seed"], "metrics_file": str(relative)}


if __name__ == "__main__":
    toy_world()
