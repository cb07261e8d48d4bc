"""`zerosearch plan`: the per-GPU memory plan of the GPU profiles, its refusals and the fixes it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zerosearch_core.cli import main
from zerosearch_core.models.memory_plan import GIB, QWEN2_5, model_states_bytes

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("gpu_*.yaml"))


def _plan(capsys: pytest.CaptureFixture[str], params: Path, *args: str) -> tuple[int, dict]:
    code = main(["plan", "--params", str(params), *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_model_states_follow_deepspeeds_published_estimates() -> None:
    # DeepSpeed's memory docs: T0_3B (2,851,598,336 parameters), ZeRO-2, one node of 8 GPUs, no offload: 15.93GB a GPU
    assert round(model_states_bytes(2_851_598_336, 0, gpus=8, zero_stage=2) / GIB, 2) == 15.93
    # ... and t5-small (60.5M parameters, largest layer the 16.4M embedding), ZeRO-3 on one GPU: 1.08GB
    assert round(model_states_bytes(60_506_624, 16_449_536, gpus=1, zero_stage=3) / GIB, 2) == 1.08
    # sharding only ever helps (stages 1 and 2 share DeepSpeed's one estimator)
    sizes = [model_states_bytes(7_615_616_512, 544_997_376, gpus=8, zero_stage=s) for s in range(4)]
    assert sizes[0] == 16 * 7_615_616_512 > sizes[1] == sizes[2] > sizes[3]


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_gpu_profile_fits_eight_80_gib_gpus_and_prints_a_table_per_gpu(
    profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = yaml.safe_load(profile.read_text())["simulator"]["url"] is not None
    extra = ["--simulator-gpus", "2"] if served else []
    assert main(["plan", "--params", str(profile), "--gpus", "8", "--gpu-memory", "80", *extra]) == 0
    out = capsys.readouterr().out
    assert f"{8 - len(extra)} training GPU(s), 80 GiB each" in out and "It fits." in out
    micro = 4 if served else 1  # the profiles' train.micro_batch_size
    parts = ["policy: weights, gradients, AdamW", "reference policy (bf16)", f"activations ({micro} x 4096 tokens)"]
    for part in [*parts, "logits of a micro-batch", "vLLM policy engine (30% of the GPU)"]:
        assert f"| {part} |" in out
    if served:  # the 14B simulator on two GPUs of its own, tensor-parallel
        assert "2 simulator (TP 2, 1 replica(s)) GPU(s)" in out and "weights (bf16, 1/2 of them) | 13.8 |" in out
    else:  # the simulator's in-process vLLM engine takes its share of every training GPU
        assert "| simulator, vLLM in process (30% of the GPU) | 24.0 |" in out


def test_a_plan_that_does_not_fit_exits_2_with_fixes_that_do_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = yaml.safe_load((ROOT / "profiles/gpu_qwen2.5-3b.yaml").read_text())
    params["train"].update(micro_batch_size=None, gradient_checkpointing=False)  # the whole batch in one pass
    unsplit = tmp_path / "unsplit.yaml"
    unsplit.write_text(yaml.safe_dump(params))
    code, plan = _plan(capsys, unsplit, "--gpus", "8", "--gpu-memory", "80")
    assert code == 2 and not plan["fits"]
    (training,) = plan["gpus"]
    assert training["parts_gib"]["activations (320 x 4096 tokens)"] > 1000 and training["total_gib"] > 80
    assert plan["fixes"] == ["train.micro_batch_size: 1 and train.gradient_checkpointing: true"]
    params["train"].update(micro_batch_size=1, gradient_checkpointing=True)  # the fix, applied
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(params))
    code, plan = _plan(capsys, fixed, "--gpus", "8", "--gpu-memory", "80")
    assert code == 0 and plan["fits"] and plan["gpus"][0]["total_gib"] <= 80


def test_a_gpu_too_small_for_the_engines_says_which_budget_and_what_to_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, plan = _plan(capsys, ROOT / "profiles/gpu_qwen2.5-7b.yaml", "--gpus", "1", "--gpu-memory", "24")
    assert code == 2 and not plan["fits"]
    note = plan["gpus"][0]["notes"][0]
    assert note.startswith("DOES NOT FIT: the policy engine's budget (7.2 GiB) cannot hold its weights (14.2 GiB)")
    assert "raise its vllm_gpu_memory_utilization" in note
    assert round(QWEN2_5["qwen2.5-7b"].params() * 2 / GIB, 1) == 14.2


def test_an_impossible_request_is_one_clear_line(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    profile = str(ROOT / "profiles/gpu_qwen2.5-7b-sim14b.yaml")
    assert main(["plan", "--params", profile, "--gpus", "2", "--gpu-memory", "80", "--simulator-gpus", "2"]) == 2
    assert "--simulator-gpus 2 leaves no GPU of the 2 for training" in caplog.text
    assert main(["plan", "--params", profile, "--gpus", "8", "--gpu-memory", "80", "--simulator-gpus", "3",
                 "--simulator-tp", "2"]) == 2  # fmt: skip
    assert "--simulator-tp 2 must divide --simulator-gpus 3" in caplog.text
