"""Pictures of the team services for the README, taken by headless Chromium from a real run.

    bash scripts/setup.sh --with-chromium            # Debian's chromium, once
    .venv/bin/python -m scripts.screenshots          # from the repository root; writes docs/screenshots/*.png

It clones this repository into a temporary folder, starts the team services there (``scripts/team_services.py``:
PostgreSQL, ``mlflow server`` and ``prefect server`` on it, a worker), and runs the ``cpu-smoke-nightly`` deployment
twice through Prefect's REST API as the UI's Custom run does: the toy profile, shortened by overrides so the pictures
take minutes (``QUICK``; its numbers mean nothing), with ``train.seed`` 1 and then 2. The second run re-trains and
re-evaluates only. Then it photographs the first flow run's page in Prefect, the MLflow runs table, and MLflow's
compare view of the two ``train_policy`` runs, and stops everything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import urllib.parse
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
import yaml

from scripts import team_services

ROOT = Path(__file__).resolve().parents[1]
QUICK: dict[str, Any] = {
    "world.reading_drills": 2000,
    "cold_start.pretrain_steps": 300,
    "cold_start.sft_steps": 60,
    "cold_start.sft_max_steps": 60,
    "simulator.epochs": 1.0,
    "simulator.eval_questions": 4,
    "simulator.type_check": "as_written",  # a one-epoch simulator breaks its type often; resampling takes long
    "train.total_steps": 8,
    "train.save_every_steps": 4,
    "train.validation_size": 8,
}
"""Overrides that make the toy profile run in minutes, for pictures of the UI (not for results)."""


def chromium() -> str:
    """Path of the Chromium binary.

    Raises:
        FileNotFoundError: It is not installed; the message names the setup flag that installs it.
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError("Chromium is missing: run bash scripts/setup.sh --with-chromium (Debian's chromium)")
    return found


def screenshot(url: str, target: Path, width: int = 1440, height: int = 900, wait_ms: int = 20000) -> None:
    """Render ``url`` in headless Chromium, letting its scripts run for ``wait_ms`` of virtual time, into a PNG.

    Raises:
        RuntimeError: Chromium failed or wrote no image.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [
        chromium(),
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={wait_ms}",
        f"--screenshot={target}",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        raise RuntimeError(f"chromium could not photograph {url}:\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, clone)")
    args = parser.parse_args(argv)
    chromium()  # fail before minutes of work
    work = Path(tempfile.mkdtemp(prefix="zerosearch-shots-"))
    project = work / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    logs = work / "logs"
    logs.mkdir()
    home = work / "prefect-home"
    try:
        with ExitStack() as stack:
            pg = stack.enter_context(team_services.postgres(("mlflow", "prefect")))
            mlflow_url = stack.enter_context(team_services.mlflow_server(pg, work / "artifacts", logs / "mlflow.log"))
            api = stack.enter_context(team_services.prefect_server(pg, home, logs / "prefect-server.log"))
            env = {"MLFLOW_TRACKING_URI": mlflow_url}
            stack.enter_context(team_services.prefect_worker(api, home, project, logs / "worker.log", env))
            flow_runs = []
            for seed in (1, 2):
                print(f"running the toy profile (quick) with train.seed={seed} through the worker …", flush=True)
                overrides = {**QUICK, "train.seed": seed}
                parameters = {"params": "toy/params.yaml", "overrides": overrides}
                run = team_services.run_deployment(api, "zerosearch-pipeline/cpu-smoke-nightly", parameters)
                if run["state_type"] != "COMPLETED":
                    raise RuntimeError(f"flow run {run['id']} ended {run['state_type']}; see {logs / 'worker.log'}")
                flow_runs.append(str(run["id"]))
            experiment = requests.get(
                f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": _experiment_name(project)},
                timeout=30,
            ).json()["experiment"]["experiment_id"]
            client_runs = requests.post(
                f"{mlflow_url}/api/2.0/mlflow/runs/search",
                json={"experiment_ids": [experiment], "filter": "tags.stage = 'train_policy'", "max_results": 10},
                timeout=30,
            ).json()["runs"]
            train_runs = [run["info"]["run_id"] for run in client_runs][:2]
            ui = api.removesuffix("/api")
            shots = {
                "prefect-flow-run.png": f"{ui}/flow-runs/flow-run/{flow_runs[0]}",
                "mlflow-runs.png": f"{mlflow_url}/#/experiments/{experiment}/runs?workflowType=machine_learning",
                "mlflow-compare.png": f"{mlflow_url}/#/compare-runs?"
                + urllib.parse.urlencode({"runs": json.dumps(train_runs), "experiments": json.dumps([experiment])}),
            }
            for name, url in shots.items():
                screenshot(url, args.out / name)
                print(f"{args.out / name}: {url}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _experiment_name(project: Path) -> str:
    return str(yaml.safe_load((project / "toy/params.yaml").read_text())["tracking"]["experiment"])


if __name__ == "__main__":
    raise SystemExit(main())
