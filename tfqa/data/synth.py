"""Seeded generator of Natural-Questions-like data, in Google's original format and Kaggle's simplified one.

Every page is about an invented entity (a company, a town, a person or a book) and reads like a
Wikipedia article: ``<H1>`` title, an infobox ``<Table>``, paragraphs under ``<H2>`` sections,
lists, definition lists, data tables and a navbox with a nested list. Each question asks for one
relation of one entity ("who founded the varnholt company").

Why the task is learnable: the relation of the asked entity is stated exactly once in the page, in
the gold candidate (a sentence "The Varnholt Company was founded by Kelmar Osk ." or an infobox row
"Founder | Kelmar Osk"), so a reader that binds the relation to the entity finds it; null questions
ask for a relation the page never states for that entity (or for an entity absent from the page).

Why word overlap is not enough: every question gets *bait* paragraphs that state the same relation
for a sibling entity and also mention the asked entity, usually with the question's wh-word
("It is unclear when the Varnholt Company first came into contact with the Pell Guild ."). A bait
holds every question word the gold sentence holds and usually more, so picking the candidate that
shares most words with the question lands on a bait far more often than on the answer.

All names are made of random syllables, so nothing can be memorised across examples and nothing
is downloaded. Example ``i`` of a seed depends only on (seed, i, its answer kind, the config).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfqa.data.candidates import CANDIDATE_TAGS
from tfqa.data.convert import simplify_nq_example

ANSWER_KINDS = ("short", "yes", "no", "long", "null")
# Tags laid out on their own line in the HTML; inline ones (Th, Td, Dt, Dd, Br) hug their text.
_BLOCK_TAGS = CANDIDATE_TAGS | {"H1", "H2"}
_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", ")", "%"})
_HTML_HEAD = '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>'
_HTML_BODY = "</title>\n</head>\n<body>\n"
_HTML_TAIL = "\n</body>\n</html>\n"
_TEXT, _PUNCT, _INLINE, _BLOCK = range(4)
# _SEP[previous token class][token class]: real pages put block tags on their own lines, inline
# tags against their text ("<Td>Kelmar Osk</Td>") and no space before punctuation.
_SEP = (
    (" ", "", "", "\n"),
    (" ", "", "", "\n"),
    ("", "", "", "\n"),
    ("\n", "\n", "\n", "\n"),
)


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthConfig:
    """What to generate. The answer-kind fractions must sum to 1; counts are exact quotas."""

    n_examples: int = 1000
    seed: int = 0
    short_fraction: float = 0.40
    yes_fraction: float = 0.06
    no_fraction: float = 0.06
    long_only_fraction: float = 0.18
    null_fraction: float = 0.30
    multi_span_fraction: float = 0.10
    """Share of short-answer examples with two short spans ("founded by A and B")."""
    table_answer_fraction: float = 0.25
    """Share of short-answer examples answered by an infobox row (<Tr>) instead of a paragraph."""
    min_candidates: int = 10
    max_candidates: int = 60
    min_tokens: int = 200
    max_tokens: int = 1500
    """Soft bounds on document tokens (HTML tags included); a page can end up a little outside."""
    min_distractors: int = 2
    max_distractors: int = 3
    """Bait paragraphs per question: same relation, sibling entity, asked entity mentioned."""
    n_annotations: int = 1
    """1 for train/test-like files; 5 for dev-like ones (annotators then sometimes disagree)."""
    annotator_agreement: float = 0.8
    """Chance that each annotator beyond the two agreeing ones repeats the gold answer."""

    def __post_init__(self) -> None:
        fractions = self.fractions()
        if any(not 0.0 <= f <= 1.0 for f in fractions.values()):
            raise ValueError(f"answer fractions must lie in [0, 1], got {fractions}")
        if abs(sum(fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"answer fractions must sum to 1, got {sum(fractions.values()):.6f}")
        for name in ("multi_span_fraction", "table_answer_fraction", "annotator_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.n_examples < 0:
            raise ValueError("n_examples must be >= 0")
        # Below ~8 candidates there is no room for the gold, the baits and an infobox together.
        if not 8 <= self.min_candidates <= self.max_candidates:
            raise ValueError("need 8 <= min_candidates <= max_candidates")
        if not 50 <= self.min_tokens <= self.max_tokens:
            raise ValueError("need 50 <= min_tokens <= max_tokens")
        if not 1 <= self.min_distractors <= self.max_distractors <= 4:
            raise ValueError("need 1 <= min_distractors <= max_distractors <= 4")
        if self.n_annotations < 1:
            raise ValueError("n_annotations must be >= 1")

    def fractions(self) -> dict[str, float]:
        return {
            "short": self.short_fraction,
            "yes": self.yes_fraction,
            "no": self.no_fraction,
            "long": self.long_only_fraction,
            "null": self.null_fraction,
        }


@dataclass(frozen=True)
class Fact:
    """What a generated question asks and where the page answers it (for tests and diagnostics).

    ``evidence`` is the run of document tokens that states the answer; it lies inside the gold
    candidate and nowhere else. Empty for null questions.
    """

    answer: str  # one of ANSWER_KINDS
    entity: str
    relation: str
    values: tuple[str, ...]
    evidence: tuple[str, ...]
    entity_on_page: bool


# -- vocabulary --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Relation:
    name: str
    kind: str
    value: str
    """Value type: person, place, river, org, year, number, date; "" for descriptive relations."""
    questions: tuple[str, ...]
    statements: tuple[str, ...]
    header: str = ""
    yes_no: tuple[str, ...] = ()
    multi: bool = False

    @property
    def descriptive(self) -> bool:
        return not self.value


_RELATIONS: tuple[_Relation, ...] = (
    # organisations
    _Relation(
        "founder",
        "org",
        "person",
        ("who founded {E}", "who was the founder of {E}", "who started {E}"),
        ("{E} was founded by {V} .", "{V} founded {E} .", "{E} was established by {V} ."),
        "Founder",
        ("was {E} founded by {V}",),
        multi=True,
    ),
    _Relation(
        "founded",
        "org",
        "year",
        ("when was {E} founded", "what year was {E} founded", "when was {E} established"),
        ("{E} was founded in {V} .", "{E} was established in {V} .", "In {V} , {E} was formally established ."),
        "Founded",
        ("was {E} founded in {V}",),
    ),
    _Relation(
        "headquarters",
        "org",
        "place",
        ("where is {E} headquartered", "where is the headquarters of {E}", "in which city is {E} based"),
        ("{E} is headquartered in {V} .", "The headquarters of {E} are in {V} .", "{E} is based in the city of {V} ."),
        "Headquarters",
        ("is {E} headquartered in {V}", "is {E} based in {V}"),
    ),
    _Relation(
        "employees",
        "org",
        "number",
        ("how many employees does {E} have", "how many people work for {E}"),
        ("{E} employs {V} people .", "{E} has about {V} employees ."),
        "Employees",
    ),
    _Relation(
        "org_history",
        "org",
        "",
        ("what is the history of {E}", "how did {E} start"),
        (
            "The history of {E} goes back to a small {noun} workshop of the {century} century .",
            "{E} grew out of a {noun} business run by a family of {occupation}s .",
        ),
    ),
    _Relation(
        "org_known",
        "org",
        "",
        ("what is {E} known for", "why is {E} famous"),
        ("{E} is best known for its {adj} {noun} goods .", "{E} is widely known for its {noun} patents ."),
    ),
    # towns
    _Relation(
        "province",
        "town",
        "place",
        ("where is {E} located", "which province is {E} in", "what province is {E} located in"),
        ("{E} is a town in the province of {V} .", "{E} is located in {V} province .", "{E} lies in the province of {V} ."),
        "Province",
        ("is {E} located in {V}", "is {E} in the province of {V}"),
    ),
    _Relation(
        "population",
        "town",
        "number",
        ("what is the population of {E}", "how many people live in {E}"),
        ("{E} has a population of {V} .", "At the last census the population of {E} was {V} .", "About {V} people live in {E} ."),
        "Population",
    ),
    _Relation(
        "mayor",
        "town",
        "person",
        ("who is the mayor of {E}", "who is the current mayor of {E}"),
        ("The current mayor of {E} is {V} .", "{V} serves as mayor of {E} .", "{E} is governed by mayor {V} ."),
        "Mayor",
        ("is {V} the mayor of {E}",),
    ),
    _Relation(
        "river",
        "town",
        "river",
        ("what river flows through {E}", "which river runs through {E}", "what river is {E} on"),
        ("The {V} flows through {E} .", "{E} lies on the banks of the {V} ."),
        "River",
        ("does the {V} flow through {E}",),
    ),
    _Relation(
        "town_history",
        "town",
        "",
        ("what is the history of {E}", "how did {E} develop"),
        (
            "The history of {E} goes back to a {adj} market settlement of the {century} century .",
            "{E} developed from a {noun} market on an old trade road .",
        ),
    ),
    _Relation(
        "climate",
        "town",
        "",
        ("what is the climate of {E} like", "what is the weather like in {E}"),
        (
            "The climate of {E} is {adj} , with cold winters and mild summers .",
            "{E} has a damp climate with frequent fog from the hills .",
        ),
    ),
    # people
    _Relation(
        "birthplace",
        "person",
        "place",
        ("where was {E} born", "what is the birthplace of {E}"),
        ("{E} was born in {V} .", "{E} was born in the town of {V} ."),
        "Birthplace",
        ("was {E} born in {V}",),
    ),
    _Relation(
        "birthdate",
        "person",
        "date",
        ("when was {E} born", "what is the date of birth of {E}"),
        ("{E} was born on {V} .", "{E} ( born {V} ) grew up in a family of {occupation}s ."),
        "Date of birth",
    ),
    _Relation(
        "spouse",
        "person",
        "person",
        ("who was {E} married to", "who is the spouse of {E}"),
        ("{E} married {V} .", "{E} was married to {V} for many years ."),
        "Spouse",
        ("was {E} married to {V}",),
    ),
    _Relation(
        "employer",
        "person",
        "org",
        ("who did {E} work for", "which company did {E} work for"),
        ("{E} worked for {V} .", "{E} was employed by {V} ."),
        "Employer",
        ("did {E} work for {V}",),
    ),
    _Relation(
        "career",
        "person",
        "",
        ("what did {E} do for a living", "what was the career of {E}"),
        (
            "{E} spent most of {their} career as a {occupation} .",
            "{E} worked as a {occupation} and later trained young {occupation}s .",
        ),
    ),
    _Relation(
        "person_known",
        "person",
        "",
        ("what is {E} known for", "why is {E} famous"),
        ("{E} is best known for {their} work on {noun} .", "{E} is remembered for {their} studies of {noun} ."),
    ),
    # books
    _Relation(
        "author",
        "work",
        "person",
        ("who wrote {E}", "who is the author of {E}"),
        ("{E} was written by {V} .", "{V} wrote {E} ."),
        "Author",
        ("was {E} written by {V}",),
        multi=True,
    ),
    _Relation(
        "published",
        "work",
        "year",
        ("when was {E} published", "what year was {E} first published"),
        ("{E} was first published in {V} .", "{E} appeared in print in {V} ."),
        "Published",
        ("was {E} published in {V}",),
    ),
    _Relation(
        "publisher",
        "work",
        "org",
        ("who published {E}", "which company published {E}"),
        ("{E} was published by {V} .", "{V} published {E} ."),
        "Publisher",
        ("was {E} published by {V}",),
    ),
    _Relation(
        "setting",
        "work",
        "place",
        ("where is {E} set", "where does {E} take place"),
        ("{E} is set in {V} .", "The story of {E} takes place in {V} ."),
        "Setting",
        ("is {E} set in {V}",),
    ),
    _Relation(
        "plot",
        "work",
        "",
        ("what is {E} about", "what is the plot of {E}"),
        ("{E} tells the story of a {occupation} who leaves home .", "{E} follows a young {occupation} through a hard winter ."),
    ),
)
_KINDS = ("org", "town", "person", "work")
_BY_KIND = {k: tuple(r for r in _RELATIONS if r.kind == k) for k in _KINDS}

# Descriptive follow-up sentences (after a long-only cue) and filler; {It} is the entity's pronoun.
_DETAILS = (
    "{It} later moved into the {noun} trade .",
    "In {year} {it} drew wide attention in the press .",
    "By the {century} century {it} had grown well beyond {their} early {adj} beginnings .",
    "Much of this is recorded in letters kept at the {adj} archive .",
    "A period of decline followed , and recovery came only after {year} .",
    "Critics praised the {adj} style but disliked the {noun} .",
    "{It} remained closely tied to the {noun} market for decades .",
)
_GENERIC = (
    "The {noun} trade grew steadily during the {century} century .",
    "Several {adj} buildings from this period still survive .",
    "Local records describe a long dispute over {noun} and {noun} .",
    "A {adj} bridge was built across the valley in {year} .",
    "The surrounding district is mostly farmland and {adj} woodland .",
    "During the winter of {year} a fire destroyed part of the old quarter .",
    "Most early documents were lost in {year} , when the archive was moved .",
    "The main square , where the weekly {noun} market is held , was paved in {year} .",
    "Travellers who passed through in {year} described the {adj} streets .",
    "A small museum displays {noun} tools and {adj} furniture .",
    "What remains of the {adj} wall can be seen near the station .",
    "How the {noun} workshops were organised is described in a survey of {year} .",
    "The region is connected by a {adj} railway line opened in {year} .",
)
# Bait connectives, by the question's first word: they mention the asked entity {E} next to the
# sibling {S} and carry the wh-word, so a bait shares more words with the question than the gold.
_CONNECTIVES = {
    "who": ("It is disputed who first linked {E} with {S} .", "Writers who studied {E} often mention {S} ."),
    "when": (
        "It is unclear when {E} first came into contact with {S} .",
        "{S} is often mentioned when {E} is discussed in the press .",
    ),
    "where": (
        "Visitors often ask where {E} ends and {S} begins .",
        "{S} is described in the section on {E} , where the two are compared .",
    ),
    "what": ("It is not clear what {E} owed to {S} .", "Scholars still discuss what {E} and {S} had in common ."),
    "which": ("Sources differ on which of {E} and {S} is older .",),
    "how": ("Little is known about how {E} and {S} were connected .", "It is unclear how many records of {E} mention {S} ."),
    "why": ("It is not known why {E} is so often compared with {S} .",),
    "other": (
        "{S} is often compared with {E} .",
        "{S} was for a time closely linked to {E} .",
        "Unlike {E} , {S} kept its records in the {adj} archive .",
    ),
}
_NOUNS = (
    "wool",
    "timber",
    "glass",
    "salt",
    "grain",
    "copper",
    "silk",
    "pottery",
    "paper",
    "rope",
    "leather",
    "tin",
    "clock",
    "lace",
    "iron",
    "cider",
    "dye",
    "map",
)
_ADJS = (
    "old",
    "narrow",
    "wooden",
    "painted",
    "stone",
    "quiet",
    "busy",
    "small",
    "northern",
    "southern",
    "eastern",
    "plain",
    "ornate",
    "modest",
    "damp",
    "bright",
)
_OCCUPATIONS = (
    "merchant",
    "teacher",
    "engineer",
    "painter",
    "printer",
    "sailor",
    "surveyor",
    "clerk",
    "physician",
    "architect",
    "weaver",
    "miller",
)
_CENTURIES = ("fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ORG_SUFFIXES = ("Company", "Guild", "Society", "Institute", "Trading Company", "Press", "Brewery", "Railway", "Foundry", "Bank")
_WORK_FORMS = ("The {N} Letters", "The {N} Chronicle", "Songs of {N}", "The House at {N}", "A Winter in {N}", "The {N} Road")
_SECTIONS = {
    "org": ("History", "Operations", "Ownership", "Products", "Legacy"),
    "town": ("History", "Geography", "Economy", "Government", "Culture"),
    "person": ("Early life", "Career", "Personal life", "Works", "Legacy"),
    "work": ("Background", "Plot", "Publication", "Reception", "Adaptations"),
}
_ONSETS = (
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "th",
    "tr",
    "v",
    "w",
    "z",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rn", "lt", "x", "m", "rk")
# Accented letters make byte offsets differ from character offsets, as on real pages.
_ACCENTS = {"a": "å", "e": "é", "o": "ö", "u": "ü", "i": "í"}
_SYLLABLES = tuple(o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS)
_SLOT = re.compile(r"\{(\w+)\}")


# -- tokens with marks -------------------------------------------------------------------------------
Tok = tuple[str, str]  # (text, mark): mark "" plain, "F" fact words, "V0"/"V1" answer spans
Sentence = list[Tok]


def _plain(text: str, mark: str = "") -> Sentence:
    return [(w, mark) for w in text.split(" ")]


def _word_pool(seed: int, size: int = 6000) -> tuple[str, ...]:
    """Invented words for one generate() call; drawing from a pool is much cheaper than building
    each name from syllables, and a pool this size still gives millions of two-word names."""
    rng = random.Random(f"tfqa-synth:{seed}:words")
    words: set[str] = set()
    while len(words) < size:
        w = "".join(rng.choices(_SYLLABLES, k=2 if rng.random() < 0.67 else 3))
        if rng.random() < 0.06:
            i = next((i for i, ch in enumerate(w) if ch in _ACCENTS), None)
            if i is not None:
                w = w[:i] + _ACCENTS[w[i]] + w[i + 1 :]
        if 4 <= len(w) <= 11:
            words.add(w.capitalize())
    return tuple(sorted(words))


class _Names:
    """Unique invented names for one document."""

    def __init__(self, rng: random.Random, pool: tuple[str, ...]) -> None:
        self.rng = rng
        self.pool = pool
        self.used: set[str] = set()

    def word(self) -> str:
        pool, used, rand = self.pool, self.used, self.rng.random
        while True:
            w = pool[int(rand() * len(pool))]
            if w not in used:
                used.add(w)
                return w

    def person(self) -> str:
        return f"{self.word()} {self.word()}"

    def org(self) -> str:
        return f"{self.word()} {self.rng.choice(_ORG_SUFFIXES)}"


@dataclass
class _Entity:
    kind: str
    title: str  # page-title form: "Varnholt Company"
    surface: str  # in-sentence form: "the Varnholt Company"
    pronoun: str  # "it", "he", "she"

    @property
    def question_form(self) -> str:
        return self.surface.lower()


def _entity(kind: str, names: _Names) -> _Entity:
    rng = names.rng
    if kind == "org":
        t = names.org()
        return _Entity(kind, t, "the " + t, "it")
    if kind == "town":
        t = names.word()
        return _Entity(kind, t, t, "it")
    if kind == "person":
        t = names.person()
        return _Entity(kind, t, t, rng.choice(("he", "she")))
    t = rng.choice(_WORK_FORMS).replace("{N}", names.word())
    return _Entity(kind, t, t, "it")


def _value(vtype: str, names: _Names) -> str:
    rng = names.rng
    if vtype == "person":
        return names.person()
    if vtype == "place":
        return names.word()
    if vtype == "river":
        return names.word() + " River"
    if vtype == "org":
        return names.org()
    if vtype == "year":
        return str(rng.randint(1650, 1995))
    if vtype == "number":
        return f"{rng.randint(2, 400) * 100 + rng.randint(0, 99):,}"
    if vtype == "date":
        return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1700, 1990)}"
    raise ValueError(vtype)


def _parse(template: str) -> tuple[tuple[bool, str], ...]:
    """Template -> (is_slot, text) pieces; a literal suffix right after a slot ("{occupation}s")
    is kept as its own piece with a leading "+" so that it is glued onto the slot's word."""
    pieces: list[tuple[bool, str]] = []
    for i, piece in enumerate(_SLOT.split(template)):
        if i % 2:
            pieces.append((True, piece))
            continue
        words = piece.split(" ")
        if i and words[0]:
            pieces.append((False, "+" + words[0]))
            words = words[1:]
        pieces.extend((False, w) for w in words if w)
    return tuple(pieces)


