"""Artifact I/O that never leaves a half-written output: folders are built aside and swapped in by rename."""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from zerosearch_core.config import ConfigError

logger = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: tempfile creates owner-only files and folders, artifacts get the usual modes


_SWAP_ATTEMPTS = 20

OWNER_MARKER = ".zerosearch-artifact"
"""The file every folder the pipeline writes carries: only a folder that has it (or is empty) is ever replaced."""


def check_replaceable(target: Path, what: str) -> None:
    """Refuse to replace or clear ``target`` unless the pipeline made it: it is missing, empty, or carries
    :data:`OWNER_MARKER`.

    Args:
        target: The folder about to be replaced or cleared.
        what: The setting or option that named it, for the message (``paths.checkpoints_dir``, ``--out``).

    Raises:
        ConfigError: ``target`` is a file, or a non-empty folder the pipeline did not write.
    """
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise ConfigError(
            f"{what}={target} is a file or a link, not a folder the pipeline wrote; point {what} at "
            "an empty or new folder."
        )
    entries = sorted(p.name for p in target.iterdir())
    if entries and OWNER_MARKER not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"{what}={target} already holds files the pipeline did not write ({shown}); it replaces only folders it "
            f"made (they carry {OWNER_MARKER}). Point {what} at an empty or new folder, or move those files away."
        )


def mark_owned(folder: Path) -> None:
    """Put :data:`OWNER_MARKER` into a folder the pipeline writes."""
    (folder / OWNER_MARKER).write_text("written by the zerosearch pipeline; it may replace this folder\n")


def _sibling(target: Path, role: str) -> Path:
    """A fresh hidden sibling of ``target`` that names this process (``.<name>.<role>-<pid>-<random>``), so runs that
    write the same artifact at once never share one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{role}-{os.getpid()}-", dir=target.parent))
    folder.chmod(0o777 & ~_UMASK)
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_swap(target: Path) -> None:
    """Undo what a killed writer left beside ``target``: put back the previous version if the kill came between
    moving it aside and moving the new one in, and remove the killed writer's staging folders.

    Leftovers of a process that still runs are left alone (it may be writing now).
    """
    leftovers = []
    for path in target.parent.glob(f".{target.name}.*-*-*"):
        role, _, rest = path.name[len(target.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if role in ("staging", "previous") and pid.isdigit() and not _pid_alive(int(pid)):
            leftovers.append((role, path))
    for role, path in leftovers:
        if role == "previous" and not target.exists():
            logger.warning("Restoring %s from %s, left by a writer that was killed while swapping it", target, path)
            path.rename(target)
        else:
            remove_path(path)


def write_dir_atomically(target_dir: Path, write: Callable[[Path], None], what: str | None = None) -> None:
    """Fill a fresh staging folder with ``write(staging)``, then swap it into place of ``target_dir``.

    If ``write`` raises, ``target_dir`` is left exactly as it was and the staging folder is removed. If the swap itself
    fails, the previous version is put back. The staging and backup folders are hidden siblings unique to this
    process, so concurrent writers of one artifact cannot trip over each other (the last to finish wins, whole), and
    what a killed writer left is cleaned up by the next one (:func:`recover_interrupted_swap`).

    Args:
        target_dir: The folder that will hold exactly what ``write`` wrote.
        write: Writes the artifact files into the folder it is given.
        what: The setting or option that named ``target_dir``, for the refusal's message.

    Raises:
        ConfigError: ``target_dir`` holds files the pipeline did not write (:func:`check_replaceable`); nothing is
            written then.
    """
    recover_interrupted_swap(target_dir)
    check_replaceable(target_dir, what or "the output folder")
    staging = _sibling(target_dir, "staging")
    try:
        write(staging)
        mark_owned(staging)
    except BaseException:
        remove_path(staging)
        raise
    backups: list[Path] = []
    try:
        for attempt in range(_SWAP_ATTEMPTS):
            if target_dir.exists():
                backup = _sibling(target_dir, "previous")
                backup.rmdir()  # only the unique name is wanted: the current version moves there
                with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                    target_dir.rename(backup)
                    backups.append(backup)
            try:
                staging.rename(target_dir)
                break
            except OSError as err:  # another writer swapped its version in between: move that aside too
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == _SWAP_ATTEMPTS - 1:
                    raise
    except BaseException:
        if backups and not target_dir.exists():
            backups.pop(0).rename(target_dir)
        remove_path(staging)
        raise
    finally:
        for backup in backups:
            remove_path(backup)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling unique to this process and a rename; on failure (a full disk)
    the old file stays and the temporary one is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        temporary.chmod(0o666 & ~_UMASK)
        temporary.replace(path)
    except BaseException:
        remove_path(temporary)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through ``.<name>.lock`` beside it) for the block: writers that read,
    change and rewrite one file take turns instead of losing each other's change."""
    import fcntl

    lock = path.parent / f".{path.name}.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_path(path: Path) -> None:
    """Remove a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(parts: object) -> str:
    """SHA-256 of a JSON-serialisable value, independent of key order (what a set of checkpoints was made from).

    >>> fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def checkpoint_identity(name_or_path: str) -> str:
    """The weights' SHA-256 for a local ``save_pretrained`` folder (every ``*.safetensors`` shard), else the name
    itself (a hub id)."""
    folder = Path(name_or_path)
    shards = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not shards:
        return name_or_path
    if len(shards) == 1:
        return file_sha256(shards[0])
    return fingerprint({shard.name: file_sha256(shard) for shard in shards})


RESUMED = "resumed"
AFRESH = "afresh"
AFRESH_CLEARED = "afresh (the checkpoints of another run were cleared)"


