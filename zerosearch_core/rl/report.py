"""Training history: keep the last entry per step, summarise a run, and plot reward and noise by step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def latest_by_step(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per step, the last one written (a step redone after a resume replaces its first attempt).

    >>> latest_by_step([{"step": 1.0, "r": 0}, {"step": 2.0, "r": 1}, {"step": 2.0, "r": 5}])
    [{'step': 1.0, 'r': 0}, {'step': 2.0, 'r': 5}]
    """
    by_step: dict[float, dict[str, Any]] = {}
    for entry in entries:
        by_step[float(entry["step"])] = entry
    return [by_step[step] for step in sorted(by_step)]


def summarize_history(history: Sequence[dict[str, Any]], algorithm: str) -> dict[str, Any]:
    """The DVC metrics of a training run: steps, first/last reward, last noise probability and KL."""
    if not history:
        raise ValueError("The training history is empty; no step finished.")
    first, last = history[0], history[-1]
    summary: dict[str, Any] = {
        "algorithm": algorithm,
        "steps": float(last["step"]),
        "reward_first": float(first["reward_mean"]),
        "reward_last": float(last["reward_mean"]),
        "reward_mean": sum(float(h["reward_mean"]) for h in history) / len(history),
        "noise_prob_last": float(last["noise_prob"]),
    }
    validated = [h for h in history if "val_em" in h]
    if validated:
        summary["val_em_last"] = float(validated[-1]["val_em"])
        summary["val_f1_last"] = float(validated[-1]["val_f1"])
    for key in ("kl", "clip_fraction", "value_loss", "searches_mean", "turns_mean"):
        if key in last:
            summary[f"{key}_last"] = float(last[key])
    return summary


def plot_training_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Reward, noise probability and searches per episode against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [float(h["step"]) for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    panels = (
        ("reward_mean", "reward (F1/EM)"),
        ("noise_prob", "noise probability"),
        ("searches_mean", "searches / episode"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.plot(steps, [float(h.get(key, float("nan"))) for h in history], marker="o")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
