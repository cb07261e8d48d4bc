"""The simulator: prompt renderings (golden), robust parsing, labelling, the seeded simulated engine, and the
collect → SFT data → fine-tune stages on real data with a real tiny model."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import ScriptedPolicy
from zerosearch_core.agent.loop import run_episodes
from zerosearch_core.config import PipelineConfig
from zerosearch_core.data.validation import validate_simulator_sft
from zerosearch_core.models.build import load_causal_lm, load_tokenizer
from zerosearch_core.search.base import (
    Document,
    EpisodeContext,
    SearchBackendError,
    SearchErrorBudget,
    SearchResult,
    run_searches,
)
from zerosearch_core.simulator.engine import FEW_SHOT_EXAMPLE, SimulatedSearchEngine
from zerosearch_core.simulator.llm import LocalLLM
from zerosearch_core.simulator.prompts import (
    choose_doc_type,
    contains_answer,
    label_by_containment,
    parse_documents,
    parse_judge_reply,
    render_documents_target,
    render_judge_prompt,
    render_simulator_prompt,
)
from zerosearch_core.stages import StageHooks

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "simulator_prompts.json").read_text())
DOCS = [
    Document("1", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.", 2.0),
    Document("2", "Paris", "Paris is the capital of France.", 1.0),
]


@pytest.mark.parametrize("case", GOLDEN["simulator"], ids=[c["name"] for c in GOLDEN["simulator"]])
def test_simulator_prompt_golden(case: dict) -> None:
    assert render_simulator_prompt(**case["args"]) == case["rendered"]


def test_judge_prompt_and_target_golden() -> None:
    judge = GOLDEN["judge"]
    assert render_judge_prompt(judge["question"], judge["answers"], DOCS) == judge["rendered"]
    assert render_documents_target(DOCS, GOLDEN["target"]["max_words"]) == GOLDEN["target"]["rendered"]


def test_useful_and_noisy_prompts_differ_only_in_the_instruction() -> None:
    useful = render_simulator_prompt("q", "Q?", ["A"], "useful", 3, 40).splitlines()
    noisy = render_simulator_prompt("q", "Q?", ["A"], "noisy", 3, 40).splitlines()
    assert [i for i, (a, b) in enumerate(zip(useful, noisy, strict=True)) if a != b] == [1]
    assert "do not" in noisy[1] and "contain the facts" in useful[1]


@pytest.mark.parametrize(
    ("text", "expected", "titles", "missing", "overlong", "unnumbered"),
    [
        ("Doc 1: (Title: A) alpha\nDoc 2: (Title: B) beta", 2, ["A", "B"], 0, 0, False),
        ("1. (Title: A) alpha\n2) beta", 2, ["A", ""], 0, 0, False),
        ("Document 1: alpha\ncontinued here\nDoc 2: beta", 2, ["", ""], 0, 0, False),
        ("Doc 1: (Title: A) alpha", 3, ["A"], 2, 0, False),
        ("Doc 1: " + "x" * 50, 1, [""], 0, 1, False),
        ("free text without numbers", 2, [""], 1, 1, True),
        ("Doc 1: a\nDoc 2: b\nDoc 3: c\nDoc 4: d", 2, ["", ""], 0, 0, False),
        ("", 2, [], 2, 0, False),
    ],
)
def test_parse_documents_counts_every_problem(
    text: str, expected: int, titles: list[str], missing: int, overlong: int, unnumbered: bool
) -> None:
    parsed = parse_documents(text, expected, max_chars=20)
    assert [d.title for d in parsed.documents] == titles
    assert (parsed.missing, parsed.overlong, parsed.unnumbered) == (missing, overlong, unnumbered)
    assert all(len(d.text) <= 20 for d in parsed.documents)
    assert parsed.empty == (not titles)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=5))
@settings(max_examples=200, deadline=None)
def test_parse_never_crashes_and_never_exceeds_bounds(text: str, expected: int) -> None:
    parsed = parse_documents(text, expected, max_chars=50)
    assert len(parsed.documents) + parsed.missing == expected or (parsed.unnumbered and len(parsed.documents) == 1)
    assert all(len(d.text) <= 50 for d in parsed.documents)


def test_containment_labels_and_judge_replies() -> None:
    assert label_by_containment(DOCS, ["1889"]) == "useful"
    assert label_by_containment(DOCS, ["Berlin"]) == "noisy"
    assert not contains_answer(DOCS, ["188"])  # whole tokens only
    assert contains_answer(DOCS, ["the capital"])  # normalised: articles dropped on both sides
    assert [parse_judge_reply(r) for r in ("YES.", "No, it does not", "", "unsure")] == ["useful", "noisy", None, None]


def test_doc_type_draws_follow_the_noise_probability() -> None:
    rng = random.Random(0)
    draws = [choose_doc_type(0.3, rng) for _ in range(4000)]
    assert draws.count("noisy") / len(draws) == pytest.approx(0.3, abs=0.03)


class ScriptedLLM:
    def __init__(self, replies: Sequence[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        self.prompts.extend(prompts)
        return [self.replies[(len(self.prompts) - 1) % len(self.replies)] for _ in prompts]


def _engine(cfg: PipelineConfig, llm, mode: str = "finetuned") -> SimulatedSearchEngine:
    return SimulatedSearchEngine(llm, dataclasses.replace(cfg.simulator, mode=mode), 200, {"model": "scripted"})


def test_same_seed_same_document_types_and_the_prompt_carries_the_episode(cfg: PipelineConfig) -> None:
    def types(seed: int) -> list[str]:
        llm = ScriptedLLM(["Doc 1: (Title: T) text"])
        session = _engine(cfg, llm).open_session(EpisodeContext("Who?", ("Ann",), 0.5, seed))
        return [session.search(f"q{i}", 1).message for i in range(12)]

    assert types(7) == types(7)
    assert types(7) != types(8)
    llm = ScriptedLLM(["Doc 1: (Title: T) text"])
    _engine(cfg, llm).open_session(EpisodeContext("Who founded X?", ("Ann",), 1.0, 1)).search("founder of x", 1)
    assert "Question: Who founded X?" in llm.prompts[0] and "Answer: Ann" in llm.prompts[0]
    assert "do not contain" in llm.prompts[0]  # noise probability 1: noisy
    _engine(cfg, llm, "prompted").open_session(EpisodeContext("Q?", ("A",), 0.0, 1)).search("q", 1)
    assert llm.prompts[-1].startswith(FEW_SHOT_EXAMPLE)


class CountingLLM(LocalLLM):
    """The real local simulator, counting its generate calls."""

    calls: list[int]

    def complete(self, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int) -> list[str]:
        self.calls.append(len(prompts))
        return super().complete(prompts, max_new_tokens, temperature, seed)


def test_a_turns_searches_go_to_the_simulator_as_one_batch_with_per_episode_types(
    cfg: PipelineConfig, tiny_policy_dir: Path
) -> None:
    llm = CountingLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))
    llm.calls = []
    engine = _engine(dataclasses.replace(cfg, simulator=dataclasses.replace(cfg.simulator, max_new_tokens=12)), llm)
    contexts = [EpisodeContext(f"Q{i}?", ("A",), 0.5, seed) for i, seed in enumerate([3, 4, 5, 6])]
    policy = TurnScriptedPolicy(load_tokenizer(tiny_policy_dir), ["<search> q </search>", "<answer> A </answer>"])
    sessions = [engine.open_session(ctx) for ctx in contexts]
    rollout = dataclasses.replace(cfg.rollout, batch_size=4, max_new_tokens_per_turn=16)
    trajectories = run_episodes(policy, [policy.encode("Q")] * 4, sessions, rollout, 2, SearchErrorBudget(1.0))
    assert llm.calls == [4]  # one generate call for the four searches of the turn
    assert [t.searches for t in trajectories] == [1, 1, 1, 1]
    # Each episode draws its document type from its own generator, exactly as if it had searched alone.
    alone = [_engine(cfg, ScriptedLLM(["Doc 1: (Title: T) t"])).open_session(ctx).search("q", 2) for ctx in contexts]
    scripted = _engine(cfg, ScriptedLLM(["Doc 1: (Title: T) t"]))
    together = run_searches([(scripted.open_session(ctx), "q") for ctx in contexts], 2)
    assert [o.message for o in together if isinstance(o, SearchResult)] == [a.message for a in alone]
    assert {a.message for a in alone} == {"useful", "noisy"}  # the seeds above draw both types


class TurnScriptedPolicy(ScriptedPolicy):
    """Says turn i of the script to every episode on the i-th generate call."""

    calls = 0

    def generate(
        self, sequences: Sequence[Sequence[int]], max_new_tokens: int, seeds: Sequence[int] | None = None
    ) -> list[tuple[list[int], list[float]]]:
        turn = self.turns[min(self.calls, len(self.turns) - 1)]
        self.calls += 1
        return [(turn[:max_new_tokens], [0.0] * len(turn[:max_new_tokens])) for _ in sequences]


def test_unusable_output_is_a_backend_error_that_fails_a_strict_run(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    engine = _engine(cfg, ScriptedLLM([""]))
    session = engine.open_session(EpisodeContext("Q?", ("A",), 0.0, 1))
    with pytest.raises(SearchBackendError, match="no usable document"):
        session.search("q", 2)
    assert engine.stats.empty == 1

    from tests.fakes import ScriptedPolicy

    policy = ScriptedPolicy(load_tokenizer(tiny_policy_dir), ["<search> q </search>"])
    with pytest.raises(SearchBackendError, match="max_error_rate"):
        run_episodes(policy, [policy.encode("Q")], [session], cfg.rollout, 2, SearchErrorBudget(0.0))


def test_local_llm_is_seeded(tiny_policy_dir: Path) -> None:
    llm = LocalLLM(load_causal_lm(tiny_policy_dir), load_tokenizer(tiny_policy_dir))
    first = llm.complete(["Write documents about Paris."], 12, 1.0, seed=5)
    assert first == llm.complete(["Write documents about Paris."], 12, 1.0, seed=5)
    assert first != llm.complete(["Write documents about Paris."], 12, 1.0, seed=6)


def test_sft_validation_names_leaks_and_imbalance(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "doc_type": ["useful", "useful", "useful", "noisy"],
            "completion": ["Doc 1: x", "Doc 1: y", "", "Doc 1: 1889"],
            "noisy_leaks_answer": [False, False, False, True],
            "documents": [1, 1, 1, 1],
            "max_doc_words": [2, 2, 2, 2],
        }
    )
    outcome = validate_simulator_sft(
        frame, num_documents=3, doc_words=40, balance_tolerance=0.1, report_dir=tmp_path / "r"
    )
    failed = {f.expectation: f for f in outcome.failures}
    assert set(failed) == {
        "expect_column_mean_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
    }
    assert "id='d'" in failed["expect_column_values_to_be_in_set"].describe()
    assert "id='c'" in failed["expect_column_values_to_not_be_null"].describe()
    assert "FAILED" in (tmp_path / "r" / "summary.md").read_text()


def _simulator_cfg(cfg: PipelineConfig, tiny_policy_dir: Path) -> PipelineConfig:
    files = tuple(f for f in cfg.data.files if f.name in ("multihop_train", "multihop_val", "bamboogle_test"))
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=("bamboogle_test",)),
        search=dataclasses.replace(cfg.search, max_passages=None),
        simulator=dataclasses.replace(
            cfg.simulator, collect_max_questions=800, epochs=1.0, max_length=512, max_new_tokens=32, eval_questions=4
        ),
        paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)),
    )


def _with_more_training_questions(cfg: PipelineConfig) -> PipelineConfig:
    """The committed samples hold 40 questions a file, too few to balance and hold out simulator data: the training
    file becomes the real multi-hop rows of five samples (train, validation, HotpotQA, 2Wiki, MuSiQue) together."""
    source = Path(cfg.data.source_dir)
    target = Path(cfg.paths.benchmarks_dir).parent / "sources"
    shutil.copytree(source, target)
    parts = ["train_mixed_15000-cleaned", "val_mixed_900", "hotpotqa_test_1000", "2wikimultihopqa_test_1000"]
    lines = [line for part in parts for line in (source / f"searchagentreview/{part}.jsonl").read_text().splitlines()]
    lines += (source / "searchagentreview/musique_test_1000.jsonl").read_text().splitlines()[:40]  # no repeat
    (target / "searchagentreview/train_mixed_15000-cleaned.jsonl").write_text("\n".join(lines) + "\n")
    files = tuple(
        dataclasses.replace(f, expected_rows=len(lines)) if f.name == "multihop_train" else f for f in cfg.data.files
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source_dir=str(target), files=files))


@pytest.mark.slow
def test_collect_label_finetune_stages_on_real_search(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    from zerosearch_core.stages import (
        build_index,
        build_simulator_sft,
        collect_trajectories,
        finetune_simulator,
        prepare_data,
    )

    run_cfg = _with_more_training_questions(_simulator_cfg(cfg, tiny_policy_dir))
    prepare_data.run(run_cfg, StageHooks())
    build_index.run(run_cfg, StageHooks())
    collected = collect_trajectories.run(run_cfg, StageHooks())
    assert collected.metrics["interactions"] == 200  # every question of the five 40-row samples
    first = json.loads(Path(run_cfg.paths.trajectories).read_text().splitlines()[0])
    assert (
        set(first) == {"id", "question", "golden_answers", "sample", "query", "documents", "lower_ranked"}
        and first["query"] == first["question"]
    )
    assert first["lower_ranked"] == []  # params.yaml's noisy_pool is top_k: nothing below the shown results
    assert len(first["documents"]) == run_cfg.search.top_k

    built = build_simulator_sft.run(run_cfg, StageHooks())
    rows = [
        json.loads(line) for line in (Path(run_cfg.paths.simulator_sft_dir) / "train.jsonl").read_text().splitlines()
    ]
    useful = sum(r["doc_type"] == "useful" for r in rows)
    assert useful == len(rows) - useful > 0  # balanced exactly
    assert built.metrics["dropped_for_balance"] > 0 and built.metrics["labelled_useful"] >= useful
    assert all(not r["noisy_leaks_answer"] for r in rows)
    assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["completion"][0]["content"].startswith("Doc 1: (Title: ")
    heldout = {
        json.loads(line)["id"]
        for line in (Path(run_cfg.paths.simulator_sft_dir) / "heldout.jsonl").read_text().splitlines()
    }
    assert not heldout & {r["question_id"] for r in rows}  # held-out questions never trained on

    steps: list[int] = []
    tuned = finetune_simulator.run(run_cfg, StageHooks(log_step=lambda metrics, step: steps.append(step)))
    assert steps and tuned.metrics["sft_loss_last"] < tuned.metrics["sft_loss_first"]
    for key in ("useful_answer_rate", "noisy_answer_rate", "useful_minus_noisy", "real_documents_answer_rate"):
        assert 0.0 <= abs(tuned.metrics[key]) <= 1.0
    samples = (Path(run_cfg.paths.simulator_dir) / "samples.md").read_text()
    assert samples.count("**useful**") == 4 and samples.count("**noisy**") == 4
    assert load_causal_lm(run_cfg.paths.simulator_dir).config.model_type == "qwen2"

    oversampled_dir = Path(run_cfg.paths.simulator_sft_dir + "_oversampled")
    oversampled_cfg = dataclasses.replace(
        run_cfg,
        simulator=dataclasses.replace(run_cfg.simulator, balance="oversample"),
        paths=dataclasses.replace(run_cfg.paths, simulator_sft_dir=str(oversampled_dir)),
    )
    over = build_simulator_sft.run(oversampled_cfg, StageHooks())
    over_rows = [json.loads(line) for line in (oversampled_dir / "train.jsonl").read_text().splitlines()]
    over_useful = sum(r["doc_type"] == "useful" for r in over_rows)
    assert over_useful == len(over_rows) - over_useful  # balanced exactly, by repeating the smaller class
    assert over.metrics["dropped_for_balance"] == 0 and over.metrics["repeated_for_balance"] > 0
    train_interactions = len(over_rows) - over.metrics["repeated_for_balance"]
    assert train_interactions == over.metrics["interactions"] - over.metrics["heldout_interactions"]  # all kept
    assert len({r["id"] for r in over_rows}) == len(over_rows)


@pytest.mark.slow
def test_policy_query_source_with_a_policy_that_never_searches_fails_clearly(
    cfg: PipelineConfig, tiny_policy_dir: Path
) -> None:
    from zerosearch_core.stages import build_index, collect_trajectories, prepare_data

    run_cfg = _simulator_cfg(cfg, tiny_policy_dir)
    run_cfg = dataclasses.replace(
        run_cfg, simulator=dataclasses.replace(run_cfg.simulator, query_source="policy", collect_max_questions=4)
    )
    prepare_data.run(run_cfg, StageHooks())
    build_index.run(run_cfg, StageHooks())
    with pytest.raises(RuntimeError, match="query_source: question"):
        collect_trajectories.run(run_cfg, StageHooks())


def _write_sft(folder: Path, rows: int) -> None:
    folder.mkdir(parents=True)
    lines = []
    for i in range(rows):
        kind = "useful" if i % 2 == 0 else "noisy"
        prompt = render_simulator_prompt(f"query {i}", f"Question {i}?", ["Paris"], kind, 1, 10)  # type: ignore[arg-type]
        target = (
            "Doc 1: (Title: Paris) Paris is the capital of France."
            if kind == "useful"
            else "Doc 1: (Title: Rome) Rome."
        )
        lines.append(
            {
                "id": str(i),
                "question_id": str(i),
                "doc_type": kind,
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": target}],
            }
        )
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    heldout = {
        "id": "h",
        "question": "What is the capital of France?",
        "golden_answers": ["Paris"],
        "query": "france capital",
        "documents": [{"id": "1", "title": "Paris", "text": "Paris is the capital of France.", "score": 1.0}],
    }
    (folder / "heldout.jsonl").write_text(json.dumps(heldout) + "\n")


@pytest.mark.slow
def test_lora_finetuning_merges_adapters_into_a_plain_checkpoint(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    from zerosearch_core.stages import finetune_simulator

    run_cfg = dataclasses.replace(
        cfg,
        simulator=dataclasses.replace(
            cfg.simulator,
            finetune="lora",
            lora_rank=4,
            learning_rate=0.01,
            epochs=2.0,
            batch_size=4,
            max_length=256,
            max_new_tokens=16,
            eval_questions=1,
        ),
        paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)),
    )
    _write_sft(Path(run_cfg.paths.simulator_sft_dir), rows=16)
    result = finetune_simulator.run(run_cfg, StageHooks())
    assert result.metrics["sft_loss_last"] < result.metrics["sft_loss_first"]
    saved = Path(run_cfg.paths.simulator_dir)
    assert (saved / "model.safetensors").is_file() and not (saved / "adapter_config.json").exists()
    merged, base = load_causal_lm(saved), load_causal_lm(tiny_policy_dir)
    changed = [not torch.equal(a, b) for a, b in zip(merged.parameters(), base.parameters(), strict=True)]
    assert any(changed)  # the adapters were merged into the weights


def test_llm_judge_labels_and_counts_undecided_replies(cfg: PipelineConfig, tiny_policy_dir: Path) -> None:
    from zerosearch_core.simulator.sft_data import label_interactions

    judge_cfg = dataclasses.replace(
        cfg, simulator=dataclasses.replace(cfg.simulator, labeller="llm_judge", judge_model=str(tiny_policy_dir))
    )
    interactions = [
        {
            "id": "1",
            "question": "Capital of France?",
            "golden_answers": ["Paris"],
            "query": "q",
            "documents": [{"id": "d", "title": "Paris", "text": "Paris is the capital of France.", "score": 1.0}],
        },
        {
            "id": "2",
            "question": "Capital of Italy?",
            "golden_answers": ["Rome"],
            "query": "q",
            "documents": [{"id": "d", "title": "Paris", "text": "Paris is the capital of France.", "score": 1.0}],
        },
    ]
    labels, undecided = label_interactions(judge_cfg.simulator, judge_cfg.model.dtype, interactions)
    assert len(labels) == 2 and set(labels) <= {"useful", "noisy"}
    assert 0 <= undecided <= 2
    if undecided == 2:  # a random judge says neither yes nor no: containment decides, and the count says so
        assert labels == ["useful", "noisy"]


@pytest.mark.slow
def test_simulator_finetuning_resumes_its_own_run_only(
    cfg: PipelineConfig, tiny_policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from zerosearch_core.stages import finetune_simulator

    run_cfg = dataclasses.replace(
        cfg,
        simulator=dataclasses.replace(
            cfg.simulator,
            epochs=1.0,
            batch_size=4,
            save_every_steps=2,
            max_length=256,
            max_new_tokens=8,
            eval_questions=1,
        ),
        paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)),
    )
    _write_sft(Path(run_cfg.paths.simulator_sft_dir), rows=8)
    first = finetune_simulator.run(run_cfg, StageHooks())
    assert first.tags == {"run_start": "afresh"}
    with caplog.at_level(logging.INFO, logger="zerosearch_core.simulator.finetune"):
        again = finetune_simulator.run(run_cfg, StageHooks())
    assert "Resumed simulator fine-tuning from" in caplog.text
    assert again.metrics["sft_loss_first"] == first.metrics["sft_loss_first"]  # the restored history, not a new run
    assert again.tags == {"run_start": "resumed"}
    # A kill during a save leaves a checkpoint without trainer_state.json: the rerun drops it and resumes the last
    # complete one instead of failing with FileNotFoundError.
    checkpoints = Path(run_cfg.paths.simulator_checkpoints_dir)
    half_written = checkpoints / "checkpoint-999"
    half_written.mkdir()
    (half_written / "config.json").write_text("{}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zerosearch_core"):
        resumed = finetune_simulator.run(run_cfg, StageHooks())
    assert "checkpoint-999: it has no trainer_state.json" in caplog.text and not half_written.exists()
    assert "Resumed simulator fine-tuning from" in caplog.text
    assert resumed.metrics["sft_loss_first"] == first.metrics["sft_loss_first"]
    assert resumed.tags == {"run_start": "resumed"}
    caplog.clear()
    changed = dataclasses.replace(run_cfg, simulator=dataclasses.replace(run_cfg.simulator, learning_rate=0.002))
    with caplog.at_level(logging.INFO, logger="zerosearch_core.simulator.finetune"):
        afresh = finetune_simulator.run(changed, StageHooks())
    assert "Resumed" not in caplog.text
    assert afresh.tags == {"run_start": "afresh (the checkpoints of another run were cleared)"}


def test_prompted_mode_saves_the_base_as_it_is_and_measures_it_few_shot(
    cfg: PipelineConfig, tiny_policy_dir: Path
) -> None:
    """The paper's prompt-only baseline: no fine-tuning, the base model asked with a worked example."""
    from zerosearch_core.stages import finetune_simulator

    run_cfg = dataclasses.replace(
        cfg,
        simulator=dataclasses.replace(cfg.simulator, mode="prompted", max_new_tokens=8, eval_questions=1),
        paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)),
    )
    _write_sft(Path(run_cfg.paths.simulator_sft_dir), rows=4)
    result = finetune_simulator.run(run_cfg, StageHooks())
    assert result.tags == {"run_start": "not fine-tuned (simulator.mode: prompted)"}
    assert "sft_loss_first" not in result.metrics and result.metrics["heldout_queries"] == 1.0
    assert not Path(run_cfg.paths.simulator_checkpoints_dir).exists()
    saved, base = load_causal_lm(run_cfg.paths.simulator_dir), load_causal_lm(tiny_policy_dir)
    assert all(torch.equal(a, b) for a, b in zip(saved.parameters(), base.parameters(), strict=True))


def test_an_answer_blind_simulator_prompt_never_states_the_answer() -> None:
    from zerosearch_core.simulator.prompts import NO_ANSWER_GIVEN, render_simulator_prompt
    from zerosearch_core.simulator.sft_data import sft_row

    aware = render_simulator_prompt("Which city is Doran from?", "Q about Alira?", ["Varesk"], "useful", 3, 30)
    blind = render_simulator_prompt("Which city is Doran from?", "Q about Alira?", ["Varesk"], "useful", 3, 30, False)
    assert "Varesk" in aware and "Varesk" not in blind and f"Answer: {NO_ANSWER_GIVEN}" in blind
    interaction = {
        "id": "q1",
        "query": "Which city is Doran from?",
        "question": "Q about Alira?",
        "golden_answers": ["Varesk"],
        "documents": [{"id": "d", "title": "Doran", "text": "Doran is from Varesk.", "score": 1.0}],
    }
    row = sft_row(interaction, "useful", 0, 30, answer_aware=False)
    assert "Varesk" not in row["prompt"][0]["content"] and "Varesk" in row["completion"][0]["content"]
