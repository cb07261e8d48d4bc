"""A memory plan before renting GPUs: what one profile's RL stage needs on each GPU (``zerosearch plan``).

Model states (weights, gradients, AdamW) follow DeepSpeed's own estimators for ZeRO-2 and ZeRO-3 without offload
(``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``: ``4P + 16P/N`` and
``4L + 18P/N`` bytes for ``P`` parameters, largest layer ``L``, ``N`` GPUs); stage 0 is plain mixed precision
(``16P``), and stage 1 shares stage 2's estimator, as in DeepSpeed. Activations are counted per micro-batch: with
gradient checkpointing each layer keeps its input (``2h`` bytes a token) and one layer at a time holds its full
activations; without it every layer does. The logits of a micro-batch (bf16, their float32 log-softmax and the
gradient) are counted apart, because with a 152k vocabulary they outgrow everything else at 4,096 tokens. vLLM
engines in the training process take ``vllm_gpu_memory_utilization`` of each GPU, and that budget must hold the
engine's copy of the weights plus the KV cache of at least one whole episode.

The figures are estimates, with no GPU measurement behind them yet (docs/gpu.md says when the device check has run);
a plan that fits by less than :data:`HEADROOM` is reported as tight.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerosearch_core.config import ConfigError, ModelConfig, RolloutConfig, SimulatorConfig, TrainConfig

GIB = 2**30
CUDA_CONTEXT_BYTES = int(1.0 * GIB)
"""What every CUDA process holds before any tensor (context, kernels, allocator slack): about 1 GiB."""
VLLM_OVERHEAD_BYTES = int(1.0 * GIB)
"""What a vLLM engine's budget spends beside weights and KV cache (activations of its forward, CUDA graphs)."""
LOGIT_BYTES = 8
"""Bytes per logit of a training micro-batch: the bf16 logits (2), their float32 log-softmax (4), the gradient (2)."""
HEADROOM = 0.10
"""A plan whose total is above ``1 - HEADROOM`` of the GPU is tight: fragmentation and spikes can tip it over."""
VLLM_SERVER_UTILIZATION = 0.9
"""vLLM's default ``--gpu-memory-utilization`` for a simulator served on GPUs of its own."""


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer (Qwen2-style: q/k/v biases, gated MLP, RMSNorm)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        kv = self.kv_heads * (self.hidden // self.heads)
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + self.hidden + 2 * kv
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def params(self) -> int:
        """All parameters (the embedding counted once when tied to the output head).

        >>> round(QWEN2_5["qwen2.5-7b"].params() / 1e9, 2), round(QWEN2_5["qwen2.5-3b"].params() / 1e9, 2)
        (7.62, 3.09)
        """
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_params() + embeddings + self.hidden

    def largest_layer_params(self) -> int:
        """The largest single module DeepSpeed ZeRO-3 gathers at once: the embedding or a decoder layer."""
        return max(self.vocab * self.hidden, self.layer_params())

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes per token: keys and values of every layer."""
        return 2 * self.layers * self.kv_heads * (self.hidden // self.heads) * dtype_bytes

    def activation_bytes_per_token(self, checkpointing: bool) -> int:
        """Training activations per token (bf16): every layer's (about ``5h + 4I`` values: norms, q/k/v, attention
        output, gate, up, their product), or with checkpointing each layer's input plus one layer's."""
        one_layer = 2 * (5 * self.hidden + 4 * self.intermediate)
        if checkpointing:
            return self.layers * 2 * self.hidden + one_layer
        return self.layers * one_layer


QWEN2_5: dict[str, Architecture] = {
    # config.json of the Qwen2.5 (Instruct) checkpoints on the hub
    "qwen2.5-0.5b": Architecture(896, 24, 14, 2, 4864, 151936, tied=True),
    "qwen2.5-1.5b": Architecture(1536, 28, 12, 2, 8960, 151936, tied=True),
    "qwen2.5-3b": Architecture(2048, 36, 16, 2, 11008, 151936, tied=True),
    "qwen2.5-7b": Architecture(3584, 28, 28, 4, 18944, 152064, tied=False),
    "qwen2.5-14b": Architecture(5120, 48, 40, 8, 13824, 152064, tied=False),
}
"""Published architectures by name, so a plan needs no download."""


def architecture_of(name_or_path: str) -> Architecture:
    """The architecture of a local model folder (its ``config.json``) or of a known hub name.

    >>> architecture_of("Qwen/Qwen2.5-7B-Instruct") == QWEN2_5["qwen2.5-7b"]
    True

    Raises:
        ConfigError: Neither a folder with a config.json nor a known name.
    """
    config = Path(name_or_path) / "config.json"
    if config.is_file():
        raw = json.loads(config.read_text(encoding="utf-8"))
        return Architecture(
            hidden=raw["hidden_size"],
            layers=raw["num_hidden_layers"],
            heads=raw["num_attention_heads"],
            kv_heads=raw.get("num_key_value_heads", raw["num_attention_heads"]),
            intermediate=raw["intermediate_size"],
            vocab=raw["vocab_size"],
            tied=bool(raw.get("tie_word_embeddings", False)),
        )
    key = name_or_path.rsplit("/", 1)[-1].lower().removesuffix("-instruct")
    if key in QWEN2_5:
        return QWEN2_5[key]
    raise ConfigError(
        f"No architecture for {name_or_path!r}: give a local model folder with a config.json, or one of "
        f"{', '.join(sorted(QWEN2_5))} (any Qwen/Qwen2.5-*-Instruct name)."
    )


def model_states_bytes(params: int, largest_layer: int, gpus: int, zero_stage: int) -> int:
    """Weights, gradients and AdamW states per GPU under a ZeRO stage, without offload (DeepSpeed's formulas for
    stages 2 and 3; see the module docstring).

    >>> round(model_states_bytes(60_506_624, 16_449_536, gpus=1, zero_stage=3) / GIB, 2)  # DeepSpeed's t5-small
    1.08
    """
    match zero_stage:
        case 0:
            return 16 * params
        case 1 | 2:  # DeepSpeed's one estimator for both (stage_1_and_2.py)
            return 4 * params + 16 * params // gpus
        case 3:
            return 4 * largest_layer + 18 * params // gpus
    raise ConfigError(f"--zero-stage {zero_stage} is not a ZeRO stage; use 0, 1, 2 or 3.")


@dataclass(frozen=True)
class PlanSections:
    """The sections of a profile the plan reads."""

    model: ModelConfig
    train: TrainConfig
    rollout: RolloutConfig
    simulator: SimulatorConfig


@dataclass(frozen=True)
class PlanRequest:
    """What the user rents: GPUs in all, memory of each, the ZeRO stage, and how many GPUs the simulator gets."""

    gpus: int
    gpu_memory_gib: float
    zero_stage: int
    simulator_gpus: int = 0
    simulator_tp: int | None = None


@dataclass(frozen=True)
class GPUPlan:
    """One kind of GPU in the plan (a training GPU or a simulator GPU): its parts in bytes and the verdict."""

    role: str
    count: int
    parts: dict[str, int]
    capacity: int
    notes: tuple[str, ...] = ()
    engines_fit: bool = True
    """Whether every vLLM engine's budget holds its weights and at least one whole sequence (:func:`kv_note`)."""

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.engines_fit and self.total <= self.capacity and all(v >= 0 for v in self.parts.values())


