"""Checkers for the exercises of lesson 11 (fusing sources: a decoder that reads an image and a question).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``course_lib.fusion`` (``FusionQA.encode`` with ``fusion="concatenation"``
for exercises 1 and 2, the attention half of ``GatedCrossAttention`` for exercise 3, ``LatentResampler`` without
its norms and feed-forward for exercise 4).

Conventions the hints rely on: the concatenated memory is ``[image patches | question words]``, image first; a
mask is bool, True = may attend (a real token), shaped ``[B, 1, 1, S]`` to broadcast over heads and queries; row
``IMAGE_TYPE = 0`` of the source-type embedding tags image tokens, row ``QUESTION_TYPE = 1`` question words.

Exercise 3 checks a class, not a function: the checker builds ``GatedBlock(cross)`` with a seeded
``SourceAttention`` and drives it (``_drive``): the output at initialisation (it must be ``x`` exactly), then the
outputs with the gate set to each of ``GATES`` (``block.alpha.fill_(v)``), and whether ``alpha`` is a trained
parameter. Its mistakes are wrong classes driven the same way (the class itself: ``mistake.wrong.args[0]``).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..attention import MultiHeadAttention
from ..fusion import IMAGE_TYPE, QUESTION_TYPE, Memory, SourceAttention
from ._cases import Case, Mistake
from ._harness import run_cases
from ._results import Hint, NotDone, checker, type_name

_TRUE_MEANS = "True must mean 'may attend' (a real token)"


def _seeded(build: Callable[[], nn.Module], seed: int, dtype: torch.dtype) -> nn.Module:
    """A module built from its own seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        module = build()
    return module.to(dtype).eval()


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- Exercise 1 · two_source_mask(question_ids, n_patches, pad_id) -------------------------------------------------

def two_source_mask_reference(question_ids: Tensor, n_patches: int, pad_id: int = 0) -> Tensor:
    """bool ``[B, 1, 1, N + Q]``, True = may attend: every patch, then the question's real words (the mask
    ``FusionQA.encode`` builds for one memory, image first)."""
    image_real = torch.ones(question_ids.shape[0], n_patches, dtype=torch.bool, device=question_ids.device)
    return torch.cat([image_real, question_ids != pad_id], dim=1)[:, None, None, :]


_QUESTIONS = [  # name, question ids (rows), n_patches, pad_id (None: the default, 0)
    ("B=3, 4 patches, questions of 6 words, padded at the end", [[5, 6, 7, 8, 9, 10], [5, 6, 7, 0, 0, 0],
                                                                 [11, 12, 13, 14, 0, 0]], 4, None),
    ("batch of 1, 9 patches, a question with no padding", [[4, 7, 5, 9, 6]], 9, None),
    ("B=2, 3 patches, a question that is mostly padding", [[8, 0, 0, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11]], 3,
     None),
    ("B=2, 4 patches, questions padded on the left (as lesson 11's prefix model pads them)",
     [[0, 0, 5, 6, 7], [0, 8, 9, 10, 11]], 4, None),
    ("B=2, 6 patches, pad_id=3 (here 0 is a word)", [[0, 5, 7, 3, 3], [9, 0, 1, 6, 8]], 6, 3),
]


def _mask_case(name: str, rows: list[list[int]], n: int, pad_id: int | None) -> Case:
    ids = torch.tensor(rows, dtype=torch.long)  # [B, Q]
    args = (ids, n) if pad_id is None else (ids, n, pad_id)
    q = ids.shape[1]
    return Case(name, args, batch=len(rows), info={"N": n, "Q": q, "NQ": n + q, "pad_id": pad_id or 0})


MASK_CASES = [_mask_case(*row) for row in _QUESTIONS]


def _parts(image: Callable[[Tensor, int], Tensor], question: Callable[[Tensor, int], Tensor], *,
           question_first: bool = False, dims: bool = True) -> Callable[..., Tensor]:
    """A mask joined from an image part ``[B, N]`` and a question part ``[B, Q]``, one of them made wrong."""
    def wrong(ids: Tensor, n: int, pad_id: int = 0) -> Tensor:
        parts = [image(ids, n), question(ids, pad_id)]
        joined = torch.cat(parts[::-1] if question_first else parts, dim=1)  # [B, N + Q]
        return joined[:, None, None, :] if dims else joined
    return wrong


