"""Pure RL math on padded token tensors: advantages (GAE, GRPO groups, REINFORCE++), the clipped PPO objective, the
clipped value loss and KL estimators. No model, no I/O, no RNG.

Shapes: ``B`` trajectories, ``T`` response tokens (right-padded). ``mask`` is the loss mask of
:mod:`zerosearch_core.agent.loop`: 1 for tokens the policy sampled, 0 for retrieved documents, observations and
padding. Masked tokens are not actions: they get no advantage, no loss and hence no gradient, and GAE steps over
them from one sampled token to the next.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 when the mask is empty).

    >>> masked_mean(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([1, 0, 1])).item()
    2.0
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked positions; masked-out positions become 0."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(variance + eps) * mask.to(values.dtype)


def last_sampled_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last sampled token per row (B,); -1 for a row with no sampled token.

    >>> last_sampled_index(torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]])).tolist()
    [3, -1]
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put each trajectory's scalar reward on its last sampled token (B, T).

    >>> token_rewards(torch.tensor([2.0]), torch.tensor([[1, 0, 1, 0]])).tolist()
    [[0.0, 0.0, 2.0, 0.0]]
    """
    rewards = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    last = last_sampled_index(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] = scores[rows]
    return rewards


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the sampled tokens of each row.

    The time steps are the sampled tokens only: from a sampled token, the next state is the next *sampled* token
    (the retrieved tokens between them are the environment's move). After the last sampled token the value is 0.

    Args:
        rewards: (B, T) per-token rewards (the score on the last sampled token, minus any KL penalty).
        values: (B, T) value estimates.
        mask: (B, T) loss mask.
        gamma: Discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both (B, T) and 0 where ``mask`` is 0.
    """
    mask_f = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)  # (B,)
    running = torch.zeros_like(next_value)
    for t in reversed(range(values.shape[1])):
        active = mask_f[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        running = active * candidate + (1 - active) * running
        next_value = active * values[:, t] + (1 - active) * next_value
        advantages[:, t] = active * candidate
    returns = (advantages + values) * mask_f
    return advantages, returns


def group_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: each score minus its group's mean (divided by the group's std when ``scale``), (B,).

    Rows ``[k*group_size, (k+1)*group_size)`` are the answers to one prompt.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), group_size=2, scale=False).tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    if scores.shape[0] % group_size != 0:
        raise ValueError(f"{scores.shape[0]} scores do not split into groups of {group_size}.")
    grouped = scores.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=False) + eps)
    return centred.reshape(-1)


def reinforce_advantages(token_level_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """REINFORCE++: discounted return-to-go over sampled tokens, whitened over the batch, (B, T)."""
    mask_f = mask.to(token_level_rewards.dtype)
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros(token_level_rewards.shape[0], dtype=returns.dtype, device=returns.device)
    for t in reversed(range(token_level_rewards.shape[1])):
        active = mask_f[:, t]
        running = active * (token_level_rewards[:, t] + gamma * running) + (1 - active) * running
        returns[:, t] = active * running
    return masked_whiten(returns, mask)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from log-probs of the sampled tokens, (B, T).

    ``k1`` is ``log p - log q``; ``k3`` (Schulman) is ``exp(q - p) - (q - p) - 1``, unbiased and non-negative.

    >>> kl_estimate(torch.tensor([0.0]), torch.tensor([0.0])).item()
    0.0
    """
    log_ratio = ref_logprobs - logprobs
    match kind:
        case "k1":
            return -log_ratio
        case "k3":
            return torch.exp(log_ratio) - log_ratio - 1
        case _:
            raise ValueError(f"Unknown KL estimator {kind!r}; use 'k1' or 'k3'.")


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate objective, as a loss to minimise, averaged over sampled tokens.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the current policy.
        old_logprobs: (B, T) log-probs under the policy that sampled them.
        advantages: (B, T) or (B, 1) advantages.
        mask: (B, T) loss mask.
        clip_eps: The PPO clip range epsilon.

    Returns:
        ``(loss, clip_fraction)``: the scalar loss and the share of sampled tokens whose ratio was clipped.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    return loss, clip_fraction


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """Clipped value loss ``0.5 * max((v - R)^2, (clip(v) - R)^2)`` averaged over sampled tokens."""
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)