def run_start(kept: bool, existed: bool) -> str:
    """How a resumable stage started, for its log and its MLflow tag ``run_start``.

    >>> run_start(True, True), run_start(False, True), run_start(False, False)
    ('resumed', 'afresh (the checkpoints of another run were cleared)', 'afresh')
    """
    return RESUMED if kept else AFRESH_CLEARED if existed else AFRESH


def has_checkpoints(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint of either trainer (TRL's ``checkpoint-N``, PPO's ``step-N``)."""
    return folder.is_dir() and any(p.is_dir() and p.name.startswith(("checkpoint-", "step-")) for p in folder.iterdir())


def prepare_resumable_dir(
    folder: Path, identity: dict[str, object], marker_name: str = "run_fingerprint", what: str | None = None
) -> str:
    """Keep ``folder`` (checkpoints to resume) when it was made for the same run ``identity``; otherwise empty it,
    provided the pipeline made it (:func:`check_replaceable`).

    Args:
        folder: The checkpoints folder.
        identity: What a checkpoint's validity depends on, by part (config, weights, data, ``code``: see
            :func:`code_digest`); the log names the parts that changed.
        marker_name: The file in ``folder`` that holds the fingerprint of ``identity``.
        what: The setting that named ``folder``, for messages.

    Returns:
        How the run starts (:func:`run_start`): ``resumed`` when checkpoints of this run were kept, else afresh
        (saying so when another run's checkpoints were cleared).

    Raises:
        ConfigError: ``folder`` holds files the pipeline did not write.
    """
    existed = has_checkpoints(folder)
    marker = folder / marker_name
    parts_file = folder / f"{marker_name}.json"
    wanted = fingerprint(identity)
    kept = folder.exists() and marker.is_file() and marker.read_text().strip() == wanted
    if folder.exists() and not kept:
        if not marker.is_file():
            check_replaceable(folder, what or str(folder))
        changed = _changed_parts(parts_file, identity)
        if existed:
            logger.warning("Clearing the checkpoints in %s: they belong to another run (changed: %s)", folder, changed)
        remove_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark_owned(folder)
    marker.write_text(wanted + "\n")
    parts_file.write_text(json.dumps({key: fingerprint(value) for key, value in identity.items()}, sort_keys=True))
    return run_start(kept and existed, existed)


def _changed_parts(parts_file: Path, identity: dict[str, object]) -> str:
    """The parts of a run identity that differ from the ones recorded beside earlier checkpoints, as text."""
    try:
        recorded = json.loads(parts_file.read_text())
    except (OSError, ValueError):
        return "unknown: no readable record of the earlier run"
    if not isinstance(recorded, dict):
        return "unknown: no readable record of the earlier run"
    changed = [key for key, value in identity.items() if recorded.get(key) != fingerprint(value)]
    return ", ".join(changed) or "unknown"


def import_closure(root: Path, *modules: str) -> set[Path]:
    """Every ``zerosearch_core`` source file reachable from ``modules`` by imports (any depth, function-level imports
    and parent packages included), as paths under ``root``."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        base = root / Path(*module.split("."))
        path = next((c for c in (base / "__init__.py", base.with_suffix(".py")) if c.is_file()), None)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imports(path))
    return seen


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "zerosearch_core"}


UNTRACKED_MODULES = frozenset({"zerosearch_core/cli.py", "zerosearch_core/config.py"})
"""Imported by every stage but computing none of its outputs: editing a help text or a validation message must not
re-run (or restart) training. Every config *value* is still tracked, as a param and in the run identity."""


def code_digest(module: str, root: Path | None = None) -> str:
    """SHA-256 of the source of every ``zerosearch_core`` file ``module`` runs (its import closure, less
    :data:`UNTRACKED_MODULES`): the same files DVC tracks as the stage's code deps, so a code change that re-runs a
    stage also starts its training afresh instead of resuming (or republishing) checkpoints of the old code.

    Args:
        module: The dotted module a stage runs (``zerosearch_core.stages.train_policy``).
        root: The folder that holds ``zerosearch_core`` (default: this installation's).

    >>> code_digest("zerosearch_core.seeding") == code_digest("zerosearch_core.seeding")
    True
    """
    root = root or Path(__file__).resolve().parents[1]
    files = sorted(str(p.relative_to(root)) for p in import_closure(root, module))
    return fingerprint({name: file_sha256(root / name) for name in files if name not in UNTRACKED_MODULES})


def checkpoint_is_final(checkpoint: Path) -> bool:
    """Whether a transformers ``checkpoint-N`` folder was saved at the end of its run (global_step >= max_steps).

    Resuming such a checkpoint makes the Trainer take one more step, so callers load it instead of resuming.
    """
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state["global_step"]) >= int(state["max_steps"]) > 0


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest transformers ``checkpoint-N`` in ``output_dir`` that was saved whole, or None.

    A checkpoint folder without a whole ``trainer_state.json`` (the last file the Trainer writes; missing or
    truncated) was cut short by a kill or a full disk during its save: it is removed, with a warning, and the
    previous checkpoint is used instead.
    """
    if not output_dir.is_dir():
        return None
    numbered = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for checkpoint in sorted(numbered, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        state = checkpoint / "trainer_state.json"
        if _readable_state(state):
            return str(checkpoint)
        why = "has an unreadable trainer_state.json" if state.is_file() else "has no trainer_state.json"
        logger.warning("Removing %s: it %s (its save was interrupted); resuming from the one before", checkpoint, why)
        remove_path(checkpoint)
    return None


def _readable_state(state: Path) -> bool:
    """Whether a Trainer state file is whole: JSON with the step counters a resume reads (a kill or a full disk
    during its write leaves it truncated)."""
    try:
        document = json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "global_step" in document and "max_steps" in document
