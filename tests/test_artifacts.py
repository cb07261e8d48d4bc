"""Artifacts are swapped in whole: concurrent writers of one artifact (real processes), a failed rename, a writer
killed in the middle of the swap, and a failed text write each leave one complete version and no leftovers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zerosearch_core.artifacts import write_dir_atomically, write_text_atomically

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


def test_concurrent_writers_of_one_artifact_leave_one_whole_version(tmp_path: Path) -> None:
    target = tmp_path / "model"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), tag], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for tag in "abc"
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    contents = {p.read_text() for p in target.iterdir()}
    assert len(list(target.iterdir())) == 20 and len(contents) == 1  # all parts from one writer
    assert _leftovers(target) == []


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
    assert {p.read_text() for p in target.iterdir()} == {"old"}
    assert _leftovers(target) == []


def test_the_next_writer_repairs_what_a_killed_one_left(tmp_path: Path) -> None:
    target = tmp_path / "model"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # killed between moving the old version aside and moving the new one in
    previous = tmp_path / f".model.previous-{dead.pid}-x1"
    staging = tmp_path / f".model.staging-{dead.pid}-x2"
    previous.mkdir()
    (previous / "part-0.txt").write_text("old")
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
