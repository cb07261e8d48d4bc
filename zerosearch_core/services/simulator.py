"""Serve the fine-tuned simulator with an OpenAI-compatible API (not a DVC stage: a long-running service).

Run: ``zerosearch serve_simulator --params params.yaml``; it binds ``simulator.serve_host``:``simulator.serve_port``
(127.0.0.1:8001 by default). Point training at it with ``simulator.url: http://127.0.0.1:8001``. With
``simulator.engine: vllm`` (or ``vllm_server``) the same command runs vLLM's OpenAI server instead of this project's
(the command it runs is logged; it is :func:`zerosearch_core.models.vllm_backend.server_command`).
"""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from zerosearch_core.config import PipelineConfig
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.server import ServerLimits, create_simulator_app

logger = logging.getLogger(__name__)


def run(cfg: PipelineConfig) -> None:
    """Load the simulator and serve it until interrupted."""
    sim = cfg.simulator
    if sim.engine != "hf":
        serve_with_vllm(cfg)
        return
    app = transformers_app(cfg)
    logger.info("Serving %s at http://%s:%d/v1", cfg.paths.simulator_dir, sim.serve_host, sim.serve_port)
    uvicorn.run(app, host=sim.serve_host, port=sim.serve_port, log_level="info")


def transformers_app(cfg: PipelineConfig) -> FastAPI:
    """This project's OpenAI-compatible server for the simulator at ``paths.simulator_dir``, on transformers."""
    sim, simulator_dir = cfg.simulator, Path(cfg.paths.simulator_dir)
    llm = LocalLLM(load_causal_lm(simulator_dir, cfg.model.dtype), load_tokenizer(simulator_dir))
    # A request may ask for 4x the simulator's own budget and send a prompt as long as what it was fine-tuned on.
    limits = ServerLimits(
        max_tokens=4 * sim.max_new_tokens, max_prompt_tokens=sim.max_length, request_timeout_s=sim.request_timeout_s
    )
    return create_simulator_app(
        llm, "simulator", sim.max_batch_size, sim.batch_wait_ms, sim.max_queue, sim.request_timeout_s, limits
    )


def serve_with_vllm(cfg: PipelineConfig) -> None:
    """Run vLLM's OpenAI server for the simulator in the foreground (until it exits or is interrupted)."""
    from zerosearch_core.models.vllm_backend import check_model_supported, import_vllm, server_command
    from zerosearch_core.simulator.engine import simulator_vllm_settings

    sim, simulator_dir = cfg.simulator, Path(cfg.paths.simulator_dir)
    import_vllm()
    check_model_supported(simulator_dir)
    settings = simulator_vllm_settings(sim, cfg.model.dtype)
    command = server_command(simulator_dir, settings, "simulator", sim.serve_host, sim.serve_port)
    logger.info("Serving %s with vLLM at http://%s:%d/v1: %s", simulator_dir, sim.serve_host, sim.serve_port, command)
    process = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())  # a stopped service stops vLLM's server with it
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise RuntimeError(f"vLLM's server exited with code {process.returncode}; its output is above.")
