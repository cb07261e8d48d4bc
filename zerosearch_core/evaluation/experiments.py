"""Experiment plans and the results table: which ``dvc exp run`` overrides make each row, and how rows are summarised.

A plan (``toy/experiments.yaml``) names the experiments, each a set of parameter overrides (no code changes), and
the seeds to repeat them with (``train.seed``, so only RL and evaluation rerun). :func:`summarize` turns the per-run
metrics into mean and spread per experiment; :func:`render_results` writes the Markdown table and :func:`plot_results`
the chart. The Prefect flow ``flows/toy.py`` runs the plan through two CLI commands: ``experiment_plan`` (which runs
to make, each with its ``dvc exp run`` name and ``-S`` arguments) and ``experiment_results`` (the table, from the
metrics ``dvc exp show --json`` reports for the workspace and for each queued experiment).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zerosearch_core.config import ConfigError


@dataclass(frozen=True)
class Experiment:
    """One row of the results table: a name, a label for people, and its parameter overrides."""

    name: str
    label: str
    overrides: dict[str, Any]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison of two rows: ``row`` is ``better`` than, or ``at_least`` as good as,
    ``against``."""

    text: str
    row: str
    against: str
    relation: str


@dataclass(frozen=True)
class ExperimentPlan:
    """The experiments to run, the baseline row and the claims to check, read from a YAML file."""

    baseline_label: str
    experiments: tuple[Experiment, ...]
    claims: tuple[Claim, ...] = ()


def load_plan(path: str | Path) -> ExperimentPlan:
    """Read and check an experiment plan.

    The file holds ``baseline_label``, ``seeds`` (default seeds) and ``experiments``: a list of ``{name, label,
    overrides, seeds?}``; ``overrides`` maps dotted parameter keys to values, as ``dvc exp run -S`` takes them.

    Raises:
        ConfigError: The file is missing or malformed; the message names the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Experiment plan {path} does not exist; see toy/experiments.yaml for the format.")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("experiments"), list) or not raw["experiments"]:
        raise ConfigError(f"{path} must map 'experiments' to a non-empty list of {{name, label, overrides}}.")
    default_seeds = _seeds(raw.get("seeds", [0]), f"{path}: seeds")
    experiments = []
    for index, entry in enumerate(raw["experiments"]):
        where = f"{path}: experiments[{index}]"
        if not isinstance(entry, dict) or not {"name", "label", "overrides"} <= set(entry):
            raise ConfigError(f"{where} needs name, label and overrides (a mapping, may be empty).")
        unknown = set(entry) - {"name", "label", "overrides", "seeds"}
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}.")
        overrides = entry["overrides"] or {}
        if not isinstance(overrides, dict) or "train.seed" in overrides:
            raise ConfigError(f"{where}.overrides must be a mapping without train.seed (seeds are listed apart).")
        seeds = _seeds(entry["seeds"], f"{where}.seeds") if "seeds" in entry else default_seeds
        experiments.append(Experiment(str(entry["name"]), str(entry["label"]), dict(overrides), seeds))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: experiment names must be unique; got {names}.")
    claims = []
    for index, entry in enumerate(raw.get("claims") or []):
        where = f"{path}: claims[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"text", "row", "against", "relation"}:
            raise ConfigError(f"{where} needs exactly text, row, against and relation.")
        missing = {entry["row"], entry["against"]} - set(names)
        if missing:
            raise ConfigError(f"{where} names {sorted(missing)}, which are not experiments of the plan.")
        if entry["relation"] not in ("better", "at_least"):
            raise ConfigError(f"{where}.relation must be 'better' or 'at_least'.")
        claims.append(Claim(str(entry["text"]), str(entry["row"]), str(entry["against"]), str(entry["relation"])))
    return ExperimentPlan(str(raw.get("baseline_label", "cold start (before RL)")), tuple(experiments), tuple(claims))


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) for s in value):
        raise ConfigError(f"{where} must be a non-empty list of integers.")
    return tuple(value)


def set_arguments(params_file: str, experiment: Experiment, seed: int) -> list[str]:
    """The ``-S`` arguments of ``dvc exp run`` for one experiment and seed.

    >>> set_arguments("toy/params.yaml", Experiment("ppo", "PPO", {"train.algorithm": "ppo"}, (0,)), 1)
    ['-S', 'toy/params.yaml:train.algorithm=ppo', '-S', 'toy/params.yaml:train.seed=1']
    """
    arguments = []
    for key, value in {**experiment.overrides, "train.seed": seed}.items():
        arguments += ["-S", f"{params_file}:{key}={_yaml_scalar(value)}"]
    return arguments


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_row(experiment: Experiment, seed: int, eval_document: dict[str, Any]) -> dict[str, Any]:
    """One run's row: real-search EM/F1 of the trained policy (average and per benchmark) and of the initial one.

    Raises:
        KeyError: The evaluation document lacks the trained policy's ``search`` mode.
    """
    search = eval_document["search"]
    row: dict[str, Any] = {
        "experiment": experiment.name,
        "seed": seed,
        "em": search["average"]["em"],
        "f1": search["average"]["f1"],
        "per_benchmark_em": {k: v["em"] for k, v in search.items() if k != "average"},
    }
    initial = eval_document.get("initial.search")
    if initial is not None:
        row["initial_em"] = initial["average"]["em"]
        row["initial_per_benchmark_em"] = {k: v["em"] for k, v in initial.items() if k != "average"}
        # How the cold start reads: EM on the questions it searched (absent from documents older than the metric).
        row["initial_em_when_searching"] = {
            k: v["em_when_searching"] for k, v in initial.items() if k != "average" and "em_when_searching" in v
        }
        row["initial_search_rate"] = {
            k: v["search_rate"] for k, v in initial.items() if k != "average" and "search_rate" in v
        }
    return row


def summarize(plan: ExperimentPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread per experiment, the cold start (the initial policy, the same in every run) first.

    Returns:
        One dict per table row: ``label, name, n, em_mean, em_std, em_values, per_benchmark`` (means).
    """
    table = []
    initial = [r["initial_em"] for r in rows if "initial_em" in r]
    if initial:
        per_bench = _mean_per_benchmark([r["initial_per_benchmark_em"] for r in rows if "initial_em" in r])
        table.append(_summary_row("cold_start", plan.baseline_label, initial[:1], per_bench))
    for experiment in plan.experiments:
        mine = [r for r in rows if r["experiment"] == experiment.name]
        if mine:
            per_bench = _mean_per_benchmark([r["per_benchmark_em"] for r in mine])
            summary = _summary_row(experiment.name, experiment.label, [r["em"] for r in mine], per_bench)
            paired = [r for r in mine if "initial_em" in r]
            if paired:  # each run against its own cold start (a row that changes the world has another one)
                lifts = [r["em"] - r["initial_em"] for r in paired]
                summary["lift_mean"] = statistics.fmean(lifts)
                summary["lift_std"] = statistics.stdev(lifts) if len(lifts) > 1 else 0.0
                summary["cold_start_em"] = statistics.fmean(r["initial_em"] for r in paired)
                summary["cold_start_em_when_searching"] = _mean_per_benchmark(
                    [r.get("initial_em_when_searching", {}) for r in paired]
                )
                summary["cold_start_search_rate"] = _mean_per_benchmark(
                    [r.get("initial_search_rate", {}) for r in paired]
                )
            table.append(summary)
    return table


