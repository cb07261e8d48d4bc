"""Merge the ``dvc exp show --json`` files of several ``flows.toy`` invocations into one, for one results table.

Each invocation tags its experiment names with its start time; this renames them ``<experiment>-s<seed>-<tag>`` and
checks that every invocation ran on the same workspace (the same cold start). Then:
    python -m zerosearch_core.cli experiment_results --params toy/params.yaml --plan toy/experiments.yaml \
        --tag TAG --exp-show OUT --out toy/results --title "..."
Usage: python scripts/merge_exp_show.py A.json B.json ... --out OUT --tag TAG [--metrics toy/metrics/eval.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_core.evaluation.experiments import merge_exp_show  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="`dvc exp show --json` files (flows.toy writes them)")
    parser.add_argument("--out", type=Path, required=True, help="the merged file")
    parser.add_argument("--tag", required=True, help="the tag the merged names carry (pass it to experiment_results)")
    parser.add_argument("--metrics", default="toy/metrics/eval.json", help="the profile's paths.eval_metrics")
    args = parser.parse_args(argv)
    documents = [json.loads(path.read_text()) for path in args.inputs]
    args.out.write_text(json.dumps(merge_exp_show(documents, args.metrics, args.tag)))  # one line, as DVC writes it
    print(f"{args.out}: {len(args.inputs)} invocations merged under tag {args.tag!r}")


if __name__ == "__main__":
    main()