def _all_patches(ids: Tensor, n: int) -> Tensor:
    return torch.ones(ids.shape[0], n, dtype=torch.bool)


def _real_words(ids: Tensor, pad_id: int) -> Tensor:
    return ids != pad_id


def _first_words(ids: Tensor, pad_id: int) -> Tensor:
    """The first ``length`` positions, length = the number of real words: right only for padding at the end."""
    lengths = (ids != pad_id).sum(dim=1, keepdim=True)  # [B, 1]
    return torch.arange(ids.shape[1])[None, :] < lengths


def _has_padding(case: Case) -> bool:
    """Whether a question of the case holds padding (without any, an additive mask is all zeros: a bare 0)."""
    ids, pad_id = case.args[0], case.args[2] if len(case.args) > 2 else 0
    return bool((ids == pad_id).any())


def _additive(ids: Tensor, n: int, pad_id: int = 0) -> Tensor:
    mask = two_source_mask_reference(ids, n, pad_id)
    return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))


_JOIN = "torch.cat([torch.ones(B, n_patches, dtype=torch.bool), question_ids != pad_id], dim=1)"
MASK_MISTAKES = [
    Mistake("inverted", f"your mask marks the padding as True: {_TRUE_MEANS}, so every patch and every real "
            "question word is True and only the question's padding is False (question_ids != pad_id, not ==)",
            lambda ids, n, pad_id=0: ~two_source_mask_reference(ids, n, pad_id)),
    Mistake("question_padding_true", "the question part of your mask is True at the padding: "
            f"{_TRUE_MEANS}, question_ids != pad_id (the patches part is right)",
            _parts(_all_patches, lambda ids, pad_id: ids == pad_id)),
    Mistake("question_first", "your mask puts the question first; the memory is [image patches | question words], "
            f"image first, and its mask must follow the same order: {_JOIN}",
            _parts(_all_patches, _real_words, question_first=True)),
    Mistake("image_left_out", "your mask covers the question only ([B, 1, 1, Q] with Q = {Q}): the memory holds "
            "the N = {N} image patches first, so the mask has N + Q = {NQ} columns: put n_patches True values "
            f"before the question's: {_JOIN}",
            lambda ids, n, pad_id=0: (ids != pad_id)[:, None, None, :], match="shape"),
    Mistake("image_masked_out", "your mask hides every image patch (False): an image has no padding, so every "
            "patch may be attended: the first n_patches columns are all True (True = may attend)",
            _parts(lambda ids, n: torch.zeros(ids.shape[0], n, dtype=torch.bool), _real_words)),
    Mistake("no_broadcast_dims", "your mask is [B, N + Q]: add the two broadcast axes, [B, 1, 1, N + Q] "
            "([:, None, None, :]), so that it applies to every head and every query",
            _parts(_all_patches, _real_words, dims=False), match="shape"),
    Mistake("numeric_mask", "your mask holds numbers (1 and 0) instead of bools: the course's masks are bool, "
            "True = may attend (no .float(), .long() or .int(): compare with != and join with torch.cat)",
            lambda ids, n, pad_id=0: two_source_mask_reference(ids, n, pad_id).float()),
    Mistake("additive_mask", "that is an additive mask (0 where allowed, -inf where hidden); the course's masks "
            f"are bool, True = may attend, and attention turns them into -inf itself: {_JOIN}", _additive,
            applies_when=_has_padding),
    Mistake("pad_id_ignored", "your mask treats id 0 as padding in a case where pad_id = {pad_id} (and 0 is a "
            "word): use the pad_id argument, question_ids != pad_id",
            lambda ids, n, pad_id=0: two_source_mask_reference(ids, n, 0)),
    Mistake("assumes_padding_at_the_end", "your mask counts the real words and marks the first ones, which is "
            "right only when the padding comes last; here the questions are padded on the left. Mark each real "
            "word where it is: question_ids != pad_id", _parts(_all_patches, _first_words)),
]


