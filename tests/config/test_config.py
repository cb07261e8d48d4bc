"""The typed config: every profile loads; unknown, missing and ill-typed keys fail with a message naming them."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from scripts.sync_dvc_deps import WORLD_PROFILES  # the generated-world profiles, by folder
from zerosearch_core.config import ConfigError, PipelineConfig, config_to_dict, flatten_config, load_config

ROOT = Path(__file__).resolve().parents[2]
GPU_PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
PROFILES = [ROOT / "params.yaml", *GPU_PROFILES, *(ROOT / folder / "params.yaml" for folder in WORLD_PROFILES)]
OPTIONAL_SECTIONS = {"world"}  # null outside the generated-world profiles


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_every_profile_loads_every_section(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    for section in dataclasses.fields(cfg):
        assert getattr(cfg, section.name) is not None or section.name in OPTIONAL_SECTIONS
    assert (cfg.world is not None) == (path.parent.name in WORLD_PROFILES)
    # round trip: the resolved config is the file's content
    assert config_to_dict(cfg) == yaml.safe_load(path.read_text())


def test_gpu_profiles_name_a_pretrained_qwen_policy_and_all_seven_benchmarks() -> None:
    for path in GPU_PROFILES:
        cfg = load_config(path)
        assert cfg.model.source == "pretrained" and "Qwen2.5" in str(cfg.model.name_or_path)
        datasets = {f.dataset for f in cfg.data.files if f.name in cfg.eval.benchmarks}
        assert datasets == {"nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"}


def test_every_field_is_documented() -> None:
    visited: list[str] = []

    def visit(cls: type) -> None:
        visited.append(cls.__name__)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            for inner in (hints[f.name], *typing.get_args(hints[f.name])):
                if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                    visit(inner)

    visit(PipelineConfig)
    assert {"SearchConfig", "BenchmarkFileConfig", "PathsConfig"} <= set(visited)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_unknown_key_is_named_with_the_fix(tmp_path: Path) -> None:
    raw = _raw()
    raw["search"]["topk"] = 5
    with pytest.raises(ConfigError, match=r"search: unknown key\(s\) \['topk'\].*valid keys are"):
        load_config(_write(tmp_path, raw))


def test_missing_key_is_named(tmp_path: Path) -> None:
    raw = _raw()
    del raw["rollout"]["max_turns"]
    with pytest.raises(ConfigError, match=r"rollout: missing key\(s\) \['max_turns'\]"):
        load_config(_write(tmp_path, raw))


def test_missing_section_is_named(tmp_path: Path) -> None:
    raw = _raw()
    del raw["eval"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['eval'\]"):
        load_config(_write(tmp_path, raw))


def test_wrong_type_and_bad_choice_are_named(tmp_path: Path) -> None:
    raw = _raw()
    raw["search"]["top_k"] = "three"
    with pytest.raises(ConfigError, match=r"search.top_k='three' must be int"):
        load_config(_write(tmp_path, raw))
    raw = _raw()
    raw["search"]["retriever"] = "splade"
    with pytest.raises(
        ConfigError, match=r"search.retriever='splade' is not allowed; choose one of \['bm25', 'dense'\]"
    ):
        load_config(_write(tmp_path, raw))


def test_booleans_are_not_numbers(tmp_path: Path) -> None:
    raw = _raw()
    raw["search"]["top_k"] = True
    with pytest.raises(ConfigError, match="must be int"):
        load_config(_write(tmp_path, raw))


def test_cross_field_rules(tmp_path: Path) -> None:
    raw = _raw()
    raw["eval"]["benchmarks"] = ["nq_dev", "squad_test"]
    with pytest.raises(ConfigError, match=r"eval.benchmarks names \[.squad_test.\], which data.files does not define"):
        load_config(_write(tmp_path, raw))
    raw = _raw()
    raw["model"]["source"] = "pretrained"
    with pytest.raises(ConfigError, match="model.name_or_path is null"):
        load_config(_write(tmp_path, raw))
    raw = _raw()
    raw["data"]["files"][0]["dataset"] = "squad"
    with pytest.raises(ConfigError, match="'squad' is not a known benchmark"):
        load_config(_write(tmp_path, raw))


def test_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --params"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen() -> None:
    cfg = load_config(ROOT / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.top_k = 10  # type: ignore[misc]


def test_flatten_config_covers_every_leaf() -> None:
    flat = flatten_config(load_config(ROOT / "params.yaml"))
    assert flat["model.source"] == "tiny"
    assert flat["eval.benchmarks"].startswith('["nq_dev"')
    assert "tracking.uri" in flat


def test_test_fixture_redirects_every_path(tmp_path: Path) -> None:
    from tests.conftest import shrink_config

    shrunk = shrink_config(load_config(ROOT / "params.yaml"), tmp_path)
    for field in dataclasses.fields(shrunk.paths):
        value = getattr(shrunk.paths, field.name)
        assert value is True if field.name == "outside_project" else value.startswith(str(tmp_path)), field.name


NONSENSE = [
    ("simulator", "max_queue", 0, "simulator.max_queue=0 is out of range; it must be >= 1"),
    ("simulator", "max_queue", -3, ">= 1"),
    ("simulator", "request_timeout_s", 0, "must be > 0"),
    ("simulator", "max_batch_size", 0, ">= 1"),
    ("search", "timeout_s", -5, "search.timeout_s=-5.0 is out of range"),
    ("search", "port", 99999, "<= 65535"),
    ("simulator", "serve_port", 0, ">= 1"),
    ("train", "learning_rate", -0.1, "must be > 0"),
    ("train", "learning_rate", float("nan"), "is not a finite number"),
    ("train", "learning_rate", float("inf"), "is not a finite number"),
    ("train", "warmup_steps", -4, ">= 0"),
    ("simulator", "epochs", -1, "must be > 0"),
    ("simulator", "save_every_steps", 0, ">= 1"),
    ("eval", "benchmarks", [], "must each list at least one entry"),
    ("model", "num_heads", 0, "model.num_heads=0 is out of range"),
    ("train", "gamma", 1.5, "<= 1"),
    ("tracking", "uri", "mlflow.db", "has no scheme MLflow stores runs in"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"), NONSENSE, ids=[f"{s}.{k}={v}" for s, k, v, _ in NONSENSE]
)
def test_nonsense_values_fail_at_load_time_naming_the_key_and_the_bound(
    tmp_path: Path, section: str, key: str, value: object, message: str
) -> None:
    raw = _raw()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_write(tmp_path, raw))


def test_a_pasted_api_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    raw = _raw()
    raw["search"]["web_api_key_env"] = "sk-live-4f9a2c"
    with pytest.raises(ConfigError, match="must name an environment variable") as caught:
        load_config(_write(tmp_path, raw))
    assert "4f9a2c" not in str(caught.value)


def test_a_repeated_key_yaml_syntax_and_encoding_errors_name_the_file_and_place(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"key 'seed' appears twice in one mapping \(lines 3 and \d+\)"):
        load_config(path)
    path.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match=r"params.yaml is not valid YAML at line 2, column 1"):
        load_config(path)
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


def test_the_quickstart_is_the_toy_world_at_smaller_budgets_with_its_own_files() -> None:
    toy, quick = load_config(ROOT / "toy/params.yaml"), load_config(ROOT / "quickstart/params.yaml")
    assert toy.world is not None and quick.world is not None
    assert dataclasses.replace(quick.world, output_dir=toy.world.output_dir) == toy.world  # the same world
    # the same model but for its key/value heads (fewer: the quickstart keeps the faster cold start of drills alone)
    assert dataclasses.replace(quick.model, num_kv_heads=toy.model.num_kv_heads) == toy.model
    assert quick.model.num_kv_heads <= toy.model.num_kv_heads and quick.seed == toy.seed
    assert quick.train.total_steps < toy.train.total_steps and quick.simulator.epochs < toy.simulator.epochs
    assert quick.cold_start.sft_steps <= toy.cold_start.sft_steps
    quick_paths = [str(v) for k, v in dataclasses.asdict(quick.paths).items() if k != "outside_project"]
    assert all(p.startswith("quickstart/") for p in quick_paths), "a quickstart run must not overwrite the toy's"
    assert quick.tracking.experiment != toy.tracking.experiment
