"""Write the committed benchmark samples: the first rows of every benchmark file, copied unchanged.

The full files (``../shared/data/benchmarks``, about 6 MB; their sources and licences in its SOURCES.md) stay outside
the repository. The samples let the tests and the CPU smoke profile run from any clone. Each sample keeps the file's
own format and path: the first ``--rows`` lines of a jsonl or CSV file, the first ``--rows`` items of a JSON list,
plus the few later lines :data:`KEEP_LINES` names (in their original order), which tests rely on.

    .venv/bin/python scripts/make_benchmark_samples.py [--source ../shared/data/benchmarks] [--rows 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "data/samples/benchmarks"
LINE_FILES = (
    "nq_open/NQ-open.dev.jsonl",
    "bamboogle/bamboogle.csv",
    "searchagentreview/bamboogle_test_125.jsonl",
    "searchagentreview/popqa_test_1000.jsonl",
    "searchagentreview/hotpotqa_test_1000.jsonl",
    "searchagentreview/2wikimultihopqa_test_1000.jsonl",
    "searchagentreview/musique_test_1000.jsonl",
    "searchagentreview/train_mixed_15000-cleaned.jsonl",
    "searchagentreview/val_mixed_900.jsonl",
)
KEEP_LINES: dict[str, tuple[int, ...]] = {
    # the two NQ questions the retrieval tests search for (the Wikipedia corpus answers both)
    "nq_open/NQ-open.dev.jsonl": (49, 169),
    # the first verbatim repeat of an earlier line (27), which duplicates: collapse_exact must drop
    "searchagentreview/musique_test_1000.jsonl": (53,),
}
"""Lines (1-based) copied beside the first rows, because a test needs what they hold."""
JSON_LIST_FILES = ("triviaqa/EVOUNA_TQ.json",)
COPIED = ("triviaqa/LICENSE.QA-Eval", "triviaqa/SOURCES.md")
MAX_TOTAL_BYTES = 1 << 20


def write_samples(source: Path, rows: int, target: Path = TARGET) -> dict[str, str]:
    """Write the samples under ``target``; return each sample's path and SHA-256."""
    if not (source / "SOURCES.md").is_file():
        raise SystemExit(f"{source} holds no benchmark files (no SOURCES.md); pass --source with the full folder.")
    written: dict[str, str] = {}
    for name in (*LINE_FILES, *JSON_LIST_FILES, *COPIED):
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if name in LINE_FILES:
            keep = set(KEEP_LINES.get(name, ()))
            with (source / name).open(encoding="utf-8") as handle:
                lines = [line for number, line in enumerate(handle, start=1) if number <= rows or number in keep]
            out.write_text("".join(lines), encoding="utf-8")
        elif name in JSON_LIST_FILES:
            items = json.loads((source / name).read_text(encoding="utf-8"))[:rows]
            out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            shutil.copy2(source / name, out)
        written[name] = hashlib.sha256(out.read_bytes()).hexdigest()
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    if total > MAX_TOTAL_BYTES:
        raise SystemExit(f"The samples take {total} bytes, over {MAX_TOTAL_BYTES}; pass fewer --rows.")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/benchmarks")
    parser.add_argument("--rows", type=int, default=40, help="rows (or list items) per file (default 40)")
    args = parser.parse_args()
    for name, digest in write_samples(args.source, args.rows).items():
        sys.stdout.write(f"{digest}  {name}\n")


if __name__ == "__main__":
    main()
