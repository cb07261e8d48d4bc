"""Prefect orchestration: the flow chains the DVC stages of a real project; tasks declare retries; the deployment
definition in prefect.yaml is valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.cache_policies import NO_CACHE
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import zerosearch_pipeline
from tasks import dvc_stages
from tests.conftest import copy_project, dvc, shrink_toy_params
from tests.stages.test_dvc_pipeline import STAGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.mark.slow
def test_flow_chains_the_stages_of_a_reproduced_project(
    prefect_harness: None, reproduced: tuple[Path, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = reproduced
    dvc(project, "repro")  # other tests may have touched an output; start from an up-to-date project
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(project))
    state = zerosearch_pipeline(return_state=True)
    result = state.result()
    assert tuple(s["stage"] for s in result["stages"]) == STAGES  # the order of dvc.yaml
    assert all(s["skipped"] for s in result["stages"])  # DVC, not Prefect, decides what is up to date
    # each stage task left a Markdown artifact that tells a skipped stage from one that ran
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    reports = {a.key: str(a.data) for a in artifacts}
    assert set(reports) == {f"stage-{stage.replace('_', '-')}" for stage in STAGES}
    assert all("up to date (DVC skipped it; nothing ran)" in text for text in reports.values())
    assert result["metrics"]["search"]["average"]["em"] >= 0.0
    assert result["metrics"]["not_evaluated"] == []


@pytest.mark.slow
def test_a_failing_stage_fails_the_flow(
    prefect_harness: None, reproduced: tuple[Path, float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, _ = reproduced
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dvc.yaml").write_text("stages:\n  prepare_data:\n    cmd: exit 3\n")
    (broken / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(broken))
    state = zerosearch_pipeline(return_state=True)
    assert state.is_failed()
    with pytest.raises(dvc_stages.StageFailed, match="prepare_data"):
        state.result()


def test_the_quickstart_flow_runs_the_quickstart_profile_and_its_plan() -> None:
    from flows import quickstart
    from zerosearch_core.config import load_config
    from zerosearch_core.evaluation.experiments import load_plan

    assert dvc_stages.pipeline_stages(quickstart.PIPELINE) == ["generate_world", *STAGES]
    for spec in yaml.safe_load((ROOT / quickstart.PIPELINE).read_text())["stages"].values():
        assert spec["cmd"].endswith(f"--params {quickstart.PARAMS}")
    cfg = load_config(ROOT / quickstart.PARAMS)
    assert cfg.paths.eval_metrics.startswith("quickstart/") and quickstart.RESULTS_DIR.startswith("quickstart/")
    assert [e.overrides for e in load_plan(ROOT / quickstart.PLAN).experiments] == [{}]  # the pipeline's run alone


def test_one_task_serves_every_stage_with_its_retries_and_no_cache() -> None:
    assert dvc_stages.pipeline_stages("dvc.yaml") == list(STAGES)
    assert dvc_stages.pipeline_stages("toy/dvc.yaml") == ["generate_world", *STAGES]
    assert set(dvc_stages.RETRIES) == {"generate_world", *STAGES}
    for stage in ("prepare_data", "build_index", "evaluate"):
        assert dvc_stages.stage_task(stage).retries == 2
    for stage in ("train_policy", "finetune_simulator", "a_stage_nobody_listed"):
        assert dvc_stages.stage_task(stage).retries == 0  # resumes from its checkpoint instead
    for stage in STAGES:
        task = dvc_stages.stage_task(stage)
        assert task.name == stage and task.cache_policy is NO_CACHE  # DVC owns caching


def test_prefect_yaml_deployment_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel  # the model `prefect deploy` validates with
    from prefect.client.schemas.schedules import construct_schedule
    from prefect.flows import load_flow_from_entrypoint

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = PrefectYamlModel.model_validate(raw).deployments
    monkeypatch.chdir(ROOT)
    flows = {}
    for deployment in deployments:
        for schedule in deployment.schedules:
            construct_schedule(cron=schedule.cron, timezone=schedule.timezone)
        flow = load_flow_from_entrypoint(deployment.entrypoint)
        flow.validate_parameters(deployment.parameters)
        flows[deployment.name] = flow.name
    assert flows == {"cpu-smoke-nightly": "zerosearch-pipeline", "toy-world-weekly": "zerosearch-toy"}


def test_serve_deployment_matches_prefect_yaml_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same flow, schedule and parameters as prefect.yaml's, but another name: serving never replaces the
    deployment a worker runs."""
    from flows import serve

    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    deployment = zerosearch_pipeline.to_deployment(
        name=serve.DEPLOYMENT_NAME, cron=serve.NIGHTLY_CRON, parameters=raw["parameters"]
    )
    assert deployment.name != raw["name"]
    assert deployment.entrypoint == raw["entrypoint"]
    assert deployment.schedules[0].schedule.cron == raw["schedules"][0]["cron"]
    assert raw["parameters"] == {"params": "params.yaml", "overrides": {}}


