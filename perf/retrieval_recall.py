"""How often one search finds the passage a question needs, per hop type, on a profile's built index.

For every benchmark of ``eval.benchmarks`` (and the training questions), and each question with supporting passages:
whether a search for the question text puts the passage that states the answer (the last supporting passage) among
the top ``search.top_k``; and, for questions with a decomposition, whether each hop's own query finds its hop's
passage. On the toy world with ``world.mentor_backlinks: false`` a two-hop question's text almost never finds the
mentor's passage (a second search is needed), while the bridge query does.

Run after ``prepare_data`` and ``build_index``:
    .venv/bin/python perf/retrieval_recall.py --params toy/params.yaml [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_core.config import load_config  # noqa: E402
from zerosearch_core.data.benchmarks import load_benchmark  # noqa: E402
from zerosearch_core.search.local import PASSAGES_FILE, BM25Retriever  # noqa: E402


def recall(retriever: BM25Retriever, queries: list[str], wanted: list[str], top_k: int) -> float:
    """Share of ``queries`` whose top ``top_k`` documents hold the passage id of the same position in ``wanted``."""
    if not queries:
        return float("nan")
    found = retriever.retrieve(queries, top_k)
    return sum(target in {d.id for d in docs} for docs, target in zip(found, wanted, strict=True)) / len(queries)


def measure(params: Path) -> dict[str, dict[str, float]]:
    """Recall per benchmark and hop type: the question text, and (multi-hop) each hop's own query."""
    cfg = load_config(params)
    index_dir = Path(cfg.paths.index_dir)
    retriever = BM25Retriever.load(index_dir, pd.read_parquet(index_dir / PASSAGES_FILE))
    top_k = cfg.search.top_k
    report: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys([*cfg.eval.benchmarks, cfg.train.questions]):
        frame = load_benchmark(Path(cfg.paths.benchmarks_dir), name)
        frame = frame[frame["supporting_doc_ids"].map(len) > 0]
        for hops, part in frame.groupby(frame["supporting_doc_ids"].map(len)):
            docs = [list(d) for d in part["supporting_doc_ids"]]
            row = {
                "questions": float(len(part)),
                "question_text_finds_answer_passage": recall(
                    retriever, part["question"].tolist(), [d[-1] for d in docs], top_k
                ),
            }
            decompositions = [list(q) for q in part["decomposition"]]
            for hop in range(hops):
                pairs = [(q[hop], d[hop]) for q, d in zip(decompositions, docs, strict=True) if len(q) > hop]
                if pairs:
                    row[f"hop_{hop + 1}_query_finds_its_passage"] = recall(
                        retriever, [q for q, _ in pairs], [d for _, d in pairs], top_k
                    )
            report[f"{name} ({hops}-hop)"] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "toy/params.yaml", help="a profile with a built index")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    report = measure(args.params)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    columns = sorted({key for row in report.values() for key in row})
    sys.stdout.write("| benchmark | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n")
    for name, row in report.items():
        cells = [
            f"{row[c]:.2f}" if c in row and c != "questions" else f"{row.get(c, float('nan')):.0f}" for c in columns
        ]
        sys.stdout.write(f"| {name} | " + " | ".join(cells) + " |\n")


if __name__ == "__main__":
    main()
