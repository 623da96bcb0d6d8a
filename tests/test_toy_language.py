"""The toy language pair: deterministic, well-formed alignments, the promised grammar, honest splits."""
from __future__ import annotations

import random

import pytest

from course_lib import toy_language as tl

SIZES = {"train": 3000, "valid": 200, "test": 300, "generalisation": 200}


@pytest.fixture(scope="module")
def splits() -> dict[str, list[tl.Example]]:
    return tl.make_splits(seed=0, sizes=SIZES)


def test_same_seed_gives_the_same_splits(splits: dict[str, list[tl.Example]]) -> None:
    assert tl.make_splits(seed=0, sizes=SIZES) == splits
    assert tl.make_splits(seed=1, sizes=SIZES)["test"] != splits["test"]


def test_splits_have_the_asked_sizes_and_share_no_source_sentence(splits: dict[str, list[tl.Example]]) -> None:
    assert {name: len(examples) for name, examples in splits.items()} == SIZES
    sources = [e.source for examples in splits.values() for e in examples]
    assert len(sources) == len(set(sources))


def test_only_the_generalisation_split_has_held_out_pairs(splits: dict[str, list[tl.Example]]) -> None:
    held_out = tl.held_out_pairs(seed=0)
    adjective_of = {v: k for k, v in tl.ADJECTIVES.items()}
    noun_of = {v[2]: k for k, v in tl.NOUNS.items()}

    def pairs(example: tl.Example) -> set[tuple[str, str]]:  # (adjective, noun) read off the target side
        t = [w for w in example.target if w != tl.PLURAL_MARKER]
        return {(adjective_of[b], noun_of[a]) for a, b in zip(t, t[1:]) if a in noun_of and b in adjective_of}

    assert all(not pairs(e) & held_out for name in ("train", "valid", "test") for e in splits[name])
    assert all(pairs(e) & held_out for e in splits["generalisation"])


def test_every_word_of_the_evaluation_splits_is_seen_in_training(splits: dict[str, list[tl.Example]]) -> None:
    train_source = {w for e in splits["train"] for w in e.source}
    train_target = {w for e in splits["train"] for w in e.target}
    for name in ("valid", "test", "generalisation"):
        assert {w for e in splits[name] for w in e.source} <= train_source
        assert {w for e in splits[name] for w in e.target} <= train_target


def test_held_out_pairs_leave_every_word_in_training() -> None:
    held_out = tl.held_out_pairs(seed=3, fraction=0.5)
    assert len(held_out) > 0.4 * len(tl.ADJECTIVES) * len(tl.NOUNS)
    for adjective in tl.ADJECTIVES:
        assert any((adjective, noun) not in held_out for noun in tl.NOUNS)
    for noun in tl.NOUNS:
        assert any((adjective, noun) not in held_out for adjective in tl.ADJECTIVES)


def test_alignment_covers_every_target_token_once(splits: dict[str, list[tl.Example]]) -> None:
    for example in splits["train"][:500]:
        assert sorted(j for _, j in example.alignment) == list(range(len(example.target)))
        assert all(0 <= i < len(example.source) for i, _ in example.alignment)
        for i, j in example.alignment:  # articles never align; markers align to their noun or verb
            assert example.source[i] not in ("the", "a")
            if example.target[j] == tl.PLURAL_MARKER:
                assert example.target[j - 1] in {v[2] for v in tl.NOUNS.values()}
                assert (i, j - 1) in example.alignment


def test_alignments_reorder_and_lengths_differ(splits: dict[str, list[tl.Example]]) -> None:
    examples = splits["train"][:1000]
    non_monotonic = [e for e in examples if sorted(e.alignment, key=lambda p: p[1]) != sorted(e.alignment)]
    assert len(non_monotonic) > 0.5 * len(examples)
    assert any(len(e.source) > len(e.target) for e in examples)
    assert any(len(e.source) < len(e.target) for e in examples)


@pytest.mark.parametrize("seed", range(20))
def test_target_follows_the_grammar(seed: int) -> None:
    """Check the rules on single clauses: verb last (then the tense marker), adjectives after nouns."""
    language = tl.ToyLanguage(p_conjunction=0.0)
    example, phrases = language.sample(random.Random(seed))
    stems = {v[3] for v in tl.TRANSITIVE + tl.INTRANSITIVE}
    target = list(example.target)
    if target[-1] == tl.PAST_MARKER:
        assert any(w in ("saw", "ran", "sang", "slept", "found") or w.endswith("ed") for w in example.source)
        target = target[:-1]
    assert target[-1] in stems
    for phrase in phrases:
        if phrase.adjective:
            noun_word = tl.NOUNS[phrase.noun][2]
            position = target.index(noun_word) + (2 if phrase.plural else 1)
            assert target[position] == tl.ADJECTIVES[phrase.adjective]


def test_target_lexicon_is_unambiguous() -> None:
    words = ([v[2] for v in tl.NOUNS.values()] + list(tl.PLACES.values()) + list(tl.ADJECTIVES.values())
             + [v[3] for v in tl.TRANSITIVE + tl.INTRANSITIVE] + list(tl.PREPOSITIONS.values())
             + list(tl.CONJUNCTIONS.values()) + ["nu", "ra", "ke", tl.PLURAL_MARKER, tl.PAST_MARKER])
    assert len(words) == len(set(words))