@checker("Exercise 1 · two_source_mask(question_ids, n_patches, pad_id)")
def check_two_source_mask(two_source_mask_fn: Callable[..., Tensor]) -> str:
    """``two_source_mask(question_ids [B, Q], n_patches, pad_id=0) -> bool [B, 1, 1, N + Q]``: True for every
    patch, then for the question's real words."""
    return run_cases(two_source_mask_fn, reference=two_source_mask_reference, cases=MASK_CASES,
                     mistakes=MASK_MISTAKES, what="two_source_mask(question_ids, n_patches, pad_id)",
                     error_tips=[("Tensors must have same number of dimensions", "join the two [B, N] and [B, Q] "
                                  "masks first, torch.cat(..., dim=1), then add the broadcast axes")],
                     passed="every patch, then the question's real words, True = may attend, [B, 1, 1, N + Q] "
                            f"({len(MASK_CASES)} cases: no padding, mostly padding, padding on the left, "
                            "pad_id != 0)")


# --- Exercise 2 · concatenated_memory(image_states, question_states, source_type) -----------------------------------

def concatenated_memory_reference(image_states: Tensor, question_states: Tensor, source_type: nn.Embedding) -> Tensor:
    """``[B, N + Q, d]``: the image tokens plus row ``IMAGE_TYPE`` of the source-type embedding, then the question
    tokens plus row ``QUESTION_TYPE`` (``FusionQA.encode``, ``fusion="concatenation"``)."""
    types = source_type.weight  # [2, d]
    return torch.cat([image_states + types[IMAGE_TYPE], question_states + types[QUESTION_TYPE]], dim=1)


_MEMORIES = [  # name, B, N, Q, d, seed, dtype: N != Q everywhere, so the token axis and the feature axis differ
    ("B=2, N=6 patches, Q=4 words, d=8", 2, 6, 4, 8, 1120, torch.float32),
    ("batch of 1, N=4 patches, Q=7 words, d=16", 1, 4, 7, 16, 1121, torch.float32),
    ("float64, B=3, N=5 patches, Q=3 words, d=8", 3, 5, 3, 8, 1122, torch.float64),
    ("one patch, B=2, N=1, Q=5 words, d=4", 2, 1, 5, 4, 1123, torch.float32),
]


def _memory_case(name: str, b: int, n: int, q: int, d: int, seed: int, dtype: torch.dtype) -> Case:
    source_type = nn.Embedding.from_pretrained(_randn(2, d, seed=seed + 50, dtype=dtype), freeze=False)  # no RNG
    return Case(name, (_randn(b, n, d, seed=seed, dtype=dtype), _randn(b, q, d, seed=seed + 100, dtype=dtype),
                       source_type), info={"N": n, "Q": q, "d": d})


MEMORY_CASES = [_memory_case(*row) for row in _MEMORIES]


def _typed(image_row: int | None, question_row: int | None, *, dim: int = 1,
           question_first: bool = False) -> Callable[[Tensor, Tensor, nn.Embedding], Tensor]:
    """The memory with the given rows of the type table added (None: none) and joined along ``dim``."""
    def wrong(image: Tensor, question: Tensor, source_type: nn.Embedding) -> Tensor:
        types = source_type.weight
        parts = [image if image_row is None else image + types[image_row],
                 question if question_row is None else question + types[question_row]]
        return torch.cat(parts[::-1] if question_first else parts, dim=dim)
    return wrong


_ROWS = ("image tokens + source_type.weight[0] (IMAGE_TYPE), question tokens + source_type.weight[1] "
         "(QUESTION_TYPE)")
