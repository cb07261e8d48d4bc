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
