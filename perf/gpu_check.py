"""The device check: what the GPU profiles' training steps cost and how bf16 changes the numbers, in one command.

Run it whenever a GPU is at hand (at most about 8 minutes on one H100), and in its small dry mode on the CPU (CI
runs that, so it cannot rot)::

    python perf/gpu_check.py --device cuda --out perf/gpu_check_out        # one GPU
    python perf/gpu_check.py --device cpu --dry --out /tmp/gpu_check       # the dry mode (a few seconds)

It needs torch and transformers only (and this file); it downloads nothing. It measures, and writes to
``OUT/report.json`` and ``OUT/summary.md``:

1. **Loss agreement**: the clipped policy loss (GRPO: group-normalised advantages; PPO: the same objective with
   per-token advantages) of the toy policy's architecture on fixed sampled episodes, in float32 on the CPU and in
   bfloat16 on the device, from the same seed, before and after one AdamW step. The relative gap is compared with
   ``--loss-tolerance``.
2. **Profile shapes**: the policy architectures of the GPU profiles (Qwen2.5-3B and 7B, from their published
   configs, random weights) at the profiles' sequence length, for micro-batches of 1, 2, 4 sequences: peak memory,
   seconds per optimizer step, tokens per second, with and without gradient checkpointing. In dry mode the same
   shapes are cut to 2 layers, a small vocabulary and short sequences.
3. **Weight-sync gap**: the largest difference between a bf16 model's per-token log-probs and the float32 log-probs
   of the same weights, which is what the profiles' ``rollout.vllm_sync_tolerance`` (0.1) must cover.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]

ARCHITECTURES: dict[str, dict[str, int]] = {
    # Qwen2.5-3B-Instruct and Qwen2.5-7B-Instruct, config.json on the hub (hidden, layers, heads, kv heads, MLP,
    # vocabulary); the GPU profiles' policies
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, vocab_size=151936),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064),
}  # fmt: skip
TOY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=256,
           vocab_size=1024)  # fmt: skip
"""The toy profile's policy (toy/params.yaml, model section)."""
DRY = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512,
           vocab_size=4096)  # fmt: skip
"""What every profile shape is cut to in dry mode: the same code paths in seconds on a CPU."""
PROFILE_SEQUENCE_TOKENS = 4096
"""``rollout.max_total_tokens`` of the GPU profiles."""


def build(shape: dict[str, int], dtype: torch.dtype, device: str, seed: int, checkpointing: bool = False) -> Any:
    """A Qwen2 causal LM of ``shape`` with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    config = Qwen2Config(**shape, max_position_embeddings=PROFILE_SEQUENCE_TOKENS, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).to(device=device, dtype=dtype)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def token_logprobs(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) log-probs of each next token, in float32."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def policy_loss(
    logprobs: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The clipped surrogate (clip 0.2) averaged over sampled tokens, as the project's ppo_policy_loss computes it."""
    ratio = torch.exp(logprobs - old)
    loss = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 0.8, 1.2))
    return (loss * mask).sum() / mask.sum()


def episodes(shape: dict[str, int], batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Fixed sampled episodes: ids, a loss mask with an inserted (retrieved) block, scores in groups of 4."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, shape["vocab_size"], (batch, length), generator=generator)
    mask = torch.ones(batch, length - 1)
    mask[:, length // 4 : length // 2] = 0  # the retrieved block gets no loss
    scores = torch.rand(batch, generator=generator)
    grouped = scores.view(-1, 4)
    grpo = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)).view(-1, 1)
    ppo = torch.randn(batch, length - 1, generator=generator) * mask
    return {"ids": ids, "mask": mask, "grpo": grpo, "ppo": ppo}


