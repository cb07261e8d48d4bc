"""What a person reads of a cold start: per-form reading lines for the log and the training-curve plot."""

from __future__ import annotations

from pathlib import Path


def by_form_text(by_form: dict[str, float]) -> str:
    """``{form: score}`` as one log line.

    >>> by_form_text({"Which city is … from?": 0.5, "Who is …?": 1.0})
    "'Which city is … from?' 0.50, 'Who is …?' 1.00"
    """
    return ", ".join(f"{form!r} {score:.2f}" for form, score in by_form.items())


def plot_cold_start(curves: dict[str, list[float]], path: Path) -> None:
    """Loss curves of the pre-training and SFT phases, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = {
        "reading": ("cold start: held-out drill accuracy, least-read form", "pre-training step"),
        "sft_reading": ("cold start: held-out lessons read (made to search), least-read form", "SFT step"),
    }
    phases = [phase for phase in ("pretrain", "sft", "reading", "sft_reading") if curves.get(phase)]
    fig, axes = plt.subplots(1, max(len(phases), 1), figsize=(5 * max(len(phases), 1), 3.5), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=False):
        if phase in checks:
            steps, values = curves[f"{phase}_step"], curves[phase]
            attempts = curves.get("sft_attempt", []) if phase == "sft_reading" else []
            if len(attempts) == len(values) and len(set(attempts)) > 1:  # SFT restarted: one line per attempt
                kept = curves["sft_kept"][0] if curves.get("sft_kept") else None
                for attempt in sorted(set(attempts)):
                    picked = [i for i, a in enumerate(attempts) if a == attempt]
                    label = f"attempt {int(attempt) + 1}" + (" (kept)" if attempt == kept else "")
                    ax.plot([steps[i] for i in picked], [values[i] for i in picked], marker="o", label=label)
                ax.legend()
            else:
                ax.plot(steps, values, marker="o")
            ax.set_title(checks[phase][0])
            ax.set_xlabel(checks[phase][1])
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            continue
        ax.plot(range(1, len(curves[phase]) + 1), curves[phase])
        ax.set_title(
            f"cold start: {phase} loss"
            + (
                " (kept attempt)"
                if phase == "sft" and curves.get("sft_attempt") and len(set(curves["sft_attempt"])) > 1
                else ""
            )
        )
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