def test_impossible_split_sizes_are_refused() -> None:
    tiny = tl.ToyLanguage(p_adjective=0.0, p_transitive=0.0, p_prepositional=0.0, p_conjunction=0.0)
    with pytest.raises(ValueError, match="could not draw 2000 unique sentences for split 'generalisation'"):
        tl.make_splits(sizes={"generalisation": 2000}, language=tiny)


# --- beyond the training distribution (lesson 07's probe) ------------------------------------------------
@pytest.fixture(scope="module")
def beyond() -> dict[str, list[tl.Example]]:
    return tl.beyond_training(seed=0, size=150)


def _check_alignment(example: tl.Example) -> None:
    assert sorted(j for _, j in example.alignment) == list(range(len(example.target)))
    for i, j in example.alignment:
        assert 0 <= i < len(example.source) and example.source[i] not in ("the", "a")
        if example.target[j] in (tl.PLURAL_MARKER, tl.PAST_MARKER):  # a marker follows its word, same link
            assert (i, j - 1) in example.alignment


def test_the_training_mix_is_unchanged_by_the_structure_controls() -> None:
    example = tl.make_splits(seed=0, sizes={"train": 2, "valid": 0, "test": 0, "generalisation": 0})["train"][1]
    assert str(example) == "this clever wolf helps those girls  ->  garu kiro nu nela li ra anu"
    rng_a, rng_b = random.Random(5), random.Random(5)
    for _ in range(200):  # explicit training-mix arguments draw the same sentences as the defaults
        assert tl.ToyLanguage().sample(rng_a) == tl.ToyLanguage(n_clauses=None, n_prepositional=None).sample(rng_b)


def test_beyond_training_is_deterministic_and_leaves_make_splits_alone(beyond: dict[str, list[tl.Example]]) -> None:
    assert tl.beyond_training(seed=0, size=150) == beyond
    assert tl.beyond_training(seed=1, size=150)["3 clauses"] != beyond["3 clauses"]
    assert list(beyond) == list(tl.BEYOND_TRAINING)
    assert all(len(examples) == 150 and len({e.source for e in examples}) == 150 for examples in beyond.values())


def test_beyond_training_has_the_structures_it_names(beyond: dict[str, list[tl.Example]]) -> None:
    conjunctions, prepositions = set(tl.CONJUNCTIONS), set(tl.PREPOSITIONS)
    for e in beyond["2 places in a row"]:
        assert not conjunctions & set(e.source) and sum(w in prepositions for w in e.source) == 2
    for name, clauses in (("3 clauses", 3), ("4 clauses", 4)):
        assert all(sum(w in conjunctions for w in e.source) == clauses - 1 for e in beyond[name])


def test_beyond_training_sentences_are_longer_or_differently_built_than_training(
        splits: dict[str, list[tl.Example]], beyond: dict[str, list[tl.Example]]) -> None:
    longest_training = 2 * 11 + 1  # two full clauses: det adj noun verb det adj noun prep det adj place
    assert max(len(e.source) for e in splits["train"]) <= longest_training
    assert all(len(e.source) <= longest_training for e in beyond["2 places in a row"])  # only the structure is new
    assert sum(len(e.source) > longest_training for e in beyond["3 clauses"]) > 0.1 * 150
    assert sum(len(e.source) > longest_training for e in beyond["4 clauses"]) > 0.7 * 150
    training_sources = {e.source for e in splits["train"]}
    assert all(e.source not in training_sources for examples in beyond.values() for e in examples)


def test_beyond_training_alignments_are_gold_and_every_word_is_known(
        splits: dict[str, list[tl.Example]], beyond: dict[str, list[tl.Example]]) -> None:
    train_source = {w for e in splits["train"] for w in e.source}
    train_target = {w for e in splits["train"] for w in e.target}
    held_out = tl.held_out_pairs(seed=0)
    for examples in beyond.values():
        for e in examples:
            _check_alignment(e)
            assert set(e.source) <= train_source and set(e.target) <= train_target
            pairs = {(a, n) for a, n_word in zip(e.source, e.source[1:]) for n in tl.NOUNS
                     if n_word in tl.NOUNS[n][:2] and a in tl.ADJECTIVES}
            assert not pairs & held_out


def test_two_places_become_two_postpositions_in_source_order() -> None:
    example, _ = tl.ToyLanguage(n_clauses=1, n_prepositional=2).sample(random.Random(3))
    postpositions = {v: k for k, v in tl.PREPOSITIONS.items()}
    links = dict((j, i) for i, j in example.alignment)
    targets = [j for j, w in enumerate(example.target) if w in postpositions]
    sources = [i for i, w in enumerate(example.source) if w in tl.PREPOSITIONS]
    assert len(targets) == 2 and [links[j] for j in targets] == sources  # same order as in the source
    for j in targets:  # each postposition comes right after its place phrase and translates its preposition
        assert example.source[links[j]] == postpositions[example.target[j]]
    assert example.target[-1] in {v[3] for v in tl.TRANSITIVE + tl.INTRANSITIVE} | {tl.PAST_MARKER}


@pytest.mark.parametrize("kwargs", [{"n_clauses": 0}, {"n_prepositional": -1}, {"n_prepositional": 99}])
def test_impossible_structure_counts_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be None"):
        tl.ToyLanguage(**kwargs)