MEMORY_MISTAKES = [
    Mistake("no_type_embedding", "you concatenated the states without the source-type embedding: add one row of "
            f"the table to every token of each source before joining them: {_ROWS}. Without it, attention cannot "
            "tell an image token from a question word (they share one memory)", _typed(None, None)),
    Mistake("types_swapped", f"your type rows are swapped: {_ROWS}", _typed(QUESTION_TYPE, IMAGE_TYPE)),
    Mistake("image_type_for_both", "both sources got row 0: the question tokens need their own row, "
            f"source_type.weight[1], or the two sources look alike to attention: {_ROWS}",
            _typed(IMAGE_TYPE, IMAGE_TYPE)),
    Mistake("question_type_for_both", "both sources got row 1: the image tokens need their own row, "
            f"source_type.weight[0], or the two sources look alike to attention: {_ROWS}",
            _typed(QUESTION_TYPE, QUESTION_TYPE)),
    Mistake("feature_axis", "you concatenated along the feature axis (dim=-1): the sources are joined as a longer "
            "sequence, [B, N, d] and [B, Q, d] -> [B, N + Q, d] = [B, {N} + {Q}, {d}]: torch.cat([...], dim=1) "
            "(along dim=-1 the two must have as many tokens, and here N = {N}, Q = {Q})",
            _typed(IMAGE_TYPE, QUESTION_TYPE, dim=-1)),
    Mistake("question_first", "your memory puts the question first; the course's memory is [image patches | "
            "question words], image first (the mask of exercise 1 follows that order): torch.cat([image tokens, "
            "question tokens], dim=1)", _typed(IMAGE_TYPE, QUESTION_TYPE, question_first=True)),
]


@checker("Exercise 2 · concatenated_memory(image_states, question_states, source_type)")
def check_concatenated_memory(concatenated_memory_fn: Callable[[Tensor, Tensor, nn.Embedding], Tensor]) -> str:
    """``concatenated_memory(image_states [B, N, d], question_states [B, Q, d], source_type) -> [B, N + Q, d]``:
    each source plus its row of the source-type embedding, joined along the token axis, image first."""
    torch.set_grad_enabled(False)  # restored by @checker
    return run_cases(concatenated_memory_fn, reference=concatenated_memory_reference, cases=MEMORY_CASES,
                     mistakes=MEMORY_MISTAKES, what="concatenated_memory(image_states, question_states, source_type)",
                     error_tips=[("Sizes of tensors must match except in dimension 2", "join the sources along "
                                  "the token axis: torch.cat([...], dim=1)"),
                                 ("must match the size of tensor b (2)", "source_type.weight is the whole table "
                                  "[2, d]: add one row to each source, source_type.weight[0] to the image tokens "
                                  "and source_type.weight[1] to the question's")],
                     passed="image tokens + type 0, then question tokens + type 1, joined along the tokens "
                            f"([B, N + Q, d]; {len(MEMORY_CASES)} cases with N != Q, float64 included)")


# --- Exercise 3 · GatedBlock(cross): x + tanh(alpha) * cross(x, image)[0] -----------------------------------------

GATES = (0.7, -1.3)  # the values the checker gives alpha after checking the block at initialisation
_GATE_OUTPUTS = (f"the output with the gate opened (block.alpha.fill_(v), v = {GATES[0]} then {GATES[1]})",
                 "whether alpha is a trained parameter (an nn.Parameter of the block that requires grad)",
                 "whether the block returns x exactly at initialisation")


class GatedBlockReference(nn.Module):
    """The attention half of Flamingo's ``GatedCrossAttention`` (``course_lib.fusion``): ``x + tanh(alpha) *
    cross(x, image)[0]``, with ``alpha`` a parameter that starts at 0 (the block starts as the identity)."""

    def __init__(self, cross: SourceAttention) -> None:
        super().__init__()
        self.cross = cross
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, image: Memory) -> Tensor:
        return x + torch.tanh(self.alpha) * self.cross(x, image)[0]


