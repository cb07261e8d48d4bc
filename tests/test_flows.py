"""Prefect orchestration: the flow chains the DVC stages of a real project; tasks declare retries; the deployment
definition in prefect.yaml is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.cache_policies import NO_CACHE
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import zerosearch_pipeline
from tasks import dvc_stages
from tests.conftest import dvc
from tests.test_dvc_pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_flow_chains_the_stages_of_a_reproduced_project(
    prefect_harness: None, reproduced: tuple[Path, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = reproduced
    dvc(project, "repro")  # other tests may have touched an output; start from an up-to-date project
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(project))
    result = zerosearch_pipeline()
    assert tuple(s["stage"] for s in result["stages"]) == STAGES  # the order of dvc.yaml
    assert all(s["skipped"] for s in result["stages"])  # DVC, not Prefect, decides what is up to date
    assert result["metrics"]["search"]["average"]["em"] >= 0.0
    assert result["metrics"]["not_evaluated"] == ["triviaqa"]


def test_a_failing_stage_fails_the_flow(
    prefect_harness: None, reproduced: tuple[Path, float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, _ = reproduced
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dvc.yaml").write_text("stages:\n  prepare_data:\n    cmd: exit 3\n")
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(broken))
    state = zerosearch_pipeline(return_state=True)
    assert state.is_failed()
    with pytest.raises(dvc_stages.StageFailed, match="prepare_data"):
        state.result()


def test_tasks_declare_retries_and_no_cache() -> None:
    assert dvc_stages.prepare_data.retries == 2
    assert dvc_stages.build_index.retries == 2
    assert dvc_stages.evaluate.retries == 2
    assert dvc_stages.train_policy.retries == 0  # resumes from its checkpoint instead
    tasks = (dvc_stages.prepare_data, dvc_stages.build_index, dvc_stages.init_policy, dvc_stages.train_policy)
    for task in (*tasks, dvc_stages.evaluate):
        assert task.cache_policy is NO_CACHE  # DVC owns caching


def test_prefect_yaml_deployment_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # the model `prefect deploy` validates with
    from prefect.client.schemas.schedules import construct_schedule
    from prefect.flows import load_flow_from_entrypoint

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = PrefectYamlModel.model_validate(raw).deployments
    for schedule in deployment.schedules:
        construct_schedule(cron=schedule.cron, timezone=schedule.timezone)
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    assert flow.name == "zerosearch-pipeline"
    flow.validate_parameters(deployment.parameters)


def test_serve_deployment_matches_prefect_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import serve

    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    deployment = zerosearch_pipeline.to_deployment(name=serve.DEPLOYMENT_NAME, cron=serve.NIGHTLY_CRON)
    assert deployment.name == raw["name"]
    assert deployment.entrypoint == raw["entrypoint"]
    assert deployment.schedules[0].schedule.cron == raw["schedules"][0]["cron"]
