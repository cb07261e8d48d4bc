"""The ZeroSearch pipeline as a Prefect flow: each task runs one DVC stage, in DAG order.

Run once (a temporary local Prefect server starts if none is configured)::

    python -m flows.pipeline

Schedule it from the Prefect UI: start a server (``prefect server start``), then either
``python -m flows.serve`` (serves the deployment from this process) or ``prefect deploy --all`` with the
definitions in ``prefect.yaml`` and a ``prefect worker start --pool local-process``. See README.md.
"""

from __future__ import annotations

import json
import os
from typing import Any

# No telemetry from this offline pipeline (set before Prefect reads its settings).
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary local server needs more than Prefect's 20 s default to start on 2 busy cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger  # noqa: E402

from tasks import dvc_stages  # noqa: E402


@flow(name="zerosearch-pipeline", log_prints=True)
def zerosearch_pipeline(metrics_path: str = "metrics/eval.json", pipeline: str = "dvc.yaml") -> dict[str, Any]:
    """Every stage of ``pipeline`` in the order ``dvc.yaml`` lists them, each a ``dvc repro --single-item``
    (prepare_data → build_index → init_policy → collect_trajectories → build_simulator_sft → finetune_simulator →
    train_policy → evaluate for the main pipeline).

    Args:
        metrics_path: Where the evaluate stage writes its metrics (``paths.eval_metrics``).
        pipeline: The ``dvc.yaml`` to run (relative to the project folder).

    Returns:
        Per-stage timings and the evaluation metrics.
    """
    logger = get_run_logger()
    stages = [dvc_stages.stage_task(stage)(stage, pipeline) for stage in dvc_stages.pipeline_stages(pipeline)]
    for outcome in stages:
        state = "up to date" if outcome["skipped"] else f"ran in {outcome['seconds']}s"
        logger.info("stage %s: %s", outcome["stage"], state)
    metrics = dvc_stages.read_metrics(dvc_stages.project_dir() / metrics_path)
    for mode in (m for m in metrics if m != "not_evaluated"):
        print(f"{mode}: average EM {metrics[mode]['average']['em']:.3f}, F1 {metrics[mode]['average']['f1']:.3f}")
    return {"stages": stages, "metrics": metrics}


if __name__ == "__main__":
    result = zerosearch_pipeline()
    print(json.dumps(result["metrics"], indent=2))