def _drive(block_class: Any, cross: SourceAttention, x: Tensor, states: Tensor, mask: Tensor | None,
           gates: tuple[float, ...]) -> tuple[Any, bool, bool]:
    """Build ``block_class(cross)`` and use it as the checker does: one call at initialisation, then one per gate
    value set with ``block.alpha.fill_(v)``. Returns (the outputs with the gate opened stacked ``[G, B, L, d]``, or
    the first one that is not a tensor of the first one's shape; whether alpha is a trained parameter; whether the
    output at initialisation is ``x`` exactly). ``x`` itself goes to every call, so a change in place shows."""
    image = Memory(states, mask)
    block = block_class(cross)
    if not isinstance(block, nn.Module):
        raise TypeError(f"GatedBlock(cross) built a {type_name(block)}, not an nn.Module: write class "
                        "GatedBlock(nn.Module) and pass the class itself")
    before = x.clone()
    start = block(x, image)
    identity = False  # dtype aside, like the harness's comparisons (it reports a wrong dtype itself)
    if isinstance(start, Tensor) and start.shape == before.shape and start.is_floating_point():
        identity = bool(torch.equal(start, before.to(start.dtype)))
    alpha = getattr(block, "alpha", None)
    if alpha is None:
        raise AttributeError("your block has no gate block.alpha: create it in __init__, self.alpha = "
                             "nn.Parameter(torch.zeros(1)) (the checker opens the gate with block.alpha.fill_(v))")
    if not isinstance(alpha, Tensor):
        raise TypeError(f"block.alpha is a {type_name(alpha)}: make it a tensor parameter, self.alpha = "
                        "nn.Parameter(torch.zeros(1))")
    trained = bool(alpha.requires_grad) and any(p is alpha for p in block.parameters())
    opened = []
    for gate in gates:
        with torch.no_grad():
            alpha.fill_(gate)
        opened.append(block(x, image))
    first = opened[0]
    odd = next((o for o in opened if not isinstance(o, Tensor) or o.shape != first.shape or o.dtype != first.dtype),
               None)
    return (torch.stack(opened) if odd is None else odd), trained, identity


def _driven(block_class: Any) -> Callable[..., tuple[Any, bool, bool]]:
    """``block_class`` as the checker runs it (the class itself: ``.args[0]``)."""
    return functools.partial(_drive, block_class)


def gated_block_reference(cross: SourceAttention, x: Tensor, states: Tensor, mask: Tensor | None,
                          gates: tuple[float, ...]) -> tuple[Any, bool, bool]:
    """``GatedBlockReference`` driven like the learner's class (``_drive``)."""
    return _drive(GatedBlockReference, cross, x, states, mask, gates)


_BLOCKS = [  # name, B, L (text tokens), N (patches), hidden patches per image (None: mask None), seed, dtype
    ("B=2, 3 tokens, 5 patches, the mask hides some patches", 2, 3, 5, [2, 0], 1130, torch.float32),
    ("batch of 1, 4 tokens, 6 patches, image.mask is None", 1, 4, 6, None, 1131, torch.float32),
    ("float64, B=3, 2 tokens, 4 patches, the mask hides some patches", 3, 2, 4, [1, 3, 0], 1132, torch.float64),
    ("B=4, 1 token, 3 patches, image.mask is None", 4, 1, 3, None, 1133, torch.float32),
]
_D_MODEL, _D_IMAGE, _HEADS = 16, 12, 4


def _block_case(name: str, b: int, length: int, n: int, hidden: list[int] | None, seed: int,
                dtype: torch.dtype) -> Case:
    cross = _seeded(lambda: SourceAttention(_D_MODEL, _D_IMAGE, _HEADS), seed, dtype)
    mask = None
    if hidden is not None:  # the last `hidden[b]` patches of image b are hidden: bool [B, 1, 1, N]
        mask = (torch.arange(n)[None, :] < torch.tensor([n - h for h in hidden])[:, None])[:, None, None, :]
    x = _randn(b, length, _D_MODEL, seed=seed, dtype=dtype)
    states = _randn(b, n, _D_IMAGE, seed=seed + 100, dtype=dtype)
    return Case(name, (cross, x, states, mask, GATES), batch=b, square=False, atol=1e-6, rtol=1e-5)


BLOCK_CASES = [_block_case(*row) for row in _BLOCKS]


def _block(update: Callable[[Any, Tensor, Memory], Any], *, alpha: Callable[[], Any] = lambda: nn.Parameter(
        torch.zeros(1)), name: str = "alpha") -> type[nn.Module]:
    """A learner's GatedBlock with one thing wrong: ``update(block, x, image)`` is its forward; ``alpha()`` makes
    its gate, stored as ``name``."""
    class GatedBlock(nn.Module):
        def __init__(self, cross: SourceAttention) -> None:
            super().__init__()
            self.cross = cross
            setattr(self, name, alpha())

        def forward(self, x: Tensor, image: Memory) -> Any:
            return update(self, x, image)

    return GatedBlock


