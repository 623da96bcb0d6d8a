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
