"""Profile overlays: the resolved files are up to date, overlays cannot add keys, lists replace and mappings merge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from zerosearch_core.config import ConfigError, config_to_dict, load_config
from zerosearch_core.profiles import ProfileError, deep_merge, resolve_profile

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/resolve_profiles.py"
OVERLAYS = sorted((ROOT / "profiles/overlays").glob("*.yaml"))


def test_resolved_profiles_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"run `python scripts/resolve_profiles.py`:\n{result.stdout}{result.stderr}"


def test_every_resolved_file_names_its_overlay_and_equals_it_resolved() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from resolve_profiles import PROFILES  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert {ROOT / o for o in PROFILES.values()} <= set(OVERLAYS)
    for output, overlay in PROFILES.items():
        text = (ROOT / output).read_text()
        assert text.startswith(f"# GENERATED from {overlay} by scripts/resolve_profiles.py;"), output
        assert yaml.safe_load(text) == resolve_profile(ROOT / overlay)
        assert config_to_dict(load_config(ROOT / output)) == yaml.safe_load(text)


def test_an_overlay_key_the_base_lacks_is_named_with_its_file(tmp_path: Path) -> None:
    overlay = tmp_path / "typo.yaml"
    overlay.write_text(f"extends: {ROOT / 'params.yaml'}\ntrain:\n  totl_steps: 30\n")
    with pytest.raises(ProfileError, match=rf"{overlay}: key train.totl_steps is not in the base") as err:
        resolve_profile(overlay)
    assert isinstance(err.value, ConfigError)
    with pytest.raises(ProfileError, match=r"x.yaml: key sectoin is not in the base"):
        deep_merge({"section": {"a": 1}}, {"sectoin": {"a": 2}}, source="x.yaml")


def test_lists_replace_and_mappings_merge() -> None:
    base: dict[str, Any] = {
        "eval": {"modes": ["search", "direct"], "max": 32},
        "data": {"files": [{"name": "a"}, {"name": "b"}]},
    }
    merged = deep_merge(base, {"eval": {"modes": ["search"]}, "data": {"files": [{"name": "c"}]}})
    assert merged == {"eval": {"modes": ["search"], "max": 32}, "data": {"files": [{"name": "c"}]}}
    assert base["eval"]["modes"] == ["search", "direct"], "the base must not change"
    # a null base value (world: null) takes a whole mapping, and a mapping can be replaced by null
    assert deep_merge({"world": None, "n": 1}, {"world": {"seed": 7}}) == {"world": {"seed": 7}, "n": 1}
    assert deep_merge({"world": {"seed": 7}}, {"world": None}) == {"world": None}
    # the base's key order is kept, whatever order the overlay uses
    assert list(deep_merge({"a": 1, "b": 2, "c": 3}, {"c": 30, "a": 10})) == ["a", "b", "c"]


def test_extends_cycles_and_generated_bases_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ProfileError, match="the extends chain loops"):
        resolve_profile(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text(f"extends: {ROOT / 'toy/params.yaml'}\n")
    with pytest.raises(ProfileError, match="is a generated file"):
        resolve_profile(tmp_path / "c.yaml")


def test_load_config_rejects_an_unresolved_overlay(tmp_path: Path) -> None:
    # the extends key is not a config key: only resolved files are parameter files
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "profiles/overlays/gpu_qwen2.5-7b.yaml").read_text())
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extends'\]"):
        load_config(path)
