"""Command line: one subcommand per DVC stage, each logged as one MLflow run.

Usage::

    python -m zerosearch_core.cli <stage> --params params.yaml     # or: zerosearch <stage> --params params.yaml
    zerosearch --help                                              # lists the stages

Stages (in DAG order): ``generate_world`` (toy profile only, see ``toy/dvc.yaml``), ``prepare_data``,
``build_index``, ``init_policy``, ``collect_trajectories``, ``build_simulator_sft``, ``finetune_simulator``,
``train_policy``, ``evaluate``. Services, which run until interrupted: ``serve_retriever`` (the index over HTTP) and
``serve_simulator`` (an OpenAI-compatible simulator).
Overrides go through the parameter file or ``dvc exp run -S section.key=value``; there is no flag per field.

This is the only module that talks to MLflow: every stage run records the resolved config, ``params.yaml``, the git
commit and the ``dvc.lock`` hash as tags, its metrics, and its artifacts, in the experiment ``tracking.experiment``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

try:
    from tqdm import tqdm
except ModuleNotFoundError as exc:  # a Python without the project installed: say which, and what to do
    raise SystemExit(
        f"zerosearch: {sys.executable} does not have the project's packages ({exc.name} is missing). "
        "Activate its environment (source .venv/bin/activate) or create it (bash scripts/setup.sh); "
        "dvc.yaml's stage commands find .venv themselves through scripts/stage-python."
    ) from exc

import yaml

import mlflow
from zerosearch_core.artifacts import check_replaceable, file_sha256
from zerosearch_core.config import ConfigError, PipelineConfig, config_to_dict, flatten_config, load_config
from zerosearch_core.data.benchmarks import SourceFileError
from zerosearch_core.data.corpus import CorpusError
from zerosearch_core.errors import DataValidationError
from zerosearch_core.rl import distributed
from zerosearch_core.search.base import SearchBackendError
from zerosearch_core.stages import StageHooks, StageResult
from zerosearch_core.stages.registry import SERVICES, STAGES

logger = logging.getLogger("zerosearch_core.cli")


PIPELINE_WRITTEN = ("dvc.lock", "*/dvc.lock", "metrics", "*/metrics", "toy/results")
"""Tracked files that DVC and the pipeline themselves rewrite during a run; they do not make the code dirty."""


def git_commit() -> tuple[str, list[str]]:
    """The checked-out commit, with ``-dirty`` when tracked files other than the pipeline's own outputs
    (:data:`PIPELINE_WRITTEN`) have changes, and those files; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        excluded = [f":(exclude,glob){pattern}" for pattern in PIPELINE_WRITTEN]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            capture_output=True,
            text=True,
        )
        changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
        return sha + ("-dirty" if changed else ""), changed
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []


