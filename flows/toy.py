"""The toy-world profile end to end, as one Prefect flow: the pipeline, the experiments, and the results table.

Run::

    python -m flows.toy                       # toy/dvc.yaml, toy/params.yaml, toy/experiments.yaml

1. Every stage of ``toy/dvc.yaml`` in order (``generate_world`` → … → ``evaluate``): the ZeroSearch run at the
   default parameters, plus the cold-start (before RL) row, which ``evaluate`` scores with ``eval.policies``.
2. Every other experiment and seed of the plan queued as ``dvc exp run toy/dvc.yaml --queue -S …`` (parameters
   only), then run isolated in DVC's temporary copies (``dvc queue start``): the workspace is never touched, and the
   upstream stages come from the DVC cache, so only ``train_policy`` and ``evaluate`` rerun. Each stage of each run
   is an MLflow run in the workspace's tracking store.
3. ``toy/results/results.md``, ``results.json`` and ``results.png``: real-search test EM per row, mean ± spread over
   seeds, read from ``dvc exp show --json`` and also logged to MLflow.

Like the pipeline flow, this holds no logic of its own: DVC runs the stages and experiments, and the CLI commands
``experiment_plan`` and ``experiment_results`` (zerosearch_core.evaluation.experiments) plan the runs and write
the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local server needs more than Prefect's 20 s default to start on 2 busy cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks import dvc_stages  # noqa: E402

PIPELINE = "toy/dvc.yaml"
PARAMS = "toy/params.yaml"
PLAN = "toy/experiments.yaml"
RESULTS_DIR = "toy/results"
TITLE = "Toy world: does RL with a simulated search engine help?"


@task(name="queue_experiments", retries=0, cache_policy=NO_CACHE)
def queue_experiments(runs: list[dict[str, Any]], pipeline: str) -> list[str]:
    """``dvc exp run --queue`` every run that is not the workspace's own; the names queued."""
    for run in runs:
        dvc_stages.stream_command(
            ["exp", "run", pipeline, "--queue", "-n", run["name"], *run["set_arguments"]], f"queue {run['name']}"
        )
    return [run["name"] for run in runs]


@task(name="run_queue", retries=0, cache_policy=NO_CACHE)
def run_queue(names: list[str], tracking_uri: str, poll_s: float = 10.0) -> float:
    """Run the queued experiments (one worker: two cores) and wait for all of them; the seconds it took. Their
    stages log to ``tracking_uri`` (the workspace's store), not to a store inside DVC's temporary copy."""
    started = time.perf_counter()
    environment = {"MLFLOW_TRACKING_URI": tracking_uri}
    dvc_stages.stream_command(["queue", "start", "-j", "1"], "dvc queue start", extra_env=environment)
    while dvc_stages.queue_busy(names):
        time.sleep(poll_s)
    seconds = round(time.perf_counter() - started, 1)
    get_run_logger().info("%d experiments finished in %.0f s", len(names), seconds)
    return seconds


@flow(name="zerosearch-toy", log_prints=True)
def toy_world(
    pipeline: str = PIPELINE,
    params: str = PARAMS,
    plan_file: str = PLAN,
    results_dir: str = RESULTS_DIR,
    title: str = TITLE,
) -> dict[str, Any]:
    """Run the toy profile, its experiments, and write the results table.

    Args:
        pipeline: The toy ``dvc.yaml``.
        params: Its parameter file.
        plan_file: The experiment plan (see ``zerosearch_core.evaluation.experiments.load_plan``).
        results_dir: Where the table goes (``results.md``, ``.json``, ``.png``, ``runs/``).
        title: The table's title.

    Returns:
        The stages' outcomes and the results table rows (label, mean and spread of real-search test EM, per seed).
    """
    logger = get_run_logger()
    tag = time.strftime("%Y%m%d%H%M%S")
    plan_arguments = ["--params", params, "--plan", plan_file, "--tag", tag]
    plan = json.loads(dvc_stages.run_cli(["experiment_plan", *plan_arguments]))
    stages = [dvc_stages.stage_task(stage)(stage, pipeline) for stage in dvc_stages.pipeline_stages(pipeline)]
    for outcome in stages:
        logger.info("stage %s: %s", outcome["stage"], "up to date" if outcome["skipped"] else f"{outcome['seconds']}s")
    # The experiments hang off the commit they were queued on; a commit made while they run must not hide them
    # from `dvc exp show`, which lists the current commit's experiments unless told which.
    baseline = dvc_stages.git_output(["rev-parse", "HEAD"])
    queued = queue_experiments([run for run in plan["runs"] if not run["baseline"]], pipeline)
    if queued:
        run_queue(queued, plan["tracking_uri"])
    results = dvc_stages.project_dir() / results_dir
    results.mkdir(parents=True, exist_ok=True)
    (results / "exp_show.json").write_text(dvc_stages.dvc_output(["exp", "show", "--json", "--rev", baseline]))
    arguments = [*plan_arguments, "--exp-show", f"{results_dir}/exp_show.json", "--out", results_dir]
    dvc_stages.run_cli(["experiment_results", *arguments, "--title", title])
    table = json.loads((results / "results.json").read_text())["summary"]
    print(f"{title} ({results_dir}/results.md)")
    for row in table:
        lift = f", {100 * row['lift_mean']:+.1f} over its cold start" if "lift_mean" in row else ""
        print(f"  {row['label']}: EM {100 * row['em_mean']:.1f} ± {100 * row['em_std']:.1f} (n={row['n']}){lift}")
    return {"stages": stages, "results": table}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", default=PLAN, help=f"experiment plan (default {PLAN})")
    parser.add_argument("--results", default=RESULTS_DIR, help=f"folder for the table (default {RESULTS_DIR})")
    parser.add_argument("--title", default=TITLE, help="the table's title")
    args = parser.parse_args(argv)
    toy_world(plan_file=args.plan, results_dir=args.results, title=args.title)


if __name__ == "__main__":
    main()
