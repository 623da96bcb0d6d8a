"""A generated language pair with gold word alignments, for training and inspecting a small translator.

Source: English-like sentences (determiners, adjectives, nouns with plurals, verbs with tense and
agreement, prepositional phrases, two conjunctions). Target: an invented language, consistent and
learnable, that differs in the ways real language pairs do:

- word order: subject-object-verb, adjectives and demonstratives *after* the noun, postpositions;
- one word becomes two: a plural noun gets the marker ``li``, a past-tense verb the marker ``ta``;
- words that vanish: ``the`` and ``a`` have no translation; ``sees`` and ``see`` translate alike.

Every example carries its alignment, a list of ``(source index, target index)`` pairs, so the course
can measure how well cross-attention learns to align. Generation is seeded and deterministic.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# name: (singular, plural, target)
NOUNS = {
    "cat": ("cat", "cats", "miru"), "dog": ("dog", "dogs", "tavo"), "bird": ("bird", "birds", "piska"),
    "horse": ("horse", "horses", "hema"), "child": ("child", "children", "kelu"),
    "teacher": ("teacher", "teachers", "sanu"), "farmer": ("farmer", "farmers", "dorva"),
    "king": ("king", "kings", "raku"), "queen": ("queen", "queens", "rani"), "mouse": ("mouse", "mice", "tiko"),
    "fox": ("fox", "foxes", "vulo"), "wolf": ("wolf", "wolves", "garu"), "girl": ("girl", "girls", "nela"),
    "boy": ("boy", "boys", "bodo"), "doctor": ("doctor", "doctors", "meki"), "baker": ("baker", "bakers", "pano"),
    "sailor": ("sailor", "sailors", "selu"), "frog": ("frog", "frogs", "fobi"), "lion": ("lion", "lions", "lomi"),
    "rabbit": ("rabbit", "rabbits", "kuni"),
}
PLACES = {"garden": "lesa", "house": "domo", "river": "fluvi", "forest": "silva", "table": "tabu",
          "bridge": "ponti", "market": "merka", "hill": "kolu"}
ADJECTIVES = {"big": "gonda", "small": "piti", "old": "vesa", "young": "nuva", "red": "roka", "black": "nera",
              "white": "bela", "happy": "sola", "sad": "muna", "quiet": "tasi", "clever": "kiro", "brave": "fortu",
              "tired": "lasa", "hungry": "fami", "tall": "alto", "gentle": "mite"}
# base, third person singular, past, target stem
TRANSITIVE = [("see", "sees", "saw", "vek"), ("follow", "follows", "followed", "sumo"),
              ("help", "helps", "helped", "anu"), ("chase", "chases", "chased", "woko"),
              ("watch", "watches", "watched", "irma"), ("call", "calls", "called", "kalo"),
              ("find", "finds", "found", "tepa"), ("like", "likes", "liked", "lubi")]
INTRANSITIVE = [("sleep", "sleeps", "slept", "dura"), ("run", "runs", "ran", "kosa"),
                ("sing", "sings", "sang", "kanta"), ("wait", "waits", "waited", "mora"),
                ("dance", "dances", "danced", "bailo"), ("laugh", "laughs", "laughed", "riso")]
PREPOSITIONS = {"in": "ne", "on": "su", "near": "pe", "under": "dub", "behind": "pos", "with": "kun"}
# determiner -> target word (None: no translation), for singular and plural noun phrases
DETERMINERS_SINGULAR = {"the": None, "a": None, "this": "nu", "that": "ra"}
DETERMINERS_PLURAL = {"the": None, "some": "ke", "these": "nu", "those": "ra"}
CONJUNCTIONS = {"and": "e", "but": "ma"}
PLURAL_MARKER, PAST_MARKER = "li", "ta"

Token = tuple[str, object]  # (word, key): target words share the key of the source word they translate


@dataclass(frozen=True)
class Example:
    """One sentence pair. ``alignment`` holds ``(source index, target index)`` pairs."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    alignment: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        return f"{' '.join(self.source)}  ->  {' '.join(self.target)}"


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    plural: bool
    adjective: str | None
    determiner: str

    def source(self, key: object) -> list[Token]:
        words = [(self.determiner, (key, "det"))]
        if self.adjective:
            words.append((self.adjective, (key, "adj")))
        singular, plural, _ = NOUNS[self.noun] if self.noun in NOUNS else (self.noun, self.noun, None)
        return words + [(plural if self.plural else singular, (key, "noun"))]

    def target(self, key: object) -> list[Token]:
        words = [(NOUNS[self.noun][2] if self.noun in NOUNS else PLACES[self.noun], (key, "noun"))]
        if self.plural:
            words.append((PLURAL_MARKER, (key, "noun")))
        if self.adjective:
            words.append((ADJECTIVES[self.adjective], (key, "adj")))
        determiners = DETERMINERS_PLURAL if self.plural else DETERMINERS_SINGULAR
        if determiners[self.determiner] is not None:
            words.append((determiners[self.determiner], (key, "det")))
        return words


