"""Experiment plans and the results table (zerosearch_core.evaluation.experiments), on the shipped toy plan and real
files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zerosearch_core.config import ConfigError, load_config
from zerosearch_core.evaluation.experiments import (
    Experiment,
    ExperimentPlan,
    claim_verdicts,
    load_plan,
    merge_exp_show,
    plan_document,
    render_results,
    rows_from_exp_show,
    run_row,
    set_arguments,
    summarize,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]


def eval_document(em_1hop: float, em_2hop: float, initial: tuple[float, float] | None = (0.1, 0.0)) -> dict:
    """A metrics document shaped like the evaluate stage's (metrics_document)."""

    def mode(a: float, b: float) -> dict:
        return {
            "toy_test_1hop": {"em": a, "f1": a, "n": 100.0},
            "toy_test_2hop": {"em": b, "f1": b, "n": 100.0},
            "average": {"em": (a + b) / 2, "f1": (a + b) / 2},
        }

    document = {"search": mode(em_1hop, em_2hop), "not_evaluated": []}
    if initial is not None:
        document["initial.search"] = mode(*initial)
    return document


def test_shipped_toy_plan_covers_the_paper_rows_and_each_override_gives_a_valid_config(tmp_path: Path) -> None:
    plan = load_plan(ROOT / "toy/experiments.yaml")
    names = [e.name for e in plan.experiments]
    assert names[:3] == ["zerosearch", "real_search", "fixed_noise"]
    paper_rows = {"always_useful", "always_noisy", "no_loss_mask", "ppo", "outcome_labels", "prompted_simulator"}
    assert paper_rows <= set(names)
    compared = {name for claim in plan.claims for name in (claim.row, claim.against)}
    assert {"real_search", "fixed_noise", "no_loss_mask"} <= compared
    for claim in plan.claims:  # close comparisons of the claims rest on three seeds, except the large masking gap
        if claim.against != "no_loss_mask":
            assert all(len(e.seeds) >= 3 for e in plan.experiments if e.name in (claim.row, claim.against))
    for experiment in plan.experiments:
        patched = yaml.safe_load((ROOT / "toy/params.yaml").read_text())
        for key, value in experiment.overrides.items():
            section, name = key.split(".")
            assert name in patched[section], f"{experiment.name} overrides {key}, which toy/params.yaml lacks"
            patched[section][name] = value
        path = tmp_path / f"{experiment.name}.yaml"
        path.write_text(yaml.safe_dump(patched, sort_keys=False))
        cfg = load_config(path)
        for key, value in experiment.overrides.items():
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value


def test_set_arguments_add_the_seed_and_spell_booleans_as_yaml() -> None:
    experiment = Experiment("no_mask", "no mask", {"train.mask_retrieved_tokens": False}, (0,))
    assert set_arguments("toy/params.yaml", experiment, 2) == [
        "-S",
        "toy/params.yaml:train.mask_retrieved_tokens=false",
        "-S",
        "toy/params.yaml:train.seed=2",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("experiments: []", "non-empty list"),
        ("experiments: [{name: a, label: A}]", "needs name, label and overrides"),
        ("experiments: [{name: a, label: A, overrides: {train.seed: 1}}]", "without train.seed"),
        ("experiments: [{name: a, label: A, overrides: {}, colour: red}]", "unknown key(s) ['colour']"),
        ("experiments: [{name: a, label: A, overrides: {}}, {name: a, label: B, overrides: {}}]", "unique"),
        ("seeds: [one]\nexperiments: [{name: a, label: A, overrides: {}}]", "list of integers"),
    ],
)
def test_bad_plans_are_refused_with_the_entry_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="plan.yaml") as error:
        load_plan(path)
    assert message in str(error.value)