def _attended(block: Any, x: Tensor, image: Memory) -> Tensor:
    return block.cross(x, image)[0]


def _gated(block: Any, x: Tensor, image: Memory) -> Tensor:
    return x + torch.tanh(block.alpha) * _attended(block, x, image)


_FORMULA = "return x + torch.tanh(self.alpha) * self.cross(x, image)[0]"
BLOCK_MISTAKES = [
    Mistake("gate_open_at_start", "at initialisation your block changes x: its gate must start closed, "
            "tanh(alpha) = 0 exactly (self.alpha = nn.Parameter(torch.zeros(1))), so that the block starts as the "
            "identity and the frozen language model is unchanged until training opens the gate (your outputs "
            "are right once alpha is set)", _driven(_block(_gated, alpha=lambda: nn.Parameter(torch.ones(1))))),
    Mistake("gate_outside_residual", "your gate multiplies the whole sum, tanh(alpha) * (x + update), so a closed "
            "gate returns zeros and wipes out x: gate the update only and add it to x, x + tanh(alpha) * update. "
            f"{_FORMULA}",
            _driven(_block(lambda blk, x, image: torch.tanh(blk.alpha) * (x + _attended(blk, x, image))))),
    Mistake("no_tanh", "your gate is alpha itself; the course gates with tanh(alpha), which keeps the gate "
            f"between -1 and 1 however far training pushes alpha: {_FORMULA}",
            _driven(_block(lambda blk, x, image: x + blk.alpha * _attended(blk, x, image)))),
    Mistake("sigmoid_gate", "your gate is sigmoid(alpha), which is 0.5 at alpha = 0: the block would not start as "
            f"the identity. Flamingo gates with tanh(alpha), exactly 0 at alpha = 0: {_FORMULA}",
            _driven(_block(lambda blk, x, image: x + torch.sigmoid(blk.alpha) * _attended(blk, x, image)))),
    Mistake("gate_on_x", "your gate multiplies x instead of the update (tanh(alpha) * x + update): the residual "
            "x passes unchanged and the gate scales what cross-attention adds: x + tanh(alpha) * update",
            _driven(_block(lambda blk, x, image: torch.tanh(blk.alpha) * x + _attended(blk, x, image)))),
    Mistake("no_residual", "your block returns the gated update alone; it is a residual block: add the gated "
            f"update to x. {_FORMULA}",
            _driven(_block(lambda blk, x, image: torch.tanh(blk.alpha) * _attended(blk, x, image)))),
    Mistake("alpha_not_parameter", "self.alpha is a plain tensor, not a parameter of the block: the optimiser "
            "never sees it and the gate stays closed for ever. Create it as self.alpha = "
            "nn.Parameter(torch.zeros(1))", _driven(_block(_gated, alpha=lambda: torch.zeros(1)))),
    Mistake("gate_not_named_alpha", "your block has no attribute alpha: store the gate as self.alpha = "
            "nn.Parameter(torch.zeros(1)) (the checker, like the lesson's code, opens it with block.alpha)",
            _driven(_block(lambda blk, x, image: x + torch.tanh(blk.gate) * _attended(blk, x, image),
                           name="gate"))),
    Mistake("cross_output_not_indexed", "self.cross(x, image) returns a pair (update, attention weights): gate its "
            f"first item, self.cross(x, image)[0]. {_FORMULA}",
            _driven(_block(lambda blk, x, image: x + torch.tanh(blk.alpha) * blk.cross(x, image)))),
    Mistake("returns_pair", "your forward returns a pair; GatedBlock returns one tensor, x + tanh(alpha) * "
            "update, [B, L, d_model] (the attention weights stay inside)",
            _driven(_block(lambda blk, x, image: (_gated(blk, x, image), None)))),
    Mistake("image_mask_dropped", "your block ignores the image's mask (image.mask hides some patches): pass the "
            "whole Memory to the sublayer, self.cross(x, image)[0], and it applies the mask",
            _driven(_block(lambda blk, x, image: x + torch.tanh(blk.alpha) * _attended(
                blk, x, Memory(image.states, None))))),
]


