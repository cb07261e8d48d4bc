"""Corpus sources: the shipped Wikipedia extracts, wiki-18 jsonl and DPR tsv files, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from zerosearch_core.data.corpus import CorpusError, corpus_sha256, load_corpus


def test_ovos_corpus_is_the_real_10033_vital_articles(corpus: pd.DataFrame) -> None:
    assert len(corpus) == 10033
    assert corpus["id"].is_unique
    assert (corpus["text"].str.len() > 0).all()
    assert "Pyotr Ilyich Tchaikovsky" in set(corpus["title"])


def test_wiki18_jsonl_splits_title_from_text(tmp_path: Path) -> None:
    path = tmp_path / "wiki-18.jsonl"
    rows = [{"id": "1", "contents": '"Aaron"\nAaron is a prophet.'}, {"id": "2", "contents": '"Abba"\nAbba is a band.'}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = load_corpus(str(path))
    assert frame.to_dict(orient="records") == [
        {"id": "1", "title": "Aaron", "text": "Aaron is a prophet."},
        {"id": "2", "title": "Abba", "text": "Abba is a band."},
    ]
    assert load_corpus(str(path), max_passages=1)["id"].tolist() == ["1"]
    assert corpus_sha256(frame) != corpus_sha256(frame.head(1))


def test_wiki18_as_the_hub_publishes_it_gzipped_reads_the_same(tmp_path: Path) -> None:
    import gzip

    rows = [{"id": "1", "contents": '"Aaron"\nAaron is a prophet.'}, {"id": "2", "contents": '"Abba"\nAbba is a band.'}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "wiki-18.jsonl").write_text(text)
    (tmp_path / "wiki-18.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = (load_corpus(str(tmp_path / name)) for name in ("wiki-18.jsonl", "wiki-18.jsonl.gz"))
    assert packed.equals(plain) and len(packed) == 2
    (tmp_path / "other.tsv.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(CorpusError, match=r"must end in .jsonl or .jsonl.gz"):
        load_corpus(str(tmp_path / "other.tsv.gz"))


def test_dpr_tsv(tmp_path: Path) -> None:
    path = tmp_path / "psgs_w100.tsv"
    path.write_text("id\ttext\ttitle\n1\tAaron is a prophet.\tAaron\n")
    assert load_corpus(str(path)).iloc[0].to_dict() == {"id": "1", "title": "Aaron", "text": "Aaron is a prophet."}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"id": "1"}\n', r"bad.jsonl:1 is not a wiki-18 record"),
        (
            "dup.jsonl",
            '{"id": "1", "contents": "\\"A\\"\\nx"}\n{"id": "1", "contents": "\\"B\\"\\ny"}\n',
            "repeats passage ids",
        ),
        ("empty.jsonl", '{"id": "1", "contents": "\\"A\\"\\n"}\n', "empty text"),
        ("cols.tsv", "id\tbody\n1\tx\n", r"lacks the column\(s\) \['text', 'title'\]"),
        ("corpus.txt", "x", "must end in .jsonl"),
    ],
)
def test_bad_corpus_files_fail_with_the_reason(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(path))


def test_missing_corpus_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="set search.corpus_source"):
        load_corpus(str(tmp_path / "nope.jsonl"))