def loss_agreement(device: str, seed: int, tolerance: float) -> dict[str, Any]:
    """GRPO and PPO losses of the toy architecture: float32 on the CPU against bfloat16 on ``device``."""
    data = episodes(TOY, batch=8, length=96, seed=seed)
    report: dict[str, Any] = {"tolerance_relative": tolerance}
    for name in ("grpo", "ppo"):
        losses = {}
        for label, dtype, where in (("cpu_fp32", torch.float32, "cpu"), ("device_bf16", torch.bfloat16, device)):
            model = build(TOY, dtype, where, seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            ids, mask = data["ids"].to(where), data["mask"].to(where)
            advantages = data[name].to(where)
            with torch.no_grad():
                old = token_logprobs(model, ids)
            first = policy_loss(token_logprobs(model, ids), old, advantages, mask)
            first.backward()
            first = first.detach()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                second = policy_loss(token_logprobs(model, ids), old, advantages, mask)
            losses[label] = [first.item(), second.item()]
        gaps = [abs(a - b) / max(abs(a), 1e-6) for a, b in zip(losses["cpu_fp32"], losses["device_bf16"], strict=True)]
        report[name] = {**losses, "relative_gap": gaps, "within_tolerance": max(gaps) <= tolerance}
    return report


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def plan_estimate_gib(shape: dict[str, int], batch: int, length: int, checkpointing: bool) -> float | None:
    """What ``zerosearch plan``'s formulas give for :func:`step_cost`'s run (pure bf16 weights, gradients and AdamW
    states, 8 bytes a parameter, plus activations and logits of the micro-batch), to set beside the measured peak;
    None where the project's code is not beside this file."""
    sys.path.insert(0, str(ROOT))
    try:
        from zerosearch_core.models.memory_plan import LOGIT_BYTES, Architecture
    except ImportError:
        return None
    finally:
        sys.path.remove(str(ROOT))
    arch = Architecture(
        shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"],
        shape["num_key_value_heads"], shape["intermediate_size"], shape["vocab_size"], tied=False,
    )  # fmt: skip
    tokens = batch * length
    total = 8 * arch.params() + tokens * (arch.activation_bytes_per_token(checkpointing) + arch.vocab * LOGIT_BYTES)
    return round(total / 2**30, 2)


def step_cost(shape: dict[str, int], device: str, batch: int, length: int, checkpointing: bool) -> dict[str, Any]:
    """One bf16 forward, backward and AdamW step at (batch, length): seconds, tokens/s and peak memory."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = build(shape, dtype, device, seed=0, checkpointing=checkpointing)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        data = episodes(shape, batch=max(batch, 4), length=length, seed=1)
        ids, mask, adv = (data[k][:batch].to(device) for k in ("ids", "mask", "grpo"))
        timings = []
        for _ in range(2):  # the first step warms up kernels and allocates the optimizer state
            started = time.perf_counter()
            logprobs = token_logprobs(model, ids)
            policy_loss(logprobs, logprobs.detach(), adv, mask).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
        seconds = timings[-1]
        return {
            "batch": batch,
            "tokens": length,
            "gradient_checkpointing": checkpointing,
            "seconds_per_step": round(seconds, 4),
            "tokens_per_s": round(batch * length / seconds, 1),
            "peak_memory_gib": round(_peak_bytes(device) / 2**30, 2),
            "plan_estimate_gib": plan_estimate_gib(shape, batch, length, checkpointing),
            "fits": True,
        }
    except torch.OutOfMemoryError:
        return {"batch": batch, "tokens": length, "gradient_checkpointing": checkpointing, "fits": False}
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def profile_shapes(device: str, dry: bool, deadline: float) -> dict[str, Any]:
    """:func:`step_cost` for each profile architecture, micro-batch and checkpointing setting, until ``deadline``."""
    report: dict[str, Any] = {}
    for name, shape in ARCHITECTURES.items():
        used = DRY if dry else shape
        length = 128 if dry else PROFILE_SEQUENCE_TOKENS
        runs = []
        for checkpointing in (True, False):
            for batch in (1, 2, 4):
                if time.monotonic() > deadline:
                    runs.append({"batch": batch, "gradient_checkpointing": checkpointing, "skipped": "time budget"})
                    continue
                runs.append(step_cost(used, device, batch, length, checkpointing))
        report[name] = {"shape": used, "runs": runs}
    return report


def sync_gap(device: str, seed: int, dry: bool) -> dict[str, Any]:
    """Largest per-token log-prob difference of a bf16 model against the float32 copy of the same weights (random
    weights: a trained model's sharper distributions may differ; the GPU run of a profile's checkpoint is the
    final word)."""
    shape = DRY if dry else {**ARCHITECTURES["qwen2.5-3b"], "num_hidden_layers": 4}  # the 3B width, a few layers
    data = episodes(shape, batch=4, length=256, seed=seed)
    reference = build(shape, torch.float32, device, seed).eval()
    with torch.no_grad():
        exact = token_logprobs(reference, data["ids"].to(device))
        half = token_logprobs(reference.to(torch.bfloat16), data["ids"].to(device))
    gap = (exact - half).abs()
    return {
        "max_abs_logprob_gap": float(gap.max()),
        "mean_abs_logprob_gap": float(gap.mean()),
        "shape": shape,
        "profile_tolerance": 0.1,
    }


def run_gpu_tests() -> dict[str, Any]:
    """The ``gpu``-marked tests of ``tests/test_gpu_check.py`` (bf16 steps, the sync gap, the DeepSpeed configs under
    accelerate, the memory plan against measured peaks), run by pytest in a subprocess without the suite's conftest
    (which needs the whole stack); pytest travels as a wheel where the image lacks it."""
    import subprocess

    command = [sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider", "-m", "gpu"]
    command.append(str(ROOT / "tests/test_gpu_check.py"))
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "tail": "timed out after 300 s"}
    return {"returncode": done.returncode, "tail": (done.stdout + done.stderr)[-2000:]}


def summary_markdown(report: dict[str, Any]) -> str:
    """The short human summary of a report."""
    lines = [f"# Device check on {report['device_name']}", "", f"Mode: {report['mode']}; {report['when']}.", ""]
    for name in ("grpo", "ppo"):
        entry = report["loss_agreement"][name]
        lines.append(
            f"- {name.upper()} loss, CPU fp32 vs device bf16 (before, after one step): {entry['cpu_fp32']} vs "
            f"{entry['device_bf16']}; relative gap {max(entry['relative_gap']):.2e} "
            f"({'within' if entry['within_tolerance'] else 'OVER'} {report['loss_agreement']['tolerance_relative']})"
        )
    gap = report["sync_gap"]
    lines.append(
        f"- bf16 against fp32 log-probs: max {gap['max_abs_logprob_gap']:.3f}, mean {gap['mean_abs_logprob_gap']:.4f}"
    )
    if "gpu_tests" in report:
        tests = report["gpu_tests"]
        verdict = "passed" if tests["returncode"] == 0 else f"FAILED or not run (exit {tests['returncode']})"
        lines.append(f"- gpu-marked tests (tests/test_gpu_check.py): {verdict}")
    lines += [
        "",
        "| architecture | micro-batch | tokens | checkpointing | s/step | tokens/s | peak GiB | plan GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["profile_shapes"].items():
        for run in entry["runs"]:
            cells = [str(run.get(k, "")) for k in ("batch", "tokens", "gradient_checkpointing")]
            if run.get("fits") is False:
                cells += ["out of memory", "", "", ""]
            elif "skipped" in run:
                cells += [run["skipped"], "", "", ""]
            else:
                cells += [str(run[k]) for k in ("seconds_per_step", "tokens_per_s", "peak_memory_gib")]
                cells.append(str(run.get("plan_estimate_gib")))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--dry", action="store_true", help="small shapes (the CPU mode CI runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "perf/gpu_check_out", help="folder for the report")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop measuring shapes after this long")
    parser.add_argument("--loss-tolerance", type=float, default=0.05, help="relative fp32/bf16 loss gap allowed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device; use --device cpu --dry")
    started = time.monotonic()
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "CPU"
    report: dict[str, Any] = {
        "device": args.device,
        "device_name": device_name,
        "mode": "dry" if args.dry else "full",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
        "loss_agreement": loss_agreement(args.device, args.seed, args.loss_tolerance),
        "sync_gap": sync_gap(args.device, args.seed, args.dry),
    }
    report["profile_shapes"] = profile_shapes(args.device, args.dry, started + args.budget_s)
    if args.device.startswith("cuda"):
        report["gpu_tests"] = run_gpu_tests()
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "summary.md").write_text(summary_markdown(report))
    sys.stdout.write(summary_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