@checker("Exercise 3 · class GatedBlock(cross), forward(x, image)")
def check_gated_block(block_class: Any) -> str:
    """``GatedBlock(cross)`` (the class): stores ``cross`` and a gate ``self.alpha`` (an ``nn.Parameter`` that
    starts at 0); ``forward(x [B, L, d_model], image: Memory) -> x + tanh(alpha) * cross(x, image)[0]``."""
    what = "GatedBlock"
    if isinstance(block_class, nn.Module):
        raise Hint("pass the class itself, not a block built from it: check_gated_block(GatedBlock)",
                   mistake="wrong_type")
    if block_class is None:
        raise NotDone(f"not done yet: {what} is still None")
    if not callable(block_class):
        raise Hint(f"{what} should be a function or a class: pass the class itself, check_gated_block(GatedBlock); "
                   f"got a {type_name(block_class)}", mistake="not_a_function")
    torch.set_grad_enabled(False)  # restored by @checker
    try:  # first, does the class build a module at all?
        block = block_class(copy.deepcopy(BLOCK_CASES[0].args[0]))
        built = True
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 - run_cases reports it with its case
        block, built = None, False
    if built and not isinstance(block, nn.Module):
        raise Hint(f"GatedBlock(cross) should build an nn.Module, but returned a {type_name(block)}: write class "
                   "GatedBlock(nn.Module) and pass the class itself, check_gated_block(GatedBlock)",
                   mistake="wrong_type")
    return run_cases(_driven(block_class), reference=gated_block_reference, cases=BLOCK_CASES,
                     mistakes=BLOCK_MISTAKES, what="GatedBlock", outputs=_GATE_OUTPUTS,
                     error_tips=[("converted to an index", "self.cross(x, image) returns a pair (update, weights): "
                                  "take its first item, self.cross(x, image)[0]"),
                                 ("'Tensor' and 'tuple'", "self.cross(x, image) returns a pair (update, weights): "
                                  "take its first item, self.cross(x, image)[0]"),
                                 ("has no attribute 'cross'", "store the sublayer in __init__: self.cross = cross"),
                                 ("has no attribute 'states'", "pass the whole Memory to the sublayer, "
                                  "self.cross(x, image): it reads image.states and image.mask itself"),
                                 ("before Module.__init__() call", "call super().__init__() first in __init__")],
                     passed="x exactly at initialisation, x + tanh(alpha) * update once the gate opens, and alpha "
                            f"a trained parameter ({len(BLOCK_CASES)} cases: batch of 1, float64, masked patches)")


# --- Exercise 4 · resample(latents, features, attention) ---------------------------------------------------------

def resample_reference(latents: Tensor, features: Tensor, attention: MultiHeadAttention) -> Tensor:
    """``[B, M, d]``: the ``M`` latents, the same queries for every image, cross-attend to the image's ``N``
    features (``LatentResampler`` without its norms and feed-forward)."""
    queries = latents.expand(features.shape[0], -1, -1)  # [B, M, d]
    return attention(queries, features)[0]


_RESAMPLES = [  # name, B, M (latents), N (patches), d, heads, seed, dtype
    ("B=3, M=2 latents, N=6 patches (fewer latents than patches)", 3, 2, 6, 16, 4, 1140, torch.float32),
    ("batch of 1, M=5 latents, N=3 patches (more latents than patches)", 1, 5, 3, 8, 2, 1141, torch.float32),
    ("one latent, M=1, B=2, N=4 patches", 2, 1, 4, 8, 2, 1142, torch.float32),
    ("float64, B=2, M=3 latents, N=7 patches", 2, 3, 7, 16, 4, 1143, torch.float64),
]


def _resample_case(name: str, b: int, m: int, n: int, d: int, heads: int, seed: int, dtype: torch.dtype) -> Case:
    attention = _seeded(lambda: MultiHeadAttention(d, heads), seed, dtype)
    return Case(name, (_randn(m, d, seed=seed, dtype=dtype), _randn(b, n, d, seed=seed + 100, dtype=dtype),
                       attention), info={"B": b, "M": m, "N": n, "d": d})


