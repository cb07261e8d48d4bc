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

from prefect import flow, get_run_logger  # noqa: E402

from tasks import dvc_stages  # noqa: E402


@flow(name="zerosearch-pipeline", log_prints=True)
def zerosearch_pipeline(metrics_path: str = "metrics/eval.json") -> dict[str, Any]:
    """The DAG of dvc.yaml in order, each stage a ``dvc repro --single-item``: prepare_data → build_index →
    init_policy → collect_trajectories → build_simulator_sft → finetune_simulator → train_policy → evaluate.

    Args:
        metrics_path: Where the evaluate stage writes its metrics (``paths.eval_metrics``).

    Returns:
        Per-stage timings and the evaluation metrics.
    """
    logger = get_run_logger()
    stages = [
        dvc_stages.prepare_data(),
        dvc_stages.build_index(),
        dvc_stages.init_policy(),
        dvc_stages.collect_trajectories(),
        dvc_stages.build_simulator_sft(),
        dvc_stages.finetune_simulator(),
        dvc_stages.train_policy(),
    ]
    evaluation = dvc_stages.evaluate(metrics_path)
    stages.append({k: v for k, v in evaluation.items() if k != "metrics"})
    for outcome in stages:
        state = "up to date" if outcome["skipped"] else f"ran in {outcome['seconds']}s"
        logger.info("stage %s: %s", outcome["stage"], state)
    metrics = evaluation["metrics"]
    for mode in (m for m in metrics if m != "not_evaluated"):
        print(f"{mode}: average EM {metrics[mode]['average']['em']:.3f}, F1 {metrics[mode]['average']['f1']:.3f}")
    return {"stages": stages, "metrics": metrics}


if __name__ == "__main__":
    result = zerosearch_pipeline()
    print(json.dumps(result["metrics"], indent=2))
