"""The ZeroSearch pipeline as a Prefect flow: each task runs one DVC stage, in DAG order.

Run once (a temporary local Prefect server starts if none is configured)::

    python -m flows.pipeline                                   # params.yaml
    python -m flows.pipeline toy/params.yaml train.seed=3      # another profile, and overrides

Schedule it from the Prefect UI: start a server (``prefect server start``), then either
``python -m flows.serve`` (serves the deployment from this process) or ``prefect deploy --all`` with the
definitions in ``prefect.yaml`` and a ``prefect worker start --pool local-process``. See docs/team-services.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

# No telemetry from this offline pipeline (set before Prefect reads its settings).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local server needs more than Prefect's 20 s default to start on 2 busy cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks import dvc_stages  # noqa: E402


@flow(name="zerosearch-pipeline", log_prints=True)
def zerosearch_pipeline(params: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every stage of the pipeline that ``params`` belongs to (the ``dvc.yaml`` beside it), in the order it lists
    them, each a ``dvc repro --single-item`` (prepare_data → build_index → init_policy → collect_trajectories →
    build_simulator_sft → finetune_simulator → train_policy → evaluate for the main pipeline).

    Args:
        params: The parameter file: ``params.yaml`` (the CPU smoke profile, or a GPU profile copied over it) or
            ``toy/params.yaml`` (the toy world).
        overrides: Dotted keys and values to set in ``params`` first, as ``dvc exp run -S`` would, e.g.
            ``{"train.seed": 3}``. They are checked by the same config loader as every stage: an unknown key or a
            bad value fails the flow before any stage runs, and nothing is written.

    Returns:
        The checked parameters, per-stage timings (``skipped``: DVC found the stage up to date) and the evaluation
        metrics.
    """
    logger = get_run_logger()
    checked = check_params(params, overrides or {})
    pipeline = checked["pipeline"]  # relative to the project folder, where the CLI ran
    stages = [dvc_stages.stage_task(stage)(stage, pipeline) for stage in dvc_stages.pipeline_stages(pipeline)]
    for outcome in stages:
        state = "up to date" if outcome["skipped"] else f"ran in {outcome['seconds']}s"
        logger.info("stage %s: %s", outcome["stage"], state)
    metrics = dvc_stages.read_metrics(dvc_stages.project_dir() / checked["eval_metrics"])
    for mode in (m for m in metrics if m != "not_evaluated"):
        print(f"{mode}: average EM {metrics[mode]['average']['em']:.3f}, F1 {metrics[mode]['average']['f1']:.3f}")
    return {"params": checked, "stages": stages, "metrics": metrics}


@task(name="check_params", retries=0, cache_policy=NO_CACHE)
def check_params(params: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``zerosearch check_params``: validate ``params`` with ``overrides`` set (a string is read as YAML, like
    ``dvc exp run -S`` reads it; other values as the JSON the UI sends)."""
    return dict(json.loads(dvc_stages.run_cli(check_params_arguments(params, overrides))))


def check_params_arguments(params: str, overrides: dict[str, Any]) -> list[str]:
    """The ``zerosearch check_params`` command line for ``overrides``, with ``--refuse-secrets``: an override that
    carries a secret is refused (Prefect stores a flow run's parameters, so the command line also runs this check
    before any flow run exists).

    >>> check_params_arguments("toy/params.yaml", {"train.seed": 3, "eval.modes": ["search"]})[-2:]
    ['--set=train.seed=3', '--set=eval.modes=["search"]']
    """
    arguments = ["check_params", "--params", params, "--refuse-secrets"]
    for key, value in overrides.items():
        arguments.append(f"--set={key}={value if isinstance(value, str) else json.dumps(value)}")
    return arguments


def parse_arguments(argv: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """The parameter file and the ``KEY=VALUE`` overrides of the command line; a malformed one is one clear line.

    >>> parse_arguments(["toy/params.yaml", "train.seed=3"])
    ('toy/params.yaml', {'train.seed': '3'})
    """
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description="Run every DVC stage of a profile's pipeline as a Prefect flow, in DAG order.",
        epilog="Example: python -m flows.pipeline toy/params.yaml train.seed=3",
    )
    parser.add_argument("params", nargs="?", default="params.yaml", help="the parameter file (default params.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="values to set first, as dvc exp run -S")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for position, item in enumerate(args.overrides, start=1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"override number {position} is not KEY=VALUE; write e.g. train.seed=3")
        overrides[key.strip()] = value
    return args.params, overrides


if __name__ == "__main__":
    params, overrides = parse_arguments()
    # the overrides checked (a secret refused) before Prefect sees them: it stores a flow run's parameters
    command = [sys.executable, "-m", "zerosearch_core.cli", *check_params_arguments(params, overrides)]
    checked = subprocess.run(command, cwd=dvc_stages.project_dir(), capture_output=True, text=True)
    if checked.returncode != 0:
        lines = [line for line in checked.stderr.splitlines() if line.strip()]
        raise SystemExit(f"python -m flows.pipeline: {lines[-1] if lines else 'check_params failed'}")
    result = zerosearch_pipeline(params, overrides)
    print(json.dumps(result["metrics"], indent=2))
