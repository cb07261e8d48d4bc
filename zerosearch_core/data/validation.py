"""Great Expectations suites for datasets at stage boundaries, with a report a person can read.

``validate_benchmarks`` checks every benchmark file twice: the raw frame must have the columns its format needs,
and the normalised frame must have unique ids, non-empty questions, at least one non-blank golden answer per row,
only allowed datasets, and the expected row count. Failing rows are named by their source line and id. The report
folder holds GE Data Docs (``data_docs/index.html``) and a plain ``summary.md``/``summary.json``; it is written
whether or not validation passes, and the caller writes no artifact unless it passes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import BenchmarkFileConfig, DataConfig
from zerosearch_core.data.benchmarks import REQUIRED_RAW_COLUMNS, collapse_exact_duplicates, normalize, source_label

logger = logging.getLogger(__name__)

MAX_ROWS_LISTED = 20
MAX_QUESTION_CHARS = 4096
"""Longest question accepted; the longest in the shared benchmarks has a few hundred characters, and a policy
prompt must leave room for turns and documents."""
_ROW_NAMES = ["source_row", "id"]


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation on one file, with the rows it names."""

    file: str
    source: str
    expectation: str
    column: str
    rows: tuple[str, ...]
    unexpected_count: int
    detail: str

    def describe(self) -> str:
        """One readable line, e.g. ``nq_dev: expect_column_values_to_be_unique(id) failed on 2 rows: ...``."""
        shown = ", ".join(self.rows[:MAX_ROWS_LISTED])
        more = f" (+{self.unexpected_count - MAX_ROWS_LISTED} more)" if self.unexpected_count > MAX_ROWS_LISTED else ""
        rows = f" on {self.unexpected_count} row(s): {shown}{more}" if self.rows else ""
        detail = f" [{self.detail}]" if self.detail else ""
        return f"{self.file} ({self.source}): {self.expectation}({self.column}) failed{rows}{detail}"


@dataclass
class ValidationOutcome:
    """Results of validating every file."""

    normalized: dict[str, pd.DataFrame] = field(default_factory=dict)
    collapsed: dict[str, list[str]] = field(default_factory=dict)
    failures: list[ExpectationFailure] = field(default_factory=list)
    evaluated: int = 0

    @property
    def success(self) -> bool:
        """True when every expectation on every file passed."""
        return not self.failures

    def summary(self) -> str:
        """What failed, one line per failed expectation."""
        if self.success:
            return f"All {self.evaluated} expectations passed."
        lines = [f"{len(self.failures)} of {self.evaluated} expectations failed:"]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        return "\n".join(lines)


def validation_frame(normalized: pd.DataFrame) -> pd.DataFrame:
    """The columns the suites check, derived from a normalised benchmark frame."""
    return pd.DataFrame(
        {
            "source_row": normalized["source_row"],
            "id": normalized["id"],
            "question": normalized["question"].where(normalized["question"].str.len() > 0, None),
            "n_answers": normalized["golden_answers"].map(lambda answers: sum(1 for a in answers if a.strip())),
            "dataset": normalized["dataset"],
        }
    )


def _normalized_suite(gx: Any, name: str, spec: BenchmarkFileConfig, data_cfg: DataConfig) -> Any:
    gxe = gx.expectations
    allowed = [spec.dataset] if spec.dataset is not None else list(data_cfg.allowed_datasets)
    expectations = [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="question"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="question", min_value=data_cfg.min_question_chars, max_value=MAX_QUESTION_CHARS
        ),
        gxe.ExpectColumnValuesToBeBetween(column="n_answers", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="dataset", value_set=allowed),
    ]
    return gx.ExpectationSuite(name=f"{name}.normalized", expectations=expectations)


def _raw_suite(gx: Any, name: str, spec: BenchmarkFileConfig) -> Any:
    expectations = [gx.expectations.ExpectColumnToExist(column=c) for c in REQUIRED_RAW_COLUMNS[spec.format]]
    if spec.expected_rows is not None:
        expectations.append(gx.expectations.ExpectTableRowCountToEqual(value=spec.expected_rows))
    return gx.ExpectationSuite(name=f"{name}.raw", expectations=expectations)


