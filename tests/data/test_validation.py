"""Great Expectations on real and corrupted benchmark files, through the prepare_data stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from zerosearch_core.artifacts import OWNER_MARKER
from zerosearch_core.config import PipelineConfig
from zerosearch_core.errors import DataValidationError
from zerosearch_core.stages import StageHooks, prepare_data

FILES = ("bamboogle_test", "popqa_test", "nq_dev")


def _small(cfg: PipelineConfig, source_dir: Path) -> PipelineConfig:
    files = tuple(f for f in cfg.data.files if f.name in (*FILES, cfg.train.questions, cfg.train.validation_questions))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source_dir=str(source_dir), files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=FILES),
    )


def _corrupt_copy(benchmarks_dir: Path, target: Path) -> Path:
    """A copy of the data with one empty answer, one duplicated id, one overlong question and one file missing its
    answer column."""
    shutil.copytree(benchmarks_dir, target)
    for path in target.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    bamboogle = target / "searchagentreview" / "bamboogle_test_125.jsonl"
    rows = [json.loads(line) for line in bamboogle.read_text().splitlines()]
    rows[3]["answer"] = ""
    rows[10]["id"] = rows[9]["id"]
    rows[20]["question"] = "why? " * 2000  # 10,000 characters: no question a policy prompt can hold
    bamboogle.write_text("".join(json.dumps(r) + "\n" for r in rows))
    popqa = target / "searchagentreview" / "popqa_test_1000.jsonl"
    rows = [json.loads(line) for line in popqa.read_text().splitlines()]
    popqa.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n" for r in rows))
    return target


@pytest.mark.slow
def test_real_files_pass_and_land_with_a_report(cfg: PipelineConfig, benchmarks_dir: Path) -> None:
    small = _small(cfg, benchmarks_dir)
    result = prepare_data.run(small, StageHooks())
    out = Path(small.paths.benchmarks_dir)
    assert sorted(p.name for p in out.iterdir()) == [
        OWNER_MARKER,  # the pipeline made this folder
        "bamboogle_test.parquet",
        "manifest.json",
        "multihop_train.parquet",
        "multihop_val.parquet",
        "nq_dev.parquet",
        "popqa_test.parquet",
    ]
    assert result.metrics["rows.nq_dev"] == 42  # the committed sample
    report = Path(small.paths.reports_dir) / "prepare_data"
    assert "PASSED" in (report / "summary.md").read_text()
    assert (report / "data_docs" / "index.html").is_file()


@pytest.mark.slow
def test_corruption_fails_naming_rows_and_leaves_artifacts_untouched(
    cfg: PipelineConfig, benchmarks_dir: Path, tmp_path: Path
) -> None:
    prepare_data.run(_small(cfg, benchmarks_dir), StageHooks())
    out = Path(cfg.paths.benchmarks_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    corrupted = _corrupt_copy(benchmarks_dir, tmp_path / "corrupted")
    with pytest.raises(DataValidationError) as failure:
        prepare_data.run(_small(cfg, corrupted), StageHooks())
    message = str(failure.value)
    assert "bamboogle_test" in message
    assert "expect_column_values_to_be_between(n_answers) failed on 1 row(s): line 4 id='bamboogle-test-3'" in message
    assert (
        "expect_column_values_to_be_unique(id) failed on 2 row(s): "
        "line 10 id='bamboogle-test-9', line 11 id='bamboogle-test-9'" in message
    )
    assert "popqa_test" in message and "expect_column_to_exist(answer) failed [column is missing]" in message
    assert "expect_column_value_lengths_to_be_between(question) failed on 1 row(s): line 21" in message

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    report = Path(cfg.paths.reports_dir) / "prepare_data"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["success"] is False and len(summary["failures"]) == 4
    docs = list((report / "data_docs" / "validations").rglob("*.html"))
    assert any("bamboogle_test" in str(p) for p in docs)


@pytest.mark.slow
def test_wrong_row_count_and_foreign_dataset_fail(cfg: PipelineConfig, benchmarks_dir: Path, tmp_path: Path) -> None:
    small = _small(cfg, benchmarks_dir)
    files = tuple(
        dataclasses.replace(f, expected_rows=39)
        if f.name == "bamboogle_test"
        else dataclasses.replace(f, dataset="hotpotqa")
        if f.name == "popqa_test"
        else f
        for f in small.data.files
    )
    with pytest.raises(DataValidationError) as failure:
        prepare_data.run(dataclasses.replace(small, data=dataclasses.replace(small.data, files=files)), StageHooks())
    message = str(failure.value)
    assert "expect_table_row_count_to_equal() failed [observed 40, expected 39]" in message
    assert "popqa_test" in message and "expect_column_values_to_be_in_set(dataset) failed on 40 row(s)" in message
