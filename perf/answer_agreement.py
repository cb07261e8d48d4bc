"""How often each answer metric agrees with human judgement, on real QA-system answers.

The EVOUNA TriviaQA file (``../shared/data/benchmarks/triviaqa/EVOUNA_TQ.json``) holds, for the first 2,000
questions of the open-domain TriviaQA test split, the answers of five QA systems (FiD, GPT-3.5, ChatGPT, GPT-4,
New Bing) and a human label of each (correct or not). This prints, per system, how often strict EM, cover-EM and
F1 >= 0.5 say the same as the human, on every answer with a label; golden answers are the aliases as
``prepare_data`` reads them (:func:`zerosearch_core.data.benchmarks.split_aliases`).

    .venv/bin/python perf/answer_agreement.py [--file PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_core.agent.rewards import answer_metrics  # noqa: E402
from zerosearch_core.data.benchmarks import split_aliases  # noqa: E402

SYSTEMS = ("fid", "gpt35", "chatgpt", "gpt4", "newbing")
DEFAULT_FILE = ROOT.parent / "shared/data/benchmarks/triviaqa/EVOUNA_TQ.json"


def agreement(records: list[dict], system: str) -> dict[str, float]:
    """Share of labelled answers of ``system`` on which each metric matches the human label, and their count."""
    agree = {"em": 0, "cover_em": 0, "f1>=0.5": 0}
    positives = labelled = 0
    for record in records:
        label = record.get(f"judge_{system}")
        answer = record.get(f"answer_{system}")
        if label is None or not isinstance(answer, str):
            continue
        labelled += 1
        positives += bool(label)
        scores = answer_metrics(answer, split_aliases(record["golden_answer"])[0])
        agree["em"] += (scores["em"] == 1.0) == bool(label)
        agree["cover_em"] += (scores["cover_em"] == 1.0) == bool(label)
        agree["f1>=0.5"] += (scores["f1"] >= 0.5) == bool(label)
    shares = {metric: count / labelled for metric, count in agree.items()} if labelled else {}
    return {"labelled": float(labelled), "human_correct": positives / labelled if labelled else 0.0, **shares}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    records = json.loads(args.file.read_text(encoding="utf-8"))
    print(f"{args.file.name}: {len(records)} questions; agreement of each metric with the human label")
    print(f"{'system':<10} {'labelled':>8} {'human ok':>9} {'EM':>7} {'cover-EM':>9} {'F1>=0.5':>8}")
    for system in SYSTEMS:
        row = agreement(records, system)
        print(
            f"{system:<10} {int(row['labelled']):>8} {100 * row['human_correct']:>8.1f}% {100 * row['em']:>6.1f}% "
            f"{100 * row['cover_em']:>8.1f}% {100 * row['f1>=0.5']:>7.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
