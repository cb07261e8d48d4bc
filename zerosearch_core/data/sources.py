"""Benchmark files and the corpus by name: ``zerosearch fetch_data`` gets every file ``data/sources.yaml`` pins, from
a local folder when one has it, else from GitHub (raw files at a full commit) or the Hugging Face hub
(``huggingface_hub``'s cache: resumable, shared with every other tool), checks each against its size and SHA-256, and
lays them out as ``data.source_dir`` expects. A file that differs from its checksum is refused and removed, never
used; a download cut short resumes where it stopped.

    zerosearch fetch_data --dest data/external/benchmarks                        # everything (the corpus: ~5 GB)
    zerosearch fetch_data --dest data/external/benchmarks --only benchmarks      # the ten benchmark files, 6 MB
    zerosearch fetch_data --dest data/external/benchmarks --from-local ../shared/data/benchmarks   # a copy you have
    HF_HUB_OFFLINE=1 zerosearch fetch_data ...                                   # the hub's cache only, no network
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import yaml
from tqdm import tqdm

from zerosearch_core.artifacts import file_sha256
from zerosearch_core.config import ConfigError

logger = logging.getLogger(__name__)

CATALOG = Path(__file__).resolve().parents[2] / "data/sources.yaml"
"""The pinned sources (``data/sources.yaml``)."""
GITHUB_RAW = "https://raw.githubusercontent.com"
"""Where GitHub serves a repository's file at a commit: ``{base}/{repo}/{revision}/{file}``."""
REPORT_FILE = "fetch_report.json"
CHUNK = 1 << 20
"""Bytes a download writes at a time."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class SourceError(RuntimeError):
    """A file could not be fetched or is not the pinned one; the message names the file and what to do."""


@dataclass(frozen=True)
class Source:
    """One file of ``data/sources.yaml``."""

    path: str
    """Where it goes under the destination (the layout ``data.source_dir`` expects)."""
    kind: Literal["benchmark", "corpus"]
    source: Literal["github", "hub"]
    repo: str
    revision: str
    file: str
    bytes: int | None
    sha256: str | None
    licence: str


def load_catalog(path: Path | None = None) -> list[Source]:
    """The entries of a sources file, checked: a GitHub entry has a full 40-hex commit; a checksum is 64 hex.

    Raises:
        ConfigError: A malformed entry (named).
    """
    path = CATALOG if path is None else path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    sources = []
    for number, entry in enumerate(raw.get("files", []) if isinstance(raw, dict) else [], start=1):
        try:
            source = Source(**entry)
        except TypeError as err:
            raise ConfigError(f"{path}: entry {number} is not a source ({err}).") from err
        if source.source == "github" and not _COMMIT.fullmatch(source.revision):
            raise ConfigError(f"{path}: {source.path} pins no full commit ({source.revision!r}); use 40 hex digits.")
        if source.sha256 is not None and not _SHA256.fullmatch(source.sha256):
            raise ConfigError(f"{path}: {source.path} has a malformed sha256; use 64 lowercase hex digits.")
        sources.append(source)
    if not sources:
        raise ConfigError(f"{path} lists no files.")
    return sources


def verify(source: Source, path: Path) -> str:
    """The file's SHA-256, once its size and checksum are the pinned ones.

    Raises:
        SourceError: It differs (the expected and actual values are named).
    """
    size = path.stat().st_size
    if source.bytes is not None and size != source.bytes:
        raise SourceError(
            f"{source.path}: {size} bytes, not the pinned {source.bytes} ({source.repo}@{source.revision})."
        )
    actual = file_sha256(path)
    if source.sha256 is not None and actual != source.sha256:
        raise SourceError(
            f"{source.path}: sha256 {actual}, not the pinned {source.sha256} ({source.repo}@{source.revision}); "
            "the file was refused and removed."
        )
    return actual


def download_github(source: Source, target: Path, base_url: str, timeout_s: float = 60.0) -> Path:
    """Download ``source`` from ``{base_url}/{repo}/{revision}/{file}`` into ``target``'s ``.partial`` file,
    resuming one left by an earlier attempt (an HTTP Range request) and showing progress; returns that file, for
    the caller to check before it takes ``target``'s name.

    Raises:
        SourceError: The server refused or the connection failed (the URL is named).
    """
    url = f"{base_url.rstrip('/')}/{source.repo}/{source.revision}/{source.file}"
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
            if response.status_code == 416 and source.bytes == have:  # already whole
                return partial
            response.raise_for_status()
            resumed = response.status_code == 206
            mode = "ab" if resumed else "wb"
            total = source.bytes or int(response.headers.get("content-length", 0)) + (have if resumed else 0)
            with partial.open(mode) as out, tqdm(total=total or None, initial=have if resumed else 0, unit="B",
                                                 unit_scale=True, desc=source.path, disable=None) as bar:  # fmt: skip
                for block in response.iter_content(chunk_size=CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except requests.RequestException as err:
        raise SourceError(f"{source.path}: could not download {url} ({err}); run the command again to resume.") from err
    return partial


def download_hub(source: Source, cache_dir: str | None, offline: bool) -> tuple[Path, str]:
    """The file from the Hugging Face hub through ``huggingface_hub``'s cache (resumable, checked by the hub's own
    ETag), and the commit it resolved to; ``offline`` reads the cache only.

    Raises:
        SourceError: Not in the cache offline, or the hub refused (the repository and file are named).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = Path(
            hf_hub_download(
                source.repo,
                source.file,
                repo_type="dataset",
                revision=source.revision,
                cache_dir=cache_dir,
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError as err:
        raise SourceError(
            f"{source.path}: {source.repo}/{source.file}@{source.revision} is not in the hub cache and downloads are "
            "off (HF_HUB_OFFLINE or --offline); fetch it once online, or pass --from-local with a copy."
        ) from err
    except HfHubHTTPError as err:
        raise SourceError(f"{source.path}: the hub refused {source.repo}/{source.file} ({err}).") from err
    # the cache keeps the file at snapshots/<commit>/<file, with its folders>
    commit = next((p.name for p in path.parents if p.parent.name == "snapshots"), source.revision)
    return path, commit


def fetch(
    sources: Sequence[Source],
    dest: Path,
    from_local: Path | None = None,
    github_url: str = GITHUB_RAW,
    hf_cache: str | None = None,
    offline: bool = False,
) -> dict[str, Any]:
    """Fetch every source into ``dest`` (its ``path``), checked; returns (and writes to ``dest/fetch_report.json``)
    where each came from, its size, checksum and commit. A file already in ``dest`` with the pinned checksum is
    kept as it is; nothing half-written is ever left under its final name.

    Raises:
        SourceError: A file could not be fetched or differs from its pin; the files fetched before it stay.
    """
    dest.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"fetched": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "files": []}
    for source in sources:
        target = dest / source.path
        target.parent.mkdir(parents=True, exist_ok=True)
        commit = source.revision
        sha256 = _pinned_match(source, target) if target.is_file() else None
        if sha256 is not None:
            origin = "already there"
        elif from_local is not None and (from_local / source.path).is_file():
            staged = target.with_name(target.name + ".partial")
            shutil.copyfile(from_local / source.path, staged)
            sha256 = _checked_move(source, staged, target)
            origin = f"copied from {from_local}"
        elif source.source == "github":
            if offline:
                raise SourceError(
                    f"{source.path}: not in {dest}{f' or {from_local}' if from_local else ''} and downloads are off "
                    "(HF_HUB_OFFLINE or --offline); pass --from-local with a copy, or fetch online."
                )
            sha256 = _checked_move(source, download_github(source, target, github_url), target)
            origin = f"{github_url}/{source.repo}@{source.revision}"
        else:
            cached, commit = download_hub(source, hf_cache, offline)
            staged = target.with_name(target.name + ".partial")
            shutil.copyfile(cached, staged)
            sha256 = _checked_move(source, staged, target)
            origin = f"hf://datasets/{source.repo}@{commit}"
        entry = {**asdict(source), "origin": origin, "commit": commit, "actual_bytes": target.stat().st_size,
                 "actual_sha256": sha256}  # fmt: skip
        if source.sha256 is None:
            logger.warning(
                "%s has no pinned checksum: recorded sha256 %s (commit %s) in %s; pin it in data/sources.yaml",
                source.path, entry["actual_sha256"], commit, dest / REPORT_FILE,
            )  # fmt: skip
        report["files"].append(entry)
        logger.info("%s: %s (%d bytes, sha256 %s)", source.path, origin, entry["actual_bytes"], entry["actual_sha256"])
    (dest / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _pinned_match(source: Source, path: Path) -> str | None:
    """The file's SHA-256 when it is the pinned one (a file without a pinned checksum never counts as there)."""
    if source.sha256 is None:
        return None
    try:
        return verify(source, path)
    except SourceError:
        return None


def _checked_move(source: Source, staged: Path, target: Path) -> str:
    """Move ``staged`` to ``target`` once it is verified, and return its SHA-256; remove it otherwise."""
    try:
        sha256 = verify(source, staged)
    except SourceError:
        staged.unlink(missing_ok=True)
        raise
    staged.replace(target)
    return sha256


def select(sources: Sequence[Source], only: str) -> list[Source]:
    """``all``, ``benchmarks`` (everything but the corpus) or ``corpus``.

    >>> [s.path for s in select(load_catalog(), "corpus")]
    ['wiki-18.jsonl.gz']
    """
    if only == "all":
        return list(sources)
    if only not in ("benchmarks", "corpus"):
        raise ConfigError(f"--only {only!r}: use all, benchmarks or corpus.")
    return [s for s in sources if s.kind == ("corpus" if only == "corpus" else "benchmark")]


def offline_default() -> bool:
    """Whether the environment forbids downloads (``HF_HUB_OFFLINE`` as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
