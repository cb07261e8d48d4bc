"""The search agent: the prompts it reads, the multi-turn loop it runs (token ids in, token ids and a loss mask out),
and the answer metrics that score it (the RL reward and evaluation use the same functions)."""
