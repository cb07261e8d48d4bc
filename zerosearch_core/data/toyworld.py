"""A synthetic knowledge world generated from a seed, so a tiny model trained on CPU can learn search-based QA.

The world holds ``world.entities`` fictional people. Each person has a city, an occupation and an instrument drawn
from the small fixed vocabularies below, and a mentor (another person). Each person gets one encyclopedia-style
passage (the corpus), and every person and attribute yields one single-hop question ("Which city is Alira Venhold
from?") and one two-hop question about the mentor ("Which city is the mentor of Alira Venhold from?"); the answers
are only in the corpus. A seeded shuffle within each hop type splits the questions into test, val and train, so
every split has the configured two-hop share.

Everything is drawn from one ``random.Random(world.seed)``: the same seed gives byte-identical files.
:func:`validate_world` checks a world with Great Expectations and :func:`write_world` writes the corpus (wiki-18
``.jsonl``) and the question files (``searchagentreview_jsonl``). The ``generate_world`` stage drives both:
``python -m zerosearch_core.cli generate_world --params toy/params.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from zerosearch_core.artifacts import file_sha256, write_dir_atomically
from zerosearch_core.config import ConfigError, WorldConfig
from zerosearch_core.data.validation import GXValidator, ValidationOutcome, expectation_failures

logger = logging.getLogger(__name__)

DATASET = "toyworld"
"""The ``dataset`` value of every question record."""

FIRST_NAME_ONSETS: tuple[str, ...] = (
    "Ali", "Bre", "Cai", "Dor", "Eli", "Fen", "Gal", "Hal", "Ira", "Jor",
    "Kae", "Lio", "Mar", "Nes", "Ori", "Pel", "Quin", "Ros", "Sel", "Tam",
)  # fmt: skip
FIRST_NAME_ENDINGS: tuple[str, ...] = ("ra", "dan", "wen", "mir", "nor", "sa", "thys", "lan", "vin", "ric", "na", "del")
LAST_NAME_ONSETS: tuple[str, ...] = (
    "Ven", "Kel", "Dras", "Mor", "Thal", "Gar", "Lun", "Brin", "Cor", "Fal", "Hest", "Jar",
    "Kor", "Lor", "Mald", "Nor", "Pryn", "Rav", "Sund", "Tor", "Ul", "Wyn", "Yar", "Zel",
)  # fmt: skip
LAST_NAME_ENDINGS: tuple[str, ...] = (
    "hold", "dane", "mere", "wick", "stone", "ford", "ridge", "vale", "brook", "holt",
    "mark", "worth", "croft", "more", "by", "ton", "dell", "gard", "ley", "rath",
)  # fmt: skip
"""A first name is an onset plus an ending (240 names), a last name likewise (480 names, so up to 480 people all
have distinct last names, which lets BM25 tell them apart)."""

CITIES: tuple[str, ...] = (
    "Korvath", "Duneholm", "Varesk", "Thornmar", "Quellis", "Brannoc",
    "Saldrim", "Mirenth", "Ulgrave", "Zephyra", "Ithmoor", "Wendral",
)  # fmt: skip
OCCUPATIONS: tuple[str, ...] = (
    "painter", "sailor", "baker", "weaver", "potter", "farmer", "tailor", "miner", "hunter", "mason",
)  # fmt: skip
INSTRUMENTS: tuple[str, ...] = ("flute", "harp", "drum", "lute", "horn", "fiddle", "lyre", "zither")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"city": CITIES, "occupation": OCCUPATIONS, "instrument": INSTRUMENTS}
"""Every attribute a person has, with its vocabulary; each yields a single-hop and a two-hop question."""

PASSAGE_TEMPLATE = (
    "{name} is {article} {occupation} from {city} who plays the {instrument}. {name} was mentored by {mentor}."
)
MENTEES_TEMPLATE = " {name} was the mentor of {mentees}."
"""Appended when the person mentored anyone, so a search for a mentee can also find the mentor's passage."""
QUESTION_TEMPLATES: dict[str, str] = {
    "city": "Which city is {subject} from?",
    "occupation": "What is the occupation of {subject}?",
    "instrument": "Which instrument does {subject} play?",
}
"""Question per attribute; ``subject`` is the person's name (single-hop) or :data:`MENTOR_SUBJECT` (two-hop)."""
MENTOR_SUBJECT = "the mentor of {name}"

SPLITS: tuple[str, ...] = ("train", "val", "test")
UNASSIGNED = "unassigned"
"""The ``split`` of a question not (yet) in any split; unused questions keep it and are counted, never hidden."""

QUESTION_FILES: tuple[tuple[str, str, int | None], ...] = (
    ("train.jsonl", "train", None),
    ("train_1hop.jsonl", "train", 1),
    ("val.jsonl", "val", None),
    ("test_1hop.jsonl", "test", 1),
    ("test_2hop.jsonl", "test", 2),
)
"""Question files as (file name, split, hops or None for both)."""
READING_TEMPLATE = "{sentence} Question: {question} Answer: {answer}"
"""A reading drill: the first sentence of a passage, a single-hop question about it and the answer."""
SEARCH_DRILL_TEMPLATE = "Question: {question} <search> {answer}"
SEARCH_DRILL_ANSWER = "{question} </search>"
"""A search drill: a question, then the protocol's search call that copies it (the answer is the copy): a model
trained from scratch does not copy a name it has never seen into its query by itself."""
READING_SEED_OFFSET = 1_000_003
"""The drills draw from ``random.Random(world.seed + READING_SEED_OFFSET)``, a stream apart from the world's."""

