"""The config keys the training path reads are the ones train_policy declares to DVC: a key read but not declared
would not re-run training when it changes (simulator.max_length did exactly that). Checked by reading the keys
for real: the simulator section is handed to the training path's entry points behind a proxy that records every
field read, with a real tiny simulator generating real documents."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zerosearch_core.config import PipelineConfig, SimulatorConfig, is_service_key, tracked_keys
from zerosearch_core.search.base import EpisodeContext
from zerosearch_core.simulator.engine import open_simulated_engine, simulator_vllm_settings
from zerosearch_core.stages import train_policy


class Recording:
    """Reads of a frozen config section, by field name."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> Any:
        if name in {f.name for f in dataclasses.fields(self._inner)}:
            self.read.add(name)
        return getattr(self._inner, name)


def test_every_simulator_key_the_training_path_reads_is_declared(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    sim = Recording(dataclasses.replace(cfg.simulator, url=None, engine="hf"))
    settings = simulator_vllm_settings(sim, "float32")  # type: ignore[arg-type]
    assert settings.max_model_len > 0
    engine = open_simulated_engine(sim, tiny_policy_dir, "float32", cfg.rollout.max_doc_chars)  # type: ignore[arg-type]
    for noise in (0.0, 1.0):  # a useful and a noisy search
        session = engine.open_session(EpisodeContext("Who wrote Hamlet?", ("Shakespeare",), noise, 3))
        session.search("Hamlet author", 2)
    declared = {key for entry in train_policy.PARAMS for key in tracked_keys(entry)}
    read = {f"simulator.{name}" for name in sim.read}
    undeclared = sorted(key for key in read if key not in declared and not is_service_key(key))
    assert not undeclared, f"train_policy reads {undeclared} but does not declare them in PARAMS"
    assert "simulator.max_length" in read  # the check saw the read that once went undeclared


def test_the_recording_proxy_sees_reads_of_fields_only(cfg: PipelineConfig) -> None:
    sim = Recording(cfg.simulator)
    assert isinstance(sim.temperature, float) and sim.read == {"temperature"}
    assert sim.__class__ is Recording and sim.read == {"temperature"}  # non-field attributes are not recorded
    assert {f.name for f in dataclasses.fields(SimulatorConfig)} >= sim.read
