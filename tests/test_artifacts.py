"""Artifacts are swapped in whole: concurrent writers of one artifact (real processes), a failed rename, a writer
killed in the middle of the swap, and a failed text write each leave one complete version and no leftovers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zerosearch_core.artifacts import OWNER_MARKER, mark_owned, write_dir_atomically, write_text_atomically

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys, time
from pathlib import Path
from zerosearch_core.artifacts import write_dir_atomically

target, tag = Path(sys.argv[1]), sys.argv[2]

def write(folder):
    for i in range(20):
        (folder / f"part-{i}.txt").write_text(tag * 2000)
        time.sleep(0.001)

for _ in range(15):
    write_dir_atomically(target, write)
"""


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def _write_version(tag: str):  # type: ignore[no-untyped-def]
    def write(folder: Path) -> None:
        for i in range(3):
            (folder / f"part-{i}.txt").write_text(tag)

    return write


@pytest.mark.reliability
def test_concurrent_writers_of_one_artifact_leave_one_whole_version(tmp_path: Path) -> None:
    target = tmp_path / "model"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), tag], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for tag in "abc"
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    parts = [p for p in target.iterdir() if p.name != OWNER_MARKER]
    assert len(parts) == 20 and len({p.read_text() for p in parts}) == 1  # all parts from one writer
    assert (target / OWNER_MARKER).is_file()
    assert _leftovers(target) == []


@pytest.mark.reliability
def test_a_failed_swap_puts_the_previous_version_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model"
    write_dir_atomically(target, _write_version("old"))
    real_rename = Path.rename

    def failing_rename(self: Path, destination):  # type: ignore[no-untyped-def]
        if Path(destination) == target and ".staging-" in self.name:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="cross-device"):
        write_dir_atomically(target, _write_version("new"))
    monkeypatch.undo()
    assert {p.read_text() for p in target.iterdir() if p.name != OWNER_MARKER} == {"old"}
    assert _leftovers(target) == []


@pytest.mark.reliability
def test_the_next_writer_repairs_what_a_killed_one_left(tmp_path: Path) -> None:
    target = tmp_path / "model"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # killed between moving the old version aside and moving the new one in
    previous = tmp_path / f".model.previous-{dead.pid}-x1"
    staging = tmp_path / f".model.staging-{dead.pid}-x2"
    previous.mkdir()
    (previous / "part-0.txt").write_text("old")
    mark_owned(previous)  # the pipeline wrote the old version
    staging.mkdir()
    (staging / "part-0.txt").write_text("half")
    alive = tmp_path / f".model.staging-{os.getpid()}-x3"  # a live writer's folder is not touched
    alive.mkdir()

    def broken(folder: Path) -> None:
        raise RuntimeError("the new version fails")

    with pytest.raises(RuntimeError):
        write_dir_atomically(target, broken)
    assert (target / "part-0.txt").read_text() == "old"  # restored before the new write began
    assert _leftovers(target) == [alive.name]


def test_a_failed_text_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_text_atomically(path, "old")
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not the owner-only mode tempfile creates
    with pytest.raises(UnicodeEncodeError):
        write_text_atomically(path, "bad \ud800 surrogate")
    assert path.read_text() == "old"
    assert _leftovers(path) == []


# --- The pipeline replaces only what it made (issue: existing folders were deleted whole) -------------------------


@pytest.mark.reliability
def test_a_folder_of_someone_elses_files_is_never_replaced_and_nothing_is_written(tmp_path: Path) -> None:
    from zerosearch_core.config import ConfigError

    target = tmp_path / "results"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=r"--out=.*thesis\.tex.*empty or new folder"):
        write_dir_atomically(target, _write_version("new"), "--out")
    assert [p.name for p in target.iterdir()] == ["thesis.tex"] and _leftovers(target) == []
    # a file where a folder should go is refused the same way (a variant)
    single = tmp_path / "notes.txt"
    single.write_text("mine")
    with pytest.raises(ConfigError, match="not a folder the pipeline wrote"):
        write_dir_atomically(single, _write_version("new"))
    assert single.read_text() == "mine"


@pytest.mark.reliability
def test_an_empty_folder_or_one_the_pipeline_wrote_is_replaced(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dir_atomically(empty, _write_version("first"))
    write_dir_atomically(empty, _write_version("second"))  # it carries the marker now
    assert {p.read_text() for p in empty.iterdir() if p.name != OWNER_MARKER} == {"second"}


@pytest.mark.reliability
def test_checkpoints_dir_holding_a_users_files_is_refused_not_cleared(tmp_path: Path) -> None:
    from zerosearch_core.artifacts import prepare_resumable_dir
    from zerosearch_core.config import ConfigError

    folder = tmp_path / "ckpt"
    (folder / "checkpoint-5").mkdir(parents=True)  # looks like checkpoints, but no run of the pipeline made it
    (folder / "checkpoint-5" / "weights.bin").write_text("someone's")
    with pytest.raises(ConfigError, match=r"paths\.checkpoints_dir=.*did not write"):
        prepare_resumable_dir(folder, {"config": 1}, what="paths.checkpoints_dir")
    assert (folder / "checkpoint-5" / "weights.bin").read_text() == "someone's"
    # a folder the pipeline made for another run is cleared, and the log names what changed
    ours = tmp_path / "ours"
    assert prepare_resumable_dir(ours, {"config": 1, "code": "a"}) == "afresh"
    (ours / "checkpoint-2").mkdir()
    assert prepare_resumable_dir(ours, {"config": 1, "code": "a"}) == "resumed"
    assert prepare_resumable_dir(ours, {"config": 1, "code": "b"}).startswith("afresh (")
    assert not (ours / "checkpoint-2").exists()


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "is empty"),
        (".", "project folder or one of its parents"),
        ("/", "project folder or one of its parents"),
        ("data/..", "project folder or one of its parents"),
        ("../../etc", "outside the project"),
        ("/tmp/elsewhere", "outside the project"),
    ],
)
def test_output_paths_that_could_delete_the_project_are_refused_at_load(
    value: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from zerosearch_core.config import ConfigError, load_config

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"]["checkpoints_dir"] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=rf"paths\.checkpoints_dir.*{match}"):
        load_config(path)


@pytest.mark.reliability
def test_outside_project_allows_a_scratch_disk_but_never_a_parent_of_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from zerosearch_core.config import ConfigError, load_config

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"].update(outside_project=True, checkpoints_dir=str(tmp_path / "scratch"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(ROOT)
    assert load_config(path).paths.checkpoints_dir == str(tmp_path / "scratch")
    raw["paths"]["eval_dir"] = str(ROOT.parent)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"paths\.eval_dir.*one of its parents"):
        load_config(path)


# --- Run identity includes code (issue: a resume after a code change republished the old policy) ----------------


def test_the_code_digest_follows_every_file_a_stage_imports_and_nothing_else(tmp_path: Path) -> None:
    from zerosearch_core.artifacts import UNTRACKED_MODULES, import_closure

    closure = {str(p.relative_to(ROOT)) for p in import_closure(ROOT, "zerosearch_core.stages.train_policy")}
    assert "zerosearch_core/agent/rewards.py" in closure  # the reward RL optimises
    assert "zerosearch_core/simulator/client.py" in closure  # the simulator it trains against
    assert "zerosearch_core/evaluation/card.py" not in closure  # rendering only
    assert UNTRACKED_MODULES <= {"zerosearch_core/cli.py", "zerosearch_core/config.py"}
