"""The device check's dry mode on the CPU (what CI runs, so the GPU check cannot rot), and its GPU mode where CUDA
is present."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "perf/gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_mode_writes_a_whole_report(tmp_path: Path) -> None:
    assert _gpu_check().main(["--device", "cpu", "--dry", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for name in ("grpo", "ppo"):
        entry = report["loss_agreement"][name]
        assert len(entry["cpu_fp32"]) == len(entry["device_bf16"]) == 2 and entry["within_tolerance"]
        assert entry["cpu_fp32"][1] != entry["cpu_fp32"][0]  # the optimizer step changed the loss
    assert 0 < report["sync_gap"]["max_abs_logprob_gap"] < 1
    for entry in report["profile_shapes"].values():
        assert [run["batch"] for run in entry["runs"]] == [1, 2, 4, 1, 2, 4]
        assert all(run["fits"] and run["tokens_per_s"] > 0 for run in entry["runs"] if "skipped" not in run)
        estimates = [run["plan_estimate_gib"] for run in entry["runs"] if "skipped" not in run]
        assert all(e > 0 for e in estimates) and estimates[0] < estimates[2]  # more sequences, more memory
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Device check on") and "| qwen2.5-7b | 4 |" in summary
    assert "| plan GiB |" in summary and "gpu_tests" not in report  # the tests run on a GPU only


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_training_steps_agree_with_fp32_on_the_gpu(tmp_path: Path) -> None:
    report = _gpu_check().loss_agreement("cuda", seed=0, tolerance=0.05)
    assert report["grpo"]["within_tolerance"] and report["ppo"]["within_tolerance"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_bf16_sync_gap_is_within_the_gpu_profiles_tolerance() -> None:
    gap = _gpu_check().sync_gap("cuda", seed=0, dry=False)
    assert gap["max_abs_logprob_gap"] <= gap["profile_tolerance"], gap


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_memory_plan_is_within_a_quarter_of_the_measured_peak() -> None:
    check = _gpu_check()
    shape = {**check.ARCHITECTURES["qwen2.5-3b"], "num_hidden_layers": 8}  # the 3B width, room on any data-centre GPU
    for checkpointing in (True, False):
        run = check.step_cost(shape, "cuda", batch=1, length=check.PROFILE_SEQUENCE_TOKENS, checkpointing=checkpointing)
        assert run["fits"], run
        assert abs(run["plan_estimate_gib"] - run["peak_memory_gib"]) <= 0.25 * run["peak_memory_gib"], run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("stage", [2, 3])
def test_the_deepspeed_configs_load_under_accelerate(stage: int) -> None:
    pytest.importorskip("deepspeed", reason="the GPU extra installs DeepSpeed")
    import yaml
    from accelerate.utils import DeepSpeedPlugin

    config = yaml.safe_load((ROOT / f"configs/accelerate/deepspeed_zero{stage}.yaml").read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["mixed_precision"] == "bf16"
    options = config["deepspeed_config"]
    plugin = DeepSpeedPlugin(
        zero_stage=options["zero_stage"],
        offload_optimizer_device=options["offload_optimizer_device"],
        offload_param_device=options["offload_param_device"],
        zero3_init_flag=options.get("zero3_init_flag", False),
    )
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == stage
