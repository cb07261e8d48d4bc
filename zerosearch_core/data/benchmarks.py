"""Read the real benchmark files and normalise them to one schema.

Every source (NQ-open jsonl, SearchAgentReview jsonl, the Bamboogle CSV, or a FlashRAG split on the Hugging Face
hub) becomes a DataFrame with the columns of :data:`NORMALIZED_COLUMNS`::

    id, question, golden_answers (list[str]), dataset, split, supporting_doc_ids (list[str]),
    decomposition (list[str]: one search query per hop, where the source gives them; else empty),
    source_file, source_row (1-based line in the source file)

Reading never drops or repairs a row: malformed content is kept as it is so that the Great Expectations suites in
:mod:`zerosearch_core.data.validation` can name it. Only unreadable files (bad JSON) raise here, naming file and line.

The ``prepare_data`` stage (``python -m zerosearch_core.cli prepare_data --params params.yaml``) drives this module.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from zerosearch_core.config import BenchmarkFileConfig

logger = logging.getLogger(__name__)

NORMALIZED_COLUMNS: tuple[str, ...] = (
    "id",
    "question",
    "golden_answers",
    "dataset",
    "split",
    "supporting_doc_ids",
    "decomposition",
    "source_file",
    "source_row",
)

REQUIRED_RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "nq_open_jsonl": ("question", "answer"),
    "searchagentreview_jsonl": ("id", "question", "answer", "dataset"),
    "bamboogle_csv": ("question", "answer"),
    "flashrag_hub": ("id", "question", "golden_answers"),
    "evouna_json": ("question", "answer"),
}
"""Columns each source format must have; the raw GE suite checks them before normalising."""

DATASET_ALIASES: dict[str, str] = {"2wiki": "2wikimultihopqa", "nq_open": "nq", "natural_questions": "nq"}
"""Source spellings of benchmark names mapped to the canonical names of ``config.DATASETS``."""


class SourceFileError(ValueError):
    """A benchmark file cannot be read at all (missing, or a line that is not JSON)."""


def read_jsonl(path: Path) -> pd.DataFrame:
    """Read a JSON-lines file, keeping the 1-based line number of every record.

    Args:
        path: The file.

    Returns:
        One row per non-blank line, with a ``source_row`` column.

    Raises:
        SourceFileError: The file is missing or a line is not a JSON object.
    """
    if not path.is_file():
        raise SourceFileError(f"Benchmark file {path} does not exist; check data.source_dir and the file's path.")
    records: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SourceFileError(
                    f"{path}:{line_number} is not UTF-8 (byte {err.start}); re-encode the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SourceFileError(f"{path}:{line_number} is not valid JSON ({err.msg}); fix or remove it.") from err
            if not isinstance(record, dict):
                raise SourceFileError(f"{path}:{line_number} is a JSON {type(record).__name__}, not an object.")
            record["source_row"] = line_number
            records.append(record)
    return pd.DataFrame.from_records(records)


def read_bamboogle_csv(path: Path) -> pd.DataFrame:
    """Read the header-less Bamboogle CSV (column 0 question, column 4 answer).

    Raises:
        SourceFileError: The file is missing.
    """
    if not path.is_file():
        raise SourceFileError(f"Benchmark file {path} does not exist; check data.source_dir and the file's path.")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, cells in enumerate(csv.reader(handle), start=1):
            row: dict[str, Any] = {"source_row": line_number}
            if len(cells) > 0:
                row["question"] = cells[0]
            if len(cells) > 4:
                row["answer"] = cells[4]
            rows.append(row)
    return pd.DataFrame.from_records(rows)


ALIAS_SPLIT = re.compile(r"(?<![\s/])/(?![\s/])")
"""Where a "/"-joined alias list is split: at a "/" with no white space and no other "/" beside it."""
ALIAS_KEPT_SLASHES = re.compile(r"UN/LOCODE|\b9/11\b")
"""Slashes inside a single alias that the split rule would otherwise break: the Wikipedia redirect prefix
``UN/LOCODE:`` and the date ``9/11`` (as in "Chain of Command: The Road from 9/11 to Abu Ghraib")."""
_KEPT = "\u0000"


def split_aliases(joined: str) -> tuple[list[str], list[str]]:
    """The aliases of an EVOUNA ``golden_answer`` (TriviaQA aliases joined with "/"), and the rules that kept a "/"
    inside an alias.

    The rule: split at every "/" except (1) one with white space beside it ("Bruce Wayne / Batman"), (2) the first of
    two ("+-*//Arithmetic" keeps "+-*/"), (3) ``UN/LOCODE`` and ``9/11``. Without them a naive split invents short
    aliases ("UN", "9", "11 to Abu Ghraib") that strict and cover-EM would credit wrongly.

    >>> split_aliases("Seymour Hersh/Chain of Command: The Road from 9/11 to Abu Ghraib/Sy Hersh")
    (['Seymour Hersh', 'Chain of Command: The Road from 9/11 to Abu Ghraib', 'Sy Hersh'], ['9/11'])
    >>> split_aliases("Bruce Wayne / Batman/UN/LOCODE:GBMNC/+-*//Arithmetic")
    (['Bruce Wayne / Batman', 'UN/LOCODE:GBMNC', '+-*/', 'Arithmetic'], ['space', 'UN/LOCODE', 'double'])
    """
    rules = []
    if re.search(r"\s/|/\s", joined):
        rules.append("space")
    protected = ALIAS_KEPT_SLASHES.sub(lambda m: m.group(0).replace("/", _KEPT), joined)
    rules += [m.group(0) for m in ALIAS_KEPT_SLASHES.finditer(joined)]
    if "//" in joined:
        rules.append("double")
        protected = protected.replace("//", _KEPT + "/")
    aliases = [part.replace(_KEPT, "/").strip() for part in ALIAS_SPLIT.split(protected)]
    return [a for a in aliases if a], rules


def read_evouna_json(path: Path) -> pd.DataFrame:
    """Read the EVOUNA TriviaQA file (one JSON list; ``golden_answer`` holds the aliases joined with "/").

    The aliases go to ``answer`` as a list (:func:`split_aliases`); ``frame.attrs["notes"]`` counts the rows whose
    split kept a "/" inside an alias, by rule, for the data report. The five QA systems' answers and their human
    labels are left out here (``perf/answer_agreement.py`` reads them).

    Raises:
        SourceFileError: The file is missing, not UTF-8 JSON, or not a list of objects with a string golden_answer.
    """
    if not path.is_file():
        raise SourceFileError(f"Benchmark file {path} does not exist; check data.source_dir and the file's path.")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceFileError(f"{path} is not UTF-8 JSON ({err}); it should be the EVOUNA TQ.json list.") from err
    if not isinstance(records, list):
        raise SourceFileError(f"{path} holds a JSON {type(records).__name__}, not the list of questions expected.")
    rows: list[dict[str, Any]] = []
    kept: dict[str, int] = {}
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("golden_answer"), str):
            raise SourceFileError(f"{path}: item {index} is not an object with a string golden_answer.")
        aliases, rules = split_aliases(record["golden_answer"])
        for rule in set(rules):
            kept[rule] = kept.get(rule, 0) + 1
        rows.append({"question": record.get("question"), "answer": aliases, "source_row": index})
    frame = pd.DataFrame.from_records(rows)
    frame.attrs["notes"] = [
        'Aliases are the "/"-joined golden_answer split at every "/" except one with white space beside it, the '
        'first of two, and those of UN/LOCODE and 9/11. Rows where that kept a "/" inside an alias: '
        + (", ".join(f"{rule}: {count}" for rule, count in sorted(kept.items())) or "none")
        + f" (of {len(rows)}).",
    ]
    return frame


def read_hub_split(spec: BenchmarkFileConfig) -> pd.DataFrame:
    """Load a FlashRAG-format split from the Hugging Face hub (needs the internet; never used in tests here).

    FlashRAG (``RUC-NLPIR/FlashRAG_datasets``) is the collection Search-R1 and ZeroSearch evaluate on; each config
    (nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique, bamboogle) has ``id``, ``question`` and
    ``golden_answers``. Example entry in a parameter file::

        {name: triviaqa_test, dataset: triviaqa, split: test, format: flashrag_hub, path: null,
         expected_rows: null, hub_repo: RUC-NLPIR/FlashRAG_datasets, hub_config: triviaqa, hub_split: test}
    """
    import datasets  # deferred: importing datasets costs seconds and only this path needs it

    loaded = datasets.load_dataset(spec.hub_repo, spec.hub_config, split=spec.hub_split)
    frame = loaded.to_pandas()
    frame["source_row"] = range(1, len(frame) + 1)
    return frame


def read_raw(spec: BenchmarkFileConfig, source_dir: Path) -> pd.DataFrame:
    """Read one source as it is, with a ``source_row`` column."""
    readers: dict[str, Callable[[], pd.DataFrame]] = {
        "nq_open_jsonl": lambda: read_jsonl(source_dir / str(spec.path)),
        "searchagentreview_jsonl": lambda: read_jsonl(source_dir / str(spec.path)),
        "bamboogle_csv": lambda: read_bamboogle_csv(source_dir / str(spec.path)),
        "flashrag_hub": lambda: read_hub_split(spec),
        "evouna_json": lambda: read_evouna_json(source_dir / str(spec.path)),
    }
    return readers[spec.format]()


def source_label(spec: BenchmarkFileConfig) -> str:
    """How reports name a source: its relative path, or ``hub:repo/config/split``."""
    if spec.format == "flashrag_hub":
        return f"hub:{spec.hub_repo}/{spec.hub_config}/{spec.hub_split}"
    return str(spec.path)


def normalize(raw: pd.DataFrame, spec: BenchmarkFileConfig) -> pd.DataFrame:
    """Map a raw source frame (whose required columns exist) onto the normalised schema.

    Args:
        raw: Output of :func:`read_raw`, already checked for :data:`REQUIRED_RAW_COLUMNS`.
        spec: The file's configuration.

    Returns:
        A frame with exactly :data:`NORMALIZED_COLUMNS`, one row per raw row, in order.
    """
    rows = raw.to_dict(orient="records")
    answers_key = "golden_answers" if spec.format == "flashrag_hub" else "answer"
    normalized = pd.DataFrame(
        {
            "id": [_row_id(row, spec) for row in rows],
            "question": [_as_text(row.get("question")) for row in rows],
            "golden_answers": [_as_answer_list(row.get(answers_key)) for row in rows],
            "dataset": [_row_dataset(row, spec) for row in rows],
            "split": spec.split,
            "supporting_doc_ids": [_as_answer_list(row.get("positive_doc_ids")) for row in rows],
            "decomposition": [_as_answer_list(row.get("decomposition")) for row in rows],
            "source_file": source_label(spec),
            "source_row": [int(row["source_row"]) for row in rows],
        },
        columns=list(NORMALIZED_COLUMNS),
    )
    return normalized


def _row_id(row: dict[str, Any], spec: BenchmarkFileConfig) -> str:
    if "id" in row and not _is_missing(row["id"]):
        return str(row["id"])
    # Sources without ids (NQ-open, the Bamboogle CSV) get a stable id from their line number.
    return f"{spec.name}-{int(row['source_row'])}"


def _row_dataset(row: dict[str, Any], spec: BenchmarkFileConfig) -> str:
    if spec.dataset is not None and "dataset" not in row:
        return spec.dataset
    raw_name = _as_text(row.get("dataset"))
    return DATASET_ALIASES.get(raw_name, raw_name)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_text(value: Any) -> str:
    if _is_missing(value):
        return ""
    return str(value).strip()


def _as_answer_list(value: Any) -> list[str]:
    """Answers as a list of strings; kept as given (blank entries included) so validation can flag them."""
    if _is_missing(value):
        return []
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [_as_text(item) for item in items]
    return [_as_text(value)]


def collapse_exact_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the first of rows identical in id, question and golden answers; report every row dropped.

    Rows that share an id but differ in content are left in place, for the uniqueness check to fail on.

    Returns:
        The collapsed frame and one line per dropped row (``line N id=... repeats line M``).
    """
    keys = list(zip(frame["id"], frame["question"], frame["golden_answers"].map(tuple), strict=True))
    first_line: dict[tuple[object, ...], int] = {}
    keep: list[bool] = []
    dropped: list[str] = []
    for key, line in zip(keys, frame["source_row"], strict=True):
        if key in first_line:
            keep.append(False)
            dropped.append(f"line {line} id={key[0]!r} repeats line {first_line[key]}")
        else:
            first_line[key] = int(line)
            keep.append(True)
    return frame.loc[keep].reset_index(drop=True), dropped


def load_benchmark(benchmarks_dir: Path, name: str) -> pd.DataFrame:
    """Load a normalised benchmark artifact written by ``prepare_data``.

    Raises:
        FileNotFoundError: The artifact is missing; the message says which stage makes it.
    """
    path = benchmarks_dir / f"{name}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro prepare_data` first.")
    return pd.read_parquet(path)


def sample_questions(frame: pd.DataFrame, max_questions: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``max_questions`` rows (all rows when None), in source order."""
    if max_questions is None or max_questions >= len(frame):
        return frame.reset_index(drop=True)
    return frame.sample(n=max_questions, random_state=seed % 2**32).sort_index().reset_index(drop=True)
