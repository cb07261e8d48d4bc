"""The ZeroSearch curriculum: the probability that a simulated search returns noisy documents, by training step.

    p(i) = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)

with ``p_s`` the start probability, ``p_e`` the end probability, ``b`` the exponential base and ``m`` the total
number of steps. Early steps see mostly useful documents; the share of noise rises, slowly and then faster, to
``p_e``. A pure function, so that a resumed run gets the same value for the same step.
"""

from __future__ import annotations


def noise_probability(step: int, total_steps: int, start: float, end: float, base: float) -> float:
    """The probability of noisy documents at ``step`` of ``total_steps``.

    Args:
        step: The training step, from 0 to ``total_steps``.
        total_steps: ``m``, the step at which ``end`` is reached (at least 1).
        start: ``p_s``, the probability at step 0.
        end: ``p_e``, the probability at the last step.
        base: ``b`` > 0 and != 1; larger bases keep the noise low for longer.

    Returns:
        The probability, in ``[min(start, end), max(start, end)]``.

    Raises:
        ValueError: A step outside ``[0, total_steps]``, ``total_steps < 1``, or ``base`` of 1 or less than 0.

    >>> noise_probability(0, 100, 0.0, 0.5, 4.0)
    0.0
    >>> noise_probability(50, 100, 0.0, 0.5, 4.0)
    0.16666666666666666
    >>> noise_probability(100, 100, 0.0, 0.5, 4.0)
    0.5
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1.")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step={step} is outside [0, total_steps={total_steps}].")
    if base <= 0 or base == 1:
        raise ValueError(f"base={base} must be positive and not 1 (the formula divides by base - 1).")
    progress = (base ** (step / total_steps) - 1) / (base - 1)
    return start + progress * (end - start)