class _Writer:
    """Fills sentence templates, drawing generic words from the example's rng."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def fill(self, template: str, slots: dict[str, Sentence], mark: str = "") -> Sentence:
        rng = self.rng
        parsed = _PARSED.get(template) or _parse(template)
        out: Sentence = []
        for is_slot, piece in parsed:
            if not is_slot:
                if piece[0] == "+":
                    out[-1] = (out[-1][0] + piece[1:], out[-1][1])
                else:
                    out.append((piece, mark))
            elif piece in slots:
                out.extend(slots[piece])
            elif piece == "noun":
                out.append((rng.choice(_NOUNS), mark))
            elif piece == "adj":
                out.append((rng.choice(_ADJS), mark))
            elif piece == "occupation":
                out.append((rng.choice(_OCCUPATIONS), mark))
            elif piece == "century":
                out.append((rng.choice(_CENTURIES), mark))
            elif piece == "year":
                out.append((str(rng.randint(1650, 1995)), mark))
            else:
                raise KeyError(f"template slot {piece!r} unfilled in {template!r}")
        first = out[0][0]
        if first[0].islower():
            out[0] = (first[0].upper() + first[1:], out[0][1])
        if len(out) > 1:
            # "a" before a vowel sound: the generic adjectives make "a ornate" otherwise.
            for k in range(len(out) - 1):
                if out[k][0] in ("a", "A") and out[k + 1][0][0] in "aeiou":
                    out[k] = (out[k][0] + "n", out[k][1])
        return out

    def entity_slots(self, e: _Entity, mark: str = "") -> dict[str, Sentence]:
        their = {"he": "his", "she": "her"}.get(e.pronoun, "its")
        return {
            "E": _plain(e.surface, mark),
            "It": [(e.pronoun.capitalize(), "")],
            "it": [(e.pronoun, "")],
            "their": [(their, "")],
        }

    def statement(self, rel: _Relation, e: _Entity, values: Sequence[str], fact: bool = False) -> Sentence:
        """One sentence stating ``rel`` of ``e``; with ``fact`` its words and value spans are marked."""
        mark = "F" if fact else ""
        slots = self.entity_slots(e, mark)
        if values:
            v: Sentence = []
            for j, value in enumerate(values):
                if j:
                    v.append(("and", mark))
                v.extend(_plain(value, f"V{j}" if fact else ""))
            slots["V"] = v
        return self.fill(self.rng.choice(rel.statements), slots, mark)

    def generic(self, e: _Entity) -> Sentence:
        return self.fill(self.rng.choice(_GENERIC), self.entity_slots(e))

    def detail(self, e: _Entity) -> Sentence:
        return self.fill(self.rng.choice(_DETAILS), self.entity_slots(e))

    def mention(self, e: _Entity, value: str) -> Sentence:
        """A sentence naming ``value`` near ``e`` without stating any relation between them."""
        if value.isdigit():
            tpl = self.rng.choice([t for t in _GENERIC if "{year}" in t])
            return self.fill(tpl, {"year": [(value, "")]})
        return self.fill(self.rng.choice(_CONNECTIVES["other"]), {"E": _plain(e.surface), "S": _plain(value)})

    def connective(self, asked: _Entity, sibling: _Entity, wh: str) -> Sentence:
        rng = self.rng
        pool = _CONNECTIVES.get(wh, _CONNECTIVES["other"]) if rng.random() < 0.85 else _CONNECTIVES["other"]
        return self.fill(rng.choice(pool), {"E": _plain(asked.surface), "S": _plain(sibling.surface)})


_DL_TEMPLATE = "A {adj} kind of {noun} used by {occupation}s ."
_ITEM_TEMPLATE = "{N} , a {occupation} from {T}"
# Every template, parsed once at import (a constant table, never mutated).
_PARSED = {
    t: _parse(t)
    for t in (
        *(x for r in _RELATIONS for x in r.statements),
        *_DETAILS,
        *_GENERIC,
        _DL_TEMPLATE,
        _ITEM_TEMPLATE,
        *(x for pool in _CONNECTIVES.values() for x in pool),
    )
}


# -- page layout -------------------------------------------------------------------------------------
@dataclass
class _Block:
    """A piece of page content, laid out later; ``n_candidates``/``n_tokens`` drive the size budget."""

    kind: str  # "p", "ul", "ol", "dl", "table", "h2", "text"
    body: Any
    n_candidates: int
    n_tokens: int


def _p(sentences: list[Sentence]) -> _Block:
    return _Block("p", sentences, 1, 2 + sum(len(s) for s in sentences))


def _list(kind: str, items: list[Sentence]) -> _Block:
    return _Block(kind, items, 1 + len(items), 2 + sum(2 + len(i) for i in items))


def _table(rows: list[list[tuple[str, Sentence]]]) -> _Block:
    """rows of (cell tag, cell tokens); a cell's tokens may include "<Br>" and nested lists are not here."""
    n_tok = 2 + sum(2 + sum(2 + len(c) for _, c in row) for row in rows)
    return _Block("table", rows, 1 + len(rows), n_tok)


