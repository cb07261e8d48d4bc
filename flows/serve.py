"""Serve the pipeline deployment from this process, so it can be run and scheduled from the Prefect UI.

Run from the repository root (``python -m flows.serve``, not ``python flows/serve.py``), with
``PREFECT_API_URL`` pointing at a running server (``prefect server start``). Ctrl-C pauses the deployment.
"""

from __future__ import annotations

from flows.pipeline import zerosearch_pipeline

DEPLOYMENT_NAME = "cpu-smoke-nightly-served"
"""Not prefect.yaml's ``cpu-smoke-nightly``: a served deployment of the same name would replace the worker's one (and
stop running when this process stops), so the two ways of deploying never clobber each other."""
NIGHTLY_CRON = "0 3 * * *"

if __name__ == "__main__":
    zerosearch_pipeline.serve(
        name=DEPLOYMENT_NAME, cron=NIGHTLY_CRON, parameters={"params": "params.yaml", "overrides": {}}
    )