BRIDGE_SEED_OFFSET = 3_000_017
"""Bridge drills draw from ``random.Random(world.seed + BRIDGE_SEED_OFFSET)``, so adding them leaves the other
drills as they were."""
BRIDGE_DRILL_TEMPLATE = "{passages} Question: {question} <search> {answer}"
"""A bridge drill: a person's passage and a mentee's, a two-hop question about the person, then the search call
that asks the same of the person's mentor (the answer; it ends with ``</search>``)."""

READING_WORLD_SEED_OFFSET = 2_000_003
"""The reading world draws from ``random.Random(world.seed + READING_WORLD_SEED_OFFSET)``."""
READING_ID_PREFIX = "read-"
"""Ids of the reading world's people and passages (``read-0000``), never a world id (``toy-0000``)."""

CORPUS_FILE = "corpus.jsonl"
READING_FILE = "reading.jsonl"
READING_CORPUS_FILE = "reading_corpus.jsonl"
READING_QUESTIONS_FILE = "reading_questions.jsonl"
ENTITIES_FILE = "entities.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Person:
    """One fictional person; ``id`` is also the id of the person's passage."""

    id: str
    name: str
    city: str
    occupation: str
    instrument: str
    mentor_id: str

    def attribute(self, attribute: str) -> str:
        """The value of one of :data:`ATTRIBUTES`, e.g. ``person.attribute("city")``."""
        values = {"city": self.city, "occupation": self.occupation, "instrument": self.instrument}
        return values[attribute]


