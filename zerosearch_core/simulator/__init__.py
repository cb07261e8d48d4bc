"""The simulation LLM, the heart of ZeroSearch: an LLM that writes *useful* or *noisy* search results on demand.

- ``prompts``: the simulator's prompt, the parsing of its documents, and the useful/noisy labels.
- ``engine``: :class:`~zerosearch_core.simulator.engine.SimulatedSearchEngine`, the search engine RL trains against.
- ``server``: the OpenAI-compatible batching server and its client.
- ``sft_data``: real-search interactions labelled and balanced into SFT data (stage ``build_simulator_sft``).
- ``finetune``: supervised fine-tuning and the useful-vs-noisy measurement (stage ``finetune_simulator``).
"""