def _mean_per_benchmark(per_run: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for run in per_run for name in run})
    return {name: statistics.fmean(run[name] for run in per_run if name in run) for name in names}


def _summary_row(name: str, label: str, values: list[float], per_benchmark: dict[str, float]) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "n": len(values),
        "em_mean": statistics.fmean(values),
        "em_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "em_values": values,
        "per_benchmark": per_benchmark,
    }


def claim_verdicts(plan: ExperimentPlan, table: list[dict[str, Any]]) -> list[str]:
    """One sentence per claim: the two rows' mean EM with spread and seeds, their difference, and the verdict.

    The rule (:func:`verdict`) is strict: a row with fewer than two seeds has no spread, so a claim on it is *not
    separable*; otherwise, with ``s`` the larger of the two rows' sample std, ``better`` is *reproduced* only when
    the difference exceeds ``s``, *contradicted* when it is below ``-s``, and *not separable* between; ``at_least``
    is *reproduced* when the row is not behind at all, *contradicted* when it is behind by more than ``s``, and *not
    separable* between (so a row 5 points behind is never "reproduced").

    >>> rows = [{"name": "a", "em_mean": 0.3, "em_std": 0.02, "n": 3},
    ...         {"name": "b", "em_mean": 0.2, "em_std": 0.01, "n": 3}]
    >>> claim_verdicts(ExperimentPlan("", (), (Claim("a beats b", "a", "b", "better"),)), rows)[0].split(": ")[-1]
    'reproduced (+10.0 points, spread 2.0)'
    """
    by_name = {row["name"]: row for row in table}
    sentences = []
    for claim in plan.claims:
        if claim.row not in by_name or claim.against not in by_name:
            sentences.append(f"- {claim.text}: not measured (a row is missing).")
            continue
        a, b = by_name[claim.row], by_name[claim.against]
        diff = a["em_mean"] - b["em_mean"]
        spread = max(a["em_std"], b["em_std"])
        found = verdict(claim.relation, diff, spread, min(a["n"], b["n"]))
        sentences.append(
            f"- {claim.text} ({claim.row} {em_text(a)}, against {claim.against} {em_text(b)}): "
            f"{found} ({100 * diff:+.1f} points, spread {100 * spread:.1f})"
        )
    return sentences


