"""A monotonic task for lesson 13: respell a string of letters by a fixed set of rules.

Target letter ``t`` always comes from a source letter at or after the one target letter ``t - 1`` came from: the
alignment never goes back, unlike the toy language's reordering. Most letters are copied; a few become two letters,
one vanishes, and one depends on the letter after it, so the target is not the source shifted by a constant::

    x -> k s      q -> k w      j -> d z      h -> (nothing)
    c -> k before a, o or u; s otherwise      every other letter -> itself

Every example carries its gold alignment (source index, target index), as the toy language's do. Lengths are chosen
per split, so a model can be trained on short strings and tested on longer ones (length generalisation).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from .toy_language import Example

__all__ = ["LETTERS", "RULES", "respell", "respelling_splits", "sample_respelling"]

LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
RULES = {"x": ("k", "s"), "q": ("k", "w"), "j": ("d", "z"), "h": ()}
_HARD_BEFORE = frozenset("aou")  # c is "k" before these, "s" otherwise


def respell(letters: Sequence[str]) -> Example:
    """The respelling of ``letters`` (single lowercase letters), with its alignment.

    Raises:
        ValueError: if an item is not one of ``LETTERS``.
    """
    bad = [x for x in letters if x not in LETTERS]
    if bad:
        raise ValueError(f"letters must be single lowercase letters a-z; got {bad[:5]}")
    target: list[str] = []
    alignment: list[tuple[int, int]] = []
    for i, letter in enumerate(letters):
        if letter == "c":
            out: tuple[str, ...] = ("k",) if i + 1 < len(letters) and letters[i + 1] in _HARD_BEFORE else ("s",)
        else:
            out = RULES.get(letter, (letter,))
        for piece in out:
            alignment.append((i, len(target)))
            target.append(piece)
    return Example(tuple(letters), tuple(target), tuple(alignment))


def sample_respelling(rng: random.Random, min_length: int, max_length: int) -> Example:
    """One example with a source of ``min_length..max_length`` letters drawn uniformly (a non-empty target)."""
    while True:
        example = respell([rng.choice(LETTERS) for _ in range(rng.randint(min_length, max_length))])
        if example.target:
            return example


def respelling_splits(seed: int = 0, *, train_lengths: tuple[int, int] = (8, 24), long_lengths: tuple[int, int] = (36,
                      48), sizes: dict[str, int] | None = None) -> dict[str, list[Example]]:
    """``train`` / ``valid`` / ``test`` with sources of ``train_lengths`` letters and ``long`` with ``long_lengths``
    (1.5-2x longer by default). No source appears in two splits. Default sizes 20 000 / 300 / 1 000 / 1 000.

    Raises:
        ValueError: if a length range is empty or starts below 1, or a size is negative.
    """
    sizes = {"train": 20_000, "valid": 300, "test": 1_000, "long": 1_000, **(sizes or {})}
    for name, (low, high) in (("train_lengths", train_lengths), ("long_lengths", long_lengths)):
        if not 1 <= low <= high:
            raise ValueError(f"{name} must be (low, high) with 1 <= low <= high; got {(low, high)}")
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"sizes must be >= 0; got {sizes}")
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    splits: dict[str, list[Example]] = {}
    for name in ("train", "valid", "test", "long"):
        low, high = long_lengths if name == "long" else train_lengths
        examples: list[Example] = []
        while len(examples) < sizes[name]:
            example = sample_respelling(rng, low, high)
            if example.source not in seen:
                seen.add(example.source)
                examples.append(example)
        splits[name] = examples
    return splits
