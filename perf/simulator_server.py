"""Benchmark: simulator throughput and latency: the search service, vLLM's OpenAI server, ours batched and unbatched.

Run after ``dvc repro finetune_simulator`` (it serves ``paths.simulator_dir``; ``--model`` picks another folder)::

    .venv/bin/python perf/simulator_server.py [--params params.yaml] [--requests 64] [--max-tokens 48]

For 1, 8 and 32 concurrent clients, against the same model served by vLLM's OpenAI server
(``vllm.entrypoints.openai.api_server``, as ``simulator.engine: vllm_server`` starts it), by the search service in
front of that server (``zerosearch serve_search_simulator``: one ``POST /retrieve`` of one query per request, the
same prompt), by this project's server with batching (``max_batch_size`` 32) and without (``max_batch_size`` 1), it
prints documents/s (one simulated search = ``search.top_k`` documents) and p50/p95 request latency. Goals: the
service >= 0.9x vLLM's own server at 32 clients; batched >= 5x unbatched. Every request has its own seed, so none
is answered from a cache. ``--servers`` picks a subset; ``--json`` prints the figures as JSON (keys
``<server>_docs_per_s_<clients>``, e.g. ``service_docs_per_s_32`` and ``vllm_docs_per_s_32``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import requests
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch_core.config import load_config  # noqa: E402
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.netutil import free_port, wait_until_healthy  # noqa: E402
from zerosearch_core.simulator.llm import LocalLLM  # noqa: E402
from zerosearch_core.simulator.prompts import render_simulator_prompt  # noqa: E402
from zerosearch_core.simulator.server import create_simulator_app

QUERY, QUESTION, ANSWERS = "eiffel tower height", "How tall is the Eiffel Tower?", ["330 m"]


def measure(
    url: str, clients: int, requests_total: int, max_tokens: int, seed_base: int, top_k: int, doc_words: int,
    retrieve: bool = False,
) -> tuple[float, float, float]:  # fmt: skip
    """Requests/s, p50 and p95 latency for ``requests_total`` requests from ``clients`` threads: chat completions
    of the simulator prompt, or (``retrieve``) the search service's ``/retrieve`` of the same search."""
    prompt = render_simulator_prompt(QUERY, QUESTION, ANSWERS, "useful", top_k, doc_words)

    def one(index: int) -> float:
        if retrieve:
            target = f"{url}/retrieve"
            body = {"queries": [QUERY], "topk": top_k, "questions": [QUESTION], "golden_answers": [ANSWERS],
                    "doc_type": "useful", "seed": seed_base + index}  # fmt: skip
        else:
            target = f"{url}/v1/chat/completions"
            body = {
                "model": "simulator",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "seed": seed_base + index,
            }
        started = time.perf_counter()
        requests.post(target, json=body, timeout=600).raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = sorted(pool.map(one, range(requests_total)))
    elapsed = time.perf_counter() - started
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return requests_total / elapsed, statistics.median(latencies), p95


