"""The multi-step search table of toy-world runs: per run folder (its eval.json, and train.json when present), the
cold start and the trained policy on single-hop and two-hop test questions: EM, searches per question, the share
that searched twice, the share of two-hop questions whose later query names the bridge person, and the lift.

    .venv/bin/python scripts/multi_hop_table.py toy/results/world_seeds/<commit>/world_* [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HOPS = {"toy_test_1hop": "1-hop", "toy_test_2hop": "2-hop"}


def run_row(folder: Path) -> dict[str, Any]:
    """One run's figures, in points where they are rates."""
    document = json.loads((folder / "eval.json").read_text())
    row: dict[str, Any] = {"run": folder.name}
    for prefix, policy in (("initial.search", "start"), ("search", "rl")):
        for benchmark, hop in HOPS.items():
            values = document[prefix][benchmark]
            row[f"{policy} {hop} EM"] = 100 * values["em"]
            row[f"{policy} {hop} searches"] = values["mean_searches"]
            row[f"{policy} {hop} searched twice"] = 100 * values.get("multi_search_rate", float("nan"))
            if hop == "2-hop":
                row[f"{policy} {hop} bridge query"] = 100 * values.get("bridge_query_rate", float("nan"))
        row[f"{policy} EM"] = 100 * document[prefix]["average"]["em"]
    row["lift"] = row["rl EM"] - row["start EM"]
    row["2-hop lift"] = row["rl 2-hop EM"] - row["start 2-hop EM"]
    train = folder / "train.json"
    if train.is_file():
        row["RL searches (last step)"] = json.loads(train.read_text()).get("searches_mean_last", float("nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders holding eval.json (and train.json)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a Markdown table")
    args = parser.parse_args()
    rows = [run_row(folder) for folder in args.folders]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    columns = list(rows[0])
    sys.stdout.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for row in rows:
        cells = [
            row[c] if isinstance(row[c], str) else f"{row[c]:.1f}" if "searches" not in c else f"{row[c]:.2f}"
            for c in columns
        ]
        sys.stdout.write("| " + " | ".join(cells) + " |\n")
    if len(rows) > 1:
        for key in ("lift", "2-hop lift", "rl 2-hop EM"):
            values = [row[key] for row in rows]
            spread = f"{statistics.stdev(values):.1f}"
            sys.stdout.write(f"\n{key}: {statistics.mean(values):+.1f} ± {spread} (mean ± sample std, n={len(values)})")
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