def _dl(pairs: list[tuple[Sentence, Sentence]]) -> _Block:
    return _Block("dl", pairs, 1, 2 + sum(4 + len(a) + len(b) for a, b in pairs))


def _navbox(title: Sentence, items: list[Sentence]) -> _Block:
    # <Table> <Tr> <Th> title </Th> </Tr> <Tr> <Td> <Ul> <Li>... </Ul> </Td> </Tr> </Table>
    n_tok = 2 + (4 + len(title) + 2) + 8 + sum(2 + len(i) for i in items)
    return _Block("navbox", (title, items), 3 + 1 + len(items), n_tok)


class _Page:
    """Lays tokens out in order, tracking candidates (document order, nested ones not top-level)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.is_html: list[bool] = []
        self.marks: list[str] = []
        self.classes: list[int] = []  # _TEXT, _PUNCT, _INLINE or _BLOCK: decides the HTML separators
        self.candidates: list[list[Any]] = []  # [start_token, end_token, top_level]
        self._stack: list[tuple[str, int]] = []  # open tags with their candidate index (-1: none)
        self._open_candidates = 0  # candidates among the open tags: a new one is top-level at 0

    def open(self, tag: str) -> None:
        idx = -1
        if tag in CANDIDATE_TAGS:
            idx = len(self.candidates)
            self.candidates.append([len(self.tokens), -1, self._open_candidates == 0])
            self._open_candidates += 1
        self._stack.append((tag, idx))
        self._tag(f"<{tag}>", _BLOCK if tag in _BLOCK_TAGS else _INLINE)

    def close(self) -> None:
        tag, idx = self._stack.pop()
        self._tag(f"</{tag}>", _BLOCK if tag in _BLOCK_TAGS else _INLINE)
        if idx >= 0:
            self.candidates[idx][1] = len(self.tokens)
            self._open_candidates -= 1

    def _tag(self, text: str, cls: int, mark: str = "") -> None:
        self.tokens.append(text)
        self.is_html.append(True)
        self.marks.append(mark)
        self.classes.append(cls)

    def words(self, toks: Sentence) -> None:
        """Text words; "<Br>" (only in table cells) becomes an HTML token."""
        texts = [t for t, _ in toks]
        if "<Br>" in texts:
            for text, mark in toks:
                if text == "<Br>":
                    self._tag(text, _INLINE, mark)
                else:
                    self.words([(text, mark)])
            return
        self.tokens.extend(texts)
        self.is_html.extend([False] * len(texts))
        self.marks.extend([m for _, m in toks])
        self.classes.extend([_PUNCT if t in _NO_SPACE_BEFORE else _TEXT for t in texts])

    def element(self, tag: str, toks: Sentence) -> None:
        self.open(tag)
        self.words(toks)
        self.close()

    def block(self, b: _Block) -> None:
        if b.kind == "p":
            self.open("P")
            for s in b.body:
                self.words(s)
            self.close()
        elif b.kind in ("ul", "ol"):
            self.open("Ul" if b.kind == "ul" else "Ol")
            for item in b.body:
                self.element("Li", item)
            self.close()
        elif b.kind == "dl":
            self.open("Dl")
            for term, desc in b.body:
                self.element("Dt", term)
                self.element("Dd", desc)
            self.close()
        elif b.kind == "table":
            self.open("Table")
            for row in b.body:
                self.open("Tr")
                for tag, cell in row:
                    self.element(tag, cell)
                self.close()
            self.close()
        elif b.kind == "navbox":
            title, items = b.body
            self.open("Table")
            self.open("Tr")
            self.element("Th", title)
            self.close()
            self.open("Tr")
            self.open("Td")
            self.open("Ul")
            for item in items:
                self.element("Li", item)
            self.close()
            self.close()
            self.close()
            self.close()
        elif b.kind == "h2":
            self.element("H2", b.body)
        elif b.kind == "text":
            self.words(b.body)
        else:
            raise ValueError(b.kind)

    def html_and_offsets(self, n_title: int) -> tuple[str, list[int], list[int]]:
        """Render the HTML; the first ``n_title`` tokens go in <title>. Offsets are UTF-8 bytes."""
        tokens, classes = self.tokens, self.classes
        seps = [""] + [_SEP[a][b] for a, b in zip(classes, classes[1:])]
        seps[n_title] = _HTML_BODY
        lens = [len(t) if t.isascii() else len(t.encode()) for t in tokens]
        # start_i = head + sum(seps[:i+1]) + sum(lens[:i]); separators are ASCII.
        steps = [len(seps[0])] + [len(sp) + n for sp, n in zip(seps[1:], lens)]
        head = len(_HTML_HEAD)
        starts = [head + c for c in itertools.accumulate(steps)]
        ends = [st + n for st, n in zip(starts, lens)]
        html = "".join([_HTML_HEAD, *itertools.chain.from_iterable(zip(seps, tokens)), _HTML_TAIL])
        return html, starts, ends


# -- one example -------------------------------------------------------------------------------------
def _answer_kinds(cfg: SynthConfig) -> list[str]:
    """Exact per-kind quotas (largest remainder), in a seeded order."""
    fr = cfg.fractions()
    raw = {k: fr[k] * cfg.n_examples for k in ANSWER_KINDS}
    counts = {k: int(v) for k, v in raw.items()}
    short = cfg.n_examples - sum(counts.values())
    for k in sorted(ANSWER_KINDS, key=lambda k: (counts[k] - raw[k], ANSWER_KINDS.index(k)))[:short]:
        counts[k] += 1
    kinds = [k for k in ANSWER_KINDS for _ in range(counts[k])]
    random.Random(f"tfqa-synth:{cfg.seed}:kinds").shuffle(kinds)
    return kinds


def _wh(question: str) -> str:
    first = question.split(" ", 1)[0]
    return first if first in _CONNECTIVES else "other"


@dataclass
class _World:
    """One page's invented entities (the first is the page's topic) and the values of their relations."""

    kind: str
    entities: list[_Entity]
    facts: dict[tuple[int, str], tuple[str, ...]]
    """(entity index, relation name) -> its values; descriptive relations have no entry."""

    @property
    def rels(self) -> tuple[_Relation, ...]:
        return _BY_KIND[self.kind]

    @property
    def topic(self) -> _Entity:
        return self.entities[0]


def _world(names: _Names, multi: bool) -> _World:
    rng = names.rng
    kind = rng.choice([k for k in _KINDS if any(r.multi for r in _BY_KIND[k])] if multi else _KINDS)
    entities = [_entity(kind, names) for _ in range(rng.randint(4, 5))]
    # Values are distinct per relation, so a NO question's value really differs from the answer.
    facts: dict[tuple[int, str], tuple[str, ...]] = {}
    for r in _BY_KIND[kind]:
        if r.descriptive:
            continue
        seen: set[str] = set()
        for ei in range(len(entities)):
            v = _value(r.value, names)
            while v in seen:
                v = _value(r.value, names)
            seen.add(v)
            facts[ei, r.name] = (v,)
    return _World(kind, entities, facts)


@dataclass(frozen=True)
class _Question:
    """What one example asks, and which entities its bait paragraphs are about."""

    text: str
    wh: str
    """The question's first word where bait connectives exist for it, else "other"."""
    rel: _Relation
    asked: int
    """Index of the asked entity; for an off-page null entity, of the on-page one it stands in for."""
    entity: _Entity
    """The entity the question names."""
    on_page: bool
    siblings: list[int]
    """The other entities' indices, shuffled."""
    bait_ids: list[int]
    in_table: bool
    """Answered by an infobox row instead of a paragraph."""
    values: tuple[str, ...]
    """The answer's values; for a yes/no question, the value it names."""


