"""The real DVC pipeline in a scratch copy of this repository: repro, no-op repro, MLflow runs, a corrupted input,
and dvc.yaml's deps/params kept honest against the code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.sync_dvc_deps import WORLD_PROFILES, module_deps, stage_params
from tests.conftest import dvc
from zerosearch_core.config import is_service_key, load_config
from zerosearch_core.stages.registry import STAGES as REGISTERED_STAGES

ROOT = Path(__file__).resolve().parents[2]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def test_the_registry_lists_the_stages_of_dvc_yaml_in_order() -> None:
    toy = tuple(yaml.safe_load((ROOT / "toy/dvc.yaml").read_text())["stages"])
    assert tuple(REGISTERED_STAGES) == toy == ("generate_world", *STAGES)


@pytest.mark.slow
def test_repro_produces_metrics_for_every_benchmark(reproduced: tuple[Path, float]) -> None:
    project, _ = reproduced
    metrics = json.loads((project / "metrics/eval.json").read_text())
    expected = {
        "nq_dev",
        "triviaqa_test",
        "popqa_test",
        "hotpotqa_test",
        "2wikimultihopqa_test",
        "musique_test",
        "bamboogle_test",
        "average",
    }
    for mode in ("search", "direct"):
        assert set(metrics[mode]) == expected
        assert all({"em", "cover_em", "f1"} <= set(values) for values in metrics[mode].values())
    assert metrics["not_evaluated"] == []  # all seven of the paper's benchmarks
    summary = (project / "data/reports/prepare_data/summary.md").read_text()
    assert "| triviaqa_test | 40 |" in summary  # the committed sample
    assert 'kept a "/" inside an alias: none (of 40)' in summary  # the alias rule, counted (the sample has none)
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert "nq_dev" in shown


@pytest.mark.slow
def test_second_repro_is_a_no_op(reproduced: tuple[Path, float]) -> None:
    project, _ = reproduced
    lock_before = (project / "dvc.lock").read_text()
    result = dvc(project, "repro")
    assert "Data and pipelines are up to date." in result.stdout
    assert all(f"Stage '{s}' didn't change, skipping" in result.stdout for s in STAGES)
    assert (project / "dvc.lock").read_text() == lock_before


@pytest.mark.slow
def test_mlflow_holds_one_run_per_stage_with_artifacts_and_provenance(reproduced: tuple[Path, float]) -> None:
    from mlflow.tracking import MlflowClient

    import mlflow

    project, _ = reproduced
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("zerosearch")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {run.data.tags["stage"]: run for run in runs}
    assert sorted(by_stage) == sorted(STAGES) and len(runs) == len(STAGES)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    # DVC writes dvc.lock after each stage; prepare_data and build_index are independent, so either may run first.
    first = min(runs, key=lambda run: run.info.start_time)
    assert first.data.tags["stage"] in {"prepare_data", "build_index"}
    assert first.data.tags["dvc_lock_sha256"] == "none"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        assert run.data.tags["git_commit"].startswith(head)
        assert run.info.run_id == first.info.run_id or len(run.data.tags["dvc_lock_sha256"]) == 64
        assert run.data.params["search.top_k"] == "3"

    def artifacts(run_id: str, path: str = "") -> set[str]:
        found: set[str] = set()
        for item in client.list_artifacts(run_id, path):
            found |= artifacts(run_id, item.path) if item.is_dir else {item.path}
        return found

    evaluate = by_stage["evaluate"]
    assert {
        "eval_card.md",
        "em_f1_by_benchmark.png",
        "predictions.jsonl",
        "eval.json",
        "config/params.yaml",
    } <= artifacts(evaluate.info.run_id)
    assert "search.nq_dev.em" in evaluate.data.metrics
    train_run = by_stage["train_policy"].info.run_id
    noise = client.get_metric_history(train_run, "train/noise_prob")
    assert [m.step for m in noise] == list(range(1, 7)) and noise[-1].value > noise[0].value
    assert {"train/reward_mean", "train/kl", "train/val_em", "train/searches_mean"} <= set(
        by_stage["train_policy"].data.metrics
    )
    assert "training/reward_curve.png" in artifacts(train_run)
    assert "prepare_data/summary.md" in artifacts(by_stage["prepare_data"].info.run_id)
    assert any(a.startswith("prepare_data/data_docs/") for a in artifacts(by_stage["prepare_data"].info.run_id))
    assert mlflow.__version__.startswith("3.")


@pytest.mark.slow
def test_corrupted_benchmark_fails_the_stage_and_keeps_previous_outputs(
    reproduced: tuple[Path, float], tmp_path: Path, benchmarks_dir: Path
) -> None:
    project, _ = reproduced
    before = {p.name: p.read_bytes() for p in (project / "data/benchmarks").iterdir()}
    lock_before = (project / "dvc.lock").read_text()
    corrupted = tmp_path / "benchmarks"
    shutil.copytree(benchmarks_dir, corrupted)
    for path in corrupted.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    nq = corrupted / "nq_open/NQ-open.dev.jsonl"
    lines = nq.read_text().splitlines()
    lines[41] = json.dumps({"question": json.loads(lines[41])["question"], "answer": []})
    nq.write_text("\n".join(lines) + "\n")
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["data"]["source_dir"] = str(corrupted)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = dvc(project, "repro", "prepare_data", check=False)
    finally:
        params_path.write_text(original)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "nq_dev" in output and "line 42 id='nq_dev-42'" in output
    assert {p.name: p.read_bytes() for p in (project / "data/benchmarks").iterdir()} == before
    assert (project / "dvc.lock").read_text() == lock_before
    assert "FAILED" in (project / "data/reports/prepare_data/summary.md").read_text()


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_list_exactly_the_modules_the_stage_imports(stage: str) -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    listed = {d for d in spec["deps"] if d.startswith("zerosearch_core/")}
    assert listed == set(module_deps(stage)), "run scripts/sync_dvc_deps.py"
    assert "zerosearch_core/cli.py" not in listed and "zerosearch_core/config.py" not in listed
    assert spec["cmd"] == f"scripts/stage-python -m zerosearch_core.cli {stage} --params params.yaml"
    assert spec["params"] == stage_params(stage), "run scripts/sync_dvc_deps.py"
    assert not any(is_service_key(key) for key in spec["params"]), "a service knob must not re-run a stage"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_params_exist_in_the_config(stage: str) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    load_config(ROOT / "params.yaml")
    for key in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["params"]:
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{stage} lists param {key}, which params.yaml lacks"
            node = node[part]


@pytest.mark.parametrize("folder", list(WORLD_PROFILES))
def test_world_pipelines_are_the_main_pipeline_run_with_their_params(folder: str) -> None:
    from scripts.sync_dvc_deps import world_pipeline

    text = (ROOT / folder / "dvc.yaml").read_text()
    assert text == world_pipeline((ROOT / "dvc.yaml").read_text(), folder), "run scripts/sync_dvc_deps.py"
    toy = yaml.safe_load(text)["stages"]
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(toy) == ["generate_world", *main]
    for name, spec in toy.items():
        assert spec["wdir"] == ".."
        assert spec["cmd"] == f"scripts/stage-python -m zerosearch_core.cli {name} --params {folder}/params.yaml"
    listed = {d for d in toy["generate_world"]["deps"] if d.startswith("zerosearch_core/")}
    assert listed == set(module_deps("generate_world"))


def test_toy_stage_params_exist_in_the_toy_params() -> None:
    raw = yaml.safe_load((ROOT / "toy/params.yaml").read_text())
    cfg = load_config(ROOT / "toy/params.yaml")
    assert cfg.world is not None and cfg.data.source_dir == cfg.world.output_dir
    assert cfg.search.corpus_source == f"{cfg.world.output_dir}/corpus.jsonl"
    # init_policy's extra dep (scripts/sync_dvc_deps.py) is the reading file generate_world writes
    assert cfg.cold_start.pretrain_texts == f"{cfg.world.output_dir}/reading.jsonl"
    for name, spec in yaml.safe_load((ROOT / "toy/dvc.yaml").read_text())["stages"].items():
        (entry,) = spec["params"]
        for key in entry["toy/params.yaml"]:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name} lists param {key}, which toy lacks"
                node = node[part]


@pytest.mark.slow
def test_service_knobs_and_the_tracking_experiment_re_run_nothing(reproduced: tuple[Path, float]) -> None:
    project, _ = reproduced
    dvc(project, "repro", "dvc.yaml")  # other tests may have touched an output; start from an up-to-date project
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["simulator"].update(serve_port=18123, request_timeout_s=7.5, max_queue=3)
    params["search"].update(port=18124, timeout_s=4.0)
    params["tracking"]["experiment"] = "renamed-by-a-teammate"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        unchanged = dvc(project, "status", "dvc.yaml").stdout
        params["simulator"]["temperature"] = 0.123  # a value the simulated engine reads: training must re-run
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        changed = dvc(project, "status", "dvc.yaml").stdout
    finally:
        params_path.write_text(original)
    assert "Data and pipelines are up to date." in unchanged
    assert "train_policy" in changed and "finetune_simulator" in changed and "prepare_data" not in changed


def _changed_stages(project: Path) -> set[str]:
    """The stages `dvc status` says would re-run."""
    report = json.loads(dvc(project, "status", "--json", "dvc.yaml").stdout or "{}")
    return {name.split(":")[-1] for name in report}


@pytest.mark.slow
def test_cosmetic_code_re_runs_no_training_and_the_code_a_stage_runs_does(reproduced: tuple[Path, float]) -> None:
    """Rewording the evaluation card or editing the simulator's server re-runs neither the cold start nor RL; an edit
    of the simulator's client (the training path) re-runs training."""
    project, _ = reproduced
    dvc(project, "repro", "dvc.yaml")  # other tests may have touched an output; start from an up-to-date project
    edits = {
        "cosmetic": ["zerosearch_core/evaluation/card.py", "zerosearch_core/simulator/server.py"],
        "training path": ["zerosearch_core/simulator/client.py"],
    }
    changed: dict[str, set[str]] = {}
    for kind, files in edits.items():
        originals = {name: (project / name).read_text() for name in files}
        try:
            for name, text in originals.items():
                (project / name).write_text(text + "\n# reworded\n")
            changed[kind] = _changed_stages(project)
        finally:
            for name, text in originals.items():
                (project / name).write_text(text)
    assert changed["cosmetic"] == {"evaluate"}
    assert {"train_policy", "finetune_simulator"} <= changed["training path"]
    assert "init_policy" not in changed["training path"]


