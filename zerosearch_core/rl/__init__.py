"""Reinforcement learning of the search policy against a (simulated) search engine.

- ``curriculum``: the noise probability p(step).
- ``advantages``: the pure algorithm pieces (GAE, group advantages, PPO losses, KL).
- ``episodes``: the one place that turns a batch of questions into scored episodes at p(step).
- ``registry``: algorithm name → trainer.
- ``grpo``: the TRL ``GRPOTrainer`` adapter; ``ppo``: the torch PPO / REINFORCE++ trainer.
- ``report``: the training summary and curves.
"""
