"""The synthetic toy world: determinism, splits, answers in the corpus, GE validation, real readers, BM25, stage."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from zerosearch_core.artifacts import OWNER_MARKER
from zerosearch_core.config import BenchmarkFileConfig, ConfigError, WorldConfig
from zerosearch_core.data import toyworld
from zerosearch_core.data.benchmarks import normalize, read_jsonl
from zerosearch_core.data.corpus import load_corpus
from zerosearch_core.data.toyworld import World, generate_world, validate_world, write_world
from zerosearch_core.errors import DataValidationError
from zerosearch_core.search.local import BM25Retriever
from zerosearch_core.stages import StageHooks
from zerosearch_core.stages import generate_world as generate_world_stage

WRITTEN_FILES = [
    "corpus.jsonl",
    "entities.json",
    "manifest.json",
    "reading.jsonl",
    "reading_corpus.jsonl",
    "reading_questions.jsonl",
    "test_1hop.jsonl",
    "test_2hop.jsonl",
    "train.jsonl",
    "train_1hop.jsonl",
    "val.jsonl",
]


def _config(tmp_path: Path, **overrides: object) -> WorldConfig:
    settings: dict[str, object] = {
        "seed": 7,
        "entities": 40,
        "two_hop_share": 0.5,
        "val_questions": 20,
        "test_questions": 30,
        "train_questions": None,
        "output_dir": str(tmp_path / "world"),
        "reading_drills": 50,
        "search_drills": 20,
        "bridge_drills": 20,
        "reading_people": 30,
        "mentor_backlinks": True,
        "reading_backlinks": True,
        "reading_two_hop": False,
    }
    settings.update(overrides)
    return WorldConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(_config(Path("unused")))


def _written(world: World, folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    write_world(world, folder)
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_same_seed_writes_identical_bytes_and_another_seed_a_different_corpus(tmp_path: Path) -> None:
    first = _written(generate_world(_config(tmp_path)), tmp_path / "a")
    again = _written(generate_world(_config(tmp_path)), tmp_path / "b")
    other = _written(generate_world(_config(tmp_path, seed=8)), tmp_path / "c")

    assert sorted(first) == WRITTEN_FILES
    assert first == again
    assert other["corpus.jsonl"] != first["corpus.jsonl"]
    manifest = json.loads(first["manifest.json"])
    assert manifest["seed"] == 7
    assert manifest["questions"]["test"] == {"1hop": 15, "2hop": 15}
    assert set(manifest["sha256"]) == set(WRITTEN_FILES) - {"manifest.json"}


@pytest.mark.parametrize(("share", "train_questions"), [(0.5, None), (0.3, None), (0.3, 100), (0.0, None), (1.0, 50)])
def test_splits_are_disjoint_sized_and_keep_the_two_hop_share(
    tmp_path: Path, share: float, train_questions: int | None
) -> None:
    cfg = _config(tmp_path, two_hop_share=share, train_questions=train_questions)
    world = generate_world(cfg)
    by_split = {split: [q for q in world.questions if q.split == split] for split in toyworld.SPLITS}

    assert len(by_split["test"]) == cfg.test_questions
    assert len(by_split["val"]) == cfg.val_questions
    if train_questions is not None:
        assert len(by_split["train"]) == train_questions
    ids = [q.id for q in world.questions]
    texts = [q.question for q in world.questions]
    assert len(set(ids)) == len(ids) and len(set(texts)) == len(texts)
    for split, questions in by_split.items():
        two_hop = sum(q.hops == 2 for q in questions)
        assert abs(two_hop / len(questions) - share) <= 0.5 / len(questions), split
    # Nothing disappears: every question is in exactly one split or counted as unused.
    used = {q.id for q in world.questions}
    assert used.isdisjoint(q.id for q in world.unused_questions)
    assert len(used) + len(world.unused_questions) == 2 * len(toyworld.ATTRIBUTES) * cfg.entities


def test_people_have_distinct_names_that_are_no_attribute_value_and_a_mentor_who_is_someone_else(
    world: World,
) -> None:
    names = [person.name for person in world.entities]
    assert len(set(names)) == len(names) == 40
    assert len({name.split()[1] for name in names}) == 40  # last names distinct while there are enough
    vocabulary = {value.lower() for values in toyworld.ATTRIBUTES.values() for value in values}
    assert not {part.lower() for name in names for part in name.split()} & vocabulary
    assert all(person.mentor_id != person.id for person in world.entities)
    assert {person.mentor_id for person in world.entities} <= {person.id for person in world.entities}


def test_a_world_larger_than_the_last_names_keeps_full_names_distinct_and_spread() -> None:
    people = toyworld.draw_people(1000, random.Random(3))
    names = [person.name for person in people]
    assert len(set(names)) == 1000
    assert max(Counter(name.split()[1] for name in names).values()) == 3  # ceil(1000 / 480)


def test_every_answer_occurs_in_its_supporting_passage(world: World) -> None:
    passages = {passage.id: passage for passage in world.passages}
    people = {person.id: person for person in world.entities}
    for question in world.questions:
        person = people[question.positive_doc_ids[0]]
        holder = people[person.mentor_id] if question.hops == 2 else person
        assert question.positive_doc_ids[-1] == holder.id
        assert question.answer == (holder.attribute(question.attribute),)
        assert question.answer[0] in passages[holder.id].text
        if question.hops == 2:
            assert holder.name in passages[person.id].text  # the first hop names the mentor


def test_reading_drills_are_about_people_outside_the_world_and_state_their_answer(world: World) -> None:
    world_names = {person.name for person in world.entities}
    drills = [d for d in world.reading if d.id.startswith("reading-")]  # the search drills: their own test
    assert len(drills) == 50 and len({d.id for d in drills}) == 50 and len(world.reading) == 50 + 20 + 20
    assert world_names.isdisjoint(d.person for d in drills)
    attributes = set()
    for drill in drills:
        sentence, question = drill.text.split(" Question: ")
        assert sentence.startswith(drill.person + " is ") and question.endswith(" Answer: " + drill.answer)
        assert drill.person in question and toyworld.answer_in_text(drill.answer, sentence)
        attributes |= {a for a, values in toyworld.ATTRIBUTES.items() if drill.answer in values}
    assert attributes == set(toyworld.ATTRIBUTES)  # every attribute is asked
    # A larger world takes more names; the drills still avoid all of them.
    big = generate_world(_config(Path("unused"), entities=400, val_questions=50, test_questions=50, reading_drills=300))
    assert {p.name for p in big.entities}.isdisjoint(d.person for d in big.reading)
    with pytest.raises(ConfigError, match="lower world.reading_drills"):
        toyworld.reading_drills(115_200, world.entities, seed=0)  # 240 x 480 names, 40 of them the world's


def test_search_drills_copy_the_question_into_the_search_call(world: World) -> None:
    drills = toyworld.reading_drills(6, world.entities, seed=1, search_drills=3)
    assert [d.id.split("-")[0] for d in drills] == ["reading", "search"] * 3 + ["reading"] * 3
    for reading, search in zip(drills[0:6:2], drills[1:6:2], strict=True):
        assert search.person == reading.person and search.text.endswith(search.answer)
        question = search.answer.removesuffix(" </search>")
        assert search.text == f"Question: {question} <search> {question} </search>" and reading.person in question
    with pytest.raises(ConfigError, match="search_drills"):
        _config(Path("unused"), search_drills=51)


def test_bridge_drills_search_the_mentor_named_in_the_asked_for_persons_passage(world: World) -> None:
    drills = toyworld.reading_drills(8, world.entities, seed=1, search_drills=2, bridge_drills=4)
    kinds = [d.id.split("-")[0] for d in drills]
    assert kinds == ["reading", "search", "bridge"] * 2 + ["reading", "bridge"] * 2 + ["reading"] * 4
    same_without = toyworld.reading_drills(8, world.entities, seed=1, search_drills=2)
    assert [d for d in drills if not d.id.startswith("bridge")] == list(same_without)  # the others unchanged
    bridges = [d for d in drills if d.id.startswith("bridge")]
    mentors, first = set(), []
    for drill in bridges:
        passages, _, rest = drill.text.partition(" Question: ")
        question, _, answer = rest.partition(" <search> ")
        mentor = passages.split(f"{drill.person} was mentored by ")[1].split(".")[0]
        assert answer == drill.answer and drill.text.endswith(drill.answer)
        assert f"the mentor of {drill.person}" in question and mentor in answer and drill.person not in answer
        assert answer.removesuffix(" </search>") == question.replace(f"the mentor of {drill.person}", mentor)
        # the mentee's passage names the person as its mentor: the trap a retrieved block sets
        assert passages.count(f" was mentored by {drill.person}.") == 1
        mentors.add(mentor)
        first.append(passages.startswith(drill.person))
    assert len(mentors) == len(bridges) and all(toyworld.drill_states_answer(d) for d in bridges)
    big = toyworld.reading_drills(200, world.entities, seed=1, bridge_drills=200)
    order = [d.text.startswith(d.person) for d in big if d.id.startswith("bridge")]
    assert 60 < sum(order) < 140  # the asked-for passage comes first about half the time
    assert {p.name for p in world.entities}.isdisjoint(
        name for d in big for name in re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", d.text)
    )
    with pytest.raises(ConfigError, match="bridge_drills"):
        _config(Path("unused"), bridge_drills=51)


def test_reading_world_is_other_people_whose_passages_state_every_answer(world: World, tmp_path: Path) -> None:
    lessons = world.reading_world
    assert lessons is not None and len(lessons.people) == 30 and len(lessons.questions) == 90  # 3 attributes each
    assert {p.name for p in world.entities}.isdisjoint(p.name for p in lessons.people)
    ids = {p.id for p in lessons.people}
    assert all(p.id.startswith("read-") and p.mentor_id in ids and p.mentor_id != p.id for p in lessons.people)
    passages = {p.id: p for p in lessons.passages}
    for question in lessons.questions:
        (holder,) = question.positive_doc_ids
        assert question.hops == 1 and passages[holder].title in question.question
        assert toyworld.answer_in_text(question.answer[0], passages[holder].text)
    written = _written(world, tmp_path / "w")
    corpus = load_corpus(str(tmp_path / "w/reading_corpus.jsonl"))
    assert len(corpus) == 30 and set(corpus["id"]) == ids
    assert len(written["reading_questions.jsonl"].splitlines()) == 90
    manifest = json.loads(written["manifest.json"])
    assert manifest["reading_people"] == 30 and "reading_corpus.jsonl" in manifest["sha256"]
    assert generate_world(_config(Path("unused"))).reading_world == lessons  # the same seed, the same lessons
    assert generate_world(_config(Path("unused"), reading_people=0)).reading_world is None
    with pytest.raises(ConfigError, match="reading_people"):
        _config(Path("unused"), reading_people=1)


@pytest.mark.slow
def test_validate_world_names_a_reading_drill_about_a_world_person(world: World, tmp_path: Path) -> None:
    leaked = dataclasses.replace(world.reading[3], person=world.entities[0].name)
    broken = dataclasses.replace(world, reading=(*world.reading[:3], leaked, *world.reading[4:]))
    outcome = validate_world(broken, tmp_path / "report")

    assert not outcome.success
    (failure,) = outcome.failures
    assert failure.column == "person_in_world"
    assert any(row.startswith("line 4 ") and repr(leaked.id) in row for row in failure.rows)


def test_validate_world_passes_on_a_generated_world_and_writes_its_report(world: World, tmp_path: Path) -> None:
    outcome = validate_world(world, tmp_path / "report")

    assert outcome.success, outcome.summary()
    assert outcome.evaluated == 16  # 4 on all questions, 2 per split, 3 on the reading drills, 3 on the lessons
    assert "PASSED" in (tmp_path / "report" / "summary.md").read_text()
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["success"] is True
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()


def test_validate_world_names_a_question_leaked_into_another_split(world: World, tmp_path: Path) -> None:
    leaked = next(q for q in world.questions if q.split == "train")
    leaky = dataclasses.replace(world, questions=(*world.questions, dataclasses.replace(leaked, split="test")))

    outcome = validate_world(leaky, tmp_path / "report")

    assert not outcome.success
    question_failure = next(f for f in outcome.failures if f.column == "question")
    assert question_failure.expectation == "expect_column_values_to_be_unique"
    assert any(repr(leaked.id) in row for row in question_failure.rows)
    assert f"line {len(leaky.questions)} id={leaked.id!r}" in outcome.summary()
    assert "FAILED" in (tmp_path / "report" / "summary.md").read_text()


def test_validate_world_fails_when_an_answer_is_not_in_the_corpus(world: World, tmp_path: Path) -> None:
    position = next(i for i, q in enumerate(world.questions) if q.hops == 2)
    altered = dataclasses.replace(world.questions[position], answer=("Atlantis",))
    questions = (*world.questions[:position], altered, *world.questions[position + 1 :])

    outcome = validate_world(dataclasses.replace(world, questions=questions), tmp_path / "report")

    assert [(f.column, f.rows) for f in outcome.failures] == [
        ("answer_in_corpus", (f"line {position + 1} id={altered.id!r}",))
    ]


def test_written_files_load_through_the_project_readers(world: World, tmp_path: Path) -> None:
    _written(world, tmp_path / "world")

    corpus = load_corpus(str(tmp_path / "world" / "corpus.jsonl"))
    assert corpus["id"].tolist() == [p.id for p in world.passages]
    assert corpus["title"].tolist() == [p.title for p in world.passages]
    assert corpus["text"].tolist() == [p.text for p in world.passages]
    for file_name, split, hops in toyworld.QUESTION_FILES:
        spec = BenchmarkFileConfig(
            name=file_name.removesuffix(".jsonl"),
            dataset=None,
            split="test",
            format="searchagentreview_jsonl",
            path=file_name,
            expected_rows=None,
            duplicates="fail",
            hub_repo=None,
            hub_config=None,
            hub_split=None,
        )
        normalized = normalize(read_jsonl(tmp_path / "world" / file_name), spec)
        expected = [q for q in world.questions if q.split == split and hops in (None, q.hops)]
        assert normalized["id"].tolist() == [q.id for q in expected]
        assert normalized["question"].tolist() == [q.question for q in expected]
        assert normalized["golden_answers"].tolist() == [list(q.answer) for q in expected]
        assert normalized["supporting_doc_ids"].tolist() == [list(q.positive_doc_ids) for q in expected]
        assert set(normalized["dataset"]) == {"toyworld"}


def test_bm25_ranks_the_persons_own_passage_in_the_top_three_for_single_hop_questions(
    world: World, tmp_path: Path
) -> None:
    _written(world, tmp_path / "world")
    retriever = BM25Retriever.build(load_corpus(str(tmp_path / "world" / "corpus.jsonl")))
    single_hop = [q for q in world.questions if q.hops == 1]

    results = retriever.retrieve([q.question for q in single_hop], top_k=3)

    found = sum(q.positive_doc_ids[0] in [doc.id for doc in docs] for q, docs in zip(single_hop, results, strict=True))
    assert found / len(single_hop) >= 0.9


def test_too_few_entities_for_the_split_sizes_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="raise world.entities to at least 34"):
        generate_world(_config(tmp_path, entities=10, test_questions=100, val_questions=100))
    with pytest.raises(ValueError, match="leaves no question for train"):
        generate_world(_config(tmp_path, entities=10, test_questions=30, val_questions=30))


def _stage_config(tmp_path: Path, world_cfg: WorldConfig | None) -> SimpleNamespace:
    return SimpleNamespace(world=world_cfg, paths=SimpleNamespace(reports_dir=str(tmp_path / "reports")))


@pytest.mark.slow
def test_stage_writes_the_world_and_a_failed_rerun_leaves_it_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world_cfg = _config(tmp_path)
    result = generate_world_stage.run(_stage_config(tmp_path, world_cfg), StageHooks())  # type: ignore[arg-type]

    output = Path(world_cfg.output_dir)
    assert sorted(p.name for p in output.iterdir()) == sorted([*WRITTEN_FILES, OWNER_MARKER])  # the pipeline's own
    assert result.metrics["passages"] == 40.0
    assert result.metrics["questions.test.2hop"] == 15.0
    assert result.metrics["questions.val.1hop"] == 10.0
    assert result.artifacts == (tmp_path / "reports" / "generate_world", output / "manifest.json")
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    too_small = dataclasses.replace(world_cfg, entities=5, seed=99)
    with pytest.raises(ConfigError, match="world.entities"):
        generate_world_stage.run(_stage_config(tmp_path, too_small), StageHooks())  # type: ignore[arg-type]

    def leaky_world(cfg: WorldConfig) -> World:
        world = generate_world(cfg)
        leaked = next(q for q in world.questions if q.split == "train")
        return dataclasses.replace(world, questions=(*world.questions, dataclasses.replace(leaked, split="val")))

    monkeypatch.setattr(toyworld, "generate_world", leaky_world)
    with pytest.raises(DataValidationError, match="expect_column_values_to_be_unique"):
        generate_world_stage.run(_stage_config(tmp_path, dataclasses.replace(world_cfg, seed=99)), StageHooks())  # type: ignore[arg-type]
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert "FAILED" in (tmp_path / "reports" / "generate_world" / "summary.md").read_text()


def test_stage_without_a_world_section_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set a world: section"):
        generate_world_stage.run(_stage_config(tmp_path, None), StageHooks())  # type: ignore[arg-type]


def test_without_backlinks_a_two_hop_answer_passage_never_names_the_questions_person(tmp_path: Path) -> None:
    """world.mentor_backlinks false: the mentor's passage does not name the mentee, so one search for the question
    cannot find it; the question's decomposition names the bridge person for the second search."""
    world = generate_world(_config(tmp_path, mentor_backlinks=False))
    texts = {p.id: p.text for p in world.passages}
    names = {p.id: p.name for p in world.entities}
    two_hop = [q for q in world.questions if q.hops == 2]
    assert two_hop and not any("was the mentor of" in text for text in texts.values())
    mentor_of = {p.id: p.mentor_id for p in world.entities}
    reciprocal = [q for q in two_hop if mentor_of[q.positive_doc_ids[1]] == q.positive_doc_ids[0]]
    assert len(reciprocal) <= len(two_hop) // 10  # two people who mentored each other name each other anyway
    for question in two_hop:
        person, mentor = question.positive_doc_ids
        assert (names[person] in texts[mentor]) == (question in reciprocal)
        assert f"mentored by {names[mentor]}" in texts[person]
        assert question.decomposition[0] == question.question
        assert names[mentor] in question.decomposition[1] and question.answer[0] in texts[mentor]
    with_links = generate_world(_config(tmp_path, mentor_backlinks=True))
    assert any("was the mentor of" in p.text for p in with_links.passages)