@dataclass(frozen=True)
class Passage:
    """One corpus passage (wiki-18 style: a title and a text)."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    """One question record in the ``searchagentreview_jsonl`` schema (plus ``hops`` and ``attribute``).

    ``positive_doc_ids`` lists the supporting passages in hop order (the person's, then the mentor's); the last one
    states the answer.
    """

    id: str
    question: str
    answer: tuple[str, ...]
    hops: int
    attribute: str
    dataset: str
    positive_doc_ids: tuple[str, ...]
    split: str
    decomposition: tuple[str, ...] = ()
    """One search query per hop, in order: the question itself, then (two-hop) the single-hop question about the
    mentor, whose passage states the answer. The cold start's multi-hop SFT trajectories search these."""

    def record(self) -> dict[str, Any]:
        """The JSON record written to the question files."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": list(self.answer),
            "dataset": self.dataset,
            "positive_doc_ids": list(self.positive_doc_ids),
            "split": self.split,
            "hops": self.hops,
            "attribute": self.attribute,
            "decomposition": list(self.decomposition),
        }


@dataclass(frozen=True)
class ReadingDrill:
    """A reading-comprehension text about a fictional person who is not in the world (so it states no world fact)."""

    id: str
    person: str
    text: str
    answer: str

    def record(self) -> dict[str, Any]:
        """The JSON record written to ``reading.jsonl`` (``text`` is what pre-training reads)."""
        return asdict(self)


@dataclass(frozen=True)
class World:
    """A generated world: people, their passages, and the questions placed in a split.

    ``unused_questions`` holds the questions no split took (``train_questions`` set below the rest, or the rest does
    not have the configured two-hop share); the manifest counts them.
    """

    seed: int
    two_hop_share: float
    entities: tuple[Person, ...]
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]
    unused_questions: tuple[Question, ...]
    reading: tuple[ReadingDrill, ...] = ()
    reading_world: ReadingWorld | None = None


@dataclass(frozen=True)
class ReadingWorld:
    """A second world of other fictional people (none of the world's), for reading lessons in the search protocol:
    their passages (a corpus of its own, with mentors among themselves, so a search also finds passages that only
    name the person) and every single-hop question about them. The cold start searches this corpus with a real
    retriever and learns to read the answer out of the retrieved block (``cold_start.reading_corpus``)."""

    people: tuple[Person, ...]
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]


class HopCounts(NamedTuple):
    """How many single-hop and two-hop questions a split holds."""

    one_hop: int
    two_hop: int


def generate_world(cfg: WorldConfig) -> World:
    """Generate the whole world from ``cfg.seed``.

    Args:
        cfg: The ``world`` section.

    Returns:
        The world; the same config always gives the same world.

    Raises:
        ConfigError: The world has too few questions (or names) for the configured sizes; the message says which
            setting to change.
    """
    check_vocabularies()
    plan = plan_splits(cfg)
    rng = random.Random(cfg.seed)
    people = draw_people(cfg.entities, rng)
    by_id = {person.id: person for person in people}
    mentees: dict[str, list[Person]] = {person.id: [] for person in people}
    for person in people:
        mentees[person.mentor_id].append(person)
    passages = tuple(
        render_passage(person, by_id[person.mentor_id], mentees[person.id] if cfg.mentor_backlinks else ())
        for person in people
    )
    questions = [q for person in people for q in render_questions(person, by_id[person.mentor_id])]
    assigned, unused = assign_splits(questions, plan, rng)
    if unused:
        logger.warning("%d of %d questions are in no split (see manifest.json)", len(unused), len(questions))
    return World(
        seed=cfg.seed,
        two_hop_share=cfg.two_hop_share,
        entities=people,
        passages=passages,
        questions=assigned,
        unused_questions=unused,
        reading=reading_drills(cfg.reading_drills, people, cfg.seed, cfg.search_drills, cfg.bridge_drills),
        reading_world=reading_world(
            cfg.reading_people, people, cfg.seed, cfg.reading_two_hop, backlinks=cfg.reading_backlinks
        ),
    )


def reading_world(
    count: int, world_people: Sequence[Person], seed: int, two_hop: bool = False, backlinks: bool = True
) -> ReadingWorld | None:
    """``count`` fresh people whose names are not in ``world_people``, with mentors among themselves, their
    passages (:func:`render_passage`, ids ``read-…``) and their single-hop questions (all three attributes); with
    ``two_hop`` also their two-hop questions, each with its decomposition (the question, then the mentor's own).
    With ``backlinks`` (``world.reading_backlinks``) a mentor's passage names their mentees.

    No fact of the world appears: the people are others, so their questions teach reading, not test answers.

    Raises:
        ConfigError: ``count`` plus the world's people exceeds the names the toy world can make.

    >>> alira = Person("toy-0000", "Alira Venhold", "Korvath", "painter", "harp", "toy-0000")
    >>> lessons = reading_world(4, [alira], seed=0)
    >>> len(lessons.passages), len(lessons.questions), lessons.passages[0].id, alira.name in str(lessons)
    (4, 12, 'read-0000', False)
    """
    if count == 0:
        return None
    if count < 2:
        raise ConfigError("world.reading_people must be 0 or >= 2: each reading person has a mentor among them.")
    rng = random.Random(seed + READING_WORLD_SEED_OFFSET)
    drawn = draw_others(count, world_people, rng, "world.reading_people")
    # Re-id the survivors and draw their mentors among themselves (the draw's mentors may have been removed).
    ids = [f"{READING_ID_PREFIX}{index:04d}" for index in range(count)]
    people = []
    for index, person in enumerate(drawn):
        mentor = rng.randrange(count - 1)
        mentor += mentor >= index  # skip oneself, as in draw_people
        people.append(replace(person, id=ids[index], mentor_id=ids[mentor]))
    by_id = {person.id: person for person in people}
    mentees: dict[str, list[Person]] = {person.id: [] for person in people}
    for person in people:
        mentees[person.mentor_id].append(person)
    passages = tuple(
        render_passage(person, by_id[person.mentor_id], mentees[person.id] if backlinks else ()) for person in people
    )
    questions = tuple(
        replace(
            question,
            id=f"{READING_ID_PREFIX}{'2hop-' if question.hops == 2 else ''}{question.attribute}-"
            f"{person.id.removeprefix(READING_ID_PREFIX)}",
            dataset=f"{DATASET}-reading",
            split="train",
        )
        for person in people
        for question in render_questions(person, by_id[person.mentor_id])
        if question.hops == 1 or two_hop
    )
    return ReadingWorld(people=tuple(people), passages=passages, questions=questions)


def draw_others(count: int, world_people: Sequence[Person], rng: random.Random, setting: str) -> list[Person]:
    """``count`` people drawn from ``rng`` whose names are not in ``world_people`` (none of the world's).

    Raises:
        ConfigError: ``count`` plus the world's people exceeds the names the toy world can make (``setting`` named).
    """
    taken = {person.name for person in world_people}
    available = len(FIRST_NAME_ONSETS) * len(FIRST_NAME_ENDINGS) * len(LAST_NAME_ONSETS) * len(LAST_NAME_ENDINGS)
    if count + len(taken) > available:
        raise ConfigError(
            f"{setting}={count} plus the world's {len(taken)} people exceeds the {available} distinct names the toy "
            f"world can make; lower {setting}."
        )
    return [p for p in draw_people(count + len(taken), rng) if p.name not in taken][:count]


def reading_drills(
    count: int, world_people: Sequence[Person], seed: int, search_drills: int = 0, bridge_drills: int = 0
) -> tuple[ReadingDrill, ...]:
    """``count`` reading drills (:data:`READING_TEMPLATE`) about freshly drawn people whose names are not in
    ``world_people``, each asking one attribute chosen at random.

    The world's facts never appear, so pre-training on the drills teaches reading, not the answers to test
    questions. Names come from the same syllables as the world's, attribute values from the same vocabularies.

    Raises:
        ConfigError: ``count`` exceeds the names left once the world's are excluded.

    >>> alira = Person("toy-0000", "Alira Venhold", "Korvath", "painter", "harp", "toy-0000")
    >>> drill = reading_drills(1, [alira], seed=0)[0]
    >>> drill.person != "Alira Venhold" and drill.text.endswith("Answer: " + drill.answer)
    True
    """
    if count == 0:
        return ()
    rng = random.Random(seed + READING_SEED_OFFSET)
    people = draw_others(count, world_people, rng, "world.reading_drills")
    bridge_rng = random.Random(seed + BRIDGE_SEED_OFFSET)
    drills = []
    for index, person in enumerate(people):
        attribute = rng.choice(list(ATTRIBUTES))
        answer = person.attribute(attribute)
        sentence = render_passage(person, mentor=person).text.split(". ")[0] + "."  # the mentor sentence is cut
        question = QUESTION_TEMPLATES[attribute].format(subject=person.name)
        text = READING_TEMPLATE.format(sentence=sentence, question=question, answer=answer)
        drills.append(ReadingDrill(f"reading-{index:06d}", person.name, text, answer))
        if index < search_drills:  # the search call of the protocol: the question copied, names and all
            query = SEARCH_DRILL_ANSWER.format(
                question=QUESTION_TEMPLATES[rng.choice(list(ATTRIBUTES))].format(subject=person.name)
            )
            text = SEARCH_DRILL_TEMPLATE.format(question=query.removesuffix(" </search>"), answer=query)
            drills.append(ReadingDrill(f"search-{index:06d}", person.name, text, query))
        if index < bridge_drills:
            drills.append(bridge_drill(index, people, bridge_rng))
    return tuple(drills)


def bridge_drill(index: int, people: Sequence[Person], rng: random.Random) -> ReadingDrill:
    """A bridge drill (:data:`BRIDGE_DRILL_TEMPLATE`): three people drawn from ``people`` (a person, their mentor
    and a mentee, paired anew for every drill), the person's passage and the mentee's in a random order, a two-hop
    question about the person and, as the answer, the search call asking the same of the mentor.

    The mentee's passage names the person too ('Z was mentored by P'), as a retrieved block does, so copying the
    name after any 'was mentored by' is wrong half the time: only the one in the asked-for person's passage is the
    bridge.

    >>> people = draw_people(6, random.Random(0))
    >>> drill = bridge_drill(0, people, random.Random(1))
    >>> person = drill.person
    >>> mentor = drill.text.split(person + " was mentored by ")[1].split(".")[0]
    >>> drill.answer.endswith(" </search>") and mentor in drill.answer and person not in drill.answer
    True
    >>> drill.text.count(" was mentored by " + person)
    1
    """
    person, mentor, mentee = rng.sample(list(people), 3)
    passages = [render_passage(person, mentor).text, render_passage(mentee, person).text]
    rng.shuffle(passages)
    template = QUESTION_TEMPLATES[rng.choice(list(ATTRIBUTES))]
    question = template.format(subject=MENTOR_SUBJECT.format(name=person.name))
    answer = SEARCH_DRILL_ANSWER.format(question=template.format(subject=mentor.name))
    text = BRIDGE_DRILL_TEMPLATE.format(passages=" ".join(passages), question=question, answer=answer)
    return ReadingDrill(f"bridge-{index:06d}", person.name, text, answer)


def check_vocabularies() -> None:
    """Make sure names, attribute values and template words never share a word, so every word has one meaning.

    Raises:
        ValueError: Two vocabularies overlap; the message names the words to change in this module.
    """
    template_text = " ".join([PASSAGE_TEMPLATE, MENTEES_TEMPLATE, MENTOR_SUBJECT, *QUESTION_TEMPLATES.values()])
    groups = {
        "first names": {o + e for o in FIRST_NAME_ONSETS for e in FIRST_NAME_ENDINGS},
        "last names": {o + e for o in LAST_NAME_ONSETS for e in LAST_NAME_ENDINGS},
        "template words": set(re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", template_text))),
        **{f"{attribute} values": set(values) for attribute, values in ATTRIBUTES.items()},
    }
    lowered = {group: {word.lower() for word in words} for group, words in groups.items()}
    names = list(lowered)
    for position, group in enumerate(names):
        for other in names[position + 1 :]:
            shared = lowered[group] & lowered[other]
            if shared:
                raise ValueError(
                    f"The toy world's {group} and {other} share {sorted(shared)}; change them in "
                    "zerosearch_core/data/toyworld.py so every word has one meaning."
                )
    multi_word = [v for values in ATTRIBUTES.values() for v in values if not re.fullmatch(r"[A-Za-z]+", v)]
    if multi_word:
        raise ValueError(f"Attribute values {multi_word} are not single words; use single words.")


def draw_full_names(count: int, rng: random.Random) -> list[str]:
    """Draw ``count`` distinct "First Last" names, spreading first and last names as evenly as possible.

    Last names are all distinct while ``count`` allows (480 of them); beyond that, every (first, last) pair is
    still distinct and each last name repeats at most ``ceil(count / 480)`` times.

    Args:
        count: Number of names.
        rng: The world's generator.

    Returns:
        The names, in draw order.

    Raises:
        ConfigError: ``count`` exceeds the number of distinct full names.

    >>> names = draw_full_names(5, random.Random(0))
    >>> len(set(names)), len({name.split()[1] for name in names})
    (5, 5)
    """
    firsts = [onset + ending for onset in FIRST_NAME_ONSETS for ending in FIRST_NAME_ENDINGS]
    lasts = [onset + ending for onset in LAST_NAME_ONSETS for ending in LAST_NAME_ENDINGS]
    if count > len(firsts) * len(lasts):
        raise ConfigError(
            f"world.entities={count} exceeds the {len(firsts) * len(lasts)} distinct names the toy world can make; "
            "lower world.entities."
        )
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    names = []
    for index in range(count):
        # Round r pairs last name j with first name (j + r) mod F, so no (first, last) pair repeats while r < F.
        round_number, slot = divmod(index, len(lasts))
        names.append(f"{firsts[(slot + round_number) % len(firsts)]} {lasts[slot]}")
    return names


def person_id(index: int, count: int) -> str:
    """The id of person ``index`` (and of their passage) in a world of ``count`` people.

    >>> person_id(7, 40)
    'toy-0007'
    """
    return f"toy-{index:0{max(4, len(str(count - 1)))}d}"


def draw_people(count: int, rng: random.Random) -> tuple[Person, ...]:
    """Draw ``count`` people: distinct names, attributes from :data:`ATTRIBUTES`, and a mentor who is someone else.

    >>> people = draw_people(4, random.Random(1))
    >>> [p.id for p in people], all(p.mentor_id != p.id for p in people)
    (['toy-0000', 'toy-0001', 'toy-0002', 'toy-0003'], True)
    """
    names = draw_full_names(count, rng)
    ids = [person_id(index, count) for index in range(count)]
    people = []
    for index in range(count):
        mentor = rng.randrange(count - 1)
        mentor += mentor >= index  # skip oneself: uniform over the other count - 1 people
        people.append(
            Person(
                id=ids[index],
                name=names[index],
                city=rng.choice(CITIES),
                occupation=rng.choice(OCCUPATIONS),
                instrument=rng.choice(INSTRUMENTS),
                mentor_id=ids[mentor],
            )
        )
    return tuple(people)


def render_passage(person: Person, mentor: Person, mentees: Sequence[Person] = ()) -> Passage:
    """The person's encyclopedia passage (:data:`PASSAGE_TEMPLATE`, then :data:`MENTEES_TEMPLATE` when the person
    mentored anyone), titled with their name.

    >>> alira = Person("toy-0000", "Alira Venhold", "Korvath", "painter", "harp", "toy-0001")
    >>> doran = Person("toy-0001", "Doranor Kelby", "Varesk", "sailor", "drum", "toy-0000")
    >>> render_passage(alira, doran).text
    'Alira Venhold is a painter from Korvath who plays the harp. Alira Venhold was mentored by Doranor Kelby.'
    >>> render_passage(doran, alira, [alira]).text.endswith("Doranor Kelby was the mentor of Alira Venhold.")
    True
    """
    text = PASSAGE_TEMPLATE.format(
        name=person.name,
        article="an" if person.occupation[0].lower() in "aeiou" else "a",
        occupation=person.occupation,
        city=person.city,
        instrument=person.instrument,
        mentor=mentor.name,
    )
    if mentees:
        names = [m.name for m in mentees]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        text += MENTEES_TEMPLATE.format(name=person.name, mentees=joined)
    return Passage(id=person.id, title=person.name, text=text)


def render_questions(person: Person, mentor: Person) -> list[Question]:
    """One single-hop and one two-hop question per attribute, not yet in a split.

    >>> alira = Person("toy-0007", "Alira Venhold", "Korvath", "painter", "harp", "toy-0001")
    >>> doran = Person("toy-0001", "Doranor Kelby", "Varesk", "sailor", "drum", "toy-0007")
    >>> two_hop = render_questions(alira, doran)[1]
    >>> two_hop.id, two_hop.question, two_hop.answer, two_hop.positive_doc_ids
    ('toy-2hop-city-0007', 'Which city is the mentor of Alira Venhold from?', ('Varesk',), ('toy-0007', 'toy-0001'))
    >>> two_hop.decomposition
    ('Which city is the mentor of Alira Venhold from?', 'Which city is Doranor Kelby from?')
    """
    number = person.id.removeprefix("toy-")
    questions = []
    for attribute, template in QUESTION_TEMPLATES.items():
        for hops, subject, holder in ((1, person.name, person), (2, MENTOR_SUBJECT.format(name=person.name), mentor)):
            questions.append(
                Question(
                    id=f"toy-{hops}hop-{attribute}-{number}",
                    question=template.format(subject=subject),
                    answer=(holder.attribute(attribute),),
                    hops=hops,
                    attribute=attribute,
                    dataset=DATASET,
                    positive_doc_ids=(person.id,) if hops == 1 else (person.id, mentor.id),
                    split=UNASSIGNED,
                    decomposition=(template.format(subject=subject),)
                    + (() if hops == 1 else (template.format(subject=mentor.name),)),
                )
            )
    return questions


def two_hop_count(size: int, share: float) -> int:
    """Two-hop questions in a split of ``size`` questions: ``size * share`` rounded half up.

    >>> two_hop_count(10, 0.25), two_hop_count(10, 0.5), two_hop_count(3, 1.0)
    (3, 5, 3)
    """
    return math.floor(size * share + 0.5)


def split_counts(size: int, share: float) -> HopCounts:
    """Single-hop and two-hop questions in a split of ``size`` questions.

    >>> split_counts(10, 0.25)
    HopCounts(one_hop=7, two_hop=3)
    """
    two_hop = two_hop_count(size, share)
    return HopCounts(one_hop=size - two_hop, two_hop=two_hop)


def largest_split(one_hop_left: int, two_hop_left: int, share: float) -> int:
    """The largest split with two-hop share ``share`` (rounded) that the questions left can fill; 0 if none.

    >>> largest_split(10, 10, 0.5), largest_split(10, 10, 0.25), largest_split(10, 0, 0.5)
    (20, 14, 0)
    """
    for size in range(one_hop_left + two_hop_left, 0, -1):
        one_hop, two_hop = split_counts(size, share)
        if one_hop <= one_hop_left and two_hop <= two_hop_left:
            return size
    return 0


def plan_splits(cfg: WorldConfig) -> dict[str, HopCounts]:
    """How many single-hop and two-hop questions each split takes.

    Test and val are filled first; train takes ``train_questions`` or, when that is None, the largest split with the
    configured two-hop share that the remaining questions allow.

    Raises:
        ConfigError: The world has too few questions of a hop type for the requested sizes.

    >>> cfg = WorldConfig(seed=0, entities=10, two_hop_share=0.5, val_questions=4, test_questions=6,
    ...                   train_questions=None, output_dir="unused", reading_drills=0, search_drills=0,
    ...                   bridge_drills=0, reading_people=0, reading_backlinks=True, mentor_backlinks=False,
    ...                   reading_two_hop=False)
    >>> plan_splits(cfg)["train"]
    HopCounts(one_hop=25, two_hop=25)
    """
    available = len(ATTRIBUTES) * cfg.entities  # questions per hop type
    plan = {
        "test": split_counts(cfg.test_questions, cfg.two_hop_share),
        "val": split_counts(cfg.val_questions, cfg.two_hop_share),
    }
    if cfg.train_questions is not None:
        plan["train"] = split_counts(cfg.train_questions, cfg.two_hop_share)
    one_hop_needed = sum(counts.one_hop for counts in plan.values())
    two_hop_needed = sum(counts.two_hop for counts in plan.values())
    if max(one_hop_needed, two_hop_needed) > available:
        needed_entities = math.ceil(max(one_hop_needed, two_hop_needed) / len(ATTRIBUTES))
        raise ConfigError(
            f"world.entities={cfg.entities} gives {available} single-hop and {available} two-hop questions, but the "
            f"splits {dict(plan)} need {one_hop_needed} single-hop and {two_hop_needed} two-hop questions; raise "
            f"world.entities to at least {needed_entities} or lower world.test_questions, world.val_questions or "
            "world.train_questions."
        )
    if cfg.train_questions is None:
        size = largest_split(available - one_hop_needed, available - two_hop_needed, cfg.two_hop_share)
        if size == 0:
            raise ConfigError(
                f"world.entities={cfg.entities} leaves no question for train after test and val; raise "
                "world.entities or lower world.test_questions and world.val_questions."
            )
        plan["train"] = split_counts(size, cfg.two_hop_share)
    return plan


def assign_splits(
    questions: list[Question], plan: dict[str, HopCounts], rng: random.Random
) -> tuple[tuple[Question, ...], tuple[Question, ...]]:
    """Place questions into splits by a seeded shuffle within each hop type (test first, then val, then train).

    Args:
        questions: Every question of the world, in generation order.
        plan: Questions per split and hop type (:func:`plan_splits`).
        rng: The world's generator.

    Returns:
        The questions placed in a split, and the questions no split took (split :data:`UNASSIGNED`), both in
        generation order.
    """
    split_of: dict[str, str] = {}
    for hops in (1, 2):
        ids = [question.id for question in questions if question.hops == hops]
        rng.shuffle(ids)
        start = 0
        for split in ("test", "val", "train"):
            count = plan[split].one_hop if hops == 1 else plan[split].two_hop
            split_of.update((question_id, split) for question_id in ids[start : start + count])
            start += count
    assigned = tuple(replace(q, split=split_of[q.id]) for q in questions if q.id in split_of)
    unused = tuple(q for q in questions if q.id not in split_of)
    return assigned, unused


def question_counts(world: World) -> dict[str, dict[str, int]]:
    """Questions per split (and ``unused``) and hop type, e.g. ``{"train": {"1hop": 90, "2hop": 90}, ...}``."""
    groups = {split: [q for q in world.questions if q.split == split] for split in SPLITS}
    groups["unused"] = list(world.unused_questions)
    return {
        name: {"1hop": sum(q.hops == 1 for q in group), "2hop": sum(q.hops == 2 for q in group)}
        for name, group in groups.items()
    }


def write_world(world: World, folder: Path) -> None:
    """Write the corpus, the question files, ``entities.json`` and ``manifest.json`` into ``folder``.

    Files: ``corpus.jsonl`` (wiki-18: ``{"id", "contents": '"Title"\\ntext'}``), the question files of
    :data:`QUESTION_FILES` (``searchagentreview_jsonl`` records), ``entities.json`` and ``manifest.json`` (seed,
    counts per split and hop type, SHA-256 of every other file).

    Args:
        world: The world to write.
        folder: An existing folder (the stage passes a staging folder of :func:`write_dir_atomically`).
    """
    corpus = [{"id": p.id, "contents": f'"{p.title}"\n{p.text}'} for p in world.passages]
    _write_jsonl(folder / CORPUS_FILE, corpus)
    for file_name, split, hops in QUESTION_FILES:
        chosen = [q for q in world.questions if q.split == split and (hops is None or q.hops == hops)]
        _write_jsonl(folder / file_name, [q.record() for q in chosen])
    entities = [asdict(person) for person in world.entities]
    (folder / ENTITIES_FILE).write_text(json.dumps(entities, indent=2) + "\n", encoding="utf-8")
    _write_jsonl(folder / READING_FILE, [drill.record() for drill in world.reading])
    written = [CORPUS_FILE, *(name for name, _, _ in QUESTION_FILES), ENTITIES_FILE, READING_FILE]
    lessons = world.reading_world
    if lessons is not None:
        _write_jsonl(
            folder / READING_CORPUS_FILE, [{"id": p.id, "contents": f'"{p.title}"\n{p.text}'} for p in lessons.passages]
        )
        _write_jsonl(folder / READING_QUESTIONS_FILE, [q.record() for q in lessons.questions])
        written += [READING_CORPUS_FILE, READING_QUESTIONS_FILE]
    manifest = {
        "dataset": DATASET,
        "seed": world.seed,
        "two_hop_share": world.two_hop_share,
        "entities": len(world.entities),
        "passages": len(world.passages),
        "questions": question_counts(world),
        "reading_drills": len(world.reading),
        "reading_people": 0 if lessons is None else len(lessons.people),
        "reading_questions": 0 if lessons is None else len(lessons.questions),
        "passage_template": PASSAGE_TEMPLATE + MENTEES_TEMPLATE,
        "reading_template": READING_TEMPLATE,
        "question_templates": QUESTION_TEMPLATES,
        "sha256": {name: file_sha256(folder / name) for name in written},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def answer_in_text(answer: str, text: str) -> bool:
    """Whether ``answer`` occurs in ``text`` as whole words (case-sensitive).

    >>> answer_in_text("harp", "plays the harp."), answer_in_text("harp", "plays the harpsichord.")
    (True, False)
    """
    return bool(answer) and re.search(rf"\b{re.escape(answer)}\b", text) is not None


def world_validation_frame(world: World) -> pd.DataFrame:
    """One row per question with the columns the expectations check.

    ``answer_in_corpus`` is True when every answer occurs in the passage that states it (the last of
    ``positive_doc_ids``: the person's passage for single-hop, the mentor's for two-hop questions).
    """
    texts = {passage.id: passage.text for passage in world.passages}

    def answer_in_corpus(question: Question) -> bool:
        if not question.answer or not question.positive_doc_ids:
            return False
        holder_text = texts.get(question.positive_doc_ids[-1], "")
        return all(answer_in_text(answer, holder_text) for answer in question.answer)

    return pd.DataFrame(
        {
            "source_row": range(1, len(world.questions) + 1),
            "id": [q.id for q in world.questions],
            "question": [q.question for q in world.questions],
            "split": [q.split for q in world.questions],
            "is_two_hop": [float(q.hops == 2) for q in world.questions],
            "answer_in_corpus": [answer_in_corpus(q) for q in world.questions],
        }
    )


def two_hop_bounds(size: int, share: float, tolerance: float) -> tuple[float, float]:
    """Allowed two-hop share of a split: ``share ± tolerance``, widened to what rounding forces on small splits.

    >>> two_hop_bounds(100, 0.5, 0.05), two_hop_bounds(5, 0.3, 0.05)
    ((0.45, 0.55), (0.2, 0.4))
    """
    allowance = max(tolerance, 0.5 / size) if size > 0 else tolerance
    return round(max(0.0, share - allowance), 9), round(min(1.0, share + allowance), 9)


def validate_world(world: World, report_dir: Path, two_hop_tolerance: float = 0.05) -> ValidationOutcome:
    """Check the world with Great Expectations and write the report folder (Data Docs + summary).

    Expectations on all questions: ids unique; question texts unique across all splits (no leakage); every split
    is one of :data:`SPLITS`; every answer occurs in the passage that states it. Per split: at least one question,
    and a two-hop share within :func:`two_hop_bounds`. Reading drills (if any): ids unique, no drill about one of
    the world's people, every answer in the drill's passage sentence.

    Args:
        world: The world to check.
        report_dir: Receives ``data_docs/``, ``summary.md`` and ``summary.json`` (replaced as a whole).
        two_hop_tolerance: Allowed distance of each split's two-hop share from ``world.two_hop_share``.

    Returns:
        The outcome; failures name their rows by ``source_row`` (1-based position in ``world.questions``) and id.
    """
    outcome = ValidationOutcome()
    checked = world_validation_frame(world)
    sizes = {split: int((checked["split"] == split).sum()) for split in SPLITS}
    bounds = {split: two_hop_bounds(sizes[split], world.two_hop_share, two_hop_tolerance) for split in SPLITS}

    def write(folder: Path) -> None:
        validator = GXValidator(folder / "data_docs")
        suites = [(_questions_suite(validator.gx), checked)]
        suites += [(_split_suite(validator.gx, s, bounds[s]), checked[checked["split"] == s]) for s in SPLITS]
        if world.reading:
            suites.append((_reading_suite(validator.gx), reading_validation_frame(world)))
        if world.reading_world is not None:
            suites.append((_reading_suite(validator.gx, "reading_world"), reading_world_validation_frame(world)))
        for suite, frame in suites:
            result = validator.run(suite, frame, with_row_names=True)
            outcome.evaluated += len(result.results)
            outcome.failures += expectation_failures(result, suite.name, "generate_world")
        validator.build_docs()
        (folder / "summary.md").write_text(_summary_markdown(world, outcome, checked, bounds))
        summary = {
            "success": outcome.success,
            "evaluated": outcome.evaluated,
            "questions": question_counts(world),
            "two_hop_bounds": bounds,
            "failures": [failure.__dict__ for failure in outcome.failures],
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=list) + "\n")

    write_dir_atomically(report_dir, write)
    logger.info("%s", outcome.summary())
    return outcome


def reading_validation_frame(world: World) -> pd.DataFrame:
    """One row per reading drill: whether its person is one of the world's (a leak) and its answer is in its text."""
    names = {person.name for person in world.entities}
    return pd.DataFrame(
        {
            "source_row": range(1, len(world.reading) + 1),
            "id": [d.id for d in world.reading],
            "person_in_world": [d.person in names for d in world.reading],
            "answer_in_text": [drill_states_answer(d) for d in world.reading],
        }
    )


def drill_states_answer(drill: ReadingDrill) -> bool:
    """Whether a drill's text holds what its answer needs: a reading drill's answer is in its sentence; a search
    drill's query is the question it copies; a bridge drill's query names the mentor its person's passage states
    and asks what its question asks.

    >>> people = draw_people(6, random.Random(0))
    >>> drill = bridge_drill(0, people, random.Random(1))
    >>> drill_states_answer(drill), drill_states_answer(replace(drill, answer=drill.answer.replace("?", " now?")))
    (True, False)
    """
    if drill.id.startswith("reading-"):
        return answer_in_text(drill.answer, drill.text.rsplit(" Question: ", 1)[0])
    if drill.id.startswith("search-"):
        query = drill.answer.removesuffix(" </search>")
        return drill.text == SEARCH_DRILL_TEMPLATE.format(question=query, answer=drill.answer)
    passages, _, rest = drill.text.partition(" Question: ")
    question = rest.partition(" <search> ")[0]
    mentor = passages.partition(f"{drill.person} was mentored by ")[2].partition(".")[0]
    subject = MENTOR_SUBJECT.format(name=drill.person)
    expected = SEARCH_DRILL_ANSWER.format(question=question.replace(subject, mentor))
    return (
        bool(mentor)
        and subject in question
        and drill.text.endswith(f" <search> {drill.answer}")
        and (drill.answer == expected)
    )


def reading_world_validation_frame(world: World) -> pd.DataFrame:
    """One row per reading-world question: whether its person is one of the world's (a leak) and whether its answer
    is in that person's passage."""
    assert world.reading_world is not None
    names = {person.name for person in world.entities}
    passages = {passage.id: passage for passage in world.reading_world.passages}
    questions = world.reading_world.questions
    return pd.DataFrame(
        {
            "source_row": range(1, len(questions) + 1),
            "id": [q.id for q in questions],
            "person_in_world": [passages[q.positive_doc_ids[0]].title in names for q in questions],
            "answer_in_text": [answer_in_text(q.answer[0], passages[q.positive_doc_ids[-1]].text) for q in questions],
        }
    )


def _reading_suite(gx: Any, part: str = "reading") -> Any:
    """Drills or reading-world questions: ids unique, none about a person of the world, every answer stated."""
    gxe = gx.expectations
    return gx.ExpectationSuite(
        name=f"{DATASET}.{part}",
        expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeInSet(column="person_in_world", value_set=[False]),
            gxe.ExpectColumnValuesToBeInSet(column="answer_in_text", value_set=[True]),
        ],
    )


def _questions_suite(gx: Any) -> Any:
    gxe = gx.expectations
    return gx.ExpectationSuite(
        name=DATASET,
        expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="question"),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            gxe.ExpectColumnValuesToBeInSet(column="answer_in_corpus", value_set=[True]),
        ],
    )