def held_out_pairs(seed: int = 0, fraction: float = 0.15) -> frozenset[tuple[str, str]]:
    """Adjective-noun pairs kept out of training, chosen so every word still appears in training."""
    rng = random.Random(seed)
    pairs = sorted((adj, noun) for adj in ADJECTIVES for noun in NOUNS)
    chosen = set(rng.sample(pairs, round(fraction * len(pairs))))
    for word_index in (0, 1):  # give back one pair for any word whose every pair was chosen
        for word in sorted({p[word_index] for p in pairs}):
            with_word = [p for p in pairs if p[word_index] == word]
            if all(p in chosen for p in with_word):
                chosen.discard(with_word[0])
    return frozenset(chosen)


class ToyLanguage:
    """Samples sentence pairs. ``rng`` is a ``random.Random``; probabilities set how rich sentences are.

    The training mix has one clause, or two joined by a conjunction (``p_conjunction``), and at most one
    prepositional phrase per clause (``p_prepositional``). ``n_clauses`` and ``n_prepositional`` fix those
    counts instead (every clause then has exactly ``n_prepositional`` phrases), which makes structures the
    training mix never has: three clauses, or two prepositional phrases in a row (``beyond_training``).
    """

    def __init__(self, p_adjective: float = 0.5, p_plural: float = 0.4, p_past: float = 0.5,
                 p_transitive: float = 0.6, p_prepositional: float = 0.35, p_conjunction: float = 0.25, *,
                 n_clauses: int | None = None, n_prepositional: int | None = None) -> None:
        if n_clauses is not None and n_clauses < 1:
            raise ValueError(f"n_clauses must be None (the training mix) or >= 1; got {n_clauses}")
        if n_prepositional is not None and not 0 <= n_prepositional <= len(PLACES):
            raise ValueError(f"n_prepositional must be None (the training mix) or 0..{len(PLACES)}; "
                             f"got {n_prepositional}")
        self.p_adjective, self.p_plural, self.p_past = p_adjective, p_plural, p_past
        self.p_transitive, self.p_prepositional, self.p_conjunction = p_transitive, p_prepositional, p_conjunction
        self.n_clauses, self.n_prepositional = n_clauses, n_prepositional

    def _noun_phrase(self, rng: random.Random, nouns: list[str]) -> NounPhrase:
        plural = rng.random() < self.p_plural and nouns is not PLACE_NAMES
        determiners = DETERMINERS_PLURAL if plural else DETERMINERS_SINGULAR
        adjective = rng.choice(ADJECTIVE_NAMES) if rng.random() < self.p_adjective else None
        return NounPhrase(rng.choice(nouns), plural, adjective, rng.choice(list(determiners)))

    def _clause(self, rng: random.Random, index: int) -> tuple[list[Token], list[Token], list[NounPhrase]]:
        subject = self._noun_phrase(rng, NOUN_NAMES)
        past = rng.random() < self.p_past
        transitive = rng.random() < self.p_transitive
        base, third, past_form, stem = rng.choice(TRANSITIVE if transitive else INTRANSITIVE)
        verb = past_form if past else (base if subject.plural else third)
        obj = self._noun_phrase(rng, NOUN_NAMES) if transitive else None
        if self.n_prepositional is None:  # the training mix: at most one place
            n_places = 1 if rng.random() < self.p_prepositional else 0
        else:
            n_places = self.n_prepositional
        places = []  # (preposition, place): in a row, each to a different place
        for _ in range(n_places):
            place = self._noun_phrase(rng, PLACE_NAMES)
            while any(place.noun == other.noun for _, other in places):
                place = self._noun_phrase(rng, PLACE_NAMES)
            places.append((rng.choice(list(PREPOSITIONS)), place))

        source = subject.source((index, "subj")) + [(verb, (index, "verb"))]
        target = subject.target((index, "subj"))
        if obj:
            source += obj.source((index, "obj"))
            target += obj.target((index, "obj"))
        for k, (preposition, place) in enumerate(places):  # each phrase becomes place + postposition, in order
            source += [(preposition, (index, "prep", k))] + place.source((index, "place", k))
            target += place.target((index, "place", k)) + [(PREPOSITIONS[preposition], (index, "prep", k))]
        target.append((stem, (index, "verb")))
        if past:
            target.append((PAST_MARKER, (index, "verb")))
        return source, target, [p for p in (subject, obj) if p]

    def sample(self, rng: random.Random) -> tuple[Example, list[NounPhrase]]:
        """One sentence pair, and its noun phrases (to test for held-out adjective-noun pairs)."""
        source, target, phrases = self._clause(rng, 0)
        if self.n_clauses is None:  # the training mix: one clause, or two
            n_clauses = 2 if rng.random() < self.p_conjunction else 1
        else:
            n_clauses = self.n_clauses
        for index in range(1, n_clauses):  # clauses joined by conjunctions, translated in order
            conjunction = rng.choice(list(CONJUNCTIONS))
            source2, target2, phrases2 = self._clause(rng, index)
            source += [(conjunction, ("conj", index))] + source2
            target += [(CONJUNCTIONS[conjunction], ("conj", index))] + target2
            phrases += phrases2
        position = {key: i for i, (_, key) in enumerate(source)}
        alignment = tuple((position[key], j) for j, (_, key) in enumerate(target))
        return Example(tuple(w for w, _ in source), tuple(w for w, _ in target), alignment), phrases


