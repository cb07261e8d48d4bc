"""Stage ``build_simulator_sft``: label real-search interactions useful or noisy and build balanced SFT data
(:mod:`zerosearch_core.simulator.sft_data`).

Great Expectations checks balance, empty targets, golden-answer leakage into noisy targets and length bounds; a
failure fails the stage and writes no data. Run: ``python -m zerosearch_core.cli build_simulator_sft``.
"""

from __future__ import annotations

import json
from pathlib import Path

from zerosearch_core.artifacts import write_dir_atomically
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data.validation import validate_simulator_sft
from zerosearch_core.errors import DataValidationError
from zerosearch_core.simulator.sft_data import HELDOUT_FILE, TRAIN_FILE, build_sft_data, read_interactions
from zerosearch_core.stages import StageHooks, StageResult

PARAMS = (
    "seed",
    "search.top_k",
    "model.dtype",
    "simulator.labeller",
    "simulator.judge_model",
    "simulator.outcome_threshold",
    "simulator.noisy_source",
    "simulator.doc_words",
    "simulator.answer_aware",  # the SFT prompts state the answer or not
    "simulator.balance_tolerance",
    "simulator.balance",
    "simulator.heldout_fraction",
    "paths.trajectories",
    "paths.simulator_sft_dir",
)


def run(cfg: PipelineConfig, hooks: StageHooks) -> StageResult:
    """Label, split, balance, validate and write the SFT data."""
    sim = cfg.simulator
    data = build_sft_data(read_interactions(Path(cfg.paths.trajectories)), sim, cfg.model.dtype, cfg.seed)
    frame = data.frame
    report_dir = Path(cfg.paths.simulator_sft_dir + "_report")
    checked = frame.assign(completion=frame["completion"].map(lambda m: m[0]["content"] if m else ""))
    outcome = validate_simulator_sft(checked, cfg.search.top_k, sim.doc_words, sim.balance_tolerance, report_dir)
    if not outcome.success:
        raise DataValidationError(outcome.summary(), report_dir)

    def write(folder: Path) -> None:
        frame.to_json(folder / TRAIN_FILE, orient="records", lines=True, force_ascii=False)
        (folder / HELDOUT_FILE).write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in data.heldout))

    write_dir_atomically(Path(cfg.paths.simulator_sft_dir), write)
    return StageResult(metrics=data.metrics, artifacts=(report_dir,))
