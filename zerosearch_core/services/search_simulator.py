"""Serve the simulator as a search engine (Search-R1's ``POST /retrieve``): not a DVC stage, a long-running service.

Run: ``zerosearch serve_search_simulator --params params.yaml [--port 8002]``. Generation goes to
``simulator.url`` when it is set (any OpenAI-compatible server); otherwise this command starts vLLM's OpenAI server
for ``paths.simulator_dir`` on a free loopback port (or, with ``simulator.engine: hf``, this project's server in
process) and stops it on exit. The front binds ``simulator.serve_host`` (127.0.0.1 by default). See
:mod:`zerosearch_core.simulator.search_service` for the request and response.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from zerosearch_core.config import PipelineConfig
from zerosearch_core.netutil import free_port
from zerosearch_core.simulator.client import OpenAICompatibleLLM
from zerosearch_core.simulator.search_service import create_search_service_app

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8002
"""Where the service listens unless ``--port`` says otherwise (the simulator's own server takes 8001)."""


@contextlib.contextmanager
def generation_server(cfg: PipelineConfig) -> Iterator[str]:
    """The URL of an OpenAI-compatible server for the simulator: ``simulator.url``, or one started for the block."""
    sim, simulator_dir = cfg.simulator, Path(cfg.paths.simulator_dir)
    if sim.url is not None:
        yield sim.url
        return
    if not (simulator_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"No simulator at {simulator_dir}; run `dvc repro finetune_simulator` first, or set simulator.url to a "
            "running OpenAI-compatible server."
        )
    if sim.engine == "hf":
        from zerosearch_core.search.http import running_server
        from zerosearch_core.services.simulator import transformers_app

        with running_server(transformers_app(cfg), "127.0.0.1", free_port()) as url:
            yield url
        return
    from zerosearch_core.models.vllm_backend import running_vllm_server
    from zerosearch_core.simulator.engine import simulator_vllm_settings

    with running_vllm_server(simulator_dir, simulator_vllm_settings(sim, cfg.model.dtype), "simulator") as url:
        yield url


def run(cfg: PipelineConfig, port: int | None = None) -> None:
    """Start (or reach) the generation server and serve ``/retrieve`` until interrupted."""
    sim = cfg.simulator
    with generation_server(cfg) as url:
        llm = OpenAICompatibleLLM(url, "simulator", sim.request_timeout_s, sim.max_retries)
        llm.check_health()
        app = create_search_service_app(llm, sim, cfg.rollout.max_doc_chars, {"generation": url})
        bound = port or DEFAULT_PORT
        logger.info("Serving the simulator as a search engine at http://%s:%d/retrieve (generation: %s)",
                    sim.serve_host, bound, url)  # fmt: skip
        uvicorn.run(app, host=sim.serve_host, port=bound, log_level="info")