RESAMPLE_CASES = [_resample_case(*row) for row in _RESAMPLES]


def _queries(latents: Tensor, features: Tensor) -> Tensor:
    return latents.expand(features.shape[0], -1, -1)  # [B, M, d]


_CALL = "attention(latents.expand(B, -1, -1), features)[0]"
RESAMPLE_MISTAKES = [
    Mistake("queries_and_source_swapped", "you returned [B, N, d]: the features asked the latents. The latents are "
            "the queries (one output per latent, M = {M}) and the features are the keys and values: "
            f"{_CALL} -> [B, M, d]",
            lambda latents, features, attention: attention(features, _queries(latents, features))[0]),
    Mistake("no_batch_axis", "MultiHeadAttention takes queries [B, T, d]; latents is [M, d], with no batch axis: "
            f"give every image the same M queries, {_CALL}",
            lambda latents, features, attention: attention(latents, features)[0]),
    Mistake("latents_not_expanded", "your latents have a batch of 1 (latents[None] or .unsqueeze(0)), which is "
            "right only for one image: here B = {B}. Expand them over the batch, latents.expand(B, -1, -1) "
            f"(every image reads with the same queries): {_CALL}",
            lambda latents, features, attention: attention(latents[None], features)[0]),
    Mistake("self_attention_latents", "attention(queries) alone is self-attention among the latents: the image "
            f"never enters. Pass the features as the source (keys and values): {_CALL}",
            lambda latents, features, attention: attention(_queries(latents, features))[0]),
    Mistake("mean_of_features", "you averaged the features into one vector per image: the resampler keeps M = {M} "
            f"vectors, each latent a weighted mix of the patches that attention chooses: {_CALL}",
            lambda latents, features, attention: features.mean(dim=1, keepdim=True)),
    Mistake("latents_in_keys", "you appended the latents to the keys and values (as Flamingo's Perceiver "
            "Resampler does): this exercise asks for plain cross-attention, keys and values from the features "
            f"alone: {_CALL}",
            lambda latents, features, attention: attention(
                _queries(latents, features), torch.cat([_queries(latents, features), features], dim=1))[0]),
    Mistake("returns_pair", "MultiHeadAttention returns (output, attention weights): return the output only, "
            f"{_CALL}", lambda latents, features, attention: attention(_queries(latents, features), features)),
    Mistake("returns_weights", "you returned the attention weights [B, H, M, N]: return the output, item [0] of "
            f"what attention returns: {_CALL}",
            lambda latents, features, attention: attention(_queries(latents, features), features,
                                                           need_weights=True)[1]),
]


@checker("Exercise 4 · resample(latents, features, attention)")
def check_resample(resample_fn: Callable[[Tensor, Tensor, MultiHeadAttention], Tensor]) -> str:
    """``resample(latents [M, d], features [B, N, d], attention) -> [B, M, d]``: the latents, the same queries for
    every image, cross-attend to the features."""
    torch.set_grad_enabled(False)  # restored by @checker
    return run_cases(resample_fn, reference=resample_reference, cases=RESAMPLE_CASES, mistakes=RESAMPLE_MISTAKES,
                     what="resample(latents, features, attention)",
                     error_tips=[("must have the same batch size", "expand the latents over the batch: "
                                  "latents.expand(features.shape[0], -1, -1)")],
                     passed="M latents per image, each a mix of that image's patches, [B, M, d] "
                            f"({len(RESAMPLE_CASES)} cases: M < N, M > N, M = 1, batch of 1, float64)")


MISTAKES = {
    "check_two_source_mask": MASK_MISTAKES,
    "check_concatenated_memory": MEMORY_MISTAKES,
    "check_gated_block": BLOCK_MISTAKES,
    "check_resample": RESAMPLE_MISTAKES,
}
CASES = {"check_two_source_mask": MASK_CASES, "check_concatenated_memory": MEMORY_CASES,
         "check_gated_block": BLOCK_CASES, "check_resample": RESAMPLE_CASES}
REFERENCES = {"check_two_source_mask": two_source_mask_reference,
              "check_concatenated_memory": concatenated_memory_reference,
              "check_gated_block": GatedBlockReference, "check_resample": resample_reference}
