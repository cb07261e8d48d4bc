"""RL math against hand-computed examples; masked tokens get no gradient."""

from __future__ import annotations

import pytest
import torch

from zerosearch_core.rl.advantages import (
    compute_gae,
    group_advantages,
    kl_estimate,
    masked_whiten,
    ppo_policy_loss,
    reinforce_advantages,
    token_rewards,
    value_loss,
)

# One trajectory: sampled, sampled, retrieved, retrieved, sampled, padding.
MASK = torch.tensor([[1, 1, 0, 0, 1, 0]])
VALUES = torch.tensor([[0.5, 0.4, 9.0, 9.0, 0.2, 9.0]])


def test_gae_by_hand_steps_over_retrieved_tokens() -> None:
    rewards = token_rewards(torch.tensor([1.0]), MASK)
    assert rewards.tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]
    advantages, returns = compute_gae(rewards, VALUES, MASK, gamma=0.9, lam=0.8)
    # t=4: delta = 1 - 0.2 = 0.8                        A4 = 0.8
    # t=1: delta = 0.9 * 0.2 - 0.4 = -0.22              A1 = -0.22 + 0.72 * 0.8 = 0.356
    # t=0: delta = 0.9 * 0.4 - 0.5 = -0.14              A0 = -0.14 + 0.72 * 0.356 = 0.11632
    expected = [0.11632, 0.356, 0.0, 0.0, 0.8, 0.0]
    assert advantages[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert returns[0].tolist() == pytest.approx([0.61632, 0.756, 0.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_gae_with_gamma_lambda_one_is_return_minus_value() -> None:
    rewards = token_rewards(torch.tensor([1.0]), MASK)
    advantages, _ = compute_gae(rewards, VALUES, MASK, gamma=1.0, lam=1.0)
    assert advantages[0].tolist() == pytest.approx([0.5, 0.6, 0.0, 0.0, 0.8, 0.0], abs=1e-6)


def test_group_advantages_normalise_within_each_prompt() -> None:
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.3, 0.3, 0.3, 0.3])
    advantages = group_advantages(scores, group_size=4)
    assert advantages[:4].tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-5)
    assert advantages[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # all equal: no signal
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(scores, group_size=3)


def test_reinforce_returns_skip_masked_tokens_and_are_whitened() -> None:
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]])
    rewards = token_rewards(torch.tensor([1.0, 0.0]), mask)
    advantages = reinforce_advantages(rewards, mask, gamma=1.0)
    assert advantages[mask == 0].abs().max().item() == 0.0
    sampled = advantages[mask == 1]
    assert sampled.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert advantages[0, 0] == advantages[0, 2] and advantages[0, 0] > advantages[1, 0]


def test_ppo_loss_clips_and_masked_tokens_get_zero_gradient() -> None:
    old = torch.zeros(1, 6)
    logprobs = torch.tensor([[0.5, -0.5, 3.0, -3.0, 0.0, 2.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, 1.0]])
    loss, clip_fraction = ppo_policy_loss(logprobs, old, advantages, MASK, clip_eps=0.2)
    loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad[MASK == 0].tolist() == [0.0, 0.0, 0.0]
    # token 0: ratio e^0.5 > 1.2 with A > 0 is clipped (no gradient); tokens 1 and 4 are not clipped
    assert logprobs.grad[0, 0].item() == 0.0
    assert logprobs.grad[0, 1].item() != 0.0 and logprobs.grad[0, 4].item() != 0.0
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_masked_tokens_get_zero_gradient_through_a_real_model(tiny_policy_dir) -> None:
    from zerosearch_core.models.build import load_causal_lm

    model = load_causal_lm(tiny_policy_dir)
    model.train()
    ids = torch.tensor([[5, 20, 21, 22, 23, 24, 25, 26]])
    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 0]])  # over the 7 predicted tokens

    def logprob_grads(perturb_masked: bool) -> torch.Tensor:
        model.zero_grad()
        embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings).logits[:, :-1]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        old = logprobs.detach() + (torch.where(mask == 0, 5.0, 0.0) if perturb_masked else 0.0)
        loss, _ = ppo_policy_loss(logprobs, old, torch.ones_like(logprobs), mask, clip_eps=0.2)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    # what the loss sees at masked positions cannot change any parameter gradient
    assert torch.allclose(logprob_grads(False), logprob_grads(True))


def test_value_loss_clips_large_moves() -> None:
    returns = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1, 0]])
    old = torch.tensor([[0.0, 0.0]])
    near = value_loss(torch.tensor([[0.1, 5.0]]), old, returns, mask, clip_eps=0.2)
    far = value_loss(torch.tensor([[0.9, 5.0]]), old, returns, mask, clip_eps=0.2)
    assert near.item() == pytest.approx(0.5 * 0.81)
    assert far.item() == pytest.approx(0.5 * 0.64)  # max(0.01, (0.2 - 1)^2): the clipped error counts


def test_kl_estimators() -> None:
    logprobs, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert kl_estimate(logprobs, ref, "k1").item() == pytest.approx(1.0)
    assert kl_estimate(logprobs, ref, "k3").item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item())
    assert kl_estimate(ref, logprobs, "k3").item() > 0
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logprobs, ref, "k2")


def test_whiten_ignores_masked_positions() -> None:
    whitened = masked_whiten(torch.tensor([1.0, 100.0, 3.0]), torch.tensor([1, 0, 1]))
    assert whitened.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)
