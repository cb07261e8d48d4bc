"""The stages, in DAG order, with the one-line help the CLI shows; each is ``zerosearch_core.stages.<name>``.

``dvc.yaml`` is the DAG; ``tests/stages/test_dvc_pipeline.py`` checks that this list and its stages agree. No stage
imports this module, so editing a help text here re-runs nothing.
"""

from __future__ import annotations

STAGES: dict[str, str] = {
    "generate_world": "Generate a synthetic knowledge world (corpus and question splits); toy profile only.",
    "prepare_data": "Normalise and validate the benchmark files (Great Expectations).",
    "build_index": "Load the Wikipedia corpus and build the BM25 (or dense) index.",
    "init_policy": "Build the tiny policy and tokenizer, or copy a pretrained checkpoint.",
    "collect_trajectories": "Record real-search interactions (question, answers, query, documents) for the simulator.",
    "build_simulator_sft": "Label interactions useful/noisy and build balanced, validated simulator SFT data.",
    "finetune_simulator": "Fine-tune the simulation LLM (TRL SFT) and measure its useful vs noisy documents.",
    "train_policy": "Curriculum RL of the policy with search (GRPO, PPO or REINFORCE++); resumes after a crash.",
    "evaluate": "Score the policy with real search and without, by EM and F1.",
}
"""Stage name → help text, in DAG order."""

SERVICES: dict[str, str] = {
    "serve_retriever": "Serve the built index over HTTP (Search-R1-compatible /retrieve).",
    "serve_simulator": "Serve the simulator with an OpenAI-compatible API (/v1/chat/completions, /v1/completions).",
    "serve_search_simulator": "Serve the simulator as a search engine: Search-R1's POST /retrieve on "
    "simulator.serve_host:--port (8002), generation by vLLM's OpenAI server (started here) or simulator.url.",
}
"""Long-running services (not DVC stages) → help text; each is ``zerosearch_core.services.<name minus serve_>``."""
