"""The README's first command: the toy profile once, ending on its cold start against ZeroSearch.

Run::

    python -m flows.quickstart

It is :mod:`flows.toy` on the quickstart profile (``quickstart/params.yaml``: the toy world at smaller budgets) with
the plan ``quickstart/plan.yaml``, which queues no other run: every stage of ``quickstart/dvc.yaml`` (a generated
world, a tiny policy pre-trained until it reads, the simulator fine-tuned on real-search documents, GRPO against the
simulator with the curriculum, evaluation with real search), then the table of the cold start (before RL) against
the trained policy, printed and written to ``quickstart/results/``. A second run is a DVC no-op that prints the
table again. ``python -m flows.toy`` runs the toy profile at full budgets with the paper's comparisons and seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.toy import toy_world
from tasks import dvc_stages

PIPELINE = "quickstart/dvc.yaml"
PARAMS = "quickstart/params.yaml"
PLAN = "quickstart/plan.yaml"
RESULTS_DIR = "quickstart/results"
TITLE = "Quickstart: the toy world before and after RL against the simulator"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.quickstart",
        description="Run the toy world once at the quickstart profile's budgets (quickstart/params.yaml) and print "
        "the cold start against ZeroSearch; a second run is a DVC no-op that prints the table again.",
        epilog="Results: quickstart/results/results.md. The full toy plan: python -m flows.toy --help.",
    )
    parser.parse_args(argv)
    toy_world(pipeline=PIPELINE, params=PARAMS, plan_file=PLAN, results_dir=RESULTS_DIR, title=TITLE)
    table = (dvc_stages.project_dir() / RESULTS_DIR / "results.md").read_text()
    print("\n" + table.split("\n- ")[0].strip() + "\n")  # the table, without the per-row notes
    print(
        f"Written to {Path(RESULTS_DIR) / 'results.md'}; MLflow: mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db"
    )


if __name__ == "__main__":
    main()
