"""The command line: --help on every subcommand, clear exit codes for bad configs."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from zerosearch_core.cli import SERVICES, STAGES, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", [*STAGES, *SERVICES])
def test_every_subcommand_has_help(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([stage, "--help"])
    assert exit_info.value.code == 0
    assert "--params" in capsys.readouterr().out


def test_console_script_lists_the_stages() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zerosearch_core.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    for stage in STAGES:
        assert stage in result.stdout


def test_bad_config_exits_2_with_the_key_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("top_k: 3", "top_k: 3\n  topk: 3"))
    assert main(["evaluate", "--params", str(params)]) == 2
    assert "unknown key(s) ['topk']" in caplog.text


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train_everything"])
    assert exit_info.value.code == 2


def test_known_failures_end_in_one_line_that_names_the_problem(
    tmp_path: Path, tiny_policy_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from zerosearch_core.netutil import free_port

    monkeypatch.chdir(tmp_path)  # MLflow writes its store and artifacts under the working folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    params.write_text(text.replace("source_dir: data/samples/benchmarks", f"source_dir: {tmp_path / 'empty'}"))
    assert main(["prepare_data", "--params", str(params)]) == 1
    assert "Input data error: Benchmark file" in caplog.text and "check data.source_dir" in caplog.text
    assert "Traceback" not in caplog.text
    caplog.clear()
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    arguments = ["--params", str(params), "--model", str(tiny_policy_dir), "--retriever-url", dead]
    assert main(["evaluate_checkpoint", *arguments]) == 1
    assert f"Search backend failed: the retriever at {dead} is not answering /health" in caplog.text
    caplog.clear()
    assert main(["evaluate_checkpoint", "--params", str(params), "--model", str(tmp_path)]) == 2
    assert "is no model folder (no config.json)" in caplog.text


def test_stage_runs_of_one_dvc_experiment_are_named_and_nested_under_one_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from zerosearch_core.cli import stage_run
    from zerosearch_core.config import load_config

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "ppo-seed2")
    cfg = load_config(ROOT / "params.yaml")
    params = tmp_path / "toy" / "params.yaml"
    params.parent.mkdir()
    params.write_text((ROOT / "params.yaml").read_text())
    for stage in ("train_policy", "evaluate"):
        with stage_run(cfg, stage, Path("toy/params.yaml")):
            pass
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    parents = [r for r in runs if r.data.tags["stage"] == "pipeline"]
    children = [r for r in runs if r.data.tags["stage"] != "pipeline"]
    assert len(parents) == 1 and parents[0].info.run_name == "pipeline · ppo-seed2"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.info.run_name.rsplit(" · ", 1)[0] for r in children) == [
        "evaluate · ppo-seed2",
        "train_policy · ppo-seed2",
    ]
    assert {r.data.tags["profile"] for r in children} == {"toy"}


def test_the_commit_tag_ignores_what_the_pipeline_rewrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from zerosearch_core.cli import git_commit

    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics").mkdir()
    for name in ("dvc.lock", "code.py", "metrics/eval.json"):
        (tmp_path / name).write_text("v1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "metrics/eval.json").write_text("v2\n")
    commit, changed = git_commit()
    assert not commit.endswith("-dirty") and changed == []  # DVC's own rewrites
    (tmp_path / "code.py").write_text("v2\n")
    commit, changed = git_commit()
    assert commit.endswith("-dirty") and changed == ["code.py"]


def test_a_stage_run_records_the_changed_params_and_both_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-S train.seed=3` (or a flow's overrides) shows as `changed_params`; the run names the Prefect flow run's
    page, and the stage announces its MLflow run in the line the Prefect task reads back."""
    from mlflow.tracking import MlflowClient

    from tasks.dvc_stages import MLFLOW_RUN_LINE as READ_BACK
    from zerosearch_core.cli import MLFLOW_RUN_LINE, changed_params, stage_run
    from zerosearch_core.config import load_config

    assert READ_BACK == MLFLOW_RUN_LINE
    monkeypatch.chdir(tmp_path)
    params = Path("params.yaml")
    params.write_text((ROOT / "params.yaml").read_text())
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    assert changed_params(params) == []
    text = params.read_text()
    params.write_text(text.replace("\n  seed: 0\n", "\n  seed: 3\n", 1).replace("algorithm: grpo", "algorithm: ppo", 1))
    assert changed_params(params) == ['train.algorithm="ppo"', "train.seed=3"]
    assert changed_params(Path("not-in-git.yaml")) == []

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ZEROSEARCH_PIPELINE_RUN", "f1ow-run-1d")
    monkeypatch.setenv("ZEROSEARCH_PIPELINE_RUN_URL", "http://127.0.0.1:4200/flow-runs/flow-run/f1ow-run-1d")
    cfg = load_config(params)
    with stage_run(cfg, "evaluate", params):
        pass
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], "tags.stage = 'evaluate'")
    assert run.data.tags["changed_params"] == 'train.algorithm="ppo", train.seed=3'
    assert run.data.tags["prefect_flow_run_url"] == "http://127.0.0.1:4200/flow-runs/flow-run/f1ow-run-1d"
    assert f"({platform.machine()}: " in run.data.tags["cpu"]  # what float kernels depend on
    announced = [line for line in capsys.readouterr().err.splitlines() if line.startswith(MLFLOW_RUN_LINE)]
    assert announced == [f"{MLFLOW_RUN_LINE}run {run.info.run_id} of experiment {experiment.experiment_id} in {uri}"]


def test_config_show_prints_each_keys_help_type_bounds_and_value(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from zerosearch_core.cli import main

    assert main(["config", "show", "search.top_k", "simulator.serve_port", "--params", "toy/params.yaml"]) == 0
    out = capsys.readouterr().out
    assert "search.top_k = 3\n    int (>= 1, <= 20)\n    Documents per query" in out
    assert "simulator.serve_port = 8011\n    int (>= 1, <= 65535), service knob: not tracked" in out
    assert main(["config", "show", "world", "--params", "toy/params.yaml", "--json"]) == 0
    world = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in world][:2] == ["world.seed", "world.entities"] and world[0]["value"] == 7
    assert {"key", "type", "bounds", "service", "value", "help"} == set(world[0])
    assert main(["config", "show"]) == 0  # every key of params.yaml, each with a help text
    everything = capsys.readouterr().out
    assert (
        everything.count(" = ") > 150
        and "train.algorithm = \"grpo\"\n    one of ['grpo', 'ppo', 'reinforce']" in everything
    )
    assert main(["config", "show", "train.learning_rat"]) == 2
    assert "No parameter 'train.learning_rat'; keys start with one of ['seed', 'world'" in caplog.text
