"""The shipped accelerate/DeepSpeed launch configs load with accelerate's own parser (they run only on GPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_accelerate_config_loads(path: Path) -> None:
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type == DistributedType.DEEPSPEED
    assert config.mixed_precision == "bf16" and config.num_processes >= 1
    stage = int(path.stem.rsplit("zero", 1)[1])
    assert config.deepspeed_config["zero_stage"] == stage
    assert "zerosearch_core.cli train_policy" in path.read_text().splitlines()[0]


def test_both_zero_stages_ship() -> None:
    assert [p.name for p in CONFIGS] == ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"]
