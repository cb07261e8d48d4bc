"""Cold start (zerosearch_core.policy.cold_start and the init_policy stage): real toy world, real BM25, real tiny
model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from zerosearch_core.agent.prompts import build_prompt_ids
from zerosearch_core.config import ColdStartConfig, ConfigError, PipelineConfig, WorldConfig, load_config
from zerosearch_core.data.toyworld import generate_world, write_world
from zerosearch_core.models.build import build_tiny_policy, load_causal_lm, load_tokenizer
from zerosearch_core.policy.cold_start.drills import (
    Drill,
    add_distractors,
    answer_drill_sequences,
    drill_form,
    pack_blocks,
    pretrain_sequences,
    read_drills,
    read_pretrain_texts,
    split_heldout_drills,
)
from zerosearch_core.policy.cold_start.reading import reading_accuracy
from zerosearch_core.policy.cold_start.recipe import open_reading_lessons
from zerosearch_core.policy.cold_start.sft_data import (
    NO_SEARCH_ANSWER,
    SFTExample,
    build_sft_examples,
    form_search_shares,
    question_form,
)
from zerosearch_core.policy.cold_start.training import Interleaved, _collate, run_cold_start, train_causal_lm
from zerosearch_core.search.registry import open_search_engine
from zerosearch_core.stages import StageHooks, build_index, init_policy, prepare_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_cfg(tmp_path: Path) -> PipelineConfig:
    """toy/params.yaml with a small world and every path under tmp_path, the world already written."""
    cfg = load_config(ROOT / "toy/params.yaml")
    world_dir = tmp_path / "world"
    world = WorldConfig(
        seed=3,
        entities=40,
        two_hop_share=0.5,
        val_questions=20,
        test_questions=20,
        train_questions=None,
        output_dir=str(world_dir),
        reading_drills=30,
        search_drills=30,
        bridge_drills=30,
        reading_people=20,
        mentor_backlinks=False,
        reading_backlinks=True,
        reading_two_hop=False,
    )
    world_dir.mkdir()
    write_world(generate_world(world), world_dir)
    files = tuple(dataclasses.replace(f, expected_rows=None) for f in cfg.data.files)
    paths: dict[str, object] = {
        f.name: str(tmp_path / getattr(cfg.paths, f.name).removeprefix("toy/"))
        for f in dataclasses.fields(cfg.paths)
        if f.name != "outside_project"
    }
    paths["outside_project"] = True  # tmp_path lies outside the project
    return dataclasses.replace(
        cfg,
        world=world,
        data=dataclasses.replace(cfg.data, source_dir=str(world_dir), files=files),
        search=dataclasses.replace(cfg.search, corpus_source=str(world_dir / "corpus.jsonl")),
        model=dataclasses.replace(cfg.model, hidden_size=32, intermediate_size=64, num_layers=2, vocab_size=600),
        cold_start=dataclasses.replace(
            cfg.cold_start,
            pretrain_steps=6,
            pretrain_max_steps=10,
            pretrain_check_every=2,
            pretrain_heldout=8,  # four reading drills among them: each with the toy profile's two distractors
            pretrain_reading_bar=1.0,  # out of reach of 10 steps: pre-training runs to pretrain_max_steps
            sft_steps=6,
            sft_max_steps=8,
            sft_check_every=2,
            sft_reading_bar=1.0,  # out of reach too: SFT runs to sft_max_steps, checked at steps 6 and 8
            sft_restarts=1,  # and, below the bar, once more from the pre-trained weights
            sft_examples=12,
            pretrain_texts=str(world_dir / "reading.jsonl"),
            pretrain_corpus_repeat=3,
            reading_corpus=str(world_dir / "reading_corpus.jsonl"),
            reading_questions=str(world_dir / "reading_questions.jsonl"),
            reading_examples=10,
            reading_heldout=6,
        ),
        tracking=dataclasses.replace(cfg.tracking, uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        paths=dataclasses.replace(cfg.paths, **paths),
    )


def test_sft_trajectory_has_the_rollout_layout_and_masks_only_inserted_documents(toy_cfg: PipelineConfig) -> None:
    prepare_data.run(toy_cfg, StageHooks())
    build_index.run(toy_cfg, StageHooks())
    passages = pd.read_parquet(Path(toy_cfg.paths.index_dir) / "passages.parquet")
    titles = dict(zip(passages["id"], passages["title"], strict=True))
    _, tokenizer = build_tiny_policy(toy_cfg.model, passages["text"].tolist(), seed=1)
    questions = pd.read_parquet(Path(toy_cfg.paths.benchmarks_dir) / "toy_train_1hop.parquet").head(3)
    with open_search_engine(toy_cfg.search, Path(toy_cfg.paths.index_dir)) as engine:
        examples = build_sft_examples(questions, tokenizer, engine, toy_cfg.rollout, toy_cfg.search.top_k)
    for example, row in zip(examples, questions.itertuples(), strict=True):
        prompt = build_prompt_ids(tokenizer, row.question, "search", toy_cfg.rollout.use_chat_template)
        assert list(example.input_ids[: len(prompt)]) == prompt  # the exact prompt the rollout engine builds
        learned = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
        inserted = tokenizer.decode(
            [
                t
                for t, m in zip(example.input_ids[len(prompt) :], example.loss_mask[len(prompt) :], strict=True)
                if not m
            ]
        )
        assert learned == f"<search> {row.question} </search><answer> {row.golden_answers[0]} </answer>"
        assert inserted.strip().startswith("<information>") and inserted.strip().endswith("</information>")
        person = titles[row.supporting_doc_ids[0]]  # the passage that states the answer
        assert f"(Title: {person})" in inserted  # real search found the person


def test_two_hop_sft_searches_the_bridge_person_for_its_share_and_gives_up_otherwise(toy_cfg: PipelineConfig) -> None:
    """A two-hop trajectory searches the question, then (from what came back) the mentor's own question, then
    answers; where it is not in sft_multi_hop_share it searches once and gives up. Real world, real BM25."""
    prepare_data.run(toy_cfg, StageHooks())
    build_index.run(toy_cfg, StageHooks())
    passages = pd.read_parquet(Path(toy_cfg.paths.index_dir) / "passages.parquet")
    titles = dict(zip(passages["id"], passages["title"], strict=True))
    _, tokenizer = build_tiny_policy(toy_cfg.model, passages["text"].tolist(), seed=1)
    train = pd.read_parquet(Path(toy_cfg.paths.benchmarks_dir) / "toy_train.parquet")
    questions = train[train["supporting_doc_ids"].map(len) == 2].head(4).reset_index(drop=True)
    with open_search_engine(toy_cfg.search, Path(toy_cfg.paths.index_dir)) as engine:

        def build(share: float) -> list[SFTExample]:
            return build_sft_examples(questions, tokenizer, engine, toy_cfg.rollout, 3, multi_hop_share=share)

        every_hop, once = build(1.0), build(0.0)
    for example, row in zip(every_hop, questions.itertuples(), strict=True):
        person, mentor = (titles[doc] for doc in row.supporting_doc_ids)
        text = tokenizer.decode(list(example.input_ids))
        learned = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
        second = row.decomposition[1]
        assert mentor in second and person not in second
        assert learned == (
            f"<search> {row.question} </search><search> {second} </search><answer> {row.golden_answers[0]} </answer>"
        )
        first_block, second_block = text.split("<information>")[-2:]  # the prompt names the tag too
        assert f"(Title: {person})" in first_block and f"mentored by {mentor}" in first_block
        assert f"(Title: {mentor})" in second_block  # real search for the bridge finds the answer's passage
        assert text.count("<search>") == 3  # the prompt names the tag once, then two searches
    for example, row in zip(once, questions.itertuples(), strict=True):
        learned = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
        assert learned == f"<search> {row.question} </search><answer> unknown </answer>"


def test_sft_search_share_gives_up_on_a_seeded_share_without_searching(toy_cfg: PipelineConfig) -> None:
    prepare_data.run(toy_cfg, StageHooks())
    build_index.run(toy_cfg, StageHooks())
    passages = pd.read_parquet(Path(toy_cfg.paths.index_dir) / "passages.parquet")
    _, tokenizer = build_tiny_policy(toy_cfg.model, passages["text"].tolist(), seed=1)
    questions = pd.read_parquet(Path(toy_cfg.paths.benchmarks_dir) / "toy_train_1hop.parquet").head(10)
    with open_search_engine(toy_cfg.search, Path(toy_cfg.paths.index_dir)) as engine:

        def build(share: float, seed: int) -> list[SFTExample]:
            return build_sft_examples(questions, tokenizer, engine, toy_cfg.rollout, 3, share, seed)

        mixed = build(0.4, 7)
        assert [e.searches for e in mixed] == [e.searches for e in build(0.4, 7)]  # seeded
        assert [e.searches for e in mixed] != [e.searches for e in build(0.4, 8)]
        assert sum(e.searches for e in mixed) == 4
        assert all(e.searches for e in build(1.0, 7)) and not any(e.searches for e in build(0.0, 7))
    for example, row in zip(mixed, questions.itertuples(), strict=True):
        prompt = build_prompt_ids(tokenizer, row.question, "search", toy_cfg.rollout.use_chat_template)
        learned = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
        if example.searches:
            assert learned == f"<search> {row.question} </search><answer> {row.golden_answers[0]} </answer>"
        else:  # gives up at once: no documents, and never the golden answer from memory
            assert list(example.input_ids[: len(prompt)]) == prompt and 0 not in example.loss_mask[len(prompt) :]
            assert learned == f"<answer> {NO_SEARCH_ANSWER} </answer>"


@pytest.mark.slow
def test_each_question_form_searches_at_its_own_share(toy_cfg: PipelineConfig) -> None:
    prepare_data.run(toy_cfg, StageHooks())
    build_index.run(toy_cfg, StageHooks())
    passages = pd.read_parquet(Path(toy_cfg.paths.index_dir) / "passages.parquet")
    _, tokenizer = build_tiny_policy(toy_cfg.model, passages["text"].tolist(), seed=1)
    questions = pd.read_parquet(Path(toy_cfg.paths.benchmarks_dir) / "toy_train_1hop.parquet")
    forms = [question_form(q) for q in questions["question"]]
    assert sorted(set(forms)) == [
        "What is the occupation of …?",
        "Which city is … from?",
        "Which instrument does … play?",
    ]
    shares = form_search_shares(forms, 0.5, 0.5, seed=3)
    assert sorted(shares.values()) == [0.0, 0.5, 1.0]
    with open_search_engine(toy_cfg.search, Path(toy_cfg.paths.index_dir)) as engine:
        examples = build_sft_examples(questions, tokenizer, engine, toy_cfg.rollout, 3, 0.5, 7, shares)
    for form, share in shares.items():
        mine = [e.searches for e, f in zip(examples, forms, strict=True) if f == form]
        assert sum(mine) == round(share * len(mine))  # every one, half, or none of the form's questions search


def test_answer_loss_learns_only_each_drills_answer_and_bad_records_are_named(tmp_path: Path) -> None:
    path = tmp_path / "reading.jsonl"
    records = [{"text": "Ana is a baker. Question: What is Ana? Answer: baker", "answer": "baker"}] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    drills = read_drills(path)
    train, heldout = split_heldout_drills(drills, 1, path)
    assert len(train) == 2 and heldout == [Drill("Ana is a baker. Question: What is Ana? Answer:", "baker")]
    _, tokenizer = build_tiny_policy(load_config(ROOT / "toy/params.yaml").model, [r["text"] for r in records], seed=0)
    sequences, masks = answer_drill_sequences(["a passage of the corpus"], train, tokenizer, corpus_repeat=2)
    assert len(sequences) == 2 + 2 and all(set(m) == {1} for m in masks[:2])  # the corpus blocks, learned whole
    for ids, mask in zip(sequences[2:], masks[2:], strict=True):
        learned = [t for t, m in zip(ids, mask, strict=True) if m]
        assert tokenizer.decode(learned, skip_special_tokens=True).strip() == "baker"  # the answer (and eos) only
    with pytest.raises(ValueError, match="leaves none of the 3 texts"):
        split_heldout_drills(drills, 3, path)
    path.write_text(path.read_text() + json.dumps({"text": "no answer here"}) + "\n")
    with pytest.raises(ValueError, match="reading.jsonl:4 has no 'answer'"):
        read_drills(path)


def test_distractors_follow_each_reading_drills_own_passage_and_leave_search_drills_alone(
    toy_cfg: PipelineConfig,
) -> None:
    path = Path(str(toy_cfg.cold_start.pretrain_texts))
    drills = read_drills(path)  # the toy world's 30 reading drills, each followed by a search and a bridge drill
    mixed = add_distractors(drills, 2, seed=5)
    assert mixed == add_distractors(drills, 2, seed=5) and mixed != add_distractors(drills, 2, seed=6)
    passages = {d.prefix.split(" Question: ")[0] for d in drills if not d.prefix.startswith("Question: ")}
    for old, new in zip(drills, mixed, strict=True):
        assert new.answer == old.answer and drill_form(new) == drill_form(old)
        if old.prefix.startswith("Question: "):  # a search drill: nothing to read, kept as it is
            assert new == old
            continue
        own, question = old.prefix.split(" Question: ")
        assert new.prefix.startswith(own + " ") and new.prefix.endswith(" Question: " + question)
        others = new.prefix.removeprefix(own + " ").removesuffix(" Question: " + question)
        # two whole passages of other drills (other people; a bridge drill's two count as one), after the drill's own
        assert any(others == f"{a} {b}" for a in passages - {own} for b in passages - {own, a})
    assert add_distractors(drills, 0, seed=5) == drills
    with pytest.raises(ValueError, match="pretrain_distractors=60 needs more than 60 drills with a passage"):
        add_distractors(drills, 60, seed=0)
    with pytest.raises(ConfigError, match="pretrain_distractors is set but"):
        dataclasses.replace(toy_cfg.cold_start, pretrain_distractors=2, pretrain_texts_loss="all")


def test_distractors_without_a_reading_bar_mix_the_trained_drills_only(toy_cfg: PipelineConfig) -> None:
    """No reading bar, so no held-out drills: the distractors go into the drills trained on, and nothing fails (it
    once raised 'needs more than 2 drills with a passage' about the empty held-out set)."""
    from zerosearch_core.policy.cold_start.recipe import _read_drills

    cold = dataclasses.replace(toy_cfg.cold_start, pretrain_reading_bar=0.0, pretrain_distractors=2)
    drills = _read_drills(cold, seed=0)
    assert drills.heldout == [] and len(drills.answer) == len(read_drills(Path(str(cold.pretrain_texts))))
    with_passage = [d for d in drills.answer if not d.prefix.startswith("Question: ")]
    assert with_passage and all(d.prefix.count(" Question: ") == 1 for d in with_passage)


def test_question_first_drills_ask_before_the_passages_as_the_protocol_does(toy_cfg: PipelineConfig) -> None:
    path = Path(str(toy_cfg.cold_start.pretrain_texts))
    drills = read_drills(path)
    for count in (0, 2):
        asked_first = add_distractors(drills, count, seed=5, question_first=True)
        asked_last = add_distractors(drills, count, seed=5)
        for old, first, last in zip(drills, asked_first, asked_last, strict=True):
            assert first.answer == old.answer and drill_form(first) == drill_form(old)
            if old.prefix.startswith("Question: "):  # a search drill: already asks first
                assert first == old
                continue
            passages, question = last.prefix.split(" Question: ")
            asked, _, tail = question.partition("? ")  # tail: 'Answer:', or '<search>' for a bridge drill
            # the same passages (the same distractors, in the same order), the question moved before them
            assert first.prefix == f"Question: {asked}? {passages} {tail}" and tail in ("Answer:", "<search>")
            assert first.prefix.count("?") == 1 and first.prefix.index("?") < first.prefix.index(passages)
    with pytest.raises(ConfigError, match="pretrain_drill_layout='answer_first' is not one of"):
        dataclasses.replace(toy_cfg.cold_start, pretrain_drill_layout="answer_first")
    with pytest.raises(ConfigError, match="pretrain_drill_layout is question_first but"):
        dataclasses.replace(
            toy_cfg.cold_start,
            pretrain_drill_layout="question_first",
            pretrain_distractors=0,
            pretrain_texts_loss="all",
        )


def _pretraining_checked_every_2_steps(cfg: PipelineConfig, **changes: Any) -> ColdStartConfig:
    """The cold start with pre-training checked every 2 steps from step 2 (at most 20) and no SFT."""
    return dataclasses.replace(
        cfg.cold_start,
        pretrain_steps=2,
        pretrain_check_every=2,
        pretrain_max_steps=20,
        sft_reading_bar=0.0,
        sft_questions=None,
        **changes,
    )


def test_pretraining_stops_only_once_every_question_form_passes_the_bar(
    toy_cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    heldout = [Drill(f"{n} is from Varesk. Question: Which city is {n} from? Answer:", "Varesk") for n in "AB"]
    heldout += [Drill(f"{n} plays the harp. Question: Which instrument does {n} play? Answer:", "harp") for n in "AB"]
    # what each check measures per form, in turn: the mean passes 0.9 at the second check, every form at the third
    table = [{"city": 0.5, "instrument": 0.5}, {"city": 1.0, "instrument": 0.85}, {"city": 1.0, "instrument": 0.95}]
    asked: list[str] = []

    def scripted(_model: object, _tokenizer: object, drills: list[Drill], batch_size: int = 50) -> float:
        form = "city" if "city" in drills[0].prefix else "instrument"
        asked.append(form)
        return table[asked.count("city") - 1][form]  # the forms are checked in order, city first

    monkeypatch.setattr("zerosearch_core.policy.cold_start.reading.drill_accuracy", scripted)
    cold = _pretraining_checked_every_2_steps(toy_cfg, pretrain_reading_bar=0.9)
    texts = ["one two three four five six"] * 4
    curves = run_cold_start(model, tokenizer, cold, texts, [], 0, heldout_drills=heldout)
    assert curves["reading_step"] == [2.0, 4.0, 6.0] and len(curves["pretrain"]) == 6
    assert curves["reading"] == [0.5, 0.85, 0.95]  # each check records its least-read form
    assert asked == ["city", "instrument"] * 3


def test_lesson_steps_interleave_their_own_batches_every_nth_pretraining_step(toy_cfg: PipelineConfig) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    short = [tokenizer("one two", add_special_tokens=False)["input_ids"]] * 5
    long = [tokenizer("six five four three two one six five", add_special_tokens=False)["input_ids"]] * 3
    seen: list[list[list[int]]] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["input_ids"].tolist())
        return forward(*args, **kwargs)

    model.forward = spy  # type: ignore[method-assign]
    lessons = Interleaved(long, [[0] * (len(long[0]) - 2) + [1] * 2] * 3, every=3)
    train_causal_lm(model, short, None, 7, 2, 1e-3, 0, seed=0, phase="t", interleaved=lessons)
    # steps 3 and 6 train on the lessons alone (never padded to one width with the short texts); the rest on drills
    width = len(long[0])
    assert width > 2 and [len(batch[0]) for batch in seen] == [2, 2, width, 2, 2, width, 2]
    assert all(row in long for step in (2, 5) for row in seen[step])
    assert all(row in short for step in (0, 1, 3, 4, 6) for row in seen[step])
    # without it, the same seed draws the same drill batches as before lessons existed
    seen.clear()
    train_causal_lm(model, short, None, 2, 2, 1e-3, 0, seed=0, phase="t")
    assert [len(batch[0]) for batch in seen] == [2, 2]


def test_pretraining_with_lessons_stops_only_once_the_lessons_pass_too(
    toy_cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    heldout = [Drill(f"{n} is from Varesk. Question: Which city is {n} from? Answer:", "Varesk") for n in "AB"]
    monkeypatch.setattr(
        "zerosearch_core.policy.cold_start.reading.drill_accuracy", lambda *_a, **_k: 1.0
    )  # drills always read
    ids = tuple(tokenizer("one two three", add_special_tokens=False)["input_ids"])
    lessons = [SFTExample(ids, (0, 1, 1), True)] * 4
    lesson_scores = iter([0.4, 0.9, 0.97])  # the least-read form of the held-out lessons, at each check
    cold = _pretraining_checked_every_2_steps(toy_cfg, pretrain_reading_bar=0.95, pretrain_lesson_every=2)
    texts = ["one two three four five six"] * 4
    trained_on: list[list[list[int]]] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        if model.training:  # a training step, not a check's generation
            trained_on.append(kwargs["input_ids"].tolist())
        return forward(*args, **kwargs)

    model.forward = spy  # type: ignore[method-assign]
    curves = run_cold_start(
        model,
        tokenizer,
        cold,
        texts,
        [],
        0,
        heldout_drills=heldout,
        pretrain_lessons=lessons,
        pretrain_lesson_reading=lambda: next(lesson_scores),
    )
    # every second step (pretrain_lesson_every=2) trained on the lessons, the others on the corpus blocks
    assert len(trained_on) == 6
    assert all(row == list(ids) for step in (1, 3, 5) for row in trained_on[step])
    assert all(list(ids) not in trained_on[step] for step in (0, 2, 4))
    # the drills pass at every check; pre-training stops only when the lessons pass too, and records the lower
    assert curves["reading_step"] == [2.0, 4.0, 6.0] and curves["reading"] == [0.4, 0.9, 0.97]
    with pytest.raises(ConfigError, match="pretrain_lesson_every is set but reading_corpus is null"):
        dataclasses.replace(cold, reading_corpus=None, reading_questions=None, sft_reading_bar=0.0)
    with pytest.raises(ConfigError, match="pretrain_lesson_every=-1 must be >= 0"):
        dataclasses.replace(cold, pretrain_lesson_every=-1)


def test_collate_puts_labels_only_where_the_mask_is_one() -> None:
    ids, attention, labels = _collate([[5, 6, 7], [8, 9]], [[0, 1, 1], [1, 0]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert attention.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    _, _, all_labels = _collate([[5, 6]], None, pad_id=0)
    assert all_labels.tolist() == [[5, 6]]


def test_pack_blocks_keeps_every_token() -> None:
    _, tokenizer = build_tiny_policy(load_config(ROOT / "toy/params.yaml").model, ["alpha beta gamma"] * 20, seed=1)
    texts = ["alpha beta", "gamma alpha beta gamma", "beta"]
    blocks = pack_blocks(texts, tokenizer, 4)
    expected = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # + eos each
    assert sum(len(b) for b in blocks) == expected and all(len(b) <= 4 for b in blocks)


def test_pretrain_mix_repeats_the_corpus_blocks_and_keeps_each_extra_text_whole() -> None:
    _, tokenizer = build_tiny_policy(load_config(ROOT / "toy/params.yaml").model, ["alpha beta gamma"] * 20, seed=1)
    corpus = ["alpha beta gamma " * 30, "gamma beta"]
    extra = ["beta alpha", "gamma gamma alpha"]
    sequences = pretrain_sequences(corpus, extra, tokenizer, corpus_repeat=3, block=16)
    blocks = pack_blocks(corpus, tokenizer, 16)
    assert sequences[: 3 * len(blocks)] == blocks * 3
    eos = tokenizer.eos_token_id
    assert sequences[3 * len(blocks) :] == [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in extra]


def test_constant_schedule_keeps_the_rate_that_cosine_halves_at_mid_run(toy_cfg: PipelineConfig) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    sequence = tokenizer("one two three four five six", add_special_tokens=False)["input_ids"]
    second_steps = {}
    for schedule in ("cosine", "constant"):
        run = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)[0]
        run.load_state_dict(model.state_dict())
        weights = run.get_input_embeddings().weight
        snapshots: list[torch.Tensor] = []

        def snapshot(*_: object, into: list[torch.Tensor] = snapshots, tensor: torch.Tensor = weights) -> None:
            into.append(tensor.detach().clone())

        train_causal_lm(run, [sequence], None, 2, 1, 1e-3, 0, seed=0, phase="t", on_step=snapshot, schedule=schedule)
        second_steps[schedule] = snapshots[1] - snapshots[0]
    # Both runs are identical through step 1; Adam's step 2 is then scaled by the schedule alone: 1 vs cos = 0.5.
    assert torch.allclose(second_steps["constant"], 2 * second_steps["cosine"], atol=1e-7)
    assert second_steps["constant"].abs().max() > 1e-5
    with pytest.raises(ValueError, match="use 'cosine' or 'constant'"):
        train_causal_lm(model, [sequence], None, 1, 1, 1e-3, 0, seed=0, phase="t", schedule="linear")


def _sft_with_a_bar(cfg: PipelineConfig, **changes: Any) -> ColdStartConfig:
    """The cold start with pre-training off and the SFT checked every 3 steps from step 3 against a 0.9 bar."""
    return dataclasses.replace(
        cfg.cold_start,
        pretrain_steps=0,
        pretrain_lesson_every=0,
        pretrain_texts=None,
        pretrain_drill_layout="passage_first",
        pretrain_texts_loss="all",
        pretrain_reading_bar=0.0,
        pretrain_distractors=0,
        sft_steps=3,
        sft_check_every=3,
        sft_reading_bar=0.9,
        **changes,
    )


def test_sft_stops_at_the_first_reading_check_that_passes_the_bar(toy_cfg: PipelineConfig) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    ids = tuple(tokenizer("one two three four five six", add_special_tokens=False)["input_ids"])
    examples = [SFTExample(ids, (1,) * len(ids), False)] * 4
    cold = _sft_with_a_bar(toy_cfg, sft_max_steps=20)
    scores = iter([0.5, 0.8, 0.95, 1.0])  # what the checks measure, in turn
    seen: list[tuple[str, int, float]] = []
    curves = run_cold_start(
        model, tokenizer, cold, [], examples, 0, on_reading=lambda *a: seen.append(a), sft_reading=lambda: next(scores)
    )
    # checked at steps 3, 6, 9 (each multiple of sft_check_every from sft_steps on); the third passes 0.9: SFT ends
    assert len(curves["sft"]) == 9 and curves["sft_reading_step"] == [3.0, 6.0, 9.0]
    assert curves["sft_reading"] == [0.5, 0.8, 0.95] and seen == [("sft", 3, 0.5), ("sft", 6, 0.8), ("sft", 9, 0.95)]
    # without the bar, exactly sft_steps and no check
    plain = run_cold_start(model, tokenizer, dataclasses.replace(cold, sft_reading_bar=0.0), [], examples, 0)
    assert len(plain["sft"]) == 3 and plain["sft_reading"] == []
    with pytest.raises(ConfigError, match="sft_reading_bar needs reading lessons"):
        dataclasses.replace(cold, reading_corpus=None, reading_questions=None)
    with pytest.raises(ConfigError, match="sft_max_steps >= sft_steps"):
        dataclasses.replace(cold, sft_max_steps=2)


def test_sft_restarts_from_the_pretrained_weights_below_the_bar_and_keeps_the_attempt_that_read_best(
    toy_cfg: PipelineConfig,
) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    ids = tuple(tokenizer("one two three four five six", add_special_tokens=False)["input_ids"])
    examples = [SFTExample(ids, (1,) * len(ids), False), SFTExample(ids[:3], (1,) * 3, False)] * 3
    cold = _sft_with_a_bar(toy_cfg, sft_max_steps=6, sft_restarts=2, sft_batch_size=2)  # batch 2: the seed matters
    start = {key: value.clone() for key, value in model.state_dict().items()}

    def one_attempt(seed: int) -> dict[str, torch.Tensor]:  # an SFT without the bar, from the same start
        model.load_state_dict(start)
        run_cold_start(
            model, tokenizer, dataclasses.replace(cold, sft_reading_bar=0.0, sft_steps=6), [], examples, seed
        )
        return {key: value.clone() for key, value in model.state_dict().items()}

    first, second = one_attempt(0), one_attempt(2)  # attempt k's SFT trains with seed + 2k + 1: another order
    assert any(not torch.equal(first[key], second[key]) for key in first)

    # no attempt passes: three attempts, and the first (its last check read best, 0.7) is kept, weights and all
    model.load_state_dict(start)
    seen: list[tuple[str, int, float]] = []
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.2, 0.3])
    curves = run_cold_start(
        model, tokenizer, cold, [], examples, 0, on_reading=lambda *a: seen.append(a), sft_reading=lambda: next(scores)
    )
    assert curves["sft_attempt"] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0] and curves["sft_kept"] == [0.0]
    assert [step for _, step, _ in seen] == [3, 6, 9, 12, 15, 18]  # shifted by sft_max_steps per earlier attempt
    assert curves["sft_final_reading"] == [0.7] and len(curves["sft"]) == 6
    assert all(torch.equal(model.state_dict()[key], first[key]) for key in first)

    # the second attempt passes at its first check: SFT ends there, and that attempt is kept
    model.load_state_dict(start)
    scores = iter([0.5, 0.7, 0.95])
    curves = run_cold_start(model, tokenizer, cold, [], examples, 0, sft_reading=lambda: next(scores))
    assert curves["sft_attempt"] == [0.0, 0.0, 1.0] and curves["sft_kept"] == [1.0]
    assert curves["sft_final_reading"] == [0.95] and len(curves["sft"]) == 3
    with pytest.raises(ConfigError, match="sft_restarts=-1 must be >= 0"):
        dataclasses.replace(cold, sft_restarts=-1)


def test_read_pretrain_texts_names_the_bad_line_and_the_missing_file(tmp_path: Path) -> None:
    good = tmp_path / "reading.jsonl"
    good.write_text('{"id": "r1", "text": "one"}\n{"id": "r2", "text": "two"}\n')
    assert read_pretrain_texts(good) == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "one"}\n{"id": "r2", "body": "two"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 has no non-empty string 'text'"):
        read_pretrain_texts(bad)
    with pytest.raises(FileNotFoundError, match="run the generate_world stage"):
        read_pretrain_texts(tmp_path / "missing.jsonl")


def test_training_lowers_the_loss_and_ignores_masked_tokens(toy_cfg: PipelineConfig) -> None:
    model, tokenizer = build_tiny_policy(toy_cfg.model, ["one two three four five six"] * 30, seed=2)
    sequence = tokenizer("one two three four five six", add_special_tokens=False)["input_ids"]
    losses = train_causal_lm(model, [sequence] * 4, None, 40, 4, 1e-2, 0, seed=0, phase="t")
    assert losses[-1] < 0.5 * losses[0]
    # A sequence whose only learned token is the last: the loss must not depend on the masked tokens' targets.
    ids, attention, labels = _collate([sequence], [[0] * (len(sequence) - 1) + [1]], pad_id=0)
    loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    logits = model(input_ids=ids, attention_mask=attention).logits
    expected = torch.nn.functional.cross_entropy(logits[0, -2:-1], ids[0, -1:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow
def test_init_policy_stage_runs_the_cold_start_and_saves_a_loadable_model(
    toy_cfg: PipelineConfig, caplog: pytest.LogCaptureFixture
) -> None:
    prepare_data.run(toy_cfg, StageHooks())
    build_index.run(toy_cfg, StageHooks())
    logged: list[tuple[dict[str, float], int]] = []
    assert toy_cfg.cold_start.pretrain_lesson_every == 4  # the toy profile's: lessons at pre-training steps 4 and 8
    caplog.set_level("INFO", logger="zerosearch_core")
    result = init_policy.run(toy_cfg, StageHooks(log_step=lambda metrics, step: logged.append((metrics, step))))
    # every pre-training check (3 per attempt) reads the held-out drills and the held-out lessons; SFT checks (2 per
    # attempt) the lessons only
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("Held-out drills read, by form") for m in messages) == 6
    assert sum(m.startswith("Held-out lessons read when made to search, by form") for m in messages) == 6 + 4
    target = Path(toy_cfg.paths.policy_dir)
    curves = json.loads((target / "cold_start/losses.json").read_text())
    assert len(curves["pretrain"]) == 10 and len(curves["sft"]) == 8  # the bars were never reached
    # checked from step 6, in each of the two attempts: a restart pre-trains again from the initial weights
    assert curves["reading_step"] == [6.0, 8.0, 10.0] * 2 and curves["reading_attempt"] == [0.0] * 3 + [1.0] * 3
    # two attempts (one restart), each SFT checked at steps 6 and 8; the one whose last check read best is kept
    assert curves["sft_reading_step"] == [6.0, 8.0, 6.0, 8.0] and curves["sft_attempt"] == [0.0, 0.0, 1.0, 1.0]
    kept = 1 if curves["sft_reading"][3] > curves["sft_reading"][1] else 0
    assert curves["sft_kept"] == [float(kept)] and result.metrics["cold_start.sft_kept_attempt"] == kept + 1
    assert result.metrics["cold_start.pretrain_steps_run"] == 10.0 and result.metrics["cold_start.sft_steps_run"] == 8
    assert result.metrics["cold_start.sft_attempts_run"] == 2.0
    # the SFT checks the least-read form of the held-out lessons, as the stage's own check of the saved model does;
    # the kept attempt's last check measured that very model
    forms = {k: v for k, v in result.metrics.items() if k.startswith("cold_start.reading_form.")}
    assert set(forms) == {
        "cold_start.reading_form.what_is_the_occupation_of",
        "cold_start.reading_form.which_city_is_from",
        "cold_start.reading_form.which_instrument_does_play",
    }
    assert (
        result.metrics["cold_start.reading_least_read_form"]
        == min(forms.values())
        == curves["sft_reading"][2 * kept + 1]
    )
    assert (target / "cold_start/losses.png").read_bytes()[:4] == b"\x89PNG"
    assert "<answer>" in (target / "cold_start/sft_example.txt").read_text()
    assert result.metrics["cold_start.sft_examples"] == 12.0 + 10.0  # the world's questions and the lessons
    assert result.metrics["cold_start.reading_examples"] == 10.0
    assert result.metrics["cold_start.pretrain_texts"] == 82.0  # 30 reading, 30 search, 30 bridge drills, 8 held out
    for key in ("em", "search_rate", "em_when_searching"):  # the reading check on the 6 held-out lessons
        assert 0.0 <= result.metrics[f"cold_start.reading_{key}"] <= 1.0
    # the restart logs on after the first attempt's sft_max_steps: one increasing axis in MLflow
    assert [step for metrics, step in logged if "cold_start.sft_loss" in metrics] == list(range(1, 17))
    assert [step for metrics, step in logged if "cold_start.pretrain_reading_accuracy" in metrics] == [
        6,
        8,
        10,
        16,
        18,
        20,
    ]
    assert [step for metrics, step in logged if "cold_start.pretrain_loss" in metrics] == list(range(1, 21))
    assert [step for metrics, step in logged if "cold_start.sft_reading_accuracy" in metrics] == [6, 8, 14, 16]
    model = load_causal_lm(target)
    tokenizer = load_tokenizer(target)
    assert tokenizer.convert_tokens_to_ids("<search>") != tokenizer.unk_token_id
    assert model.config.hidden_size == 32
    # the stage reuses its last SFT check (made after the last step) as the metric: it is the saved model's own
    lessons, engine = open_reading_lessons(toy_cfg.cold_start, toy_cfg.seed)
    assert lessons is not None and engine is not None
    measured = reading_accuracy(model, tokenizer, lessons.heldout, engine, toy_cfg.rollout, toy_cfg.search.top_k)
    assert result.metrics["cold_start.reading_em_made_to_search"] == measured


@pytest.mark.slow
def test_reading_lessons_search_their_own_corpus_and_hold_out_questions(toy_cfg: PipelineConfig) -> None:
    cold = toy_cfg.cold_start
    assert cold.reading_corpus is not None and cold.reading_questions is not None
    lessons, engine = open_reading_lessons(toy_cfg.cold_start, toy_cfg.seed)
    assert lessons is not None and engine is not None
    assert len(lessons.train) == 10 and len(lessons.heldout) == 6
    assert set(lessons.train["id"]).isdisjoint(lessons.heldout["id"])
    world_names = {p["name"] for p in json.loads((Path(cold.reading_corpus).parent / "entities.json").read_text())}
    _, tokenizer = build_tiny_policy(toy_cfg.model, lessons.passages["text"].tolist(), seed=1)
    single_hop = lessons.train[lessons.train["decomposition"].map(len) < 2].reset_index(drop=True)
    examples = build_sft_examples(single_hop, tokenizer, engine, toy_cfg.rollout, toy_cfg.search.top_k)
    titles = lessons.passages["title"].tolist()
    for example, row in zip(examples, single_hop.itertuples(), strict=True):
        text = tokenizer.decode(list(example.input_ids))
        assert "<information>" in text and text.rstrip().endswith(f"{row.golden_answers[0]} </answer>")
        asked = next(title for title in titles if title in row.question)
        assert text.count(asked) >= 3  # in the question, the search and the retrieved passage
        assert not any(name in text for name in world_names)  # the lessons never show a world person
    # A lesson learns the query and the answer, not the choice to search (its first token, the <search> tag).
    (lesson,) = build_sft_examples(
        lessons.train.head(1), tokenizer, engine, toy_cfg.rollout, 3, 1.0, 0, learn_search_choice=False
    )
    learned = tokenizer.decode([t for t, m in zip(lesson.input_ids, lesson.loss_mask, strict=True) if m])
    question, answer = lessons.train["question"][0], lessons.train["golden_answers"][0][0]
    assert learned.strip() == f"{question} </search><answer> {answer} </answer>"
    # A file asked for but missing, or more questions asked for than there are, is a clear error.
    with pytest.raises(FileNotFoundError, match="world.reading_people"):
        open_reading_lessons(dataclasses.replace(cold, reading_corpus="missing.jsonl"), toy_cfg.seed)
    with pytest.raises(ValueError, match="exceeds the 60 questions"):
        open_reading_lessons(dataclasses.replace(cold, reading_examples=58), toy_cfg.seed)


def test_cold_start_on_evaluated_questions_is_refused(toy_cfg: PipelineConfig) -> None:
    from zerosearch_core.config import ConfigError, config_to_dict
    from zerosearch_core.config import build_dataclass as build

    raw = config_to_dict(toy_cfg)
    raw["cold_start"]["sft_questions"] = "toy_test_1hop"
    with pytest.raises(ConfigError, match="never see evaluation questions"):
        build(PipelineConfig, raw, "params")


def test_two_hop_reading_lessons_search_the_bridge_and_the_held_out_lessons_stay_single_hop(
    toy_cfg: PipelineConfig,
) -> None:
    """world.reading_two_hop: the reading people's two-hop questions become lessons that search twice (the question,
    then the mentor the first passage names); the held-out lessons that the reading bar asks stay single-hop."""
    assert toy_cfg.world is not None
    world_dir = Path(toy_cfg.cold_start.reading_corpus or "").parent.parent / "world_two_hop"
    world_dir.mkdir()
    write_world(generate_world(dataclasses.replace(toy_cfg.world, reading_two_hop=True)), world_dir)
    cold = dataclasses.replace(
        toy_cfg.cold_start,
        reading_corpus=str(world_dir / "reading_corpus.jsonl"),
        reading_questions=str(world_dir / "reading_questions.jsonl"),
        reading_examples=30,
    )
    lessons, engine = open_reading_lessons(cold, toy_cfg.seed)
    assert lessons is not None and engine is not None
    assert all(len(d) < 2 for d in lessons.heldout["decomposition"])
    two_hop = lessons.train[lessons.train["decomposition"].map(len) == 2].head(3).reset_index(drop=True)
    assert len(two_hop) == 3
    _, tokenizer = build_tiny_policy(toy_cfg.model, lessons.passages["text"].tolist(), seed=1)
    examples = build_sft_examples(
        two_hop, tokenizer, engine, toy_cfg.rollout, 3, 1.0, 0, learn_search_choice=False, multi_hop_share=1.0
    )
    for example, row in zip(examples, two_hop.itertuples(), strict=True):
        learned = tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])
        bridge = row.decomposition[1]
        expected = f"{row.question} </search><search> {bridge} </search><answer> {row.golden_answers[0]} </answer>"
        assert learned.strip() == expected  # the first <search> tag is not learned (a lesson), the second is
