"""Print the world-seed table rows of ``toy/results/world_seeds/results.md`` from saved runs.

Each directory holds one world's ``eval.json`` and ``simulator.json`` (copies of ``toy/metrics/``) and its
``init_policy.log`` (the stage's log lines: ``grep init_policy run.log | cut -c25-``). A directory named ``world_<N>``
gives the row's world seed. A missing metrics file or metric is an error that names it; a missing log leaves its
two cells saying so.
Usage: python scripts/world_seed_table.py toy/results/world_seeds/<commit>/world_* [--bar 0.5] [--lift 15]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_DRILL = re.compile(
    r"Pre-training step (\d+): held-out drill (?:and lesson )?accuracy (?:of the least-read form )?([0-9.]+)"
)
_FORM = re.compile(r"Reading check, made to search, form '(?:Which|What) (?:is the )?(\w+)[^']*': EM ([0-9.]+)")
_ROW_HEADER = (
    "| world seed | cold start EM | its single-hop: searched, EM when searching | two-hop "
    "| ZeroSearch EM (single-hop, two-hop) | lift | drills (and lessons): every form at step "
    "| held-out lessons read, made to search | simulator useful / noisy | done-when |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path}: missing; copy it from the run's toy/metrics/ (see this script's docstring)")
    return json.loads(path.read_text())


def _get(doc: dict, path: Path, *keys: str) -> float:
    node = doc
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise SystemExit(f"{path}: no {'.'.join(keys)}; did the run that wrote it finish?")
        node = node[key]
    return float(node)


def row(run: Path, bar: float, min_lift: float, drill_bar: float) -> str:
    eval_path, sim_path, log_path = run / "eval.json", run / "simulator.json", run / "init_policy.log"
    ev, sim = _load(eval_path), _load(sim_path)
    if log_path.is_file():
        log = log_path.read_text()
        drills = [(int(step), float(acc)) for step, acc in _DRILL.findall(log)]
        if not drills:
            raise SystemExit(f"{log_path}: no pre-training reading checks; is it the init_policy stage's log?")
        passed = next((step for step, acc in drills if acc >= drill_bar), None)
        drill_cell = f"{passed:,}" if passed is not None else f"never ({drills[-1][1]:.2f} at {drills[-1][0]:,})"
        found = _FORM.findall(log)
        if len(found) != log.count("Reading check, made to search, form "):  # a form the pattern misses is no cell
            raise SystemExit(f"{log_path}: a reading-check form this script does not know; extend _FORM")
        forms = " / ".join(f"{form} {float(em):.2f}" for form, em in found) or "–"
    else:  # a run whose log was not kept still has its metrics; its row says so instead of guessing
        sys.stderr.write(f"{log_path}: missing (`grep init_policy RUN.log | cut -c25-` writes it); cells say so\n")
        drill_cell = forms = "log not kept"

    def m(*keys: str) -> float:
        return _get(ev, eval_path, *keys)

    cold, zs = "initial.search", "search"
    one_searched = m(cold, "toy_test_1hop", "search_rate")
    one_when = m(cold, "toy_test_1hop", "em_when_searching")
    lift = 100 * (m(zs, "average", "em") - m(cold, "average", "em"))
    done = one_when >= bar and lift >= min_lift
    seed = run.name.removeprefix("world_")
    return (
        f"| {seed} | {100 * m(cold, 'average', 'em'):.1f} | {100 * one_searched:.0f}%, {100 * one_when:.1f} "
        f"| {100 * m(cold, 'toy_test_2hop', 'em'):.0f} "
        f"| {100 * m(zs, 'average', 'em'):.1f} ({100 * m(zs, 'toy_test_1hop', 'em'):.0f}, "
        f"{100 * m(zs, 'toy_test_2hop', 'em'):.0f}) | **{lift:+.1f}** | {drill_cell} | {forms} "
        f"| {_get(sim, sim_path, 'useful_answer_rate'):.2f} / {_get(sim, sim_path, 'noisy_answer_rate'):.2f} "
        f"| {'met' if done else 'not met'} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one directory per world (world_<seed>)")
    parser.add_argument("--bar", type=float, default=0.5, help="single-hop EM when searching the done-when asks")
    parser.add_argument("--lift", type=float, default=15.0, help="lift in EM points the done-when asks")
    parser.add_argument("--drill-bar", type=float, default=0.95, help="the profile's cold_start.pretrain_reading_bar")
    args = parser.parse_args(argv)
    sys.stdout.write(_ROW_HEADER + "\n")
    for run in args.runs:
        sys.stdout.write(row(run, args.bar, args.lift, args.drill_bar) + "\n")


if __name__ == "__main__":
    main()