def test_summary_has_cold_start_first_then_mean_and_spread_per_experiment(tmp_path: Path) -> None:
    plan = load_plan(ROOT / "toy/experiments.yaml")
    zs, real = plan.experiments[0], plan.experiments[1]
    rows = [
        run_row(zs, 0, eval_document(0.8, 0.4)),
        run_row(zs, 1, eval_document(0.6, 0.2)),
        run_row(real, 0, eval_document(0.9, 0.5)),
    ]
    table = summarize(plan, rows)
    assert [r["name"] for r in table] == ["cold_start", "zerosearch", "real_search"]
    cold, zerosearch, real_row = table
    assert cold["em_mean"] == pytest.approx(0.05) and cold["n"] == 1
    assert zerosearch["em_mean"] == pytest.approx(0.5) and zerosearch["n"] == 2
    assert zerosearch["em_std"] == pytest.approx(0.1414, abs=1e-3)  # sample std of 0.6 and 0.4
    assert zerosearch["per_benchmark"] == pytest.approx({"toy_test_1hop": 0.7, "toy_test_2hop": 0.3})
    assert real_row["em_std"] == 0.0
    write_results(plan, rows, tmp_path / "results", "Toy", "Generated at commit abc on 2026-12-07.")
    markdown = (tmp_path / "results/results.md").read_text()
    assert markdown.startswith("# Toy\n\nGenerated at commit abc on 2026-12-07.\n")
    assert json.loads((tmp_path / "results/results.json").read_text())["provenance"].startswith("Generated")
    assert f"| {zs.label} | 50.0 ± 14.1, n=2 | 70.0 | 30.0 | +45.0 ± 14.1 | 2 | 60.0, 40.0 |" in markdown
    assert "its cold start" not in markdown  # every row shares the table's cold start
    assert "simulated search is at least as good as real search (zerosearch 50.0 ± 14.1, n=2" in markdown
    assert "| cold start (before RL) | 5.0, n=1 |" in markdown
    assert "real search (n=1 seed)" not in markdown and "not separable (n=1)" in markdown  # real search has one seed
    assert (tmp_path / "results/results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_row_with_another_cold_start_is_compared_with_its_own(tmp_path: Path) -> None:
    world_11 = Experiment("world_11", "world seed 11", {"world.seed": 11}, (0,))
    plan = ExperimentPlan("cold start (before RL)", (load_plan(ROOT / "toy/experiments.yaml").experiments[0], world_11))
    other = eval_document(0.7, 0.3, initial=(0.4, 0.0))
    other["initial.search"]["toy_test_1hop"].update(em_when_searching=0.8, search_rate=0.5)
    rows = [run_row(plan.experiments[0], 0, eval_document(0.8, 0.4)), run_row(world_11, 0, other)]
    table = summarize(plan, rows)
    assert table[2]["lift_mean"] == pytest.approx(0.3) and table[2]["cold_start_em"] == pytest.approx(0.2)
    assert table[2]["cold_start_em_when_searching"] == {"toy_test_1hop": pytest.approx(0.8)}
    markdown = render_results(table, "Worlds", [])
    # 50.0 EM against its own cold start of 20.0 (not the table's 5.0), which read 80% of what it searched.
    assert "| world seed 11 | 50.0, n=1 | 70.0 | 30.0 | 20.0 | 80.0 (50% searched) | +30.0 | 1 | 50.0 |" in markdown


def test_a_run_without_the_trained_search_mode_is_an_error() -> None:
    plan = load_plan(ROOT / "toy/experiments.yaml")
    with pytest.raises(KeyError):
        run_row(plan.experiments[0], 0, {"direct": {}})


def test_plan_document_names_each_queued_run_and_marks_the_pipeline_run() -> None:
    cfg = load_config(ROOT / "toy/params.yaml")
    plan = load_plan(ROOT / "toy/experiments.yaml")
    document = plan_document(plan, "toy/params.yaml", cfg.train.seed, cfg.paths.eval_metrics, "t7")
    runs = [(r["experiment"], r["seed"], r["baseline"], r["name"]) for r in document["runs"]]
    assert runs[:4] == [
        ("zerosearch", 0, True, "workspace"),
        ("zerosearch", 1, False, "zerosearch-s1-t7"),
        ("zerosearch", 2, False, "zerosearch-s2-t7"),
        ("real_search", 0, False, "real_search-s0-t7"),
    ]
    assert sum(r["baseline"] for r in document["runs"]) == 1
    assert document["runs"][3]["set_arguments"] == [
        "-S",
        "toy/params.yaml:train.search_engine=real",
        "-S",
        "toy/params.yaml:train.seed=0",
    ]
    assert document["eval_metrics"] == cfg.paths.eval_metrics


def _exp_show(entries: dict[str, dict[str, object] | None], metrics_file: str) -> list[dict[str, object]]:
    """``dvc exp show --json`` output shaped as DVC 3.67 writes it; None stands for a failed experiment."""

    def data(document: dict[str, object] | None) -> dict[str, object]:
        return {"metrics": {} if document is None else {metrics_file: {"data": document}}}

    workspace = entries.pop("workspace")
    experiments = [{"name": name, "revs": [{"name": name, "data": data(doc)}]} for name, doc in entries.items()]
    return [
        {"rev": "workspace", "name": None, "data": data(workspace)},
        {"rev": "abc123", "name": "main", "data": data(None), "experiments": experiments},
    ]


def test_rows_come_from_dvc_exp_show_and_a_failed_experiment_is_named(tmp_path: Path) -> None:
    plan = load_plan(ROOT / "toy/experiments.yaml")
    document = plan_document(plan, "toy/params.yaml", 0, "toy/metrics/eval.json", "t1")
    document["runs"] = document["runs"][:2]  # the workspace's zerosearch-s0 and the queued zerosearch-s1
    show = _exp_show(
        {"workspace": eval_document(0.7, 0.3), "zerosearch-s1-t1": eval_document(0.5, 0.25), "other": None},
        "toy/metrics/eval.json",
    )
    rows = rows_from_exp_show(plan, document, show, tmp_path / "runs")
    assert [(r["seed"], r["em"], r["dvc_experiment"]) for r in rows] == [
        (0, 0.5, "workspace"),
        (1, 0.375, "zerosearch-s1-t1"),
    ]
    assert rows[1]["initial_em"] == 0.05
    assert json.loads((tmp_path / "runs/zerosearch-s1.json").read_text()) == eval_document(0.5, 0.25)
    failed = _exp_show({"workspace": eval_document(0.7, 0.3), "zerosearch-s1-t1": None}, "toy/metrics/eval.json")
    with pytest.raises(ConfigError, match=r"zerosearch-s1-t1.*dvc queue logs"):
        rows_from_exp_show(plan, document, failed, tmp_path / "runs")


def test_claims_get_a_verdict_beyond_the_seed_spread(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        yaml.safe_dump(
            {
                "seeds": [0, 1],
                "experiments": [
                    {"name": "a", "label": "A", "overrides": {}},
                    {"name": "b", "label": "B", "overrides": {}},
                ],
                "claims": [
                    {"text": "a beats b", "row": "a", "against": "b", "relation": "better"},
                    {"text": "b beats a", "row": "b", "against": "a", "relation": "better"},
                    {"text": "b at least a", "row": "b", "against": "a", "relation": "at_least"},
                ],
            }
        )
    )
    plan = load_plan(plan_file)
    rows = [run_row(plan.experiments[0], s, eval_document(v, v)) for s, v in ((0, 0.30), (1, 0.34))]
    rows += [run_row(plan.experiments[1], s, eval_document(v, v)) for s, v in ((0, 0.20), (1, 0.22))]
    table = write_results(plan, rows, tmp_path / "out", "T")
    text = (tmp_path / "out" / "results.md").read_text()
    verdicts = claim_verdicts(plan, table)
    assert verdicts[0].endswith("reproduced (+11.0 points, spread 2.8)")
    assert verdicts[1].endswith("contradicted (-11.0 points, spread 2.8)")
    assert verdicts[2].endswith("contradicted (-11.0 points, spread 2.8)")
    assert all(v in text for v in verdicts)
    bad = tmp_path / "bad.yaml"
    bad.write_text(plan_file.read_text().replace("against: b", "against: c"))
    with pytest.raises(ConfigError, match=r"claims\[0\] names \['c'\]"):
        load_plan(bad)


def test_the_quickstart_plan_is_the_pipeline_run_alone_and_the_world_plan_changes_only_the_world() -> None:
    cfg = load_config(ROOT / "toy/params.yaml")
    quick_cfg = load_config(ROOT / "quickstart/params.yaml")
    quick_plan = load_plan(ROOT / "quickstart/plan.yaml")
    quick = plan_document(quick_plan, "quickstart/params.yaml", quick_cfg.train.seed, "m.json", "t")
    assert [run["baseline"] for run in quick["runs"]] == [True]  # nothing is queued: the workspace's run only
    worlds = load_plan(ROOT / "toy/world_seeds.yaml")
    seeds = [e.overrides.get("world.seed", cfg.world.seed if cfg.world else None) for e in worlds.experiments]
    assert len(set(seeds)) == len(seeds) >= 4 and seeds[0] == 7  # the profile's world, then three or more others
    assert all(set(e.overrides) <= {"world.seed"} and e.seeds == (cfg.train.seed,) for e in worlds.experiments)


def test_the_claims_and_ablations_plans_split_the_full_plans_runs_between_them(tmp_path: Path) -> None:
    full = load_plan(ROOT / "toy/experiments.yaml")
    parts = [load_plan(ROOT / "toy/claims.yaml"), load_plan(ROOT / "toy/ablations.yaml")]

    def runs(plan: ExperimentPlan) -> list[tuple[str, int, str]]:
        return [(e.name, s, json.dumps(e.overrides, sort_keys=True)) for e in plan.experiments for s in e.seeds]

    # the same runs with the same overrides, each in one part only, so the merged table is the full plan's
    assert sorted(runs(parts[0]) + runs(parts[1])) == sorted(runs(full))
    assert parts[0].claims == full.claims
    documents = [plan_document(part, "toy/params.yaml", 0, "m.json", f"t{i}") for i, part in enumerate(parts)]
    shows = [  # both invocations ran on the same workspace (the same cold start)
        _exp_show(
            {run["name"]: eval_document(0.5, 0.1 * index) for run in document["runs"]}
            | {"workspace": eval_document(0.7, 0.3)},
            "m.json",
        )
        for index, document in enumerate(documents)
    ]
    merged = merge_exp_show(shows, "m.json", "all")
    rows = rows_from_exp_show(full, plan_document(full, "toy/params.yaml", 0, "m.json", "all"), merged, tmp_path)
    by_run = {(row["experiment"], row["seed"]): row["em"] for row in rows}
    assert by_run[("zerosearch", 0)] == 0.5 and by_run[("zerosearch", 1)] == 0.25  # workspace; claims part
    assert by_run[("ppo", 0)] == 0.3 and by_run[("no_loss_mask", 2)] == 0.3  # the ablations part
    with pytest.raises(ConfigError, match=r"zerosearch-s1 ran in more than one invocation"):
        merge_exp_show([shows[0], shows[0]], "m.json", "all")
    other = json.loads(json.dumps(shows[1]))
    other[0]["data"]["metrics"]["m.json"]["data"] = eval_document(0.6, 0.3)
    with pytest.raises(ConfigError, match=r"different m.json .* rerun the older plan"):
        merge_exp_show([shows[0], other], "m.json", "all")
    with pytest.raises(ConfigError, match=r"workspace has no m.json"):
        merge_exp_show([_exp_show({"workspace": None}, "m.json"), shows[1]], "m.json", "all")
