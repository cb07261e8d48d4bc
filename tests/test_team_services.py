"""Every team service for real, as a user meets them: PostgreSQL, `mlflow server` and `prefect server` on it, a
Prefect worker, and a deployment of prefect.yaml run through the REST API with a profile and an override (what the
UI's Custom run sends). Asserts what the UI would show, and that everything listened on loopback only and stopped."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from scripts import team_services
from tests.conftest import copy_project, shrink_toy_params
from tests.stages.test_dvc_pipeline import STAGES

pytestmark = pytest.mark.slow
PASSWORD = "canary-team-secret-41c9"
ROOT = Path(__file__).resolve().parents[1]


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = requests.post(f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_a_deployment_run_from_the_api_lands_in_prefect_and_the_team_mlflow(
    tmp_path: Path, benchmarks_dir: Path
) -> None:
    from mlflow.tracking import MlflowClient

    project = copy_project(tmp_path / "project", benchmarks_dir)
    shrink_toy_params(project)
    experiment_name = yaml.safe_load((project / "toy/params.yaml").read_text())["tracking"]["experiment"]
    ours = (ROOT / "toy/params.yaml").read_text()
    before = team_services.listening_sockets()
    seen: set[tuple[str, int]] = set()
    logs = tmp_path / "logs"
    logs.mkdir()
    home = tmp_path / "prefect-home"
    processes = []
    with ExitStack() as stack:
        pg = stack.enter_context(team_services.postgres(("mlflow", "prefect"), password=PASSWORD))
        mlflow_url = stack.enter_context(team_services.mlflow_server(pg, tmp_path / "artifacts", logs / "mlflow.log"))
        api = stack.enter_context(team_services.prefect_server(pg, home, logs / "prefect-server.log"))
        worker = stack.enter_context(
            team_services.prefect_worker(api, home, project, logs / "worker.log", {"MLFLOW_TRACKING_URI": mlflow_url})
        )
        processes.append(worker)

        # the UI's Custom run: the deployment, another profile and an override
        parameters = {"params": "toy/params.yaml", "overrides": {"train.seed": 2}}

        def sample_sockets() -> None:  # what listens while the flow runs
            seen.update(team_services.listening_sockets())

        flow_run = team_services.run_deployment(
            api, "zerosearch-pipeline/cpu-smoke-nightly", parameters, 1500, sample_sockets
        )
        assert flow_run["state_type"] == "COMPLETED", (logs / "worker.log").read_text()[-4000:]
        # it ran in the deployed project (prefect.yaml's working directory), which took the override
        assert "\n  seed: 2\n" in (project / "toy/params.yaml").read_text()
        assert (ROOT / "toy/params.yaml").read_text() == ours

        # Prefect: every task completed; each stage's artifact says it ran and links its MLflow run
        task_runs = _post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
        assert {run["state_type"] for run in task_runs} == {"COMPLETED"}
        names = sorted(run["name"] for run in task_runs)
        assert [n for n in names if not n.startswith("check_params")] == sorted(("generate_world", *STAGES))
        assert len(names) == len(STAGES) + 2  # check_params once, then one task per stage
        artifacts = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})
        reports = {a["key"]: a["data"] for a in artifacts}
        assert set(reports) == {f"stage-{s.replace('_', '-')}" for s in ("generate_world", *STAGES)}
        assert f"- MLflow: {mlflow_url}/#/experiments/" in reports["stage-train-policy"]

        # MLflow, read over HTTP from the server: one parent for the flow run, the stages nested and named
        client = MlflowClient(tracking_uri=mlflow_url)
        ui = api.removesuffix("/api")
        experiment = client.get_experiment_by_name(experiment_name)
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], f"tags.pipeline_run = '{flow_run['id']}'")
        parents = [r for r in runs if r.data.tags["stage"] == "pipeline"]
        stages = {r.data.tags["stage"]: r for r in runs if r.data.tags["stage"] != "pipeline"}
        assert len(parents) == 1 and set(stages) == {"generate_world", *STAGES}
        for stage, run in stages.items():
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert run.info.run_name.startswith(f"{stage} · toy · ") and run.info.status == "FINISHED"
            assert run.data.tags["profile"] == "toy" and run.data.tags["params_file"] == "toy/params.yaml"
            assert run.data.tags["changed_params"] == "train.seed=2"
            assert run.data.tags["prefect_flow_run_url"] == f"{ui}/flow-runs/flow-run/{flow_run['id']}"
        train = stages["train_policy"]
        history = client.get_metric_history(train.info.run_id, "train/reward_mean")
        assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
        assert reports["stage-train-policy"].endswith(f"/runs/{train.info.run_id}")
        listed = {a.path for a in client.list_artifacts(stages["evaluate"].info.run_id)}
        assert "eval_card.md" in listed, listed
        assert any((tmp_path / "artifacts").rglob("*eval_card.md")), "the server's artifact store lacks the card"
        # proxied storage: the client reads the card back over HTTP alone, with no path shared with the server
        card = client.download_artifacts(stages["evaluate"].info.run_id, "eval_card.md", str(tmp_path / "download"))
        assert "toy_test_1hop" in Path(card).read_text()
        assert all(PASSWORD not in str(r.data.params) + str(r.data.tags) for r in runs)

        for name in ("prefect-server.log", "mlflow.log", "worker.log"):
            text = (logs / name).read_text()
            assert PASSWORD not in text, f"the database password reached {name}"
        assert "database is locked" not in (logs / "prefect-server.log").read_text()
        seen |= team_services.listening_sockets()
        ports = {int(u.rsplit(":", 1)[1].split("/")[0]) for u in (mlflow_url, api)} | {pg.port}
        assert ports <= {port for _, port in seen}, "a service was not listening"

    opened = seen - before
    assert opened and all(team_services.is_loopback(address) for address, _ in opened), sorted(opened)
    assert all(process.poll() is not None for process in processes)
    still = {port for _, port in team_services.listening_sockets()}
    assert not ports & still, f"still listening after the test: {sorted(ports & still)}"