class GXValidator:
    """An ephemeral GE context with a Data Docs site in a folder of our choosing."""

    def __init__(self, docs_dir: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx  # deferred: importing GE takes seconds; only validating stages need it
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.docs_site = "zerosearch_report"
        self.context.add_data_docs_site(
            self.docs_site,
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            },
        )
        self.datasource = self.context.data_sources.add_pandas("frames")

    def run(self, suite: Any, frame: pd.DataFrame, with_row_names: bool) -> Any:
        """Validate ``frame`` against ``suite``; rows are named by source line and id when ``with_row_names``."""
        asset = self.datasource.add_dataframe_asset(name=suite.name)
        batch_definition = asset.add_batch_definition_whole_dataframe(f"{suite.name}.batch")
        definition = self.context.validation_definitions.add(
            self.gx.ValidationDefinition(
                name=f"{suite.name}.check", data=batch_definition, suite=self.context.suites.add(suite)
            )
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if with_row_names:
            result_format["unexpected_index_column_names"] = _ROW_NAMES
        return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)

    def build_docs(self) -> None:
        """Render the Data Docs site for every validation run so far."""
        self.context.build_data_docs(site_names=[self.docs_site])


def expectation_failures(result: Any, name: str, source: str) -> list[ExpectationFailure]:
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        details = item.result or {}
        index_rows = details.get("unexpected_index_list") or []
        rows = tuple(f"line {r.get('source_row')} id={r.get('id')!r}" for r in index_rows if isinstance(r, dict))
        detail = ""
        if "observed_value" in details:
            detail = f"observed {details['observed_value']}"
            if config.kwargs.get("value") is not None:
                detail += f", expected {config.kwargs['value']}"
        elif not details:
            detail = "column is missing" if config.type == "expect_column_to_exist" else _exception_text(item)
        failures.append(
            ExpectationFailure(
                file=name,
                source=source,
                expectation=config.type,
                column=str(config.kwargs.get("column", "")),
                rows=rows,
                unexpected_count=int(details.get("unexpected_count", len(rows))),
                detail=detail,
            )
        )
    return failures


def _exception_text(item: Any) -> str:
    info = item.exception_info or {}
    if "exception_message" not in info and info:
        info = next(iter(info.values()))
    return str(info.get("exception_message", "no result"))


def validate_benchmarks(
    frames: dict[str, tuple[BenchmarkFileConfig, pd.DataFrame]], data_cfg: DataConfig, report_dir: Path
) -> ValidationOutcome:
    """Validate raw and normalised forms of every benchmark file and write the report folder.

    Args:
        frames: Artifact name to (file config, raw frame from :func:`zerosearch_core.data.read_raw`).
        data_cfg: The ``data`` section (question length bound).
        report_dir: Receives ``data_docs/``, ``summary.md`` and ``summary.json`` (replaced as a whole).

    Returns:
        The outcome, with normalised frames for files whose raw columns were complete.
    """

    outcome = ValidationOutcome()

    def write(folder: Path) -> None:
        validator = GXValidator(folder / "data_docs")
        for name, (spec, raw) in frames.items():
            source = source_label(spec)
            raw_result = validator.run(_raw_suite(validator.gx, name, spec), raw, with_row_names=False)
            outcome.evaluated += len(raw_result.results)
            outcome.failures += expectation_failures(raw_result, name, source)
            if not all(c in raw.columns for c in REQUIRED_RAW_COLUMNS[spec.format]):
                continue  # the normalised suite cannot run without the required columns; the raw failure says so
            normalized = normalize(raw, spec)
            if spec.duplicates == "collapse_exact":
                normalized, outcome.collapsed[name] = collapse_exact_duplicates(normalized)
            result = validator.run(
                _normalized_suite(validator.gx, name, spec, data_cfg), validation_frame(normalized), True
            )
            outcome.evaluated += len(result.results)
            outcome.failures += expectation_failures(result, name, source)
            outcome.normalized[name] = normalized
        validator.build_docs()
        (folder / "summary.md").write_text(_summary_markdown(outcome, frames))
        summary = {
            "success": outcome.success,
            "evaluated": outcome.evaluated,
            "failures": [f.__dict__ for f in outcome.failures],
            "collapsed_exact_duplicates": outcome.collapsed,
            "notes": {name: raw.attrs.get("notes", []) for name, (_, raw) in frames.items()},
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=list) + "\n")

    write_dir_atomically(report_dir, write)
    logger.info("%s", outcome.summary())
    return outcome