def _ask(cfg: SynthConfig, names: _Names, world: _World, answer: str, multi: bool) -> _Question:
    """Pick the asked relation and entity and word the question. A multi-span answer gets its second
    value here (in ``world.facts``): multi-valued relations sometimes have two values ("A and B")."""
    rng = names.rng
    rels, entities, facts = world.rels, world.entities, world.facts
    if answer in ("yes", "no"):
        rel = rng.choice([r for r in rels if r.yes_no])
    elif answer == "long":
        rel = rng.choice([r for r in rels if r.descriptive])
    elif answer == "short":
        rel = rng.choice([r for r in rels if r.multi] if multi else [r for r in rels if not r.descriptive])
    else:
        rel = rng.choice(rels)
    asked = 0 if rng.random() < 0.7 else rng.randrange(1, len(entities))
    e = entities[asked]
    on_page = True
    if answer == "null" and rng.random() < 0.2:
        e = _entity(world.kind, names)  # a sibling the page never mentions
        on_page = False
    siblings = [i for i in range(len(entities)) if i != asked]
    rng.shuffle(siblings)
    n_baits = rng.randint(cfg.min_distractors, cfg.max_distractors)
    bait_ids = siblings[:n_baits]
    if multi:
        facts[asked, rel.name] = (facts[asked, rel.name][0], _value(rel.value, names))
    in_table = answer == "short" and asked == 0 and rng.random() < cfg.table_answer_fraction

    # The question; a NO question names a bait sibling's value, which the page states for that sibling.
    values: tuple[str, ...] = () if rel.descriptive or answer == "null" else facts[asked, rel.name]
    q_slots = {"E": e.question_form}
    if answer in ("yes", "no"):
        v = values[0] if answer == "yes" else facts[bait_ids[0], rel.name][0]
        template = rng.choice(rel.yes_no)
        q_slots["V"] = v
        values = (v,)
    else:
        template = rng.choice(rel.questions)
    question = _SLOT.sub(lambda m: q_slots[m.group(1)].lower(), template)
    return _Question(
        text=question,
        wh=_wh(question),
        rel=rel,
        asked=asked,
        entity=e,
        on_page=on_page,
        siblings=siblings,
        bait_ids=bait_ids,
        in_table=in_table,
        values=values,
    )