@pytest.mark.slow
def test_flow_parameters_pick_the_profile_and_bad_overrides_fail_before_any_stage(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI's Custom run: overrides are checked by the config loader and written like `dvc exp run -S`; a bad one
    fails the flow with the loader's message and leaves the file and every stage untouched."""
    project = tmp_path / "project"
    (project / "toy").mkdir(parents=True)
    for name in ("params.yaml", "toy/params.yaml"):
        (project / name).write_text((ROOT / name).read_text())
    marker = project / "ran.txt"
    (project / "toy/dvc.yaml").write_text(f"stages:\n  only:\n    cmd: echo ran >> {marker}\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(project))
    before = (project / "toy/params.yaml").read_text()

    state = zerosearch_pipeline("toy/params.yaml", {"curriculum.end": 1.5}, return_state=True)
    assert state.is_failed()
    with pytest.raises(dvc_stages.StageFailed, match=r"curriculum.start and curriculum.end are probabilities"):
        state.result()
    state = zerosearch_pipeline("toy/params.yaml", {"train.sed": 3}, return_state=True)
    with pytest.raises(dvc_stages.StageFailed, match=r"Override train.sed: .* has no such key"):
        state.result()
    assert (project / "toy/params.yaml").read_text() == before and not marker.exists()

    metrics = project / "toy/metrics/eval.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"not_evaluated": []}))
    result = zerosearch_pipeline("toy/params.yaml", {"train.seed": 3, "curriculum.end": "0.4"})
    assert [s["stage"] for s in result["stages"]] == ["only"] and marker.read_text() == "ran\n"  # toy/dvc.yaml ran
    after = (project / "toy/params.yaml").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [("  end: 0.5", "  end: 0.4"), ("  seed: 0", "  seed: 3")]  # only those lines, comments kept
    assert result["params"]["eval_metrics"] == "toy/metrics/eval.json"


@pytest.mark.slow
def test_toy_flow_runs_the_profile_and_queues_an_isolated_experiment(
    prefect_harness: None, tmp_path: Path, benchmarks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.toy
    from flows.toy import toy_world

    project = copy_project(tmp_path / "project", benchmarks_dir)
    shrink_toy_params(project)
    params_before = (project / "toy/params.yaml").read_text()
    monkeypatch.setenv("ZEROSEARCH_PROJECT_DIR", str(project))
    monkeypatch.chdir(project)  # MLflow's sqlite path in the toy params is relative
    run_queue = flows.toy.run_queue

    def run_queue_then_commit(names: list[str], tracking_uri: str) -> float:
        seconds = run_queue(names, tracking_uri)
        # a commit while the experiments ran: they hang off the commit before it, and must still be read
        (project / "NOTES.md").write_text("written while the experiments ran\n")
        for command in (["add", "NOTES.md"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "notes"]):
            subprocess.run(["git", *command], cwd=project, check=True)
        return seconds

    monkeypatch.setattr(flows.toy, "run_queue", run_queue_then_commit)
    result = toy_world()
    assert [s["stage"] for s in result["stages"]] == ["generate_world", *STAGES]
    assert [row["name"] for row in result["results"]] == ["cold_start", "real_search"]
    markdown = (project / "toy/results/results.md").read_text()
    assert "| RL with real search |" in markdown and "| cold start (before RL) |" in markdown
    runs = json.loads((project / "toy/results/results.json").read_text())["runs"]
    assert [(r["experiment"], r["seed"]) for r in runs] == [("real_search", 1), ("real_search", 2)]
    # Real DVC experiments, run in temporary copies: the workspace was never touched.
    listed = dvc(project, "exp", "list", "--all-commits", "--name-only").stdout  # they hang off the commit before
    assert all(run["dvc_experiment"] in listed for run in runs)
    assert (project / "toy/params.yaml").read_text() == params_before
    assert "Data and pipelines are up to date." in dvc(project, "status", "toy/dvc.yaml").stdout
    assert json.loads((project / "toy/results/runs/real_search-s1.json").read_text())["search"]["average"]["em"] >= 0
    # Its stages logged to the workspace's MLflow store, tagged with the experiment's name.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name(yaml.safe_load(params_before)["tracking"]["experiment"])
    # Two dvc exp runs: two named parents in one experiment, each with its stage runs nested (the compare view's
    # rows), the re-run stages tagged with the seed each one changed.
    for run, seed in zip(runs, (1, 2), strict=True):
        name = run["dvc_experiment"]
        tagged = client.search_runs([experiment.experiment_id], f"tags.dvc_experiment = '{name}'")
        (parent,) = [r for r in tagged if r.data.tags["stage"] == "pipeline"]
        children = {r.data.tags["stage"]: r for r in tagged if r.data.tags["stage"] != "pipeline"}
        assert parent.info.run_name == f"pipeline · {name}" and set(children) >= {"train_policy", "evaluate"}
        for stage, child in children.items():
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.info.run_name.startswith(f"{stage} · {name} · ")
            assert f"train.seed={seed}" in child.data.tags["changed_params"]


@pytest.mark.parametrize("flow", ["quickstart", "pipeline", "toy"])
def test_help_prints_usage_and_runs_nothing(flow: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", f"flows.{flow}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PREFECT_HOME": str(tmp_path)},
    )
    assert result.returncode == 0 and "usage: " in result.stdout, result.stderr
    assert time.monotonic() - started < 30
    assert "Starting temporary server" not in result.stdout + result.stderr  # no flow ran


@pytest.mark.reliability
def test_an_override_carrying_a_secret_is_refused_before_prefect_stores_it() -> None:
    """Prefect keeps a flow run's parameters in its database: a password in a URL or a secret-named key passed as an
    override is refused on the command line before any flow run exists, and by the flow's own check (a run from the
    UI), naming the key, never the value, and writing nothing."""
    import subprocess
    import sys

    from flows.pipeline import check_params_arguments

    root = Path(__file__).resolve().parents[2]
    before = (root / "toy/params.yaml").read_text()
    secret = "postgresql://mlflow:hunter2-pw@db:5432/mlflow"
    command = [sys.executable, "-m", "flows.pipeline", "toy/params.yaml", f"tracking.uri={secret}", "train.seed=3"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "['tracking.uri'] carry a secret" in done.stderr, done.stderr[-2000:]
    assert "MLFLOW_TRACKING_URI" in done.stderr and "hunter2" not in done.stderr + done.stdout
    assert "Starting temporary server" not in done.stdout + done.stderr  # no flow run, so Prefect stored nothing
    assert (root / "toy/params.yaml").read_text() == before  # train.seed=3 was not written either
    arguments = check_params_arguments("toy/params.yaml", {"search.web_api_key_env": "sk-live-123"})
    assert "--refuse-secrets" in arguments  # the flow's own check refuses it for runs from the UI
    from zerosearch_core.cli import main
    from zerosearch_core.profiles import secret_overrides

    assert main(arguments) == 2 and (root / "toy/params.yaml").read_text() == before  # refused before writing

    assert secret_overrides({"tracking.uri": "postgresql://mlflow@db/mlflow", "simulator.url": "http://x:8001"}) == []


def test_a_malformed_pipeline_override_is_one_clear_line() -> None:
    from flows.pipeline import parse_arguments

    with pytest.raises(SystemExit):
        parse_arguments(["params.yaml", "train.seed"])
    assert parse_arguments([]) == ("params.yaml", {})