def verdict(relation: str, diff: float, spread: float, seeds: int) -> str:
    """The verdict of one claim (see :func:`claim_verdicts`).

    >>> verdict("better", 0.10, 0.02, 3), verdict("better", 0.01, 0.02, 3), verdict("better", 0.10, 0.0, 1)
    ('reproduced', 'not separable', 'not separable (n=1)')
    >>> verdict("at_least", -0.05, 0.06, 3), verdict("at_least", 0.0, 0.06, 3), verdict("at_least", -0.07, 0.06, 3)
    ('not separable', 'reproduced', 'contradicted')
    """
    if seeds < 2:
        return "not separable (n=1)"
    if diff < -spread:
        return "contradicted"
    if relation == "better":
        return "reproduced" if diff > spread else "not separable"
    return "reproduced" if diff >= 0 else "not separable"


def em_text(row: dict[str, Any]) -> str:
    """A row's EM in points: mean ± sample std with its seed count, or the single value with ``n=1``.

    >>> em_text({"em_mean": 0.5, "em_std": 0.1, "n": 3}), em_text({"em_mean": 0.5, "em_std": 0.0, "n": 1})
    ('50.0 ± 10.0, n=3', '50.0, n=1')
    """
    if row["n"] < 2:
        return f"{100 * row['em_mean']:.1f}, n=1"
    return f"{100 * row['em_mean']:.1f} ± {100 * row['em_std']:.1f}, n={row['n']}"