def _gold_row(world: _World, q: _Question) -> list[tuple[str, Sentence]]:
    """The infobox row that answers ``q`` ("Founder | Kelmar Osk"), two values split by a <Br>."""
    cell: Sentence = []
    for j, v in enumerate(world.facts[q.asked, q.rel.name]):
        if j:
            cell.append(("<Br>", "F"))
        cell.extend(_plain(v, f"V{j}"))
    return [("Th", _plain(q.rel.header, "F")), ("Td", cell)]


def _gold_paragraph(w: _Writer, world: _World, q: _Question) -> _Block:
    """The paragraph that answers ``q``: its fact sentence, with other sentences about the same entity."""
    rng = w.rng
    rel, e = q.rel, q.entity
    own = world.facts[q.asked, rel.name] if not rel.descriptive else ()
    fact = w.statement(rel, e, own, fact=True)
    sents: list[Sentence] = [fact]
    if rel.descriptive:
        sents += [w.detail(e) for _ in range(rng.randint(2, 3))]
    else:
        # Other facts of the same entity around it; the fact stays first or second so that
        # a reader truncating long candidates still sees it.
        others = [r for r in world.rels if r is not rel and not r.descriptive]
        for k, r in enumerate(rng.sample(others, rng.randint(0, 2))):
            at = 0 if k == 0 and rng.random() < 0.4 else len(sents)
            sents.insert(at, w.statement(r, e, world.facts[q.asked, r.name]))
        if rng.random() < 0.4:
            sents.append(w.generic(e))
    if rng.random() < 0.25:
        sents.append(w.connective(e, world.entities[q.siblings[-1]], q.wh) if q.on_page else w.generic(e))
    return _p(sents)


