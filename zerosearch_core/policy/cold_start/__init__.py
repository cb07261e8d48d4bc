"""The cold start of a policy trained from scratch: causal-LM pre-training on the corpus and reading drills, then SFT
on protocol trajectories built with the real retriever.

A tiny model built by :func:`~zerosearch_core.models.build.build_tiny_policy` knows neither language nor the search
protocol, so RL would never see a reward. ``init_policy`` can therefore warm it up (``cold_start`` in the params).
The parts: :mod:`.drills` (drills, lessons, pre-training text), :mod:`.sft_data` (the SFT trajectories),
:mod:`.reading` (reading checks), :mod:`.training` (the two phases and their bars), :mod:`.report` (log lines and
plot), and :mod:`.recipe` (what ``init_policy`` calls). The point is a *weak* start that can emit the tags; its
real-search score is the baseline that RL must beat.
"""