def plan_training_gpu(cfg: PlanSections, request: PlanRequest) -> GPUPlan:
    """The parts of one training GPU (policy, reference, critic, activations, logits, vLLM, colocated simulator)."""
    train, rollout, sim = cfg.train, cfg.rollout, cfg.simulator
    arch = policy_architecture(cfg)
    trainers = request.gpus - request.simulator_gpus
    params, largest = arch.params(), arch.largest_layer_params()
    capacity = int(request.gpu_memory_gib * GIB)
    # GRPO (TRL): every rank trains prompts_per_step x group_size sequences; PPO/REINFORCE++ split them over ranks
    batch = train.prompts_per_step * train.group_size
    per_rank = batch if train.algorithm == "grpo" else -(-batch // trainers)
    micro = min(train.micro_batch_size or per_rank, per_rank)
    tokens = micro * rollout.max_total_tokens
    parts = {
        "CUDA context": CUDA_CONTEXT_BYTES,
        "policy: weights, gradients, AdamW": model_states_bytes(params, largest, trainers, request.zero_stage),
    }
    if train.kl_coef > 0:
        parts["reference policy (bf16)"] = 2 * params // (trainers if request.zero_stage == 3 else 1)
    if train.algorithm == "ppo":
        critic = params - (0 if arch.tied else arch.vocab * arch.hidden)
        parts["critic: weights, gradients, AdamW"] = model_states_bytes(critic, largest, trainers, request.zero_stage)
    parts[f"activations ({micro} x {rollout.max_total_tokens} tokens)"] = tokens * arch.activation_bytes_per_token(
        train.gradient_checkpointing
    )
    parts["logits of a micro-batch"] = tokens * arch.vocab * LOGIT_BYTES
    notes: list[tuple[str, bool]] = []  # (note, whether its engine fits)
    if rollout.engine == "vllm":
        budget = int(rollout.vllm_gpu_memory_utilization * capacity)
        parts[f"vLLM policy engine ({rollout.vllm_gpu_memory_utilization:.0%} of the GPU)"] = budget
        notes.append(kv_note("policy engine", budget, 2 * params, arch, rollout.max_total_tokens))
    if sim.url is None and request.simulator_gpus == 0 and train.search_engine == "simulated":
        sim_arch = architecture_of(str(sim.base_model)) if sim.base_model else arch
        if sim.engine == "vllm":
            budget = int(sim.vllm_gpu_memory_utilization * capacity)
            parts[f"simulator, vLLM in process ({sim.vllm_gpu_memory_utilization:.0%} of the GPU)"] = budget
            notes.append(kv_note("simulator engine", budget, 2 * sim_arch.params(), sim_arch, sim.max_length))
        else:
            parts["simulator weights (transformers, bf16)"] = 2 * sim_arch.params()
    elif request.simulator_gpus == 0 and train.search_engine == "simulated":
        notes.append((f"the simulator is served at {sim.url}, on GPUs outside this plan (--simulator-gpus to add them)",
                      True))  # fmt: skip
    return GPUPlan("training", trainers, parts, capacity, tuple(n for n, _ in notes), all(ok for _, ok in notes))


def kv_note(what: str, budget: int, weights: int, arch: Architecture, sequence: int) -> tuple[str, bool]:
    """How many whole sequences a vLLM budget's KV cache holds after its weights, or why none; and whether it holds
    at least one."""
    kv = budget - weights - VLLM_OVERHEAD_BYTES
    sequences = kv // (arch.kv_bytes_per_token() * sequence) if kv > 0 else 0
    if sequences < 1:
        return (
            f"DOES NOT FIT: the {what}'s budget ({budget / GIB:.1f} GiB) cannot hold its weights "
            f"({weights / GIB:.1f} GiB), {VLLM_OVERHEAD_BYTES / GIB:.0f} GiB of overhead and one {sequence}-token "
            "sequence of KV cache; raise its vllm_gpu_memory_utilization or use GPUs with more memory.",
            False,
        )
    return f"the {what}'s KV cache holds {sequences} sequences of {sequence} tokens at once ({kv / GIB:.1f} GiB)", True


def plan_simulator_gpu(cfg: PlanSections, request: PlanRequest) -> GPUPlan | None:
    """One GPU of a simulator served by vLLM on GPUs of its own (tensor parallel over ``simulator_tp``, the rest
    data-parallel replicas); None when the simulator gets no GPUs of its own."""
    if request.simulator_gpus == 0:
        return None
    sim = cfg.simulator
    tp = request.simulator_tp or request.simulator_gpus
    if request.simulator_gpus % tp:
        raise ConfigError(
            f"--simulator-tp {tp} must divide --simulator-gpus {request.simulator_gpus} (the rest are replicas)."
        )
    arch = architecture_of(str(sim.base_model)) if sim.base_model else policy_architecture(cfg)
    capacity = int(request.gpu_memory_gib * GIB)
    budget = int(VLLM_SERVER_UTILIZATION * capacity)
    weights = 2 * arch.params() // tp
    parts = {
        "CUDA context": CUDA_CONTEXT_BYTES,
        f"weights (bf16, 1/{tp} of them)": weights,
        "vLLM overhead": VLLM_OVERHEAD_BYTES,
        f"KV cache (to {VLLM_SERVER_UTILIZATION:.0%} of the GPU)": budget - weights - VLLM_OVERHEAD_BYTES,
    }
    replicas = request.simulator_gpus // tp
    sharded = dataclasses.replace(arch, kv_heads=max(arch.kv_heads // tp, 1))
    note, engine_fits = kv_note("simulator server", budget, weights, sharded, sim.max_length)
    role = f"simulator (TP {tp}, {replicas} replica(s))"
    return GPUPlan(role, request.simulator_gpus, parts, capacity, (note,), engine_fits)


def policy_architecture(cfg: PlanSections) -> Architecture:
    """The policy's architecture: the tiny model's own shape, or the pretrained checkpoint's."""
    model = cfg.model
    if model.source == "tiny":
        return Architecture(
            model.hidden_size,
            model.num_layers,
            model.num_heads,
            model.num_kv_heads,
            model.intermediate_size,
            model.vocab_size,
            tied=False,
        )
    return architecture_of(str(model.name_or_path))


def make_plan(cfg: PlanSections, request: PlanRequest) -> list[GPUPlan]:
    """Every kind of GPU the request has, with its parts.

    Raises:
        ConfigError: The request itself is impossible (no GPU left for training, a TP that does not divide).
    """
    if request.gpus < 1 or request.gpu_memory_gib <= 0:
        raise ConfigError("--gpus must be >= 1 and --gpu-memory a positive number of GiB.")
    if not 0 <= request.simulator_gpus < request.gpus:
        raise ConfigError(
            f"--simulator-gpus {request.simulator_gpus} leaves no GPU of the {request.gpus} for training; "
            "keep at least one."
        )
    simulator = plan_simulator_gpu(cfg, request)
    return [plan_training_gpu(cfg, request), *([simulator] if simulator else [])]


def fits(plans: list[GPUPlan]) -> bool:
    """Whether every GPU of the plan fits, its vLLM engines included."""
    return all(p.fits for p in plans)


def fixes(cfg: PlanSections, request: PlanRequest) -> list[str]:
    """Single changes that make a plan that does not fit fit, cheapest first (each tried on its own, then the
    micro-batch with checkpointing, then more GPUs)."""
    train = cfg.train

    def with_train(**changes: Any) -> PlanSections:
        return dataclasses.replace(cfg, train=dataclasses.replace(train, **changes))

    trials: list[tuple[str, PlanSections, PlanRequest]] = []
    if not train.gradient_checkpointing:
        trials.append(("train.gradient_checkpointing: true", with_train(gradient_checkpointing=True), request))
    batch = train.prompts_per_step * train.group_size
    for micro in (16, 8, 4, 2, 1):  # the largest micro-batch that fits, without checkpointing if it can
        if micro < (train.micro_batch_size or batch) and batch % micro == 0:
            plain = with_train(micro_batch_size=micro)
            if fits(make_plan(plain, request)):
                trials.append((f"train.micro_batch_size: {micro}", plain, request))
                break
            checkpointed = with_train(micro_batch_size=micro, gradient_checkpointing=True)
            if not train.gradient_checkpointing and fits(make_plan(checkpointed, request)):
                change = f"train.micro_batch_size: {micro} and train.gradient_checkpointing: true"
                trials.append((change, checkpointed, request))
                break
    if request.zero_stage < 3:
        trials.append(("ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml, --zero-stage 3)", cfg,
                       dataclasses.replace(request, zero_stage=3)))  # fmt: skip
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm_gpu_memory_utilization > 0.2:
        lower = dataclasses.replace(cfg.rollout, vllm_gpu_memory_utilization=0.2)
        trials.append(("rollout.vllm_gpu_memory_utilization: 0.2", dataclasses.replace(cfg, rollout=lower), request))
    colocated = cfg.simulator.url is None and request.simulator_gpus == 0 and train.search_engine == "simulated"
    if colocated and cfg.simulator.engine == "vllm" and cfg.simulator.vllm_gpu_memory_utilization > 0.2:
        lower_sim = dataclasses.replace(cfg.simulator, vllm_gpu_memory_utilization=0.2)
        trials.append(
            ("simulator.vllm_gpu_memory_utilization: 0.2", dataclasses.replace(cfg, simulator=lower_sim), request)
        )
    if colocated and request.gpus > 1:
        served = dataclasses.replace(cfg.simulator, url="http://simulator:8001")
        change = "the simulator on a GPU of its own (`vllm serve`, simulator.url, --simulator-gpus 1)"
        trials.append(
            (change, dataclasses.replace(cfg, simulator=served), dataclasses.replace(request, simulator_gpus=1))
        )
    found = [change for change, changed, req in trials if fits(make_plan(changed, req))]
    if not found:  # no single change: the cheap ones together
        together = with_train(micro_batch_size=1, gradient_checkpointing=True)
        together = dataclasses.replace(
            together,
            rollout=dataclasses.replace(cfg.rollout, vllm_gpu_memory_utilization=0.2),
            simulator=dataclasses.replace(cfg.simulator, vllm_gpu_memory_utilization=0.2),
        )
        if fits(make_plan(together, dataclasses.replace(request, zero_stage=3))):
            found.append(
                "all together: ZeRO-3, train.micro_batch_size: 1, train.gradient_checkpointing: true, "
                "rollout.vllm_gpu_memory_utilization: 0.2, simulator.vllm_gpu_memory_utilization: 0.2"
            )
    for more in (2, 4, 8, 16, 32, 64):
        if more > request.gpus:
            bigger = dataclasses.replace(request, gpus=more + request.simulator_gpus)
            if fits(make_plan(cfg, bigger)):
                found.append(f"--gpus {more + request.simulator_gpus} (training on {more})")
                break
    return found


def plan_table(plans: list[GPUPlan]) -> str:
    """The plan as Markdown: one table per kind of GPU, its notes and its verdict."""
    lines = []
    for plan in plans:
        lines += [f"### {plan.count} {plan.role} GPU(s), {plan.capacity / GIB:.0f} GiB each", ""]
        lines += ["| part | GiB per GPU |", "|---|---:|"]
        lines += [f"| {name} | {size / GIB:.1f} |" for name, size in plan.parts.items()]
        share = plan.total / plan.capacity
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        if plan.fits and share > 1 - HEADROOM and plan.role == "training":  # a vLLM server fills its share
            verdict = "fits, tight"
        lines += [f"| **total** | **{plan.total / GIB:.1f}** ({share:.0%}: {verdict}) |", ""]
        lines += [f"- {note}" for note in plan.notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plan_json(plans: list[GPUPlan], suggestions: list[str]) -> dict[str, Any]:
    """The plan as JSON: per kind of GPU its parts in GiB, total, notes and verdict; the fixes when it fails."""
    return {
        "fits": fits(plans),
        "gpus": [
            {
                "role": p.role,
                "count": p.count,
                "gpu_memory_gib": p.capacity / GIB,
                "parts_gib": {k: round(v / GIB, 3) for k, v in p.parts.items()},
                "total_gib": round(p.total / GIB, 3),
                "fits": p.fits,
                "notes": list(p.notes),
            }
            for p in plans
        ],
        "fixes": suggestions,
    }
