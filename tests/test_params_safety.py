"""Parameter files and checkpoints under abuse: secrets never echoed, aliases refused, concurrent overrides kept,
a truncated trainer state skipped (issue "Nothing lost, nothing stale", defects 7-9 and their rules)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zerosearch_core.artifacts import last_complete_checkpoint
from zerosearch_core.config import ConfigError, load_config
from zerosearch_core.profiles import override_params

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-live-4f9a8b7c6d5e"


def _project(tmp_path: Path) -> Path:
    """params.yaml and dvc.yaml in a scratch folder (check_params needs the pipeline beside the file)."""
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("key", ["train.seed", "search.top_k", "eval.benchmarks"])
def test_a_refused_override_names_the_key_never_the_value(key: str, tmp_path: Path) -> None:
    params = _project(tmp_path)
    with pytest.raises(ConfigError) as refused:
        override_params(params, {key: SECRET})
    assert key in str(refused.value) and SECRET not in str(refused.value)


def test_check_params_never_echoes_an_item_without_a_key_and_redacts_secret_keys(tmp_path: Path) -> None:
    params = _project(tmp_path)
    command = [sys.executable, "-m", "zerosearch_core.cli", "check_params", "--params", str(params)]
    pasted = subprocess.run([*command, "--set", SECRET], capture_output=True, text=True, cwd=tmp_path)
    assert pasted.returncode != 0 and "--set number 1 is not KEY=VALUE" in pasted.stderr
    assert SECRET not in pasted.stdout + pasted.stderr
    kept = subprocess.run(
        [*command, "--set", f"search.web_api_key_env={SECRET.upper().replace('-', '_')}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert kept.returncode == 0, kept.stderr
    shown = kept.stdout + kept.stderr
    assert SECRET.upper().replace("-", "_") not in shown and "<redacted>" in shown


def test_yaml_aliases_are_refused_with_the_line(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text().replace("seed: ", "seed: &root ", 1)
    text = text.replace("\ntrain:\n", "\ntrain:\n  # the root seed again\n", 1).replace(
        "\n  seed: 0\n", "\n  seed: *root\n", 1
    )
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"alias \*root at line \d+ is not allowed"):
        load_config(path)
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n"  # a variant: an alias bomb is refused at its first alias
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="alias"):
        load_config(tmp_path / "bomb.yaml")


def test_concurrent_overrides_of_one_file_are_all_kept(tmp_path: Path) -> None:
    params = _project(tmp_path)
    command = [sys.executable, "-m", "zerosearch_core.cli", "check_params", "--params", str(params)]
    for trial in range(3):
        runs = [
            subprocess.Popen([*command, "--set", f"{key}={trial + offset}"], cwd=tmp_path, stderr=subprocess.PIPE)
            for key, offset in (("train.seed", 10), ("eval.max_questions_per_benchmark", 20))
        ]
        assert [run.wait(timeout=120) for run in runs] == [0, 0]
        cfg = load_config(params)
        assert (cfg.train.seed, cfg.eval.max_questions_per_benchmark) == (trial + 10, trial + 20)


def test_a_truncated_trainer_state_falls_back_to_the_checkpoint_before(tmp_path: Path) -> None:
    for step, state in ((5, {"global_step": 5, "max_steps": 30}), (10, None), (15, "{}")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is None:
            (folder / "trainer_state.json").write_text('{"global_step": 10, "max_st')  # a kill during the write
        else:
            (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    assert not (tmp_path / "checkpoint-10").exists() and not (tmp_path / "checkpoint-15").exists()


def test_a_float_in_exponent_form_is_accepted_as_dvc_accepts_it(tmp_path: Path) -> None:
    params = _project(tmp_path)
    text = override_params(params, {"train.learning_rate": "1e-3", "train.critic_learning_rate": "5E-4"})
    (tmp_path / "params.yaml").write_text(text)
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.train.learning_rate == 1e-3 and cfg.train.critic_learning_rate == 5e-4