def _bait_paragraphs(w: _Writer, world: _World, q: _Question, answer: str) -> list[_Block]:
    """One paragraph per bait entity: the asked relation stated for it, next to the asked entity."""
    rng = w.rng
    rel, facts = q.rel, world.facts
    out: list[_Block] = []
    for bi in q.bait_ids:
        s = world.entities[bi]
        stated = () if rel.descriptive else facts[bi, rel.name]
        sents = [w.statement(rel, s, stated)]
        if rel.descriptive:
            sents.append(w.detail(s))
        # An off-page null entity must stay off the page: its baits mention the on-page sibling instead.
        near = q.entity if q.on_page else world.entities[q.asked]
        sents.insert(rng.randint(0, len(sents)), w.connective(near, s, q.wh))
        if rng.random() < 0.4:
            r = rng.choice([r for r in world.rels if not r.descriptive and r is not rel])
            sents.append(w.statement(r, s, facts[bi, r.name]))
        if answer == "yes" and bi == q.bait_ids[0]:
            # A NO question's value sits in a bait; a YES question's value must sit in one too, or
            # "the paragraph holding the asked value" would give the answer away.
            sents.append(w.mention(q.entity, q.values[0]))
        out.append(_p(sents))
    return out


class _FactPool:
    """Other facts about the page's entities, still to be stated: never (asked, rel), nor rel of a bait."""

    def __init__(self, w: _Writer, world: _World, q: _Question) -> None:
        self.w = w
        self.world = world
        self.left = [
            (ei, r)
            for ei in range(len(world.entities))
            for r in world.rels
            if not (ei == q.asked and r is q.rel) and not (r is q.rel and ei in q.bait_ids)
        ]
        w.rng.shuffle(self.left)

    def paragraph(self) -> _Block | None:
        """One to three of the facts left, sometimes with filler; None once all are stated."""
        w, world, left = self.w, self.world, self.left
        if not left:
            return None
        sents = []
        for _ in range(w.rng.randint(1, 3)):
            if not left:
                break
            ei, r = left.pop()
            ent = world.entities[ei]
            sents.append(w.statement(r, ent, () if r.descriptive else world.facts[ei, r.name]))
            if r.descriptive:
                sents.append(w.detail(ent))
        if w.rng.random() < 0.5:
            sents.append(w.generic(world.topic))
        return _p(sents)


def _infobox(
    cfg: SynthConfig, rng: random.Random, world: _World, q: _Question, gold_row: list[tuple[str, Sentence]] | None, n_content: int
) -> tuple[_Block | None, int]:
    """The topic's infobox (None when the page has none) and the page's target candidate count,
    which is drawn here because the number of infobox rows depends on it."""
    rows: list[list[tuple[str, Sentence]]] = [[("Th", _plain(world.topic.title))]]
    if gold_row is not None:
        rows.append(gold_row)
    # Infobox rows of the topic: any short relation except the asked one (unless it is the gold row).
    # Never the asked relation (even when another entity is asked): a row carries no entity name, so
    # a row with the asked header must always be the answer for the task to be learnable.
    box_rels = [r for r in world.rels if not r.descriptive and r is not q.rel]
    rng.shuffle(box_rels)
    target_c = rng.randint(cfg.min_candidates, cfg.max_candidates)
    fixed_c = 1 + len(rows) + n_content + 1
    n_box = min(len(box_rels), rng.randint(1, 4), max(0, target_c - fixed_c))
    for r in box_rels[:n_box]:
        rows.append([("Th", _plain(r.header)), ("Td", _plain(" and ".join(world.facts[0, r.name])))])
    if gold_row is not None:
        # Shuffle the gold row among the others, keeping the title row first.
        row = rows.pop(1)
        rows.insert(rng.randint(1, len(rows)), row)
    has_box = len(rows) > 1 and (gold_row is not None or rng.random() < 0.85)
    return (_table(rows) if has_box else None), target_c