def _split_suite(gx: Any, split: str, bounds: tuple[float, float]) -> Any:
    gxe = gx.expectations
    return gx.ExpectationSuite(
        name=f"{DATASET}.{split}",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnMeanToBeBetween(column="is_two_hop", min_value=bounds[0], max_value=bounds[1]),
        ],
    )


def _summary_markdown(
    world: World, outcome: ValidationOutcome, checked: pd.DataFrame, bounds: dict[str, tuple[float, float]]
) -> str:
    status = "PASSED" if outcome.success else "FAILED"
    lines = [
        f"# Toy world validation: {status}",
        "",
        f"Seed {world.seed}: {len(world.entities)} people, {len(world.passages)} passages, "
        f"{len(world.questions)} questions in splits, {len(world.unused_questions)} in none, "
        f"{len(world.reading)} reading drills, "
        f"{0 if world.reading_world is None else len(world.reading_world.questions)} reading-world questions; "
        f"{outcome.evaluated} expectations evaluated.",
        "",
        "| split | questions | two-hop share | allowed |",
        "|---|---|---|---|",
    ]
    for split in SPLITS:
        rows = checked[checked["split"] == split]
        share = f"{rows['is_two_hop'].mean():.3f}" if len(rows) else "-"
        lines.append(f"| {split} | {len(rows)} | {share} | {bounds[split][0]:.3f} to {bounds[split][1]:.3f} |")
    if outcome.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {failure.describe()}" for failure in outcome.failures]
    lines += ["", "Great Expectations Data Docs: `data_docs/index.html`."]
    return "\n".join(lines) + "\n"