def changed_params(params_path: Path, base: str | None = None) -> list[str]:
    """``key=value`` for each parameter of ``params_path`` that differs from the same file at git revision ``base``
    (``HEAD`` when None): the ``-S`` overrides of a ``dvc exp run`` or a flow run's ``overrides``, sorted.

    Empty outside git, or when the file is new at ``base``.
    """
    shown = subprocess.run(["git", "show", f"{base or 'HEAD'}:./{params_path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        return []
    before = _flat_params(yaml.safe_load(shown.stdout) or {})
    after = _flat_params(yaml.safe_load(params_path.read_text()) or {})
    return sorted(f"{key}={value}" for key, value in after.items() if before.get(key, "<unset>") != value)


def _flat_params(node: object, prefix: str = "") -> dict[str, str]:
    """A parsed YAML document as ``dotted.key -> JSON of the value`` (mappings descended into, lists kept whole).

    >>> _flat_params({"train": {"seed": 3, "algorithm": "grpo"}, "tags": ["a"]})
    {'train.seed': '3', 'train.algorithm': '"grpo"', 'tags': '["a"]'}
    """
    if not isinstance(node, dict):
        return {prefix: json.dumps(node, sort_keys=True)}
    flat: dict[str, str] = {}
    for key, value in node.items():
        flat.update(_flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def mlflow_run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person finds an MLflow run: its page on a tracking server, else its id and store.

    >>> mlflow_run_link("http://127.0.0.1:5000", "1", "ab12")
    'http://127.0.0.1:5000/#/experiments/1/runs/ab12'
    >>> mlflow_run_link("sqlite:///mlflow/mlflow.db", "1", "ab12")
    'run ab12 of experiment 1 in sqlite:///mlflow/mlflow.db'
    """
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} of experiment {experiment_id} in {uri}"


MLFLOW_RUN_LINE = "MLflow run: "
"""How a stage announces its run on stderr; the Prefect stage task reads it back for its artifact."""


def cpu_description() -> str:
    """The CPU and the widest vector extensions it has, e.g. ``Intel(R) Xeon(R) Processor (x86_64: avx2 avx512 amx)``.

    Tagged on every run: float32 kernels (oneDNN, MKL) pick their code path by these extensions, so long CPU
    trainings are bit-identical on one kind of CPU and differ across kinds (docs/toy-world.md: "Why the cold
    start changed").
    """
    model, flags = "unknown CPU", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = (("avx2", "avx2"), ("avx512f", "avx512"), ("amx_tile", "amx"), ("asimd", "neon"), ("sve", "sve"))
    extensions = " ".join(name for flag, name in wanted if flag in flags) or "none known"
    return f"{model} ({platform.machine()}: {extensions})"


def profile_name(params_path: Path) -> str:
    """The profile a parameter file is: its stem, or its folder for ``<folder>/params.yaml`` (``toy``).

    >>> profile_name(Path("toy/params.yaml")), profile_name(Path("params.yaml")), profile_name(Path("p/gpu.yaml"))
    ('toy', 'params', 'gpu')
    """
    return params_path.parent.name if params_path.stem == "params" and params_path.parent.name else params_path.stem


def parent_run_id(group: str, tags: dict[str, str]) -> str:
    """The id of the MLflow run that groups one pipeline run or ``dvc exp`` (created on first use)."""
    found = mlflow.search_runs(filter_string=f"tags.run_group = '{group}' and tags.stage = 'pipeline'", max_results=1)
    if len(found):
        return str(found.iloc[0]["run_id"])
    with mlflow.start_run(
        run_name=f"pipeline · {group}", tags={**tags, "stage": "pipeline", "run_group": group}
    ) as run:
        return str(run.info.run_id)


def tracking_uri(cfg: PipelineConfig) -> str:
    """``MLFLOW_TRACKING_URI`` when set (a team's tracking server, or the workspace's store for experiments that DVC
    runs in temporary copies), else ``tracking.uri``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///`` URI made absolute (so a process in another folder reaches the same store).

    >>> absolute_tracking_uri("http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


@contextmanager
def stage_run(cfg: PipelineConfig, stage: str, params_path: Path) -> Iterator[None]:
    """One MLflow run for one stage, with the config, provenance tags and a status tag on failure."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None and uri.startswith(("http://", "https://")):
        mlflow.create_experiment(cfg.tracking.experiment)  # a tracking server: its own (proxied) artifact store
    elif experiment is None:
        artifact_root = (Path("mlflow") / "artifacts").resolve()
        artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=artifact_root.as_uri())
    mlflow.set_experiment(cfg.tracking.experiment)
    lock = params_path.parent / "dvc.lock"  # the lock file beside the parameter file (toy/dvc.lock for toy/)
    commit, changed = git_commit()
    profile = profile_name(params_path)
    label = os.environ.get("DVC_EXP_NAME") or profile  # what the run belongs to: the dvc exp, else the profile
    tags = {
        "stage": stage,
        "git_commit": commit,
        "dvc_lock_sha256": file_sha256(lock) if lock.is_file() else "none",
        "params_file": str(params_path),
        "profile": profile,
        "cpu": cpu_description(),
    }
    if changed:
        tags["git_changed_files"] = ", ".join(changed)[:4000]
    if os.environ.get("ZEROSEARCH_PIPELINE_RUN"):
        tags["pipeline_run"] = os.environ["ZEROSEARCH_PIPELINE_RUN"]
    if os.environ.get("ZEROSEARCH_PIPELINE_RUN_URL"):  # the Prefect flow run's page, for the way back
        tags["prefect_flow_run_url"] = os.environ["ZEROSEARCH_PIPELINE_RUN_URL"]
    changed_keys = changed_params(params_path, os.environ.get("DVC_EXP_BASELINE_REV"))
    tags["changed_params"] = ", ".join(changed_keys)[:4000] if changed_keys else "none"
    for variable, tag in (("DVC_EXP_NAME", "dvc_experiment"), ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev")):
        if os.environ.get(variable):  # set by DVC for the stages of a `dvc exp run`
            tags[tag] = os.environ[variable]
    # One parent per dvc exp or Prefect flow run, its stage runs nested under it; a lone stage stands alone.
    group = os.environ.get("DVC_EXP_NAME") or os.environ.get("ZEROSEARCH_PIPELINE_RUN")
    parent = parent_run_id(group, {k: v for k, v in tags.items() if k != "stage"}) if group else None
    if group is not None:
        tags["run_group"] = group
    run_name = f"{stage} · {label} · {uuid.uuid4().hex[:6]}"
    with mlflow.start_run(run_name=run_name, tags=tags, parent_run_id=parent) as run:
        link = mlflow_run_link(uri, run.info.experiment_id, run.info.run_id)
        sys.stderr.write(f"{MLFLOW_RUN_LINE}{link}\n")  # for the Prefect stage task, which reads it back
        sys.stderr.flush()
        mlflow.log_params(flatten_config(cfg))
        mlflow.log_artifact(str(params_path), artifact_path="config")
        mlflow.log_dict(config_to_dict(cfg), "config/resolved_config.yaml")
        started = time.perf_counter()
        try:
            yield
        finally:
            mlflow.log_metric("stage_seconds", time.perf_counter() - started)


def log_result(result: StageResult) -> None:
    """Log a stage's metrics, tags and artifacts (folders go in whole)."""
    if result.tags:
        mlflow.set_tags(result.tags)
    if result.metrics:
        mlflow.log_metrics({_metric_key(k): v for k, v in result.metrics.items()})
    for path in result.artifacts:
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.is_file():
            mlflow.log_artifact(str(path))


def _metric_key(key: str) -> str:
    # MLflow allows letters, digits, _ - . space / in metric names.
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


def log_training_step(metrics: dict[str, float], step: int) -> None:
    """Log one training step's metrics at that step."""
    mlflow.log_metrics({f"train/{_metric_key(k)}": v for k, v in metrics.items() if k != "step"}, step=step)


def tqdm_progress(total: int, description: str) -> Callable[[int], None]:
    """A progress callback that draws a tqdm bar on stderr and closes it when ``total`` is reached."""
    bar = tqdm(total=total, desc=description, unit="q", leave=False, file=sys.stderr)

    def advance(count: int) -> None:
        bar.update(count)
        if bar.n >= total:
            bar.close()

    return advance


def run_stage(stage: str, params_path: Path) -> int:
    """Load the config, run one stage inside its MLflow run, and log what it produced."""
    cfg = load_config(params_path)
    module = importlib.import_module(f"zerosearch_core.stages.{stage}")
    if not distributed.is_main_process():  # a non-zero rank of `accelerate launch`: rank 0 owns the MLflow run
        module.run(cfg, StageHooks(progress=None, log_step=None))
        return 0
    with stage_run(cfg, stage, params_path):
        try:
            result = module.run(cfg, StageHooks(progress=tqdm_progress, log_step=log_training_step))
        except DataValidationError as err:
            mlflow.set_tag("status", "validation_failed")
            if err.report_dir.is_dir():
                mlflow.log_artifacts(str(err.report_dir), artifact_path=err.report_dir.name)
            raise
        log_result(result)
        mlflow.set_tag("status", "ok")
    return 0


def serve(service: str, params_path: Path, engine: Literal["hf", "vllm"] | None = None, port: int | None = None) -> int:
    """Run a service until interrupted (``engine`` overrides ``simulator.engine``; ``port`` is the search
    simulator's)."""
    cfg = load_config(params_path)
    if engine is not None:
        cfg = dataclasses.replace(cfg, simulator=dataclasses.replace(cfg.simulator, engine=engine))
    module = importlib.import_module(f"zerosearch_core.services.{service.removeprefix('serve_')}")
    if port is not None:
        module.run(cfg, port)
    else:
        module.run(cfg)
    return 0


TOOLS: dict[str, str] = {
    "experiment_plan": "Print (JSON) the runs of an experiment plan with their `dvc exp run -S` arguments.",
    "experiment_results": "Write the results table (Markdown, JSON, plot) of finished runs and log it to MLflow.",
}
"""Commands the experiment flow (flows/toy.py) calls around `dvc exp run`; see
zerosearch_core.evaluation.experiments."""


def experiment_tool(tool: str, args: argparse.Namespace) -> int:
    """Run one of :data:`TOOLS`."""
    experiments = importlib.import_module(
        "zerosearch_core.evaluation.experiments"
    )  # by name, like the stages: not a DVC dep
    cfg = load_config(args.params)
    plan = experiments.load_plan(args.plan)
    document = experiments.plan_document(plan, str(args.params), cfg.train.seed, cfg.paths.eval_metrics, args.tag)
    if tool == "experiment_plan":
        document["tracking_uri"] = absolute_tracking_uri(tracking_uri(cfg))
        sys.stdout.write(json.dumps(document) + "\n")
        return 0
    exp_show = json.loads(Path(args.exp_show).read_text())
    rows = experiments.rows_from_exp_show(plan, document, exp_show, Path(args.out) / "runs")
    commit, _ = git_commit()
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    provenance = f"Generated by `zerosearch experiment_results` at commit {commit} on {made}."
    table = experiments.write_results(plan, rows, Path(args.out), args.title, provenance)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run(run_name="results", tags={"stage": "results", "git_commit": git_commit()[0]}):
        mlflow.log_metrics({f"em.{_metric_key(row['name'])}": row["em_mean"] for row in table})
        mlflow.log_artifacts(str(args.out), artifact_path="results")
    for row in table:
        logger.info("%s: EM %.1f ± %.1f (n=%d)", row["label"], 100 * row["em_mean"], 100 * row["em_std"], row["n"])
    return 0


CHECK_PARAMS = "check_params"
CHECK_PARAMS_HELP = (
    "Validate a parameter file, optionally setting --set KEY=VALUE overrides in it first (as `dvc exp run -S` does; "
    "nothing is written when a value is invalid); prints JSON with the pipeline it belongs to and its metrics path."
)


def check_params(args: argparse.Namespace) -> int:
    """Run ``zerosearch check_params``: what the Prefect flow calls before it runs a stage."""
    from zerosearch_core.artifacts import locked, write_text_atomically
    from zerosearch_core.profiles import SECRET_ADVICE, override_params, secret_overrides, shown_value

    params = Path(args.params)
    overrides: dict[str, str] = {}
    for position, item in enumerate(args.set or [], start=1):
        key, sep, value = item.partition("=")
        if not sep or not key:  # the item is not echoed: it may be a secret pasted in the wrong place
            raise ConfigError(
                f"--set number {position} is not KEY=VALUE (no '=' or no key); write e.g. --set train.seed=3."
            )
        overrides[key.strip()] = value
    secrets = secret_overrides(overrides) if args.refuse_secrets else []
    if secrets:  # named, never echoed; nothing is written
        raise ConfigError(f"the override(s) {secrets} carry a secret. {SECRET_ADVICE}.")
    pipeline = params.parent / "dvc.yaml"
    if not pipeline.is_file():
        raise ConfigError(
            f"{params} belongs to no pipeline (no dvc.yaml beside it); use params.yaml or toy/params.yaml, or copy a "
            "GPU profile over params.yaml."
        )
    if overrides:
        with locked(params):  # two runs at once: one after the other, neither override lost
            write_text_atomically(params, override_params(params, overrides))
        for key, value in overrides.items():
            logger.info("Set %s = %s in %s", key, shown_value(key, value), params)
    cfg = load_config(params)
    document = {"params": str(params), "pipeline": str(pipeline), "eval_metrics": cfg.paths.eval_metrics}
    shown = {key: shown_value(key, value) for key, value in overrides.items()}
    sys.stdout.write(json.dumps({**document, "overrides": shown}) + "\n")
    return 0


def _say(text: str = "") -> None:
    """A command's own output (a table, JSON) on stdout; logging is for what happens on the way."""
    sys.stdout.write(f"{text}\n")


PLAN = "plan"
PLAN_HELP = (
    "Print the memory plan of a profile's RL stage per GPU (policy, reference, critic, activations, vLLM, "
    "simulator) for the GPUs you would rent; exits 2 with the fixes when it does not fit."
)


def memory_plan(args: argparse.Namespace) -> int:
    """Run ``zerosearch plan``: the per-GPU memory table of ``--params`` on ``--gpus`` GPUs of ``--gpu-memory``."""
    from zerosearch_core.models.memory_plan import (
        PlanRequest,
        PlanSections,
        fits,
        fixes,
        make_plan,
        plan_json,
        plan_table,
        policy_architecture,
    )

    full = load_config(args.params)
    cfg = PlanSections(full.model, full.train, full.rollout, full.simulator)
    stage = args.zero_stage
    if stage is None:  # the docs' advice: ZeRO-2 up to the 3B policy, ZeRO-3 from 7B on
        stage = 3 if policy_architecture(cfg).params() > 5e9 else 2
    request = PlanRequest(args.gpus, args.gpu_memory, stage, args.simulator_gpus, args.simulator_tp)
    plans = make_plan(cfg, request)
    ok = fits(plans)
    suggestions = [] if ok else fixes(cfg, request)
    if args.json:
        _say(json.dumps(plan_json(plans, suggestions), indent=2))
    else:
        _say(f"## Memory plan: {args.params}, {args.gpus} GPU(s) of {args.gpu_memory:g} GiB, ZeRO-{stage}\n")
        _say(plan_table(plans))
        if ok:
            _say("It fits. These are estimates (docs/gpu.md#memory-plan): keep some headroom.")
        else:
            _say("It does NOT fit. Any one of these makes it fit:" if suggestions else "It does NOT fit, and no "
                  "single change tried here fixes it: use GPUs with more memory or fewer, larger ones.")  # fmt: skip
            _say("\n".join(f"- {fix}" for fix in suggestions))
    return 0 if ok else 2


FETCH_DATA = "fetch_data"
FETCH_DATA_HELP = (
    "Get the benchmark files and the corpus that data/sources.yaml pins (GitHub at a commit, the Hugging Face hub, or "
    "a local copy), each checked against its size and SHA-256, laid out as data.source_dir expects."
)


def fetch_data(args: argparse.Namespace) -> int:
    """Run ``zerosearch fetch_data``."""
    from zerosearch_core.data.sources import SourceError, fetch, load_catalog, offline_default, select

    sources = select(load_catalog(args.catalog), args.only)
    try:
        report = fetch(sources, args.dest, args.from_local, args.github_url, args.hf_cache,
                       args.offline or offline_default())  # fmt: skip
    except SourceError as err:
        logger.error("%s", err)
        return 1
    sys.stdout.write(f"{len(report['files'])} file(s) in {args.dest} (report: {args.dest / 'fetch_report.json'}); "
                     "point data.source_dir at it.\n")  # fmt: skip
    return 0


CONFIG = "config"
CONFIG_HELP = "Show what parameters mean: `config show KEY...` prints each key's help, type, bounds and value."


def config_show(args: argparse.Namespace) -> int:
    """Run ``zerosearch config show [KEY ...]``: a key, a section, or (none given) every key."""
    from zerosearch_core.config import describe_keys

    cfg = load_config(args.params)
    entries = [entry for key in (args.keys or [""]) for entry in describe_keys(cfg, key)]
    if args.json:
        _say(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        bounds = ", ".join(
            f"{'>=' if b == 'ge' else '>' if b == 'gt' else '<='} {v}" for b, v in entry["bounds"].items()
        )
        kind = entry["type"] + (f" ({bounds})" if bounds else "") + (", service knob: not tracked" if entry["service"]
                                                                        else "")  # fmt: skip
        _say(f"{entry['key']} = {json.dumps(entry['value'])}\n    {kind}\n    {entry['help']}")
    return 0


EVALUATE_CHECKPOINT = "evaluate_checkpoint"
EVALUATE_CHECKPOINT_HELP = (
    "Score any model folder (e.g. a released ZeroSearch or Search-R1 policy) against a retriever URL or the local "
    "index, on chosen benchmarks, with the evaluate stage's protocol; writes the same card and metrics."
)


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Run ``zerosearch evaluate_checkpoint``: the evaluate stage's scoring of one model, without training."""
    from zerosearch_core.search.http import HttpSearchEngine
    from zerosearch_core.search.registry import open_search_engine
    from zerosearch_core.stages.evaluate import evaluate_models

    cfg = load_config(args.params)
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"--model {model_dir} is no model folder (no config.json); pass a save_pretrained folder.")
    known = [spec.name for spec in cfg.data.files]
    benchmarks = args.benchmarks.split(",") if args.benchmarks else list(cfg.eval.benchmarks)
    unknown = [name for name in benchmarks if name not in known]
    if unknown:
        raise ConfigError(f"--benchmarks names {unknown}, which data.files of {args.params} lacks; use {known}.")
    out = Path(args.out) if args.out else Path("data/eval_checkpoints") / model_dir.name
    check_replaceable(out, "--out")  # before the evaluation, not after it
    template = None
    if args.prompt_file:
        template = Path(args.prompt_file).read_text(encoding="utf-8")
        if "{question}" not in template:
            raise ConfigError(f"--prompt-file {args.prompt_file} has no {{question}} placeholder; add one.")
    hooks = StageHooks(progress=tqdm_progress)
    with stage_run(cfg, EVALUATE_CHECKPOINT, Path(args.params)):
        mlflow.set_tags({"model_dir": str(model_dir.resolve()), "retriever": args.retriever_url or "local index"})
        engines = (
            nullcontext(HttpSearchEngine(args.retriever_url, cfg.search.timeout_s, cfg.search.max_retries))
            if args.retriever_url
            else open_search_engine(cfg.search, Path(cfg.paths.index_dir))
        )
        with engines as engine:
            result = evaluate_models(cfg, {"": model_dir}, engine, benchmarks, out, out / "eval.json", hooks, template)
        log_result(result)
        mlflow.set_tag("status", "ok")
    logger.info("Wrote %s and %s", out / "eval_card.md", out / "eval.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per stage, each taking ``--params`` only."""
    parser = argparse.ArgumentParser(
        prog="zerosearch",
        description="ZeroSearch pipeline stages. Each runs one DVC stage's work and logs one MLflow run.",
    )
    commands = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, help_text in STAGES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
    for name, help_text in TOOLS.items():
        tool = commands.add_parser(name, help=help_text, description=help_text)
        tool.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
        tool.add_argument("--plan", type=Path, required=True, help="experiment plan, e.g. toy/experiments.yaml")
        tool.add_argument("--tag", required=True, help="suffix that makes this invocation's experiment names unique")
        if name == "experiment_results":
            tool.add_argument("--exp-show", type=Path, required=True, help="`dvc exp show --json` output")
            tool.add_argument("--out", type=Path, required=True, help="folder for results.md/.json/.png")
            tool.add_argument("--title", default="Results", help="title of the table")
    check = commands.add_parser(CHECK_PARAMS, help=CHECK_PARAMS_HELP, description=CHECK_PARAMS_HELP)
    check.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
    check.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override, e.g. train.seed=3 (repeat)")
    check.add_argument(
        "--refuse-secrets",
        action="store_true",
        help="refuse overrides that carry a secret (the flows pass it: Prefect stores a flow run's parameters)",
    )
    checkpoint = commands.add_parser(
        EVALUATE_CHECKPOINT, help=EVALUATE_CHECKPOINT_HELP, description=EVALUATE_CHECKPOINT_HELP
    )
    checkpoint.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
    checkpoint.add_argument("--model", required=True, help="model folder (save_pretrained: config.json, weights)")
    checkpoint.add_argument("--retriever-url", help="a Search-R1-compatible /retrieve server; default: the local index")
    checkpoint.add_argument("--benchmarks", help="comma-separated names from data.files; default: eval.benchmarks")
    checkpoint.add_argument("--out", help="output folder; default: data/eval_checkpoints/<model folder name>")
    checkpoint.add_argument(
        "--prompt-file",
        help="a search-mode prompt with {question} (e.g. the one a released checkpoint was trained with); "
        "default: this project's",
    )
    fetcher = commands.add_parser(FETCH_DATA, help=FETCH_DATA_HELP, description=FETCH_DATA_HELP)
    fetcher.add_argument("--dest", type=Path, required=True, help="folder to fill, e.g. data/external/benchmarks")
    fetcher.add_argument("--only", default="all", choices=["all", "benchmarks", "corpus"], help="which files")
    fetcher.add_argument("--from-local", type=Path, help="a folder that already has (some of) the files")
    fetcher.add_argument("--offline", action="store_true", help="no downloads (also when HF_HUB_OFFLINE is set)")
    fetcher.add_argument("--catalog", type=Path, default=None, help="sources file (default data/sources.yaml)")
    fetcher.add_argument("--github-url", default="https://raw.githubusercontent.com", help=argparse.SUPPRESS)
    fetcher.add_argument("--hf-cache", default=None, help="huggingface_hub cache folder (default: its own)")
    config = commands.add_parser(CONFIG, help=CONFIG_HELP, description=CONFIG_HELP)
    config.add_argument("action", choices=["show"], help="show: print keys with help, type, bounds and value")
    config.add_argument("keys", nargs="*", metavar="KEY", help="dotted keys or sections (none: every key)")
    config.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
    config.add_argument("--json", action="store_true", help="print JSON instead of text")
    plan = commands.add_parser(PLAN, help=PLAN_HELP, description=PLAN_HELP)
    plan.add_argument("--params", type=Path, required=True, help="a profile, e.g. profiles/gpu_qwen2.5-7b.yaml")
    plan.add_argument("--gpus", type=int, required=True, help="GPUs in all (training plus --simulator-gpus)")
    plan.add_argument("--gpu-memory", type=float, required=True, help="memory of one GPU in GiB, e.g. 80")
    plan.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], help="default: 2 up to 5B parameters, else 3")
    plan.add_argument("--simulator-gpus", type=int, default=0, help="GPUs set aside for a served simulator")
    plan.add_argument("--simulator-tp", type=int, help="tensor parallelism of the served simulator (default: all)")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    for name, help_text in SERVICES.items():
        service = commands.add_parser(name, help=help_text, description=f"{help_text} Runs until interrupted.")
        service.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (params.yaml)")
        if name == "serve_search_simulator":
            service.add_argument("--port", type=int, default=8002, help="port of /retrieve (default 8002)")
        if name in ("serve_simulator", "serve_search_simulator"):
            service.add_argument(
                "--engine",
                choices=["hf", "vllm"],
                help="override simulator.engine: hf serves with this project's batching server, vllm with vLLM's "
                "OpenAI server",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zerosearch`` and ``python -m zerosearch_core.cli``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "httpx", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.stage in SERVICES:
            return serve(args.stage, args.params, getattr(args, "engine", None), getattr(args, "port", None))
        if args.stage in TOOLS:
            return experiment_tool(args.stage, args)
        if args.stage == EVALUATE_CHECKPOINT:
            return evaluate_checkpoint(args)
        if args.stage == CHECK_PARAMS:
            return check_params(args)
        if args.stage == PLAN:
            return memory_plan(args)
        if args.stage == CONFIG:
            return config_show(args)
        if args.stage == FETCH_DATA:
            return fetch_data(args)
        return run_stage(args.stage, args.params)
    except ConfigError as err:
        logger.error("Configuration error: %s", err)
        return 2
    except DataValidationError as err:
        logger.error("%s", err)
        return 1
    except (SourceFileError, CorpusError) as err:
        logger.error("Input data error: %s", err)
        return 1
    except SearchBackendError as err:
        logger.error(
            "Search backend failed: %s. Check that the retriever or simulator server answers (search.url, "
            "simulator.url), or raise search.max_error_rate to tolerate some failures.",
            err,
        )
        return 1
    except PermissionError as err:
        logger.error("Permission denied on %s: make it writable or point the paths section elsewhere.", err.filename)
        return 1
    except FileNotFoundError as err:
        logger.error("%s", err)  # the library's messages name the stage or setting that makes the file
        return 1
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        logger.error("No space left on the device while writing %s: free space or point paths elsewhere.", err.filename)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
