"""Synthetic captioned scenes with gold boxes, for training a small image captioner and checking its grounding.

A scene is a 48x48 RGB image on a 3x3 grid of 16-pixel cells; each of its 1-3 objects (a coloured
square, ring, cross, triangle or diamond, 12 pixels across) sits alone in one cell, shifted by a few
pixels of seeded jitter. The caption is a fixed function of the scene, e.g. "a red cross left of a white
ring above a blue square", and every colour and shape word knows the pixel box of the object it names.
A captioner that cross-attends over 8x8 patches can then be asked: for each such word, does the patch it
attends to most lie inside that box? Three colour-shape pairs never appear in training; the
``generalisation`` split holds scenes that use them. Everything is numpy and seeded; drawing 20 000 images
takes about a second on one CPU core, and sampling their scenes about as long again.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

IMAGE_SIZE, GRID, CELL, OBJECT_SIZE = 48, 3, 16, 12
MAX_JITTER = CELL - OBJECT_SIZE  # an object's top-left corner sits 0..MAX_JITTER pixels into its cell
BACKGROUND, NOISE_STD = 0.1, 0.05
SHAPES = ("square", "ring", "cross", "triangle", "diamond")
COLOURS = {"red": (0.95, 0.15, 0.15), "green": (0.15, 0.85, 0.2), "blue": (0.2, 0.35, 1.0),
           "yellow": (0.95, 0.9, 0.1), "white": (0.95, 0.95, 0.95)}
RELATIONS = ("left of", "above")  # how object i stands to object i + 1 in reading order
HELD_OUT_PAIRS = frozenset({("red", "triangle"), ("blue", "ring"), ("yellow", "cross")})  # (colour, shape)
CAPTION_WORDS = tuple(sorted({"a", *COLOURS, *SHAPES, *(w for r in RELATIONS for w in r.split())}))
DEFAULT_SIZES = {"train": 20_000, "valid": 500, "test": 1_000, "generalisation": 500}
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, end exclusive; x is the column axis


def _make_stencils() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:OBJECT_SIZE, 0:OBJECT_SIZE] + 0.5  # pixel centres
    dy, dx = y - OBJECT_SIZE / 2, x - OBJECT_SIZE / 2
    radius = np.hypot(dy, dx)
    # Areas 144 / 96 / 80 / 84 / 60 pixels: even averaged over 8x8 patches no two shapes look alike.
    # The diamond is 10 pixels across; every other shape reaches the stencil's edges.
    stencils = {"square": np.ones((OBJECT_SIZE, OBJECT_SIZE), bool),
                "ring": (radius <= 6) & (radius >= 2.5),  # hollow: a filled disc would pool like a square
                "cross": (np.abs(dy) <= 2) | (np.abs(dx) <= 2),
                "triangle": np.abs(dx) <= (y + 0.5) / 2,
                "diamond": np.abs(dy) + np.abs(dx) <= 5.5}
    for stencil in stencils.values():
        stencil.setflags(write=False)
    return stencils


_STENCILS = _make_stencils()
_STENCIL_BOXES: dict[str, Box] = {  # tight box of each stencil's pixels, in stencil coordinates
    name: (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    for name, (ys, xs) in ((name, np.nonzero(stencil)) for name, stencil in _STENCILS.items())}
# What drawing an object adds to the background: (colour - background) on the stencil, 0 elsewhere. (3, 12, 12)
_STAMPS = {(colour, shape): ((np.array(rgb)[:, None, None] - BACKGROUND) * stencil).astype(np.float32)
           for colour, rgb in COLOURS.items() for shape, stencil in _STENCILS.items()}
_ALL_PAIRS = [(colour, shape) for colour in COLOURS for shape in SHAPES]
_SEEN_PAIRS = [pair for pair in _ALL_PAIRS if pair not in HELD_OUT_PAIRS]
_HELD_OUT_INDICES = np.array([_ALL_PAIRS.index(pair) for pair in sorted(HELD_OUT_PAIRS)])


def shape_stencil(name: str) -> np.ndarray:
    """The drawn pixels of shape ``name``: a bool array (12, 12), True where the object is painted."""
    if name not in _STENCILS:
        raise ValueError(f"unknown shape {name!r}: expected one of {', '.join(SHAPES)}")
    return _STENCILS[name].copy()


@dataclass(frozen=True)
class SceneObject:
    """One object: a ``shape`` in a ``colour`` in grid cell (``row``, ``col``), its stencil shifted by
    ``jitter`` = (dx, dy) pixels (each 0..4) from the cell's top-left corner. ``box`` is its gold box."""

    shape: str
    colour: str
    row: int
    col: int
    jitter: tuple[int, int] = (MAX_JITTER // 2, MAX_JITTER // 2)

    def __post_init__(self) -> None:
        if self.shape not in _STENCILS:
            raise ValueError(f"unknown shape {self.shape!r}: expected one of {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}: expected one of {', '.join(COLOURS)}")
        if not all(isinstance(i, (int, np.integer)) and 0 <= i < GRID for i in (self.row, self.col)):
            raise ValueError(f"cell (row, col) must have both in 0..{GRID - 1}; got ({self.row!r}, {self.col!r})")
        jitter = (self.jitter, self.jitter) if isinstance(self.jitter, (int, np.integer)) else tuple(self.jitter)
        if len(jitter) != 2 or not all(isinstance(j, (int, np.integer)) and 0 <= j <= MAX_JITTER for j in jitter):
            raise ValueError(f"jitter must be (dx, dy) with each in 0..{MAX_JITTER} pixels; got {self.jitter!r}")
        object.__setattr__(self, "jitter", (int(jitter[0]), int(jitter[1])))

    @property
    def origin(self) -> tuple[int, int]:
        """(x, y) of the stencil's top-left pixel in the image."""
        return self.col * CELL + self.jitter[0], self.row * CELL + self.jitter[1]

    @property
    def box(self) -> Box:
        """Tight bounding box (x0, y0, x1, y1) of the drawn pixels, end exclusive."""
        (x, y), (x0, y0, x1, y1) = self.origin, _STENCIL_BOXES[self.shape]
        return x + x0, y + y0, x + x1, y + y1


def _caption(objects: Sequence[SceneObject]) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    words: list[str] = []
    word_objects: list[int | None] = []
    for i, obj in enumerate(objects):
        if i:  # how the previous object stands to this one
            relation = ("left of" if objects[i - 1].row == obj.row else "above").split()
            words += relation
            word_objects += [None] * len(relation)
        words += ["a", obj.colour, obj.shape]
        word_objects += [None, i, i]
    return tuple(words), tuple(word_objects)


def caption_of(objects: Sequence[SceneObject]) -> tuple[str, ...]:
    """The caption of these objects: each as "a <colour> <shape>" in reading order, joined by relations."""
    return _caption(sorted(objects, key=lambda o: (o.row, o.col)))[0]


@dataclass(frozen=True)
class Scene:
    """Objects in reading order (sorted on construction), with the caption they determine.

    ``word_objects[k]`` is the index into ``objects`` of the object caption word ``k`` names (its colour
    or its shape), or None for "a" and relation words. Raises ValueError for 0 or more than 9 objects,
    or two objects in one cell.
    """

    objects: tuple[SceneObject, ...]
    caption: tuple[str, ...] = field(init=False, compare=False, repr=False)
    word_objects: tuple[int | None, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        objects = tuple(sorted(self.objects, key=lambda o: (o.row, o.col)))
        if not 1 <= len(objects) <= GRID * GRID:
            raise ValueError(f"a scene holds 1 to {GRID * GRID} objects (one per cell); got {len(objects)}")
        for a, b in zip(objects, objects[1:]):
            if (a.row, a.col) == (b.row, b.col):
                raise ValueError(f"objects would overlap: cell ({a.row}, {a.col}) is used twice")
        caption, word_objects = _caption(objects)
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "caption", caption)
        object.__setattr__(self, "word_objects", word_objects)

    @property
    def word_boxes(self) -> tuple[Box | None, ...]:
        """The gold box of each caption word's object, or None for words that name no object."""
        return tuple(None if i is None else self.objects[i].box for i in self.word_objects)

    def __str__(self) -> str:
        return " ".join(self.caption)


def scene_from_objects(specs: Sequence[SceneObject | tuple]) -> Scene:
    """A scene from ``(shape, colour, row, col[, jitter])`` specs (or SceneObjects), in any order.

    ``jitter`` is (dx, dy) or one int for both, 0..4 pixels; default 2 (centred). Raises ValueError naming
    the expected and the actual value for an unknown shape or colour, a cell or jitter out of range, two
    objects in one cell, or 0 or more than 9 objects.
    """
    objects = []
    for spec in specs:
        if not isinstance(spec, SceneObject) and not (isinstance(spec, (tuple, list)) and 4 <= len(spec) <= 5):
            raise ValueError(f"each object must be (shape, colour, row, col[, jitter]); got {spec!r}")
        objects.append(spec if isinstance(spec, SceneObject) else SceneObject(*spec))
    return Scene(tuple(objects))


def parse_caption(words: Sequence[str] | str) -> tuple[list[tuple[str, str]], list[str]]:
    """Read a caption back: its objects as (colour, shape) in order, and the relations between neighbours
    (one fewer, each "left of" or "above"). Raises ValueError saying where an ungrammatical caption breaks."""
    words = words.split() if isinstance(words, str) else list(words)
    position = 0

    def take(allowed: Sequence[str], what: str) -> str:
        nonlocal position
        got = repr(words[position]) if position < len(words) else "the end of the caption"
        if position >= len(words) or words[position] not in allowed:
            raise ValueError(f"ungrammatical caption {' '.join(words)!r}: expected {what} ({', '.join(allowed)}) "
                             f"at word {position}; got {got}")
        position += 1
        return words[position - 1]

    objects, relations = [], []
    while True:
        take(["a"], "an article")
        colour = take(list(COLOURS), "a colour")
        objects.append((colour, take(SHAPES, "a shape")))
        if position == len(words):
            return objects, relations
        relation = take(["left", "above"], "a relation")
        if relation == "left":
            relation += " " + take(["of"], "'of' after 'left'")
        relations.append(relation)


HeldOut = Literal["forbid", "allow", "require"]


def random_scenes(rng: np.random.Generator, n: int, *, n_objects: int | None = None,
                  held_out: HeldOut = "forbid") -> list[Scene]:
    """``n`` random scenes, each with ``n_objects`` objects (default: 1 to 3, uniformly) in distinct cells.

    ``held_out``: "forbid" (no pair in HELD_OUT_PAIRS), "allow" (any pair) or "require" (at least one
    object has a held-out pair; the others may be anything). Colour-shape pairs, cells and jitters are uniform.
    """
    if n_objects is not None and not 1 <= n_objects <= GRID * GRID:
        raise ValueError(f"n_objects must be None (1 to 3) or 1..{GRID * GRID}; got {n_objects}")
    if held_out not in ("forbid", "allow", "require"):
        raise ValueError(f"held_out must be 'forbid', 'allow' or 'require'; got {held_out!r}")
    most = 3 if n_objects is None else n_objects
    counts = rng.integers(1, 4, size=n) if n_objects is None else np.full(n, n_objects)
    cells = np.argsort(rng.random((n, GRID * GRID)), axis=1)[:, :most]  # distinct cells per scene
    pairs = _SEEN_PAIRS if held_out == "forbid" else _ALL_PAIRS
    pair_ids = rng.integers(0, len(pairs), size=(n, most))
    jitters = rng.integers(0, MAX_JITTER + 1, size=(n, most, 2))
    if held_out == "require":  # one object, chosen at random, gets a held-out pair
        which = (rng.random(n) * counts).astype(int)
        pair_ids[np.arange(n), which] = _HELD_OUT_INDICES[rng.integers(0, len(_HELD_OUT_INDICES), size=n)]
    scenes = []
    for count, scene_cells, scene_pairs, scene_jitters in zip(counts.tolist(), cells.tolist(), pair_ids.tolist(),
                                                              jitters.tolist()):
        scenes.append(Scene(tuple(SceneObject(pairs[p][1], pairs[p][0], cell // GRID, cell % GRID, (jx, jy))
                                  for cell, p, (jx, jy) in zip(scene_cells[:count], scene_pairs, scene_jitters))))
    return scenes


def random_scene(rng: np.random.Generator, *, n_objects: int | None = None, held_out: HeldOut = "forbid") -> Scene:
    """One random scene; see ``random_scenes`` for the arguments."""
    return random_scenes(rng, 1, n_objects=n_objects, held_out=held_out)[0]


def _render(scenes: Sequence[Scene], rng: np.random.Generator, chunk: int = 512) -> np.ndarray:
    images = np.empty((len(scenes), 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)  # (N, 3, H, W)
    noise = np.empty((min(chunk, len(scenes)), 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)  # (chunk, 1, H, W)
    for start in range(0, len(scenes), chunk):  # noise in chunks, so no second array as big as the images
        part = images[start:start + chunk]
        grey = rng.standard_normal(dtype=np.float32, out=noise[:len(part)])  # the same in all three channels
        part[:] = grey * NOISE_STD + BACKGROUND  # (n, 1, H, W) broadcast to (n, 3, H, W)
    for image, scene in zip(images, scenes):
        for obj in scene.objects:
            x, y = obj.origin
            image[:, y:y + OBJECT_SIZE, x:x + OBJECT_SIZE] += _STAMPS[obj.colour, obj.shape]  # (3, 12, 12)
    return np.clip(images, 0.0, 1.0, out=images)


def render(scenes: Sequence[Scene] | Scene, seed: int) -> np.ndarray:
    """Draw scenes as float32 images [N, 3, 48, 48] in 0..1 (channels first), with noise from ``seed``.

    Image i depends only on scene i, i and the seed: ``render([s], seed)`` is the first image of any batch
    that starts with ``s``. The noise is grey (one field shared by R, G and B), a third of the random draws.
    """
    scenes = [scenes] if isinstance(scenes, Scene) else list(scenes)
    for scene in scenes:
        if not isinstance(scene, Scene):
            raise ValueError(f"render needs Scene objects (or one Scene); got a {type(scene).__name__}")
    return _render(scenes, np.random.default_rng(seed))


@dataclass(eq=False)
class SceneSet:
    """One split: ``scenes`` (N Scenes) and their ``images``, float32 [N, 3, 48, 48]."""

    scenes: list[Scene]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.scenes)


def make_splits(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, SceneSet]:
    """Rendered splits; ``sizes`` overrides DEFAULT_SIZES per name (20 000 / 500 / 1 000 / 500).

    "generalisation" scenes each hold at least one HELD_OUT_PAIRS pair; every other split holds none.
    Scenes in every split but "train" are unique and shared with no other split; "train" (which may repeat
    itself) holds none of them. Deterministic for a given ``seed``; evaluation splits do not change with the
    size of "train". The default training images take 550 MB.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    for name, size in sizes.items():
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"split sizes must be ints >= 0; got {name!r}: {size!r}")
    order = sorted(sizes, key=lambda name: (name == "train", name != "generalisation"))  # train last
    rng, seen, splits = np.random.default_rng(seed), set(), {}
    for name in order:
        chosen: list[Scene] = []
        for _ in range(100):
            missing = sizes[name] - len(chosen)
            if missing == 0:
                break
            batch = random_scenes(rng, missing + missing // 4 + 8,
                                  held_out="require" if name == "generalisation" else "forbid")
            for scene in batch:
                if len(chosen) < sizes[name] and scene not in seen:
                    chosen.append(scene)
                    if name != "train":
                        seen.add(scene)
        if len(chosen) < sizes[name]:
            raise ValueError(f"could not draw {sizes[name]} unique scenes for split {name!r}; got {len(chosen)}")
        noise = np.random.default_rng([seed, zlib.crc32(name.encode())])  # a stream per split
        splits[name] = SceneSet(chosen, _render(chosen, noise))
    return {name: splits[name] for name in sizes}
