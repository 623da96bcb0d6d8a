"""Checkers for the exercises of lesson 10 (image captioning: a decoder that cross-attends over image patches).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases``. References: ``course_lib.vision`` (``patchify``, ``patch_positions_2d``),
``course_lib.vision_charts.weights_to_pixels`` and ``course_lib.captioning.grounded_words``.

Conventions the hints rely on: patches are numbered in raster order (row by row, like reading: patch ``n`` sits
at grid row ``n // cols``, column ``n % cols``), a patch is flattened channel first, then pixel rows, then pixel
columns (a ``Conv2d`` weight's layout), and row ``t`` of the cross-attention weights ``[.., T, N]`` is the query
that writes caption word ``t`` (its input is the word before, or <bos>). A box is ``(x0, y0, x1, y1)`` in pixels,
end exclusive, with x the column axis.

Exercise 3 also names one mistake from a property of the learner's map rather than from a wrong version (there
are many ways to make it): each patch holds the right weight (in total or on average) but its pixels differ
(``uneven_within_patch``, found by ``_uneven_patches``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..captioning import grounded_words
from ..layers import sinusoidal_positions
from ..scenes import scene_from_objects
from ..vision import patch_positions_2d, patchify
from ._cases import Case, Mistake
from ._harness import map_result, run_cases, second_look
from ._results import Hint, checker

# --- Exercise 1 · patchify(images, patch_size) ----------------------------------------------------------------

def patchify_reference(images: Tensor, patch_size: int) -> Tensor:
    """``[B, N, C * p * p]``: patches in raster order, each flattened channel first, then pixel rows, then
    columns (``course_lib.vision.patchify``)."""
    return patchify(images, patch_size)


def _images(b: int, c: int, h: int, w: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=gen, dtype=dtype)  # [B, C, H, W]


_PATCH_SIZES = [  # name, B, C, H, W, p, seed, dtype: H != W in all but one, so rows and columns cannot be confused
    ("B=2, C=3, 16x24 pixels, p=8: 2 rows of 3 patches", 2, 3, 16, 24, 8, 100, torch.float32),
    ("B=3, C=1, 12x12 pixels, p=4: 3 rows of 3 patches", 3, 1, 12, 12, 4, 101, torch.float32),
    ("batch of 1, C=3, 8x12 pixels, p=4: 2 rows of 3 patches", 1, 3, 8, 12, 4, 102, torch.float32),
    ("float64, B=2, C=2, 24x16 pixels, p=8: 3 rows of 2 patches", 2, 2, 24, 16, 8, 103, torch.float64),
]
PATCHIFY_CASES = [Case(name, (_images(b, c, h, w, seed, dtype), p), square=h == w,
                       info={"rows": h // p, "cols": w // p, "p": p, "C": c, "N": (h // p) * (w // p)})
                  for name, b, c, h, w, p, seed, dtype in _PATCH_SIZES]


def _unfolded(images: Tensor, p: int) -> Tensor:
    return images.unfold(2, p, p).unfold(3, p, p)  # [B, C, H/p, W/p, p, p]


def _patches_as(order: tuple[int, ...]) -> Callable[[Tensor, int], Tensor]:
    """Patches whose axes, taken from the unfolded ``[B, C, H/p, W/p, p, p]`` in ``order``, are flattened as
    ``[B, N, C*p*p]``."""
    def wrong(images: Tensor, p: int) -> Tensor:
        b, c, h, w = images.shape
        return _unfolded(images, p).permute(order).reshape(b, (h // p) * (w // p), c * p * p)
    return wrong


_UNFOLD = "images.unfold(2, p, p).unfold(3, p, p) gives [B, C, H/p, W/p, p, p]"
PATCHIFY_MISTAKES = [
    Mistake("channel_last", "each of your patches is flattened pixel by pixel with the channels last ([p, p, C], "
            "like an image stored H x W x C); the course flattens channel first, then pixel rows, then pixel "
            "columns ([C, p, p], the layout of a Conv2d weight). After the unfolds, move only the grid axes to the "
            "front: .permute(0, 2, 3, 1, 4, 5)", _patches_as((0, 2, 3, 4, 5, 1))),
    Mistake("column_major", "your patch n is the n-th patch going down the columns; the course numbers patches row "
            "by row, like reading: patch n sits at row n // {cols}, column n % {cols} (W / p = {cols} patches per "
            "row). Keep the grid axes in the order (rows, columns): .permute(0, 2, 3, 1, 4, 5)",
            _patches_as((0, 3, 2, 1, 4, 5))),
    Mistake("transposed_patch", "inside each patch your pixel rows and columns are swapped (every patch is "
            "transposed): flatten pixel rows first, then pixel columns. Unfold the height (dim 2) before the width "
            f"(dim 3), so that the last two axes are [pixel row, pixel column]: {_UNFOLD}",
            _patches_as((0, 2, 3, 1, 5, 4))),
    Mistake("plain_reshape", "a reshape alone does not cut the image into patches: images.reshape(B, -1, C*p*p) "
            "takes C*p*p values in memory order, whole pixel rows of the image that run across several patches "
            f"(and channels). Cut out the p x p squares first ({_UNFOLD}), then move the channel axis after the grid "
            "axes (.permute(0, 2, 3, 1, 4, 5)) and reshape",
            lambda images, p: images.reshape(images.shape[0], -1, images.shape[1] * p * p)),
    Mistake("no_permute", f"you reshaped the unfolded tensor without moving its axes: {_UNFOLD}, and reshaping that "
            "to [B, N, C*p*p] mixes one channel of several patches into one row. Permute it to "
            "[B, H/p, W/p, C, p, p] first: .permute(0, 2, 3, 1, 4, 5)", _patches_as((0, 1, 2, 3, 4, 5))),
    Mistake("unfold_not_transposed", "F.unfold returns [B, C*p*p, N], one *column* per patch: add .transpose(1, 2) "
            "to get one row per patch, [B, N, C*p*p]",
            lambda images, p: F.unfold(images, kernel_size=p, stride=p)),
    Mistake("batch_flattened", "you merged the batch into the patches ([B*N, C*p*p]): keep the batch axis, "
            ".reshape(B, N, C*p*p) with B = images.shape[0]",
            lambda images, p: patchify(images, p).reshape(-1, images.shape[1] * p * p)),
    Mistake("grid_not_flattened", "the patches of one image form one sequence: flatten the grid, [B, H/p, W/p, "
            "C*p*p] -> [B, N, C*p*p] with N = (H/p) * (W/p) = {N}",
            lambda images, p: patchify(images, p).reshape(images.shape[0], images.shape[2] // p,
                                                          images.shape[3] // p, -1)),
]


@checker("Exercise 1 · patchify(images, patch_size)")
def check_patchify(patchify_fn: Callable[[Tensor, int], Tensor]) -> str:
    """``patchify(images [B, C, H, W], patch_size) -> [B, N, C * p * p]``: patches in raster order, each
    flattened channel first, then pixel rows, then pixel columns."""
    try:
        return run_cases(patchify_fn, reference=patchify_reference, cases=PATCHIFY_CASES, mistakes=PATCHIFY_MISTAKES,
                         what="patchify(images, patch_size)",
                         error_tips=[("is invalid for input of size", "N = (H / p) * (W / p) patches of C * p * p "
                                      "values each: read H and W from images.shape, they may differ")],
                         passed="patches in raster order, each flattened as [C, p, p] like a Conv2d weight, for "
                                f"non-square images too ({len(PATCHIFY_CASES)} cases)")
    except Hint as hint:
        if hint.mistake == "square_only":
            raise Hint(f"your patches are right for a square image but not for case '{hint.case}': the grid has H / p "
                       "rows and W / p columns, and somewhere your code uses one for the other (read both from "
                       "images.shape)", mistake=hint.mistake, case=hint.case) from None
        raise


# --- Exercise 2 · positions_2d(rows, cols, d_model) ---------------------------------------------------------------

def positions_2d_reference(rows: int, cols: int, d_model: int) -> Tensor:
    """``[rows * cols, d_model]`` in raster order: the first half the sinusoidal code of the patch's row, the
    second half that of its column (``course_lib.vision.patch_positions_2d``)."""
    return patch_positions_2d(rows, cols, d_model)


_GRIDS = [  # name, rows, cols, d_model: rows != cols, so a row and a column code cannot be confused
    ("3 rows x 4 columns, d_model=8", 3, 4, 8),
    ("2 rows x 5 columns, d_model=16", 2, 5, 16),
    ("4 rows x 2 columns, d_model=12", 4, 2, 12),
]
POSITIONS_CASES = [Case(name, (rows, cols, d), info={"rows": rows, "cols": cols, "d_model": d, "half": d // 2})
                   for name, rows, cols, d in _GRIDS]


def _halves(first: str, second: str, *, column_major: bool = False) -> Callable[[int, int, int], Tensor]:
    """Positions whose halves hold the code of ``first`` and ``second`` ("row" or "col") of each patch."""
    def wrong(rows: int, cols: int, d_model: int) -> Tensor:
        n = torch.arange(rows * cols)
        row, col = (n % rows, n // rows) if column_major else (n // cols, n % cols)
        codes = {"row": sinusoidal_positions(rows, d_model // 2)[row],
                 "col": sinusoidal_positions(cols, d_model // 2)[col]}
        return torch.cat([codes[first], codes[second]], dim=-1)  # [rows * cols, d_model]
    return wrong


def _full_width(rows: int, cols: int, d_model: int) -> tuple[Tensor, Tensor]:
    """Each patch's row and column codes from tables ``d_model`` wide: ``[rows * cols, d_model]`` each."""
    n = torch.arange(rows * cols)
    return sinusoidal_positions(rows, d_model)[n // cols], sinusoidal_positions(cols, d_model)[n % cols]


_HALF = "sinusoidal_positions(rows, d_model // 2)[row] and sinusoidal_positions(cols, d_model // 2)[column]"
POSITIONS_MISTAKES = [
    Mistake("halves_swapped", "your halves are swapped: the first d_model // 2 = {half} features are the code of "
            "the patch's row, the second half that of its column (torch.cat([row code, column code], dim=-1))",
            _halves("col", "row")),
    Mistake("one_d_positions", "that is the 1-D table over the raster index n, sinusoidal_positions(rows * cols, "
            "d_model): it says how far along the raster a patch is, so two patches one above the other get "
            f"unrelated codes. Code the row and the column separately, one half each: {_HALF}",
            lambda rows, cols, d: sinusoidal_positions(rows * cols, d)),
    Mistake("row_code_twice", "both halves hold the row's code: the second half is the column's, "
            "sinusoidal_positions(cols, d_model // 2)[n % cols]", _halves("row", "row")),
    Mistake("column_code_twice", "both halves hold the column's code: the first half is the row's, "
            "sinusoidal_positions(rows, d_model // 2)[n // cols]", _halves("col", "col")),
    Mistake("column_major", "your patches go down the columns (the row changes fastest); the course numbers them "
            "row by row, like patchify: patch n is at row n // cols, column n % cols (here {cols} columns). Build "
            "the grid as [rows, cols, d_model], row index first, then reshape to [rows * cols, d_model]",
            _halves("row", "col", column_major=True)),
    Mistake("sliced_full_width_tables", "you took half of a table d_model = {d_model} features wide: its "
            "frequencies are those of {d_model} features, not of {half}. Build each half's table with "
            f"d_model // 2 features: {_HALF}",
            lambda rows, cols, d: torch.cat([c[:, :d // 2] for c in _full_width(rows, cols, d)], dim=-1)),
    Mistake("summed_codes", "you added a row code and a column code, each d_model wide; the course concatenates "
            f"two codes of d_model // 2 features, the row's first: {_HALF}, joined with torch.cat(..., dim=-1)",
            lambda rows, cols, d: sum(_full_width(rows, cols, d))),
    Mistake("grid_not_flattened", "flatten the grid into the raster order of the patches: [rows, cols, d_model] "
            "-> .reshape(rows * cols, d_model)",
            lambda rows, cols, d: patch_positions_2d(rows, cols, d).reshape(rows, cols, d), match="shape"),
]


@checker("Exercise 2 · positions_2d(rows, cols, d_model)")
def check_positions_2d(positions_fn: Callable[[int, int, int], Tensor]) -> str:
    """``positions_2d(rows, cols, d_model) -> [rows * cols, d_model]``: in raster order, the first half the
    sinusoidal code of the patch's row, the second half that of its column."""
    return run_cases(positions_fn, reference=positions_2d_reference, cases=POSITIONS_CASES,
                     mistakes=POSITIONS_MISTAKES, what="positions_2d(rows, cols, d_model)",
                     error_tips=[("even d_model", "each half has d_model // 2 features: "
                                  "sinusoidal_positions(rows, d_model // 2)")],
                     passed="row code in the first half, column code in the second, patches in raster order "
                            f"({len(POSITIONS_CASES)} grids with rows != cols)")


# --- Exercise 3 · word_heatmap(cross_weights, t, image_size) ------------------------------------------------------

def _spread(weights: Tensor, image_size: int) -> Tensor:
    """One word's weights ``[N]`` -> ``[image_size, image_size]`` float64, each patch's weight on all its pixels."""
    from ..vision_charts import weights_to_pixels  # here, not at the top: that module loads matplotlib and seaborn

    return torch.from_numpy(weights_to_pixels(weights, image_size))


def word_heatmap_reference(cross_weights: Tensor, t: int, image_size: int) -> Tensor:
    """``[image_size, image_size]`` float64: the head-averaged row ``t`` (the query that writes word ``t``), each
    patch's weight on every one of its pixels (``course_lib.vision_charts.weights_to_pixels``)."""
    return _spread(cross_weights[:, t].mean(dim=0), image_size)


def _cross_weights(heads: int, words: int, patches: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Random cross-attention weights ``[H, T, N]``, each row a softmax over the patches, some sharp, some flat."""
    gen = torch.Generator().manual_seed(seed)
    scores = 2.0 * torch.randn(heads, words, patches, generator=gen, dtype=torch.float64)
    return torch.softmax(scores, dim=-1).to(dtype)


_MAPS = [  # name, heads, T, grid, image_size, t, seed, dtype (at least 2 heads everywhere: head 0 is not the mean)
    ("4 heads, 6 words, 3x3 patches of 4 pixels, word t=2", 4, 6, 3, 12, 2, 110, torch.float32),
    ("the lesson's 48-pixel images: 2 heads, 5 words, 6x6 patches of 8 pixels, word t=3", 2, 5, 6, 48, 3, 111,
     torch.float32),
    ("float64, 3 heads, T = N = 9 words, 3x3 patches of 4 pixels, word t=4", 3, 9, 3, 12, 4, 112, torch.float64),
    ("the first word, t=0: 3 heads, 4 words, 4x4 patches of 4 pixels", 3, 4, 4, 16, 0, 113, torch.float32),
    ("float16, the last word: 2 heads, 7 words, 2x2 patches of 8 pixels, word t=6", 2, 7, 2, 16, 6, 114,
     torch.float16),
]
HEATMAP_CASES = [Case(name, (_cross_weights(h, words, grid * grid, seed, dtype), t, size),
                      atol=2e-3 if dtype == torch.float16 else None, rtol=1e-2 if dtype == torch.float16 else None,
                      info={"t": t, "previous": t - 1, "grid": grid, "p": size // grid, "image_size": size})
                 for name, h, words, grid, size, t, seed, dtype in _MAPS]


def _grid_of(cross_weights: Tensor, t: int) -> Tensor:
    n = cross_weights.shape[-1]
    grid = math.isqrt(n)
    return cross_weights[:, t].mean(dim=0).double().reshape(grid, grid)  # [grid, grid]


def _column_fits(case: Case) -> bool:
    """Whether a column of the weights (one value per word) can be drawn as a map: T is a square grid."""
    weights, _, size = case.args
    grid = math.isqrt(weights.shape[1])
    return grid * grid == weights.shape[1] and size % grid == 0


def _bilinear(cross_weights: Tensor, t: int, image_size: int) -> Tensor:
    grid = _grid_of(cross_weights, t)[None, None]  # [1, 1, grid, grid]
    return F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)[0, 0]


_ROW_T = "the map of word t is row t of every head, cross_weights[:, t]"
HEATMAP_MISTAKES = [
    Mistake("previous_row", "you drew row t - 1 = {previous} for word t = {t}: row t of cross_weights is the "
            "query at decoder position t, the one that *writes* word t (its input is the word before it, or <bos>): "
            f"{_ROW_T}",
            lambda w, t, size: word_heatmap_reference(w, t - 1, size)),
    Mistake("next_row", "you drew row t + 1: that query writes the *next* word (word t is its input, not its "
            f"output). Off by one between the decoder's input and the word it writes: {_ROW_T}",
            lambda w, t, size: word_heatmap_reference(w, t + 1, size)),
    Mistake("transposed_grid", "your map is transposed: patch n sits at grid row n // {grid}, column n % {grid} "
            "(raster order, row by row, like reading). Reshape the N weights to [grid, grid] row by row, "
            ".reshape(grid, grid), with no .T and no column-major (Fortran) order",
            lambda w, t, size: word_heatmap_reference(w, t, size).T),
    Mistake("one_head", "you drew head 0 only: average over the heads first, cross_weights[:, t].mean(dim=0)",
            lambda w, t, size: _spread(w[0, t], size)),
    Mistake("heads_summed", "you summed the heads: take their mean, cross_weights[:, t].mean(dim=0) (each head's "
            "row sums to 1, so does their mean)", lambda w, t, size: _spread(w[:, t].sum(dim=0), size)),
    Mistake("column_of_weights", "you took a column, cross_weights[:, :, t]: how much each *word* looks at patch "
            "t. The map of word t is its row, cross_weights[:, t], its weights over the N patches",
            lambda w, t, size: _spread(w[:, :, t].mean(dim=0), size), applies_when=_column_fits),
    Mistake("divided_by_patch_area", "each pixel should show its patch's weight itself; you divided it among the "
            "p x p = {p} x {p} pixels of the patch. Repeat the weight on every pixel: "
            "np.kron(grid, np.ones((p, p))) or .repeat_interleave(p, 0).repeat_interleave(p, 1)",
            lambda w, t, size: word_heatmap_reference(w, t, size) / (size // math.isqrt(w.shape[-1])) ** 2),
    Mistake("smooth_upsampling", "a smooth (bilinear) upsampling blurs the patch grid, so pixels of one patch show "
            "different values; the model attends to whole patches: spread each patch's weight evenly over its "
            "p x p pixels (nearest neighbour: np.kron(grid, np.ones((p, p))), .repeat_interleave(p, 0)"
            ".repeat_interleave(p, 1), or F.interpolate(..., mode='nearest'))", _bilinear),
    Mistake("not_upsampled", "you returned the grid of patches, [{grid}, {grid}]: spread each patch's weight over "
            "its p x p pixels to get [image_size, image_size] = [{image_size}, {image_size}]",
            lambda w, t, size: _grid_of(w, t), match="shape"),
]


def _as_float64(result: Any) -> Any:
    """A map of any float dtype, numpy or torch, as a float64 tensor (other results as they are, to be reported)."""
    if isinstance(result, np.ndarray) and result.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(result, dtype=np.float64))
    if isinstance(result, Tensor) and result.is_floating_point():
        return result.detach().to("cpu", torch.float64)
    return result


def _uneven_patches(result: Any, case: Case) -> Hint | None:
    """A hint when each patch of the map holds the right weight in total (or on average) but its pixels differ."""
    cross_weights, t, size = case.args
    heat = _as_float64(result)
    grid = math.isqrt(cross_weights.shape[-1])
    p = size // grid
    if not isinstance(heat, Tensor) or tuple(heat.shape) != (size, size):
        return None
    blocks = heat.reshape(grid, p, grid, p).transpose(1, 2)  # [grid, grid, p, p]
    expected = _grid_of(cross_weights, t)
    tol = {"atol": case.atol or 1e-5, "rtol": case.rtol or 1e-4}
    uneven = not torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks), **tol)
    mean_right = torch.allclose(blocks.mean(dim=(-2, -1)), expected, **tol)
    if uneven and (mean_right or torch.allclose(blocks.sum(dim=(-2, -1)), expected, **tol)):
        what = "mean" if mean_right else "total"
        return Hint(f"case '{case.name}': each patch holds the right {what} weight, but the values inside a patch "
                    "vary: spread each patch's weight evenly over its pixels, every one of the p x p = "
                    f"{p} x {p} pixels of patch n showing that patch's weight (np.kron(grid, np.ones((p, p))))",
                    mistake="uneven_within_patch", case=case.name)
    return None


@checker("Exercise 3 · word_heatmap(cross_weights, t, image_size)")
def check_word_heatmap(heatmap_fn: Callable[[Tensor, int, int], Any]) -> str:
    """``word_heatmap(cross_weights [H, T, N], t, image_size) -> [image_size, image_size]`` (numpy or torch, any
    float dtype): the head-averaged row ``t``, each patch's weight on every one of its ``p x p`` pixels."""
    learner = map_result(heatmap_fn, _as_float64)
    try:
        return run_cases(learner, reference=word_heatmap_reference, cases=HEATMAP_CASES, mistakes=HEATMAP_MISTAKES,
                         what="word_heatmap(cross_weights, t, image_size)",
                         error_tips=[("out of bounds for dimension 1", "row t is the query that writes word t: "
                                      "cross_weights[:, t], with t from 0 to T - 1")],
                         passed="the head-averaged row of the word being written, each patch's weight on all its "
                                f"pixels ({len(HEATMAP_CASES)} cases: first and last word, float16 to float64)")
    except Hint as hint:
        if hint.mistake == "wrong_type" and "should return a torch.Tensor" in str(hint):
            raise Hint(f"{str(hint).rstrip('.')} (a numpy array [image_size, image_size] of floats is fine too)",
                       mistake=hint.mistake, case=hint.case) from None
        raise second_look(hint, heatmap_fn, HEATMAP_CASES, _uneven_patches) from None


# --- Exercise 4 · grounding(cross_weights, word_boxes, patch_size) ------------------------------------------------

Box = tuple[int, int, int, int]
WordBoxes = Sequence[Sequence[Box | None]]


def grounding_reference(cross_weights: Tensor, word_boxes: WordBoxes, patch_size: int) -> Tensor:
    """``[H]`` float64: per head, the share of object words (``word_boxes[b][t]`` not None) whose most-attended
    patch holds at least one pixel of the word's box (``course_lib.captioning.grounded_words``)."""
    return grounded_words(cross_weights, word_boxes, patch_size)[0].to(torch.float64).mean(dim=1)


def _patch_xy(n: int, grid: int, p: int, transposed: bool = False) -> tuple[int, int]:
    """(x0, y0) of patch ``n``'s top-left pixel (raster order; ``transposed``: row and column swapped)."""
    row, col = divmod(n, grid)
    if transposed:
        row, col = col, row
    return col * p, row * p


def _overlaps(n: int, box: Box, grid: int, p: int, transposed: bool = False) -> bool:
    x, y = _patch_xy(n, grid, p, transposed)
    return x < box[2] and box[0] < x + p and y < box[3] and box[1] < y + p


def _touches(n: int, box: Box, grid: int, p: int) -> bool:
    """Overlap with both ends taken as inclusive: a patch that only borders the box counts."""
    x, y = _patch_xy(n, grid, p)
    return x <= box[2] and box[0] <= x + p and y <= box[3] and box[1] <= y + p


def _centre_inside(n: int, box: Box, grid: int, p: int) -> bool:
    x, y = _patch_xy(n, grid, p)
    cx, cy = x + p / 2, y + p / 2
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


def _top_patches(cross_weights: Tensor, b: int, t: int) -> Tensor:
    return cross_weights[b, :, t].argmax(dim=-1)  # [H]: each head's most-attended patch


def _share(cross_weights: Tensor, word_boxes: WordBoxes, p: int, *,
           top: Callable[[Tensor, int, int], Tensor] = _top_patches,
           on: Callable[[int, Box, int, int], bool] = _overlaps, every_word: bool = False) -> Tensor:
    """The grounding score written out word by word, with one step swapped for a typical mistake's."""
    b_size, _, t_size, n = cross_weights.shape
    grid = math.isqrt(n)
    hits = [[box is not None and on(int(patch), box, grid, p) for patch in top(cross_weights, b, t)]
            for b in range(b_size) for t, box in enumerate(word_boxes[b][:t_size]) if every_word or box is not None]
    return torch.tensor(hits, dtype=torch.float64).mean(dim=0)  # [H]


def _object_scene(*objects: tuple[str, str, int, int, tuple[int, int]]) -> tuple[Box | None, ...]:
    """The word boxes of a scene of lesson 10: one per caption word, None for "a" and the relation words."""
    return scene_from_objects(objects).word_boxes


# Word boxes of lesson 10's scenes, and hand-made ones (4x4 patches of 6 pixels) that a patch reaches by a single
# pixel row or column; boxes that end on a patch border, where a patch only borders the box and holds none of it.
_BOX_1, _BOX_2, _BOX_3 = (5, 2, 12, 11), (13, 12, 24, 19), (0, 17, 7, 24)
_WORD_BOXES = {
    "two": _object_scene(("square", "red", 0, 0, (4, 4)), ("diamond", "blue", 1, 2, (0, 3))),
    "one": _object_scene(("ring", "green", 2, 1, (3, 0))),
    "three": _object_scene(("triangle", "white", 0, 2, (4, 1)), ("square", "yellow", 1, 0, (0, 4)),
                           ("diamond", "red", 2, 1, (2, 2))),
    "hand-made, two objects": (None, _BOX_1, _BOX_1, None, None, _BOX_2, _BOX_2),
    "hand-made, one object": (None, _BOX_3, _BOX_3),
}


def _classes(box: Box, grid: int, p: int) -> dict[str, list[int]]:
    """The patches by how they stand to ``box``: "i" holds pixels of it and its centre is in the box, "e" holds a
    few of its pixels but its centre is outside, "b" only borders it, "a" is away from it. A patch whose centre
    lies on the box's edge is left out (whether it is "in" depends on < or <=, which the exercise does not ask)."""
    out: dict[str, list[int]] = {"i": [], "e": [], "b": [], "a": []}
    for n in range(grid * grid):
        x, y = _patch_xy(n, grid, p)
        if x + p / 2 in (box[0], box[2]) or y + p / 2 in (box[1], box[3]):
            continue
        kind = ("i" if _centre_inside(n, box, grid, p) else "e") if _overlaps(n, box, grid, p) else \
            ("b" if _touches(n, box, grid, p) else "a")
        out[kind].append(n)
    return out


def _grounding_weights(word_boxes: WordBoxes, looks: Sequence[str], grid: int, p: int, seed: int,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """Cross-attention weights ``[B, H, T, N]`` (T = the longest caption + 1, for <eos>) whose head ``h``, on each
    object word, looks hardest at a patch of the kind ``looks[k][h]`` (k counts the object words of the batch; see
    ``_classes``; a kind the box lacks falls back to "a"). Every other row peaks on a random patch."""
    gen = torch.Generator().manual_seed(seed)
    heads, t_size, n = len(looks[0]), max(len(boxes) for boxes in word_boxes) + 1, grid * grid
    scores = 0.5 * torch.randn(len(word_boxes), heads, t_size, n, generator=gen, dtype=torch.float64)
    peaks = torch.randint(0, n, (len(word_boxes), heads, t_size), generator=gen)
    k = 0
    for b, boxes in enumerate(word_boxes):
        for t, box in enumerate(boxes):
            if box is None:
                continue
            kinds = _classes(box, grid, p)
            for h, kind in enumerate(looks[k]):
                choices = kinds[kind] or kinds["a"]
                peaks[b, h, t] = choices[int(torch.randint(0, len(choices), (1,), generator=gen))]
            k += 1
    scores.scatter_add_(-1, peaks[..., None], torch.full((*peaks.shape, 1), 5.0, dtype=torch.float64))
    return torch.softmax(scores, dim=-1).to(dtype)


_GROUNDING = [  # name, scenes, looks (per object word of the batch: one kind per head), grid, p, seed, dtype
    ("2 scenes, 3 heads, the lesson's 6x6 patches of 8 pixels", ["two", "one"],
     ["iea", "ebi", "ibe", "bii", "eab", "iib"], 6, 8, 120, torch.float32),
    ("batch of 1, 4 heads, 3x3 patches of 16 pixels", ["three"], ["ieba", "eiib", "biea", "aeib", "iabe", "ebii"],
     3, 16, 121, torch.float32),
    ("float64, 3 scenes, 2 heads, 6x6 patches of 8 pixels", ["one", "three", "two"],
     ["ie", "bi", "ei", "ib", "ai", "ie", "eb", "ii", "be", "ia", "ei", "bb"], 6, 8, 122, torch.float64),
    ("2 images, 3 heads, 4x4 patches of 6 pixels, boxes a patch reaches by one pixel",
     ["hand-made, two objects", "hand-made, one object"], ["eib", "ibe", "bei", "eie", "iee", "eai"], 4, 6, 123,
     torch.float32),
]


def _grounding_case(name: str, scenes: list[str], looks: list[str], grid: int, p: int, seed: int,
                    dtype: torch.dtype) -> Case:
    word_boxes = [_WORD_BOXES[s] for s in scenes]
    weights = _grounding_weights(word_boxes, looks, grid, p, seed, dtype)
    return Case(name, (weights, word_boxes, p), batch=len(scenes), info={"grid": grid, "p": p})


GROUNDING_CASES = [_grounding_case(*row) for row in _GROUNDING]

_RULE = ("A patch is on the object when it holds at least one pixel of the box, i.e. the two rectangles overlap: "
         "patch x < box x1 and box x0 < patch x + p, the same for y")
GROUNDING_MISTAKES = [
    Mistake("argmax_over_heads", "your argmax runs over the heads: for each head, take the patch it attends to "
            "most, cross_weights[b, :, t].argmax(dim=-1), an argmax over the N patches",
            lambda w, boxes, p: _share(w, boxes, p, top=lambda w, b, t: w[b, :, t].argmax(dim=0))),
    Mistake("argmax_over_words", "your argmax runs over the words (dim 2, the rows): for each head and word, take "
            "the patch it attends to most, an argmax over the last axis (the N patches)",
            lambda w, boxes, p: _share(w, boxes, p, top=lambda w, b, t: w[b].argmax(dim=1)[:, t])),
    Mistake("next_row", "you used row t + 1 for word t: row t of cross_weights is the query that writes word t "
            "(its input is the word before it, or <bos>): cross_weights[b, :, t]",
            lambda w, boxes, p: _share(w, boxes, p, top=lambda w, b, t: w[b, :, t + 1].argmax(dim=-1))),
    Mistake("every_word_counted", "you counted every word; the score is over the object words only, those with "
            "a box (word_boxes[b][t] is not None): 'a', 'left', 'of' and 'above' name no object, so skip them "
            "instead of counting them as misses", lambda w, boxes, p: _share(w, boxes, p, every_word=True)),
    Mistake("centre_inside", "you asked for the patch's centre to lie in the box, a stricter rule: the course "
            f"counts a patch that holds even one pixel of the box, such as one the box reaches by a pixel. {_RULE}",
            lambda w, boxes, p: _share(w, boxes, p, on=_centre_inside)),
    Mistake("end_inclusive", "a box (x0, y0, x1, y1) ends *before* x1 and y1 (end exclusive: its last pixel is "
            "x1 - 1), so a patch that starts at x1 only borders it and holds none of its pixels: compare with a "
            f"strict <. {_RULE}", lambda w, boxes, p: _share(w, boxes, p, on=_touches)),
    Mistake("transposed_grid", "you swapped the patch's row and column: patch n sits at grid row n // {grid}, "
            "column n % {grid} (raster order), so its pixels start at x = column * p, y = row * p; and a box is "
            "(x0, y0, x1, y1), with x the column axis",
            lambda w, boxes, p: _share(w, boxes, p, on=lambda n, box, g, p: _overlaps(n, box, g, p, True))),
    Mistake("heads_averaged_first", "you averaged the heads before the argmax, so every head gets the same score: "
            "score each head on its own, with the argmax of each head's row",
            lambda w, boxes, p: _share(w, boxes, p, top=lambda w, b, t: w[b, :, t].mean(dim=0).argmax()
                                       .expand(w.shape[1]))),
    Mistake("one_number", "you returned one number, the mean over the heads: return one share per head, [H] (the "
            "notebook compares the heads)", lambda w, boxes, p: grounding_reference(w, boxes, p).mean()),
    Mistake("hit_counts", "those are counts of hits; the score is a share: divide each head's hits by the number "
            "of object words", lambda w, boxes, p: grounded_words(w, boxes, p)[0].sum(dim=1)),
]


def _as_float64_tensor(result: Any) -> Any:
    return result.detach().to(torch.float64) if isinstance(result, Tensor) and result.is_floating_point() else result


@checker("Exercise 4 · grounding(cross_weights, word_boxes, patch_size)")
def check_grounding(grounding_fn: Callable[[Tensor, WordBoxes, int], Tensor]) -> str:
    """``grounding(cross_weights [B, H, T, N], word_boxes, patch_size) -> [H]`` (any float dtype): per head, the
    share of object words whose most-attended patch holds at least one pixel of the word's box."""
    return run_cases(map_result(grounding_fn, _as_float64_tensor), reference=grounding_reference,
                     cases=GROUNDING_CASES, mistakes=GROUNDING_MISTAKES,
                     what="grounding(cross_weights, word_boxes, patch_size)",
                     error_tips=[("index out of range", "word_boxes[b] lists the caption's words only; the rows of "
                                  "cross_weights go on to <eos> (T is one more than the longest caption): loop over "
                                  "enumerate(word_boxes[b])")],
                     passed="per head, the share of object words whose top patch holds a pixel of their box "
                            f"({len(GROUNDING_CASES)} cases, boxes that end on a patch border or reach a patch by "
                            "one pixel)")


MISTAKES = {
    "check_patchify": PATCHIFY_MISTAKES,
    "check_positions_2d": POSITIONS_MISTAKES,
    "check_word_heatmap": HEATMAP_MISTAKES,
    "check_grounding": GROUNDING_MISTAKES,
}
CASES = {"check_patchify": PATCHIFY_CASES, "check_positions_2d": POSITIONS_CASES,
         "check_word_heatmap": HEATMAP_CASES, "check_grounding": GROUNDING_CASES}
REFERENCES = {"check_patchify": patchify_reference, "check_positions_2d": positions_2d_reference,
              "check_word_heatmap": word_heatmap_reference, "check_grounding": grounding_reference}