def _summary_markdown(outcome: ValidationOutcome, frames: dict[str, tuple[BenchmarkFileConfig, pd.DataFrame]]) -> str:
    status = "PASSED" if outcome.success else "FAILED"
    lines = [f"# Benchmark validation: {status}", "", f"{outcome.evaluated} expectations evaluated.", ""]
    lines += [
        "| file | rows read | exact duplicates collapsed | rows kept | failed expectations |",
        "|---|---|---|---|---|",
    ]
    for name, (_, raw) in frames.items():
        failed = sum(1 for f in outcome.failures if f.file == name)
        kept = len(outcome.normalized[name]) if name in outcome.normalized else "-"
        lines.append(f"| {name} | {len(raw)} | {len(outcome.collapsed.get(name, []))} | {kept} | {failed} |")
    if outcome.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {failure.describe()}" for failure in outcome.failures]
    for name, (_, raw) in frames.items():
        notes = raw.attrs.get("notes", [])
        if notes:
            lines += ["", f"## {name}: how it was read", ""]
            lines += [f"- {note}" for note in notes]
    for name, dropped in outcome.collapsed.items():
        if dropped:
            lines += ["", f"## {name}: exact duplicate rows kept once ({len(dropped)})", ""]
            lines += [f"- {line}" for line in dropped]
    lines += ["", "Great Expectations Data Docs: `data_docs/index.html`."]
    return "\n".join(lines) + "\n"


def validate_simulator_sft(
    frame: pd.DataFrame, num_documents: int, doc_words: int, balance_tolerance: float, report_dir: Path
) -> ValidationOutcome:
    """Check the simulator SFT rows and write the report folder (Data Docs + summary).

    Expectations: the share of ``useful`` rows within ``0.5 ± balance_tolerance``; every target has text; no
    *noisy* target contains a golden answer; every target has at most ``num_documents`` documents of at most
    ``doc_words`` words each; ids unique.

    Args:
        frame: Rows with ``id``, ``doc_type``, ``completion``, ``noisy_leaks_answer``, ``documents``, ``max_doc_words``.
        num_documents: Documents per target.
        doc_words: Word bound per document.
        balance_tolerance: Allowed distance of the useful share from one half.
        report_dir: Receives ``data_docs/``, ``summary.md`` and ``summary.json``.
    """
    outcome = ValidationOutcome()
    checked = pd.DataFrame(
        {
            "source_row": range(1, len(frame) + 1),
            "id": frame["id"],
            "is_useful": (frame["doc_type"] == "useful").astype(float),
            "completion": frame["completion"].where(frame["completion"].str.strip().str.len() > 0, None),
            "noisy_leaks_answer": frame["noisy_leaks_answer"],
            "documents": frame["documents"],
            "max_doc_words": frame["max_doc_words"],
        }
    )

    def write(folder: Path) -> None:
        validator = GXValidator(folder / "data_docs")
        gx, gxe = validator.gx, validator.gx.expectations
        suite = gx.ExpectationSuite(
            name="simulator_sft",
            expectations=[
                gxe.ExpectColumnValuesToBeUnique(column="id"),
                gxe.ExpectColumnMeanToBeBetween(
                    column="is_useful", min_value=0.5 - balance_tolerance, max_value=0.5 + balance_tolerance
                ),
                gxe.ExpectColumnValuesToNotBeNull(column="completion"),
                gxe.ExpectColumnValuesToBeInSet(column="noisy_leaks_answer", value_set=[False]),
                gxe.ExpectColumnValuesToBeBetween(column="documents", min_value=1, max_value=num_documents),
                gxe.ExpectColumnValuesToBeBetween(column="max_doc_words", min_value=1, max_value=doc_words),
                gxe.ExpectTableRowCountToBeBetween(min_value=2),
            ],
        )
        result = validator.run(suite, checked, with_row_names=True)
        outcome.evaluated += len(result.results)
        outcome.failures += expectation_failures(result, "simulator_sft", "build_simulator_sft")
        validator.build_docs()
        status = "PASSED" if outcome.success else "FAILED"
        lines = [f"# Simulator SFT validation: {status}", "", f"{len(frame)} rows, {outcome.evaluated} expectations."]
        lines += [f"- {failure.describe()}" for failure in outcome.failures]
        (folder / "summary.md").write_text("\n".join(lines) + "\n")
        summary = {"success": outcome.success, "failures": [f.__dict__ for f in outcome.failures]}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=list) + "\n")

    write_dir_atomically(report_dir, write)
    return outcome
