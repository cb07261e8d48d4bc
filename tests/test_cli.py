"""The command line: --help on every subcommand, clear exit codes for bad configs."""

from __future__ import annotations

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
    from zerosearch_core.search.http import free_port

    monkeypatch.chdir(tmp_path)  # MLflow writes its store and artifacts under the working folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    params.write_text(text.replace("source_dir: ../shared/data/benchmarks", f"source_dir: {tmp_path / 'empty'}"))
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