@contextmanager
def server_process(params: Path, model_dir: Path, *mode: str) -> Iterator[str]:
    """This script in a server mode (``--serve-batch N`` or ``--serve-service URL`` ...), on a free port; yields its
    URL once /health answers."""
    port = free_port("127.0.0.1")
    command = [sys.executable, __file__, "--params", str(params), "--model", str(model_dir), *mode]
    process = subprocess.Popen([*command, "--serve-port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, 120, f"This script's server ({' '.join(mode)})", poll_s=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: paths.simulator_dir)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object at the end")
    parser.add_argument("--serve-batch", type=int, default=None, help=argparse.SUPPRESS)  # internal: server process
    parser.add_argument("--serve-port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-service", default=None, help=argparse.SUPPRESS)  # internal: the service's process
    args = parser.parse_args()
    cfg = load_config(args.params)
    model_dir = args.model if args.model is not None else Path(cfg.paths.simulator_dir)
    if args.serve_service is not None:  # the search service in front of the generation server at that URL
        from zerosearch_core.simulator.client import OpenAICompatibleLLM
        from zerosearch_core.simulator.search_service import create_search_service_app

        # one generation a search, as the direct requests make (the profile's type_check: resample would generate a
        # useful search again until it states the answer, up to 4 times)
        sim = dataclasses.replace(cfg.simulator, max_new_tokens=args.max_tokens, type_check="as_written")
        llm = OpenAICompatibleLLM(args.serve_service, "simulator", 600.0, 0)
        app = create_search_service_app(llm, sim, cfg.rollout.max_doc_chars, {})
        uvicorn.run(app, host="127.0.0.1", port=args.serve_port, log_level="warning")
        return 0
    if args.serve_batch is not None:
        llm = LocalLLM(load_causal_lm(model_dir), load_tokenizer(model_dir))
        app = create_simulator_app(llm, "simulator", args.serve_batch, 20.0, 4096, 600.0)
        uvicorn.run(app, host="127.0.0.1", port=args.serve_port, log_level="warning")
        return 0
    print(f"# {' '.join(sys.argv)}  model {model_dir}, {args.requests} requests of {args.max_tokens} tokens")
    print("# the server runs in a child process; client threads here")
    print(f"{'server':>10} {'clients':>7} {'docs/s':>8} {'p50 s':>7} {'p95 s':>7}")
    results: dict[tuple[str, int], float] = {}
    top_k, words = cfg.search.top_k, cfg.simulator.doc_words
    for label in args.servers:
        # each server runs in its own process, so that client threads do not compete with it for the GIL
        with SERVERS[label](args.params, model_dir, cfg, args.max_tokens) as url:
            for clients in (1, 8, 32):
                rate, p50, p95 = measure(url, clients, args.requests, args.max_tokens, clients * 100_000, top_k,
                                         words, retrieve=label == "service")  # fmt: skip
                docs_per_s = rate * top_k
                results[(label, clients)] = docs_per_s
                print(f"{label:>10} {clients:>7} {docs_per_s:>8.1f} {p50:>7.2f} {p95:>7.2f}")
    for label in ("vllm", "batched"):
        if (label, 32) in results and ("unbatched", 32) in results:
            speedup = results[(label, 32)] / results[("unbatched", 32)]
            print(f"{label} / unbatched throughput at 32 clients: {speedup:.1f}x (goal for batched: >= 5x)")
    if ("service", 32) in results and ("vllm", 32) in results:
        ratio = results[("service", 32)] / results[("vllm", 32)]
        print(f"service / vLLM's own server at 32 clients: {ratio:.2f}x (goal: >= 0.9x)")
    if args.json:
        print(json.dumps({f"{label}_docs_per_s_{clients}": round(v, 2) for (label, clients), v in results.items()}))
    return 0


def _vllm_server(params: Path, model_dir: Path, cfg, max_tokens: int) -> AbstractContextManager[str]:  # type: ignore[no-untyped-def]
    from zerosearch_core.models.vllm_backend import running_vllm_server
    from zerosearch_core.simulator.engine import simulator_vllm_settings

    return running_vllm_server(model_dir, simulator_vllm_settings(cfg.simulator, cfg.model.dtype), "simulator")


@contextmanager
def _service(params: Path, model_dir: Path, cfg, max_tokens: int) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """vLLM's server, and the search service in front of it in a process of its own."""
    with _vllm_server(params, model_dir, cfg, max_tokens) as generation:
        with server_process(params, model_dir, "--max-tokens", str(max_tokens), "--serve-service", generation) as url:
            yield url


SERVERS = {
    "vllm": _vllm_server,
    "service": _service,
    "batched": lambda params, model_dir, cfg, max_tokens: server_process(params, model_dir, "--serve-batch", "32"),
    "unbatched": lambda params, model_dir, cfg, max_tokens: server_process(params, model_dir, "--serve-batch", "1"),
}


if __name__ == "__main__":
    raise SystemExit(main())