@pytest.mark.slow
def test_a_teammates_fresh_clone_pulls_the_outputs_and_repro_is_a_no_op(
    reproduced: tuple[Path, float], tmp_path: Path
) -> None:
    """`dvc push` to a remote (a local folder here; S3/SSH in the README), then a fresh `git clone` with the pushed
    dvc.lock and `dvc pull`: every output is there and `dvc repro` runs nothing."""
    project, _ = reproduced
    dvc(project, "repro", "dvc.yaml")  # other tests may have touched an output; start from an up-to-date project
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "--local", "--force", "team", str(remote))
    pushed = dvc(project, "push", "-r", "team", "dvc.yaml")  # the main pipeline (toy/dvc.lock names other outputs)
    assert "pushed" in pushed.stdout
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, capture_output=True)
    # the lock and metrics a teammate would have committed along with the push
    shutil.copy2(project / "dvc.lock", clone / "dvc.lock")
    shutil.copytree(project / "metrics", clone / "metrics", dirs_exist_ok=True)
    assert not (clone / "data/models").exists()
    dvc(clone, "remote", "add", "--local", "team", str(remote))
    dvc(clone, "pull", "-r", "team", "dvc.yaml")
    assert (clone / "data/models").is_dir()
    assert "Data and pipelines are up to date." in dvc(clone, "status", "dvc.yaml").stdout
    result = dvc(clone, "repro", "dvc.yaml")
    assert all(f"Stage '{s}' didn't change, skipping" in result.stdout for s in STAGES)


@pytest.mark.slow
def test_stage_commands_run_without_an_activated_environment(tmp_path: Path, benchmarks_dir: Path) -> None:
    """`.venv/bin/dvc repro` from a plain shell: the stage command finds the project's .venv (scripts/stage-python),
    where a bare `python` would be the system's, without the project's packages."""
    from tests.conftest import copy_project

    project = copy_project(tmp_path, benchmarks_dir)
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run(
        [str(project / ".venv/bin/dvc"), "repro", "toy/dvc.yaml:generate_world"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    world = load_config(project / "toy/params.yaml").world
    assert world is not None and (project / world.output_dir / "corpus.jsonl").stat().st_size > 0


def test_a_python_without_the_project_says_what_to_do() -> None:
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None or Path(system_python).resolve() == Path(sys.executable).resolve():
        pytest.skip("no system python3 apart from this environment's")
    probe = subprocess.run([system_python, "-c", "import tqdm"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the system python3 has tqdm, so the missing-package path cannot be shown")
    result = subprocess.run(
        [system_python, "-m", "zerosearch_core.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "tqdm is missing" in result.stderr and "bash scripts/setup.sh" in result.stderr
    assert "Traceback" not in result.stderr
