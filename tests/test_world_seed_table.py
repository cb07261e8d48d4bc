"""scripts/world_seed_table.py: the README's world-seed rows come from the saved runs, not from hand-copied numbers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "world_seed_table.py"
SAVED = ROOT / "toy" / "results" / "world_seeds" / "d2faf5c"


def _run(*runs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True, check=False, cwd=ROOT
    )


def test_rows_match_the_saved_d2faf5c_runs() -> None:
    done = _run(SAVED / "world_42", SAVED / "world_5")
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"42", "5"}
    # world 42 read every form and lifted 54.5 - 26.5; world 5's drills never passed and one form stayed unread
    assert "| 26.5 | 51%, 100.0 |" in rows["42"] and "**+28.0**" in rows["42"] and rows["42"].endswith("| met |")
    assert "never (0.78 at 6,000)" in rows["5"] and "occupation 0.09" in rows["5"]
    assert "| 57%, 49.1 |" in rows["5"] and rows["5"].endswith("| not met |")  # 49.1 < 50 although the lift is +18


def test_missing_metrics_name_the_file_and_missing_log_is_said(tmp_path: Path) -> None:
    run = tmp_path / "world_3"
    shutil.copytree(SAVED / "world_42", run)
    (run / "init_policy.log").unlink()
    done = _run(run)
    assert done.returncode == 0 and "log not kept | log not kept" in done.stdout
    assert "init_policy.log: missing" in done.stderr
    (run / "eval.json").unlink()
    failed = _run(run)
    assert failed.returncode != 0 and "eval.json: missing" in failed.stderr


def test_a_form_the_pattern_misses_is_an_error_not_a_dropped_cell(tmp_path: Path) -> None:
    run = tmp_path / "world_3"
    shutil.copytree(SAVED / "world_42", run)
    with (run / "init_policy.log").open("a") as log:
        log.write("INFO init_policy: Reading check, made to search, form 'Where is …?': EM 0.50\n")
    failed = _run(run)
    assert failed.returncode != 0 and "does not know" in failed.stderr


def test_rows_match_the_saved_runs_with_lesson_steps_and_either_tokenizer_loader() -> None:
    saved = ROOT / "toy" / "results" / "world_seeds" / "16c7f73"
    done = _run(saved / "world_1", saved / "world_42", saved / "world_42_autotokenizer")
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines()[2:]}
    # world 1 read every form of drills and lessons at step 3,500; world 42's city lessons never passed by 10,000
    assert "| 3,500 |" in rows["1"] and "**+37.5**" in rows["1"] and rows["1"].endswith("| met |")
    assert "never (0.81 at 10,000)" in rows["42"] and "city 0.84" in rows["42"] and "| 68%, 100.0 |" in rows["42"]
    # the same cold start evaluated when AutoTokenizer split 'Doc 1': 30.9 when searching, not met
    assert "| 68%, 30.9 |" in rows["42_autotokenizer"] and rows["42_autotokenizer"].endswith("| not met |")
