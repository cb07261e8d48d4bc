"""Reading and normalising the real benchmark files."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerosearch_core.config import PipelineConfig
from zerosearch_core.data.benchmarks import (
    NORMALIZED_COLUMNS,
    SourceFileError,
    collapse_exact_duplicates,
    normalize,
    read_jsonl,
    read_raw,
)


def _spec(cfg: PipelineConfig, name: str):
    return next(f for f in cfg.data.files if f.name == name)


def test_nq_open_rows_keep_every_answer(cfg: PipelineConfig, benchmarks_dir: Path) -> None:
    spec = _spec(cfg, "nq_dev")
    frame = normalize(read_raw(spec, benchmarks_dir), spec)
    assert list(frame.columns) == list(NORMALIZED_COLUMNS)
    assert len(frame) == 42  # the committed sample: lines 1-40, 49 and 169 of NQ-open dev
    first = frame.iloc[0]
    assert first["question"] == "when was the last time anyone was on the moon"
    assert list(first["golden_answers"]) == ["14 December 1972 UTC", "December 1972"]
    assert first["id"] == "nq_dev-1" and first["source_row"] == 1 and first["dataset"] == "nq"


def test_bamboogle_csv_matches_the_jsonl_copy(cfg: PipelineConfig, benchmarks_dir: Path) -> None:
    csv_spec, jsonl_spec = _spec(cfg, "bamboogle_compgap"), _spec(cfg, "bamboogle_test")
    from_csv = normalize(read_raw(csv_spec, benchmarks_dir), csv_spec)
    from_jsonl = normalize(read_raw(jsonl_spec, benchmarks_dir), jsonl_spec)
    assert from_csv["question"].tolist() == from_jsonl["question"].tolist()
    assert from_csv["golden_answers"].map(list).tolist() == from_jsonl["golden_answers"].map(list).tolist()


def test_mixed_file_maps_dataset_aliases(cfg: PipelineConfig, benchmarks_dir: Path) -> None:
    spec = _spec(cfg, "multihop_train")
    frame = normalize(read_raw(spec, benchmarks_dir), spec)
    assert set(frame["dataset"]) == {"hotpotqa", "musique", "2wikimultihopqa"}
    assert frame["split"].unique().tolist() == ["train"]


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "ok", "answer": ["a"]}\n{"question": oops}\n')
    with pytest.raises(SourceFileError, match=r"broken.jsonl:2 is not valid JSON"):
        read_jsonl(path)


def test_missing_file_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match="check data.source_dir"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_malformed_rows_are_kept_for_validation_not_dropped(cfg: PipelineConfig, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "", "answer": []}\n{"question": "q two?", "answer": [""]}\n{"question": "q3?"}\n')
    spec = _spec(cfg, "nq_dev")
    frame = normalize(read_jsonl(path), spec)
    assert len(frame) == 3
    assert frame["golden_answers"].map(list).tolist() == [[], [""], []]


def test_collapse_keeps_first_exact_copy_and_reports_the_rest(cfg: PipelineConfig, benchmarks_dir: Path) -> None:
    spec = _spec(cfg, "musique_test")
    frame = normalize(read_raw(spec, benchmarks_dir), spec)
    collapsed, dropped = collapse_exact_duplicates(frame)
    assert (
        len(frame) == 41
        and len(collapsed) == 40
        and dropped == ["line 41 id='3hop1__140554_2053_52946' repeats line 27"]
    )
    assert collapsed["id"].is_unique
    assert dropped[0].startswith("line ") and "repeats line" in dropped[0]


def test_collapse_leaves_conflicting_duplicates_for_validation(cfg: PipelineConfig, tmp_path: Path) -> None:
    path = tmp_path / "conflict.jsonl"
    path.write_text(
        '{"id": "x", "question": "q?", "answer": "a", "dataset": "musique"}\n'
        '{"id": "x", "question": "other q?", "answer": "a", "dataset": "musique"}\n'
    )
    spec = _spec(cfg, "musique_test")
    collapsed, dropped = collapse_exact_duplicates(normalize(read_jsonl(path), spec))
    assert len(collapsed) == 2 and dropped == []


def test_a_line_that_is_not_utf8_is_named_with_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from zerosearch_core.data.benchmarks import SourceFileError, read_jsonl

    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"question": "fine?", "answer": ["a"]}\n{"question": "caf\xe9?", "answer": ["b"]}\n')
    with pytest.raises(SourceFileError, match=r"q.jsonl:2 is not UTF-8 \(byte \d+\)"):
        read_jsonl(path)