def _grow(
    cfg: SynthConfig,
    w: _Writer,
    names: _Names,
    world: _World,
    facts: _FactPool,
    content: list[_Block],
    infobox: _Block | None,
    target_c: int,
) -> list[_Block]:
    """Add blocks to ``content`` until the page reaches its candidate and token targets (within the
    configured bounds); returns the tail blocks (see also, references, navbox)."""
    rng = w.rng
    n_c = sum(b.n_candidates for b in content) + (infobox.n_candidates if infobox else 0)
    n_t = sum(b.n_tokens for b in content) + (infobox.n_tokens if infobox else 0) + 30
    extras: list[_Block] = []
    # Page length leans short (CPU-sized training) but spans the configured range.
    lo_t, hi_t = cfg.min_tokens, cfg.max_tokens
    target_t = int(rng.triangular(lo_t, hi_t, lo_t + 0.25 * (hi_t - lo_t)))
    while n_c < target_c or n_t < target_t:
        room_c = cfg.max_candidates - n_c
        room_t = cfg.max_tokens - n_t
        if room_c <= 0 or room_t < 40:
            if n_t < cfg.min_tokens:  # only non-candidate text can grow the page now
                extras.append(_Block("h2", _plain("Further reading"), 0, 3))
                text = [t for _ in range(4) for t in w.generic(world.topic)]
                extras.append(_Block("text", text, 0, len(text)))
                n_t += 3 + len(text)
                continue
            if n_c >= cfg.min_candidates:
                break
        want = min(room_c, max(1, target_c - n_c))
        per = (target_t - n_t) / want  # tokens left to spend per candidate still to place
        b = _filler_block(w, names, world, facts, want, per)
        if b.n_candidates > room_c:
            continue
        (extras if b.kind in ("ul", "ol", "navbox") and rng.random() < 0.4 else content).append(b)
        n_c += b.n_candidates
        n_t += b.n_tokens
    return extras


def _filler_block(w: _Writer, names: _Names, world: _World, facts: _FactPool, want: int, per: float) -> _Block:
    """One block for a page that still wants ``want`` candidates at ``per`` tokens each."""
    rng = w.rng
    roll = rng.random()
    if want >= 3 and (per < 12 or roll < 0.25):  # lists are cheap per candidate
        k = max(2, min(want - 1, rng.randint(3, 9)))
        return _list(rng.choice(("ul", "ul", "ol")), [_list_item(w, names, world.kind, per) for _ in range(k)])
    if want >= 4 and roll < 0.35:
        k = max(1, min(want - 1, rng.randint(2, 6)))
        rows = [[("Th", _plain("Year")), ("Th", _plain("Event"))]]
        for _ in range(k - 1):
            rows.append([("Td", _plain(str(rng.randint(1650, 1995)))), ("Td", w.fill(rng.choice(_GENERIC), {}))])
        return _table(rows)
    if want >= 6 and roll < 0.42:
        k = min(want - 4, rng.randint(3, 8))
        return _navbox(_plain(f"Places in {names.word()}"), [_plain(names.word()) for _ in range(k)])
    if roll < 0.5:
        pairs = [(_plain(rng.choice(_NOUNS)), w.fill(_DL_TEMPLATE, {})) for _ in range(rng.randint(1, 3))]
        return _dl(pairs)
    # A paragraph sized to the budget: facts about the page's entities, padded with filler.
    n_sent = max(1, min(9, round(rng.uniform(0.6, 1.4) * per / 13)))
    fp = facts.paragraph() if roll < 0.75 else None
    sents = list(fp.body) if fp else []
    sents += [w.generic(world.topic) for _ in range(n_sent - len(sents))]
    return _p(sents)