NOUN_NAMES, PLACE_NAMES, ADJECTIVE_NAMES = sorted(NOUNS), sorted(PLACES), sorted(ADJECTIVES)


def make_splits(
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    held_out_fraction: float = 0.15,
    language: ToyLanguage | None = None,
) -> dict[str, list[Example]]:
    """Disjoint splits of unique source sentences.

    ``train``, ``valid`` and ``test`` never contain a held-out adjective-noun pair;
    ``generalisation`` always contains at least one, so it measures translation of combinations
    never seen in training. Default sizes: 40 000 / 1 000 / 2 000 / 1 000.
    """
    sizes = {"train": 40_000, "valid": 1_000, "test": 2_000, "generalisation": 1_000, **(sizes or {})}
    language = language or ToyLanguage()
    held_out = held_out_pairs(seed, held_out_fraction)
    rng = random.Random(seed)
    splits: dict[str, list[Example]] = {name: [] for name in sizes}
    seen: set[tuple[str, ...]] = set()
    order = ["generalisation", "test", "valid", "train"]  # small evaluation splits first
    for name in [n for n in order if n in sizes] + [n for n in sizes if n not in order]:
        wants_held_out = name == "generalisation"
        attempts = 0
        while len(splits[name]) < sizes[name]:
            attempts += 1
            if attempts > 50 * sizes[name] + 1000:
                raise ValueError(f"could not draw {sizes[name]} unique sentences for split {name!r}")
            example, phrases = language.sample(rng)
            has_held_out = any((p.adjective, p.noun) in held_out for p in phrases)
            if has_held_out != wants_held_out or example.source in seen:
                continue
            seen.add(example.source)
            splits[name].append(example)
    return splits


# Structures the training mix (one or two clauses, at most one place per clause) never produces.
BEYOND_TRAINING = {
    "2 places in a row": {"n_clauses": 1, "n_prepositional": 2},
    "3 clauses": {"n_clauses": 3},
    "4 clauses": {"n_clauses": 4},
}


def beyond_training(seed: int = 0, size: int = 300, structures: dict[str, dict[str, int]] | None = None,
                    held_out_fraction: float = 0.15) -> dict[str, list[Example]]:
    """Sentences beyond the training distribution, ``size`` unique ones per structure.

    ``structures`` maps a name to ``ToyLanguage`` counts (default ``BEYOND_TRAINING``: two prepositional
    phrases in one clause, which keeps sentences as short as training's; three and four clauses, which
    make them longer than any training sentence). The words are the training words and no sentence
    has a held-out adjective-noun pair, so the structure is the only thing that is new. Deterministic
    for a given ``seed``, and drawn from a random stream of its own (``make_splits`` is unaffected).
    """
    structures = BEYOND_TRAINING if structures is None else structures
    held_out = held_out_pairs(seed, held_out_fraction)
    groups: dict[str, list[Example]] = {}
    for name, counts in structures.items():
        language, rng = ToyLanguage(**counts), random.Random(f"beyond-training {seed} {name}")
        examples: dict[tuple[str, ...], Example] = {}
        for _ in range(50 * size + 1000):
            if len(examples) == size:
                break
            example, phrases = language.sample(rng)
            if not any((p.adjective, p.noun) in held_out for p in phrases):
                examples.setdefault(example.source, example)
        else:
            raise ValueError(f"could not draw {size} unique sentences for structure {name!r}")
        groups[name] = list(examples.values())
    return groups


def long_sentences(seed: int = 0, size: int = 600, min_words: int = 16, *, exclude: set[tuple[str, ...]] | None = None,
                   held_out_fraction: float = 0.15) -> list[Example]:
    """``size`` unique sentences of at least ``min_words`` source words from the training mix's grammar
    (two clauses, each with at most one place phrase), with no held-out adjective-noun pair and none of
    the sources in ``exclude`` (pass the training sources). The test split has few long sentences (about 6 %
    have 16 words or more); these fill the long end of an exact-match-by-length figure. Deterministic for a
    given ``seed``, from a random stream of its own.
    """
    if size < 1 or min_words < 1:
        raise ValueError(f"need size >= 1 and min_words >= 1; got size={size}, min_words={min_words}")
    held_out, exclude = held_out_pairs(seed, held_out_fraction), exclude or set()
    language = ToyLanguage(p_adjective=0.8, p_prepositional=0.8, n_clauses=2)
    rng = random.Random(f"long sentences {seed} {min_words}")
    examples: dict[tuple[str, ...], Example] = {}
    for _ in range(200 * size + 1000):
        if len(examples) == size:
            return list(examples.values())
        example, phrases = language.sample(rng)
        if len(example.source) >= min_words and example.source not in exclude and \
                not any((p.adjective, p.noun) in held_out for p in phrases):
            examples.setdefault(example.source, example)
    raise ValueError(f"could not draw {size} unique sentences of at least {min_words} words")