def render_results(table: list[dict[str, Any]], title: str, notes: list[str]) -> str:
    """The Markdown results table: EM in points (mean ± sample std over seeds), per-benchmark means, the lift over
    the cold start, and each seed's value.

    >>> row = {"name": "a", "label": "A", "n": 2, "em_mean": 0.5, "em_std": 0.1, "em_values": [0.4, 0.6],
    ...        "per_benchmark": {"t": 0.5}}
    >>> "| A | 50.0 ± 10.0, n=2 | 50.0 |" in render_results([row], "T", [])
    True
    """
    benchmarks = sorted({b for row in table for b in row["per_benchmark"]})
    base = next((row["em_mean"] for row in table if row["name"] == "cold_start"), None)
    # A row whose runs have another cold start than the table's (it changes the world or the cold start) is compared
    # with its own: the table then says which cold start each row had.
    own_starts = any(
        "cold_start_em" in row and base is not None and abs(row["cold_start_em"] - base) > 1e-9 for row in table
    )
    reading = sorted({b for row in table for b in row.get("cold_start_em_when_searching", {})}) if own_starts else []
    lines = [f"# {title}", "", "Real-search test exact match, in points; mean ± sample std over seeds.", ""]
    extra = ["its cold start", *(f"its cold start reads {b}" for b in reading)] if own_starts else []
    header = ["run", "EM", *(f"EM {b}" for b in benchmarks), *extra, "vs cold start", "seeds", "per seed"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in table:
        cells = [row["label"], em_text(row)]
        cells += [f"{100 * row['per_benchmark'].get(b, float('nan')):.1f}" for b in benchmarks]
        if own_starts:
            cells.append(f"{100 * row['cold_start_em']:.1f}" if "cold_start_em" in row else "")
            cells += [
                f"{100 * row['cold_start_em_when_searching'][b]:.1f} "
                f"({100 * row['cold_start_search_rate'].get(b, float('nan')):.0f}% searched)"
                if b in row.get("cold_start_em_when_searching", {})
                else ""
                for b in reading
            ]
        if row["name"] == "cold_start" or base is None:
            lift = ""
        elif "lift_mean" in row:
            lift = f"{100 * row['lift_mean']:+.1f}" + (f" ± {100 * row['lift_std']:.1f}" if row["n"] > 1 else "")
        else:
            lift = f"{100 * (row['em_mean'] - base):+.1f}"
        cells += [lift, str(row["n"]), ", ".join(f"{100 * v:.1f}" for v in row["em_values"])]
        lines.append("| " + " | ".join(cells) + " |")
    if reading:
        lines += [
            "",
            '"Its cold start reads": the cold start\'s EM on the test questions it searched (how well it reads what '
            "it finds), and on how many it searched.",
        ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def plot_results(table: list[dict[str, Any]], path: Path, provenance: str = "") -> None:
    """A bar chart of mean EM per run with the spread as error bars and every seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(table)), 4))
    positions = range(len(table))
    means = [100 * row["em_mean"] for row in table]
    ax.bar(positions, means, yerr=[100 * row["em_std"] for row in table], capsize=4, color="#7aa6c2")
    for x, row in zip(positions, table, strict=True):
        ax.scatter([x] * len(row["em_values"]), [100 * v for v in row["em_values"]], color="black", s=12, zorder=3)
        ax.text(x, 100 * row["em_mean"] + 2, f"{100 * row['em_mean']:.1f}", ha="center", fontsize=8)
    ax.set_xticks(list(positions), [row["label"] for row in table], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("real-search test EM (points)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if provenance:
        ax.set_title(provenance, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    plan: ExperimentPlan, rows: list[dict[str, Any]], folder: Path, title: str, provenance: str = ""
) -> list[dict[str, Any]]:
    """Write ``results.md``, ``results.json`` (rows and summary) and ``results.png`` into ``folder``.

    ``provenance`` (the commit and date the table was made at) goes under the title, into the JSON and onto the
    plot: a results document is generated, never edited by hand.
    """
    table = summarize(plan, rows)
    folder.mkdir(parents=True, exist_ok=True)
    notes = [
        f"- {e.label}: overrides `{json.dumps(e.overrides) if e.overrides else 'none'}`, seeds {list(e.seeds)}"
        for e in plan.experiments
    ]
    claims = claim_verdicts(plan, table)
    if claims:
        notes += ["", "The paper's claims on this world:", *claims]
    markdown = render_results(table, title, notes)
    if provenance:
        head, _, rest = markdown.partition("\n\n")
        markdown = f"{head}\n\n{provenance}\n\n{rest}"
    (folder / "results.md").write_text(markdown)
    document = {"provenance": provenance, "runs": rows, "summary": table}
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    plot_results(table, folder / "results.png", provenance)
    return table


WORKSPACE = "workspace"
"""The name ``dvc exp show`` gives the workspace, where the pipeline's own run is."""


def plan_document(
    plan: ExperimentPlan, params_file: str, train_seed: int, eval_metrics: str, tag: str
) -> dict[str, Any]:
    """What the orchestrator needs to run a plan: every (experiment, seed) with its ``dvc exp run`` name and ``-S``
    arguments, and whether it is the pipeline's own run (no overrides, the profile's ``train.seed``), which the
    workspace holds.

    Args:
        plan: The experiment plan.
        params_file: The profile's parameter file (the ``-S`` arguments name it).
        train_seed: The profile's ``train.seed``.
        eval_metrics: The profile's ``paths.eval_metrics`` (where each run's results are read).
        tag: Makes this invocation's experiment names unique (DVC refuses a name twice), e.g. a timestamp.

    >>> doc = plan_document(load_plan("toy/experiments.yaml"), "toy/params.yaml", 0, "toy/metrics/eval.json", "t1")
    >>> [(r["experiment"], r["seed"], r["baseline"], r["name"]) for r in doc["runs"][:2]]
    [('zerosearch', 0, True, 'workspace'), ('zerosearch', 1, False, 'zerosearch-s1-t1')]
    """
    runs = []
    for experiment in plan.experiments:
        for seed in experiment.seeds:
            baseline = not experiment.overrides and seed == train_seed
            runs.append(
                {
                    "experiment": experiment.name,
                    "seed": seed,
                    "baseline": baseline,
                    "name": WORKSPACE if baseline else f"{experiment.name}-s{seed}-{tag}",
                    "set_arguments": set_arguments(params_file, experiment, seed),
                }
            )
    return {"runs": runs, "eval_metrics": eval_metrics}


def metrics_by_experiment(exp_show: list[dict[str, Any]], metrics_file: str) -> dict[str, dict[str, Any]]:
    """Each experiment's metrics document ``metrics_file`` from ``dvc exp show --json`` output, by experiment name
    (the workspace under ``workspace``). Experiments whose run failed carry no metrics and are left out.

    >>> show = [{"rev": "workspace", "data": {"metrics": {"m.json": {"data": {"a": 1}}}}},
    ...         {"rev": "abc", "experiments": [{"name": "x", "revs": [{"name": "x", "data": {"metrics": {}}}]}]}]
    >>> metrics_by_experiment(show, "m.json")
    {'workspace': {'a': 1}}
    """
    found: dict[str, dict[str, Any]] = {}

    def record(name: str, entry: dict[str, Any]) -> None:
        metrics = ((entry.get("data") or {}).get("metrics") or {}).get(metrics_file)
        if metrics is not None and "data" in metrics:
            found[name] = metrics["data"]

    for baseline in exp_show:
        if baseline.get("rev") == WORKSPACE:
            record(WORKSPACE, baseline)
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                record(str(rev.get("name") or experiment.get("name")), rev)
    return found


def rows_from_exp_show(
    plan: ExperimentPlan, document: dict[str, Any], exp_show: list[dict[str, Any]], copies_dir: Path
) -> list[dict[str, Any]]:
    """Table rows for every run of a plan document, from ``dvc exp show --json`` output; each run's metrics are also
    written to ``copies_dir/<experiment>-s<seed>.json`` for the record.

    Raises:
        ConfigError: A run's experiment has no metrics (it failed, or was never run); the message names it and says
            where its log is.
    """
    experiments = {e.name: e for e in plan.experiments}
    metrics = metrics_by_experiment(exp_show, document["eval_metrics"])
    missing = [run["name"] for run in document["runs"] if run["name"] not in metrics]
    if missing:
        raise ConfigError(
            f"No {document['eval_metrics']} for experiments {missing}: they failed or never ran; "
            "see `dvc queue status` and `dvc queue logs <name>`."
        )
    copies_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in document["runs"]:
        evaluation = metrics[run["name"]]
        (copies_dir / f"{run['experiment']}-s{run['seed']}.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        row = run_row(experiments[run["experiment"]], int(run["seed"]), evaluation)
        row["dvc_experiment"] = run["name"]
        rows.append(row)
    return rows


def merge_exp_show(documents: list[list[dict[str, Any]]], metrics_file: str, tag: str) -> list[dict[str, Any]]:
    """One ``dvc exp show --json`` document from several flow invocations' (each ran part of a plan on the same
    workspace), its experiments renamed ``<experiment>-s<seed>-<tag>`` so that :func:`rows_from_exp_show` finds them
    under one ``tag``. The runs compare only against the same cold start, so the workspaces must agree.

    Raises:
        ConfigError: The workspaces' ``metrics_file`` differ (the pipeline changed between the invocations: rerun the
            older plan), or two invocations ran the same experiment and seed (the table would have to pick one).

    >>> def show(ws, *names):
    ...     revs = [{"name": n, "data": {"metrics": {"m.json": {"data": {"em": 1}}}}} for n in names]
    ...     return [{"rev": "workspace", "data": {"metrics": {"m.json": {"data": {"em": ws}}}}},
    ...             {"rev": "abc", "experiments": [{"name": n, "revs": [r]} for n, r in zip(names, revs)]}]
    >>> merged = merge_exp_show([show(3, "a-s1-t1"), show(3, "b-s0-t2")], "m.json", "all")
    >>> sorted(metrics_by_experiment(merged, "m.json"))
    ['a-s1-all', 'b-s0-all', 'workspace']
    >>> merge_exp_show([show(3, "a-s1-t1"), show(4, "b-s0-t2")], "m.json", "all")
    Traceback (most recent call last):
    ...
    zerosearch_core.config.ConfigError: The invocations' workspaces report different m.json ...
    """
    workspaces = [metrics_by_experiment(document, metrics_file).get(WORKSPACE) for document in documents]
    if workspaces[0] is None:
        raise ConfigError(f"The first file's workspace has no {metrics_file}: is it `dvc exp show --json` output?")
    if any(workspace != workspaces[0] for workspace in workspaces):
        raise ConfigError(
            f"The invocations' workspaces report different {metrics_file} (the pipeline changed between them), so "
            "their runs compare against different cold starts: rerun the older plan on the current workspace."
        )
    merged = [next(entry for entry in documents[0] if entry.get("rev") == WORKSPACE)]
    seen: set[str] = set()
    for document in documents:
        for baseline in document:
            experiments = []
            for experiment in baseline.get("experiments") or []:
                renamed = []
                for rev in experiment.get("revs") or []:
                    name = str(rev.get("name") or experiment.get("name"))
                    stem = name.rsplit("-", 1)[0]
                    if stem in seen:
                        raise ConfigError(f"{stem} ran in more than one invocation; keep one of them in the merge.")
                    seen.add(stem)
                    renamed.append({**rev, "name": f"{stem}-{tag}"})
                experiments.append({**experiment, "name": renamed[0]["name"] if renamed else None, "revs": renamed})
            if experiments:
                merged.append({**baseline, "experiments": experiments})
    return merged
