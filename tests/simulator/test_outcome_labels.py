"""The paper's outcome labeller on real search: a policy's episodes against the real BM25 index of the real corpus,
on real benchmark questions, labelled by the reward of their answers; noisy targets derived from the same search's
lower-ranked results; and the config errors that keep the two settings consistent."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.fakes import AnsweringPolicy
from zerosearch_core.config import ConfigError, PipelineConfig, load_config
from zerosearch_core.data import benchmarks as benchmark_data
from zerosearch_core.models.build import load_tokenizer
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.simulator.prompts import contains_answer
from zerosearch_core.simulator.sft_data import build_sft_data, documents_of, lower_ranked_noisy
from zerosearch_core.stages import StageHooks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_search_cfg(tmp_path_factory: pytest.TempPathFactory, tiny_policy_dir: Path) -> PipelineConfig:
    """The smoke profile on the real multi-hop questions and the whole real corpus, indexed by real BM25."""
    from tests.conftest import shrink_config
    from zerosearch_core.stages import build_index, prepare_data

    root = tmp_path_factory.mktemp("outcome")
    cfg = shrink_config(load_config(ROOT / "params.yaml"), root)
    files = tuple(f for f in cfg.data.files if f.name in ("multihop_train", "multihop_val", "bamboogle_test"))
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=("bamboogle_test",)),
        search=dataclasses.replace(cfg.search, max_passages=None),
        rollout=dataclasses.replace(cfg.rollout, max_new_tokens_per_turn=64, max_total_tokens=4096, batch_size=8),
        simulator=dataclasses.replace(
            cfg.simulator,
            query_source="policy",
            collect_samples=2,
            collect_max_questions=24,
            labeller="outcome",
            outcome_threshold=1.0,
            noisy_source="lower_ranked",
            noisy_pool=20,
            balance="oversample",
        ),
        paths=dataclasses.replace(cfg.paths, policy_dir=str(tiny_policy_dir)),
    )
    prepare_data.run(cfg, StageHooks())
    build_index.run(cfg, StageHooks())
    return cfg


def _collect(cfg: PipelineConfig) -> tuple[list[dict], pd.DataFrame]:
    from zerosearch_core.stages import collect_trajectories

    sim = cfg.simulator
    frame = benchmark_data.load_benchmark(Path(cfg.paths.benchmarks_dir), sim.collect_questions)
    questions = benchmark_data.sample_questions(frame, sim.collect_max_questions, 1)
    tokenizer = load_tokenizer(cfg.paths.policy_dir)
    right = set(questions["question"].iloc[::2])
    answers = {
        str(q): (str(golden[0]) if q in right else "zzzz qqqq")
        for q, golden in zip(questions["question"], questions["golden_answers"], strict=True)
    }
    policy = AnsweringPolicy(tokenizer, answers)
    with open_search_engine(cfg.search, Path(cfg.paths.index_dir)) as engine:
        sessions = collect_trajectories.recording_sessions(cfg, engine, questions, sim.collect_samples)
        metrics = collect_trajectories.record_policy_episodes(policy, tokenizer, sessions, cfg)
    assert metrics["episodes_that_searched"] == len(sessions) == 2 * len(questions)
    assert metrics["episode_reward_mean"] == pytest.approx(len(right) / len(questions))
    return [i for s in sessions for i in s.interactions], questions.assign(right=questions["question"].isin(right))


def test_outcome_labels_follow_the_reward_of_each_episodes_answer(real_search_cfg: PipelineConfig) -> None:
    cfg = real_search_cfg
    interactions, questions = _collect(cfg)
    assert len(interactions) == 2 * len(questions)  # one search per episode, two sampled episodes per question
    assert {i["sample"] for i in interactions} == {0, 1}
    right = dict(zip(questions["id"].astype(str), questions["right"], strict=True))
    for item in interactions:
        assert item["reward"] == (1.0 if right[item["id"]] else 0.0)
        assert len(item["documents"]) == cfg.search.top_k
        assert len(item["lower_ranked"]) == cfg.simulator.noisy_pool - cfg.search.top_k
        scores = [d["score"] for d in item["documents"] + item["lower_ranked"]]
        assert scores == sorted(scores, reverse=True)  # the real ranking, shown results first

    data = build_sft_data(interactions, cfg.simulator, cfg.model.dtype, cfg.seed)
    metrics = data.metrics
    contained = [contains_answer(documents_of(i), i["golden_answers"]) for i in interactions]
    expected_agreement = sum(right[i["id"]] == c for i, c in zip(interactions, contained, strict=True))
    assert metrics["labeller_containment_agreement"] == pytest.approx(expected_agreement / len(interactions))
    assert metrics["labelled_useful"] == sum(right[i["id"]] for i in interactions)
    for held in data.heldout:
        assert held["label"] == ("useful" if right[held["id"]] else "noisy")

    heldout_ids = {h["id"] for h in data.heldout}
    train = [(i, c) for i, c in zip(interactions, contained, strict=True) if i["id"] not in heldout_ids]
    leaking = sum(1 for i, c in train if c and not right[i["id"]])
    assert metrics["noisy_leaking_left_out"] == leaking
    assert metrics["derived_noisy"] + metrics["derived_noisy_too_few_results"] == sum(right[i["id"]] for i, _ in train)
    assert metrics["derived_noisy"] > 0

    passages = pd.read_parquet(Path(cfg.paths.index_dir) / "passages.parquet")
    by_id = dict(zip(passages["id"].astype(str), passages["text"], strict=True))
    for item, _ in train:
        derived = lower_ranked_noisy(item)
        if derived is None:
            continue
        pool = [d["id"] for d in item["documents"] + item["lower_ranked"]]
        ids = [d["id"] for d in derived["documents"]]
        assert ids == [i for i in pool if i in ids]  # in rank order, from this query's own results
        assert all(by_id[d["id"]] == d["text"] for d in derived["documents"])  # real passages, verbatim
        assert not contains_answer(documents_of(derived), item["golden_answers"])
    frame = data.frame
    noisy = frame[frame["doc_type"] == "noisy"]
    assert not noisy["noisy_leaks_answer"].any()
    assert len(frame[frame["doc_type"] == "useful"]) == len(noisy)  # balanced


def test_the_stages_write_outcome_labelled_sft_data_that_passes_validation(real_search_cfg: PipelineConfig) -> None:
    from zerosearch_core.stages import build_simulator_sft

    cfg = real_search_cfg
    interactions, _ = _collect(cfg)
    Path(cfg.paths.trajectories).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.paths.trajectories).write_text("".join(json.dumps(i) + "\n" for i in interactions))
    result = build_simulator_sft.run(cfg, StageHooks())
    assert 0.0 <= result.metrics["labeller_containment_agreement"] <= 1.0
    rows = [json.loads(line) for line in (Path(cfg.paths.simulator_sft_dir) / "train.jsonl").read_text().splitlines()]
    assert {r["doc_type"] for r in rows} == {"useful", "noisy"}


def test_outcome_labels_need_episode_rewards(real_search_cfg: PipelineConfig) -> None:
    item = {"id": "q1", "question": "Q?", "golden_answers": ["A"], "query": "Q", "documents": []}
    with pytest.raises(ValueError, match="query_source: policy"):
        build_sft_data([item], real_search_cfg.simulator, "float32", 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labeller": "outcome", "query_source": "question"}, "labeller is 'outcome' but simulator.query_source"),
        ({"noisy_pool": 0}, r"noisy_pool=0 is out of range"),
        ({"collect_samples": 0}, r"collect_samples=0 is out of range"),
    ],
)
def test_inconsistent_collection_settings_are_config_errors(tmp_path: Path, changes: dict, message: str) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["simulator"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_gpu_profiles_label_by_outcome() -> None:
    for profile in sorted((ROOT / "profiles").glob("gpu_*.yaml")):
        sim = load_config(profile).simulator
        assert (sim.labeller, sim.query_source, sim.noisy_source) == ("outcome", "policy", "lower_ranked"), profile
        assert sim.collect_samples > 1
