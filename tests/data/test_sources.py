"""Data by name (`zerosearch fetch_data`): the pinned catalog, and every benchmark file and the corpus fetched through
the GitHub and the Hugging Face hub code paths from local stand-ins (a real HTTP server on 127.0.0.1 laid out like
raw.githubusercontent.com, and a prepared huggingface_hub cache read offline), checked, resumed and refused."""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import BENCHMARKS_DIR
from zerosearch_core.cli import main
from zerosearch_core.config import load_config
from zerosearch_core.data.benchmarks import normalize, read_raw
from zerosearch_core.data.sources import Source, SourceError, fetch, file_sha256, load_catalog, select

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared/data/benchmarks"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _sample_catalog(kind: str) -> list[Source]:
    """The real catalog's benchmark entries pointed at the committed samples (their own sizes and checksums), from
    ``kind`` (github or hub), plus a small gzipped corpus from the hub."""
    entries = []
    for source in select(load_catalog(), "benchmarks"):
        sample = BENCHMARKS_DIR / source.path
        entries.append(dataclasses.replace(source, source=kind, revision=COMMIT, bytes=sample.stat().st_size,
                                           sha256=file_sha256(sample)))  # fmt: skip
    return entries


def _corpus(tmp_path: Path) -> tuple[Source, Path]:
    corpus = tmp_path / "wiki-18.jsonl.gz"
    rows = b'{"id": "0", "contents": "\\"Evan Morris\\"\\nEvan Morris was a lobbyist."}\n'
    corpus.write_bytes(gzip.compress(rows, mtime=0))
    (source,) = select(load_catalog(), "corpus")
    return dataclasses.replace(source, revision=COMMIT, bytes=corpus.stat().st_size, sha256=None), corpus


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours ``Range: bytes=N-`` (as GitHub's raw server does) and logs requests."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802  # http.server's name
        self.seen.append(f"{self.path} {self.headers.get('Range', '')}".strip())
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def github(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A raw.githubusercontent.com stand-in on 127.0.0.1 serving ``{repo}/{revision}/{file}`` from a folder."""
    root = tmp_path / "github"
    for source in _sample_catalog("github"):
        target = root / source.repo / source.revision / source.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((BENCHMARKS_DIR / source.path).read_bytes())
    RangeHandler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeHandler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def _hub_cache(tmp_path: Path, sources: list[Source], files: dict[str, Path]) -> Path:
    """A huggingface_hub cache laid out as the library writes it (``datasets--owner--name/snapshots/<commit>/``)."""
    cache = tmp_path / "hf-cache"
    for source in sources:
        folder = cache / f"datasets--{source.repo.replace('/', '--')}" / "snapshots" / COMMIT
        target = folder / source.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[source.path].read_bytes())
    return cache


def _rows(folder: Path) -> dict[str, list[dict]]:
    cfg = load_config(ROOT / "params.yaml")
    return {spec.name: normalize(read_raw(spec, folder), spec).to_dict("records") for spec in cfg.data.files}


def test_the_catalog_pins_every_benchmark_file_the_profiles_read() -> None:
    catalog = {source.path: source for source in load_catalog()}
    for profile in (ROOT / "params.yaml", ROOT / "profiles/gpu_qwen2.5-7b.yaml"):
        for spec in load_config(profile).data.files:
            if spec.path is not None:  # hub splits (TriviaQA, NQ train) are read by datasets itself
                source = catalog[spec.path]
                assert source.source == "github" and len(source.revision) == 40 and source.sha256 and source.bytes
    assert catalog["wiki-18.jsonl.gz"].kind == "corpus"


@pytest.mark.skipif(not SHARED.is_dir(), reason="the full benchmark files are not beside this clone")
def test_the_pinned_checksums_are_those_of_the_full_files_this_project_used() -> None:
    for source in select(load_catalog(), "benchmarks"):
        assert file_sha256(SHARED / source.path) == source.sha256, source.path


def test_every_benchmark_through_the_github_path_gives_the_samples_rows(
    github: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = github
    dest = tmp_path / "fetched"
    report = fetch(_sample_catalog("github"), dest, github_url=url)
    assert len(report["files"]) == 10 and (dest / "fetch_report.json").is_file()
    for entry in report["files"]:
        assert entry["actual_sha256"] == file_sha256(BENCHMARKS_DIR / entry["path"]) == entry["sha256"]
    assert _rows(dest) == _rows(BENCHMARKS_DIR)  # prepare_data reads the same rows from either folder
    again = fetch(_sample_catalog("github"), dest, github_url="http://127.0.0.1:9")  # nothing listens there
    assert {entry["origin"] for entry in again["files"]} == {"already there"}  # checked, not downloaded again


def test_every_benchmark_and_the_corpus_through_the_hub_path_offline(tmp_path: Path) -> None:
    corpus, corpus_file = _corpus(tmp_path)
    sources = [*_sample_catalog("hub"), corpus]
    files = {s.path: BENCHMARKS_DIR / s.path for s in sources[:-1]} | {corpus.path: corpus_file}
    cache = _hub_cache(tmp_path, sources, files)
    dest = tmp_path / "fetched"
    report = fetch(sources, dest, hf_cache=str(cache), offline=True)
    assert [entry["commit"] for entry in report["files"]] == [COMMIT] * 11
    assert all(e["origin"] == f"hf://datasets/{e['repo']}@{COMMIT}" for e in report["files"])
    assert file_sha256(dest / "wiki-18.jsonl.gz") == file_sha256(corpus_file)
    assert report["files"][-1]["sha256"] is None and report["files"][-1]["actual_sha256"]  # recorded, not pinned
    assert _rows(dest) == _rows(BENCHMARKS_DIR)
    with pytest.raises(SourceError, match="not in the hub cache and downloads are off"):
        fetch([dataclasses.replace(corpus, revision="f" * 40)], tmp_path / "other", hf_cache=str(cache), offline=True)


@pytest.mark.reliability
def test_a_file_that_differs_from_its_pin_is_refused_and_removed(github: tuple[str, Path], tmp_path: Path) -> None:
    url, root = github
    source = _sample_catalog("github")[0]
    served = root / source.repo / source.revision / source.file
    served.write_bytes(served.read_bytes().replace(b"a", b"b", 1))  # one byte changed upstream
    dest = tmp_path / "fetched"
    with pytest.raises(SourceError, match=f"sha256 [0-9a-f]{{64}}, not the pinned {source.sha256}"):
        fetch([source], dest, github_url=url)
    assert list(dest.rglob("*.jsonl*")) == []  # neither the file nor a partial one is left to be used


@pytest.mark.reliability
def test_a_download_cut_short_resumes_where_it_stopped(github: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = github
    source = next(s for s in _sample_catalog("github") if s.path.endswith("EVOUNA_TQ.json"))
    dest = tmp_path / "fetched"
    partial = dest / (source.path + ".partial")
    partial.parent.mkdir(parents=True)
    whole = (BENCHMARKS_DIR / source.path).read_bytes()
    partial.write_bytes(whole[: len(whole) // 2])
    fetch([source], dest, github_url=url)
    assert (dest / source.path).read_bytes() == whole and not partial.exists()
    assert RangeHandler.seen[-1].endswith(f" bytes={len(whole) // 2}-")  # asked for the rest only


def test_the_command_fills_a_folder_that_prepare_data_reads(
    github: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = github
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the suite runs offline; this call downloads (from 127.0.0.1)
    catalog = tmp_path / "sources.yaml"
    catalog.write_text(yaml.safe_dump({"files": [dataclasses.asdict(s) for s in _sample_catalog("github")]}))
    dest = tmp_path / "benchmarks"
    args = ["fetch_data", "--dest", str(dest), "--only", "benchmarks", "--catalog", str(catalog)]
    assert main([*args, "--github-url", url]) == 0
    assert "10 file(s) in" in capsys.readouterr().out
    assert main([*args, "--offline"]) == 0  # all there and checked: no network needed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what a machine without network sets: nothing is downloaded
    assert main([*args[:2], str(tmp_path / "empty"), *args[3:], "--github-url", url]) == 1
