"""A team's MLflow: `mlflow server` on 127.0.0.1 with a real PostgreSQL backend store (a cluster made here with
initdb/pg_ctl, password auth, the password only in the environment) and proxied artifact storage; a real stage logs
to it through MLFLOW_TRACKING_URI, and a client reads the run, its metrics and artifacts back over HTTP alone."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scripts import team_services
from zerosearch_core.config import PipelineConfig, config_to_dict

pytestmark = pytest.mark.slow
PASSWORD = "canary-pg-secret-7f3a"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    artifacts, log = tmp_path / "artifact-store", tmp_path / "mlflow-server.log"
    with team_services.postgres(("mlflow",), user="mlflow", password=PASSWORD) as pg:
        with team_services.mlflow_server(pg, artifacts, log) as url:
            yield url, artifacts, log


def test_a_stage_logs_to_the_team_server_on_postgresql(
    mlflow_server: tuple[str, Path, Path], cfg: PipelineConfig, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    url, artifacts, log = mlflow_server
    files = tuple(f for f in cfg.data.files if f.name in ("bamboogle_test", "multihop_train", "multihop_val"))
    small = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=("bamboogle_test",)),
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config_to_dict(small), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # the client needs no database access
    env.update(MLFLOW_TRACKING_URI=url, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(
        [sys.executable, "-m", "zerosearch_core.cli", "prepare_data", "--params", str(params)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'prepare_data'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name.startswith("prepare_data · ") and run.info.status == "FINISHED"
    assert run.data.tags.get("status") == "ok" and "git_commit" in run.data.tags
    assert run.data.metrics  # the stage's metrics are in PostgreSQL
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed, "no artifact logged"
    # proxied storage: the client got the artifacts onto the server's destination over HTTP, with no shared path
    assert any(artifacts.rglob("*")), "the server's artifact destination is empty"
    downloaded = client.download_artifacts(run.info.run_id, sorted(listed)[0], str(tmp_path / "download"))
    assert Path(downloaded).exists()
    # the database password never reached the server's log, the run's params or tags
    assert PASSWORD not in log.read_text()
    assert PASSWORD not in str(run.data.params) + str(run.data.tags)