def _layout(
    rng: random.Random, world: _World, infobox: _Block | None, content: list[_Block], extras: list[_Block]
) -> tuple[_Page, int]:
    """Lay the page out: title, H1, infobox, intro, sections, tail. Returns the page and the number
    of its tokens that form the title."""
    rng.shuffle(content)
    topic = world.topic
    page = _Page()
    title_toks = _plain(f"{topic.title} - Wikipedia")
    page.words(title_toks)
    page.element("H1", _plain(topic.title))
    page.words(_plain("Jump to : navigation , search"))
    if infobox:
        page.block(infobox)
    n_intro = min(len(content), rng.randint(1, 2))
    for b in content[:n_intro]:
        page.block(b)
    sections = list(_SECTIONS[world.kind])
    rest = content[n_intro:]
    n_sec = min(len(sections), max(1, len(rest) // 2))
    cuts = sorted(rng.sample(range(1, len(rest)), min(n_sec - 1, max(0, len(rest) - 1)))) if rest else []
    for si, (lo, hi) in enumerate(zip([0] + cuts, cuts + [len(rest)])):
        page.element("H2", _plain(sections[si]))
        for b in rest[lo:hi]:
            page.block(b)
    for b in extras:
        page.block(b)
    return page, len(title_toks)


def _record(
    cfg: SynthConfig, rng: random.Random, page: _Page, n_title: int, answer: str, question: str, title: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The original-format example of a laid-out page, and the tokens that state its answer."""
    html, starts, ends = page.html_and_offsets(n_title)
    doc_tokens = [
        {"token": t, "start_byte": s, "end_byte": en, "html_token": h}
        for t, s, en, h in zip(page.tokens, starts, ends, page.is_html)
    ]
    cands = [
        {"start_byte": starts[s], "end_byte": ends[en - 1], "start_token": s, "end_token": en, "top_level": top}
        for s, en, top in page.candidates
    ]

    gold = _gold(page, answer)
    evidence: tuple[str, ...] = ()
    if gold is not None:
        lo, hi = gold.evidence
        evidence = tuple(page.tokens[lo:hi])
    annotations = _annotations(rng, cfg, page, gold, answer, starts, ends)
    example = {
        "example_id": rng.getrandbits(63) - (1 << 62),
        "question_text": question,
        "question_tokens": question.split(" "),
        "document_title": title,
        "document_url": "https://en.wikipedia.org//w/index.php?title="
        f"{title.replace(' ', '_')}&amp;oldid={rng.randint(700_000_000, 850_000_000)}",
        "document_html": html,
        "document_tokens": doc_tokens,
        "long_answer_candidates": cands,
        "annotations": annotations,
    }
    return example, evidence


def _make_example(cfg: SynthConfig, index: int, answer: str, pool: tuple[str, ...]) -> tuple[dict[str, Any], Fact]:
    # Every step draws from this one rng, in this order: reordering them changes every page.
    rng = random.Random(f"tfqa-synth:{cfg.seed}:{index}")
    names = _Names(rng, pool)
    w = _Writer(rng)
    # Two-span answers exist only for some relations (founders, authors): pick the page kind to fit.
    multi = answer == "short" and rng.random() < cfg.multi_span_fraction
    world = _world(names, multi)
    q = _ask(cfg, names, world, answer, multi)

    # Content. (asked, rel) is stated only in the gold; everything else is free to state.
    content: list[_Block] = []
    gold_row = None
    if q.in_table:
        gold_row = _gold_row(world, q)
    elif answer != "null":
        content.append(_gold_paragraph(w, world, q))
    content += _bait_paragraphs(w, world, q, answer)
    facts = _FactPool(w, world, q)
    infobox, target_c = _infobox(cfg, rng, world, q, gold_row, len(content))
    content.append(facts.paragraph() or _p([w.generic(world.topic)]))
    extras = _grow(cfg, w, names, world, facts, content, infobox, target_c)

    page, n_title = _layout(rng, world, infobox, content, extras)
    example, evidence = _record(cfg, rng, page, n_title, answer, q.text, world.topic.title)
    return example, Fact(answer, q.entity.question_form, q.rel.name, q.values, evidence, q.on_page)


def _list_item(w: _Writer, names: _Names, kind: str, per: float) -> Sentence:
    """A list item about as long as the page's token budget per candidate allows."""
    rng = w.rng
    if per > 40 and rng.random() < 0.7:
        return w.fill(rng.choice(_GENERIC), {})
    if per > 15 and rng.random() < 0.7:
        if rng.random() < 0.5:
            y = rng.randint(1650, 1930)
            return _plain(f"{names.person()} ( {y} – {y + rng.randint(30, 85)} )")
        return w.fill(_ITEM_TEMPLATE, {"N": _plain(names.person()), "T": _plain(names.word())})
    return _plain(rng.choice((names.person(), names.org(), names.word(), _entity(kind, names).title)))


@dataclass(frozen=True)
class _Gold:
    candidate: int
    shorts: tuple[tuple[int, int], ...]
    evidence: tuple[int, int]


def _gold(page: _Page, answer: str) -> _Gold | None:
    """Locate the marked answer: the innermost candidate around the fact tokens, and the value spans."""
    if answer == "null":
        return None
    marked = [i for i, m in enumerate(page.marks) if m]
    lo, hi = marked[0], marked[-1] + 1
    best = -1
    for ci, (s, e, _) in enumerate(page.candidates):
        if s <= lo and hi <= e and (best < 0 or e - s < page.candidates[best][1] - page.candidates[best][0]):
            best = ci
    shorts: list[tuple[int, int]] = []
    if answer == "short":
        for key in ("V0", "V1"):
            pos = [i for i in range(lo, hi) if page.marks[i] == key]
            if pos:
                shorts.append((pos[0], pos[-1] + 1))
    return _Gold(best, tuple(shorts), (lo, hi))


def _annotations(
    rng: random.Random, cfg: SynthConfig, page: _Page, gold: _Gold | None, answer: str, starts: list[int], ends: list[int]
) -> list[dict[str, Any]]:
    """One gold annotation, or several where at least two repeat the gold and the rest mostly agree."""

    def span(s: int, e: int) -> dict[str, int]:
        return {"start_byte": starts[s], "end_byte": ends[e - 1], "start_token": s, "end_token": e}

    def ann(cand: int, shorts: Sequence[tuple[int, int]] = (), yes_no: str = "NONE") -> dict[str, Any]:
        if cand < 0:
            long = {"start_byte": -1, "end_byte": -1, "start_token": -1, "end_token": -1, "candidate_index": -1}
        else:
            s, e, _ = page.candidates[cand]
            long = {**span(s, e), "candidate_index": cand}
        return {
            "annotation_id": rng.getrandbits(63),
            "long_answer": long,
            "short_answers": [span(s, e) for s, e in shorts],
            "yes_no_answer": yes_no,
        }

    yes_no = {"yes": "YES", "no": "NO"}.get(answer, "NONE")

    def gold_ann() -> dict[str, Any]:
        return ann(gold.candidate, gold.shorts, yes_no) if gold else ann(-1)

    if cfg.n_annotations == 1:
        return [gold_ann()]
    top_ps = [ci for ci, (s, _, top) in enumerate(page.candidates) if top and page.tokens[s] == "<P>"]
    out = [gold_ann(), gold_ann()]
    for _ in range(cfg.n_annotations - 2):
        if rng.random() < cfg.annotator_agreement:
            out.append(gold_ann())
            continue
        roll = rng.random()
        if gold is None:
            # Someone finds a passage that looks relevant enough.
            out.append(ann(rng.choice(top_ps)) if top_ps and roll < 0.5 else ann(-1))
        elif roll < (0.55 if answer == "long" else 0.3):
            out.append(ann(-1))
        elif answer in ("short", "yes", "no") and roll < 0.65:
            out.append(ann(gold.candidate))  # long answer only
        elif answer == "short" and roll < 0.85:
            # A wider span: the annotator takes the word before the answer too ("by Kelmar Osk").
            s, e = gold.shorts[0]
            cs = page.candidates[gold.candidate][0]
            s = s - 1 if s - 1 > cs and not page.is_html[s - 1] else s
            out.append(ann(gold.candidate, [(s, e)] + list(gold.shorts[1:]), yes_no))
        else:
            # A different candidate: the enclosing one where there is one, else another paragraph.
            gs, ge, _ = page.candidates[gold.candidate]
            outer = [ci for ci, (s, e, _) in enumerate(page.candidates) if s <= gs and ge <= e and ci != gold.candidate]
            others = [ci for ci in top_ps if ci != gold.candidate]
            choice = outer[-1] if outer else (rng.choice(others) if others else gold.candidate)
            out.append(ann(choice))
    rng.shuffle(out)
    return out


# -- public API --------------------------------------------------------------------------------------
def generate(cfg: SynthConfig) -> Iterator[tuple[dict[str, Any], Fact]]:
    """Original-format example dicts, each with the Fact its question asks about."""
    pool = _word_pool(cfg.seed)
    for i, answer in enumerate(_answer_kinds(cfg)):
        yield _make_example(cfg, i, answer, pool)


def generate_original(cfg: SynthConfig) -> Iterator[dict[str, Any]]:
    """Original NQ format example dicts (as in ``v1.0/dev/nq-dev-*.jsonl.gz``)."""
    for example, _ in generate(cfg):
        yield example


def generate_simplified(cfg: SynthConfig, with_annotations: bool = True) -> Iterator[dict[str, Any]]:
    """Kaggle's simplified format; without annotations it is the shape of Kaggle's test file."""
    for example in generate_original(cfg):
        simple = simplify_nq_example(example)
        if not with_annotations:
            del simple["annotations"]
        yield simple


def _open_text(path: Path, compress: bool | None) -> io.TextIOBase:
    if path.name.endswith(".gz") if compress is None else compress:
        # Level 9 (gzip's default) triples the write time for ~10% smaller files.
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=5)  # type: ignore[return-value]
    return open(path, "w", encoding="utf-8")


def _write(path: str | Path, rows: Iterator[dict[str, Any]], compress: bool | None) -> int:
    n = 0
    with _open_text(Path(path), compress) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def write_original(path: str | Path, cfg: SynthConfig, compress: bool | None = None) -> int:
    """Write original-format jsonl; returns the example count. ``compress`` None: gzip when the
    name ends in .gz (pass it explicitly when writing to a temporary name such as ``x.gz.part``)."""
    return _write(path, generate_original(cfg), compress)


def write_simplified(path: str | Path, cfg: SynthConfig, with_annotations: bool = True, compress: bool | None = None) -> int:
    """Write simplified-format jsonl (Kaggle test-file shape without annotations); see write_original."""
    return _write(path, generate_simplified(cfg, with_annotations), compress)
