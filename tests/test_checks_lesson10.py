"""The lesson 10 checkers: hand-written wrong answers get their hints, the cases hold the edge cases that tell the
mistakes apart, and a check leaves the learner's state alone. What every function checker must do runs in
tests/test_checks_generic.py, over this module's CHECKS, GENERIC, ALTERNATIVES and BROKEN; the part of it the
lesson's exercises depend on most (each named mistake, stubs, crashes, weird results) is also run here."""
from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    batch_one_only,
    batch_one_only_raising,
    broken_answers,
    casts_to,
    learner_state,
    messy_answer,
    mutates_input,
    raise_not_implemented,
    raise_value_error,
    returns_list,
    returns_numpy,
    weird_answers,
)

import course_lib as cl
from course_lib.checks import CheckResult, lesson10
from course_lib.layers import sinusoidal_positions

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the solutions, as a learner writes them in solutions/10_image_captioning.ipynb -------------------------------
def patchify(images, patch_size):
    b, c, h, w = images.shape
    p = patch_size
    patches = images.unfold(2, p, p).unfold(3, p, p)  # [B, C, H/p, W/p, p, p]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, (h // p) * (w // p), c * p * p)  # [B, N, C*p*p]


def positions_2d(rows, cols, d_model):
    row_code = sinusoidal_positions(rows, d_model // 2)  # [rows, d_model / 2]
    col_code = sinusoidal_positions(cols, d_model // 2)  # [cols, d_model / 2]
    n = torch.arange(rows * cols)  # raster order
    return torch.cat([row_code[n // cols], col_code[n % cols]], dim=-1)  # [rows * cols, d_model]


def word_heatmap(cross_weights, t, image_size):
    row = cross_weights[:, t].mean(dim=0)  # [N]: the word being written at position t, all heads
    grid = math.isqrt(row.numel())
    p = image_size // grid
    return row.reshape(grid, grid).repeat_interleave(p, dim=0).repeat_interleave(p, dim=1)  # [S, S]


def grounding(cross_weights, word_boxes, patch_size):
    _, heads, _, n = cross_weights.shape
    grid = math.isqrt(n)
    hits, words = torch.zeros(heads), 0
    for b, boxes in enumerate(word_boxes):
        for t, box in enumerate(boxes):
            if box is None:
                continue
            top = cross_weights[b, :, t].argmax(dim=-1)  # [H]: each head's most-attended patch
            x, y = (top % grid) * patch_size, (top // grid) * patch_size  # its top-left pixel
            x0, y0, x1, y1 = box
            hits += ((x < x1) & (x0 < x + patch_size) & (y < y1) & (y0 < y + patch_size)).float()
            words += 1
    return hits / words  # [H]


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_patchify": (lesson10.check_patchify, patchify),
    "check_positions_2d": (lesson10.check_positions_2d, positions_2d),
    "check_word_heatmap": (lesson10.check_word_heatmap, word_heatmap),
    "check_grounding": (lesson10.check_grounding, grounding),
}
BROKEN = [(name, answer, phrase) for name in CHECKS
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))]


def test_titles_follow_one_pattern() -> None:
    for n, (check, _) in enumerate(CHECKS.values(), start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")


def test_every_checker_is_fast() -> None:
    for check, solution in CHECKS.values():
        check(solution)  # warm up
        start = time.perf_counter()
        assert check(solution).passed
        assert time.perf_counter() - start < 0.2, check.__name__


# --- what each checker must do: the solution and the reference pass, every mistake is named ------------------------

@pytest.mark.parametrize("name", CHECKS)
def test_the_solution_and_the_reference_pass(name) -> None:
    check, solution = CHECKS[name]
    for answer in (solution, lesson10.REFERENCES[name]):
        result = check(answer)
        assert result.passed and result.mistake is None, result


@pytest.mark.parametrize(("name", "mistake"), [(name, m) for name in CHECKS for m in lesson10.MISTAKES[name]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_named_mistake_gets_its_own_hint(name, mistake) -> None:
    assert_named(CHECKS[name][0](mistake.wrong), mistake, lesson10.CASES[name])


def _noise_like(solution):
    def wrong(*args):
        out = solution(*args)
        return torch.rand(out.shape, dtype=out.dtype)  # right shape and dtype, values from nowhere
    return wrong


@pytest.mark.parametrize("name", CHECKS)
def test_a_random_answer_fails_without_a_named_hint(name) -> None:
    check, solution = CHECKS[name]
    assert_diagnosed(check(_noise_like(solution)), None, "differs from the reference")


@pytest.mark.parametrize("name", CHECKS)
def test_stubs_none_crashes_and_non_functions_do_not_raise(name) -> None:
    check = CHECKS[name][0]
    stub = check(raise_not_implemented)
    assert stub.status == "not_done" and "not done yet" in stub.message and str(stub).startswith("⏳")
    assert check(None).status == "not_done"
    crash = check(raise_value_error)
    assert_diagnosed(crash, "raised", "raised ValueError: boom")
    assert crash.case is not None
    assert_diagnosed(check(42), "not_a_function", "should be a function")


@pytest.mark.parametrize(("name", "answer", "phrase"), BROKEN)
def test_broken_answers_fail_without_raising(name, answer, phrase) -> None:
    assert_fail(CHECKS[name][0](answer), phrase)


@pytest.mark.parametrize(("label", "weird"), weird_answers(), ids=[w[0] for w in weird_answers()])
@pytest.mark.parametrize("name", CHECKS)
def test_weird_results_fail_without_raising(name, label, weird) -> None:
    result = CHECKS[name][0](weird)
    assert isinstance(result, CheckResult) and result.status == "fail", result
    assert "the check itself hit" not in result.message, result.message






@pytest.mark.parametrize("name", CHECKS)
def test_a_check_leaves_the_learners_rng_threads_and_grad_mode_alone(name) -> None:
    check, solution = CHECKS[name]
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    before = learner_state()
    messy = messy_answer(solution, grad_enabled=False)
    for answer in (solution, messy, lesson10.MISTAKES[name][0].wrong, raise_value_error):
        check(answer)
        after = learner_state()
        assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]), answer
        assert before[2:] == after[2:], answer
    assert check(messy_answer(solution, grad_enabled=False)).passed


# --- correct alternatives (they must pass) ------------------------------------------------------------------------

def patchify_reshape(images, p):
    b, c, h, w = images.shape
    grid = images.reshape(b, c, h // p, p, w // p, p)  # [B, C, rows, p, cols, p]
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)


def patchify_loops(images, p):
    b, c, h, w = images.shape
    return torch.stack([images[:, :, y:y + p, x:x + p].reshape(b, -1)
                        for y in range(0, h, p) for x in range(0, w, p)], dim=1)


def positions_meshgrid(rows, cols, d_model):
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    half = d_model // 2
    return torch.cat([sinusoidal_positions(rows, half)[r.flatten()], sinusoidal_positions(cols, half)[c.flatten()]],
                     dim=1)


def positions_repeat(rows, cols, d_model):
    row_code = sinusoidal_positions(rows, d_model // 2).repeat_interleave(cols, dim=0)  # r r r r, ...
    col_code = sinusoidal_positions(cols, d_model // 2).repeat(rows, 1)  # c0 c1 c2 c3, c0 c1 ...
    return torch.cat([row_code, col_code], dim=-1)


def heatmap_kron(cross_weights, t, image_size):
    row = cross_weights[:, t].mean(0).float().numpy()
    grid = int(round(row.size ** 0.5))
    return np.kron(row.reshape(grid, grid), np.ones((image_size // grid, image_size // grid), dtype=np.float32))


def heatmap_nearest(cross_weights, t, image_size):
    grid = math.isqrt(cross_weights.shape[-1])
    row = cross_weights[:, t].mean(0).reshape(1, 1, grid, grid).float()
    return F.interpolate(row, size=(image_size, image_size), mode="nearest")[0, 0]


def grounding_vectorised(cross_weights, word_boxes, patch_size):
    grid = math.isqrt(cross_weights.shape[-1])
    where = [(b, t) for b, boxes in enumerate(word_boxes) for t, box in enumerate(boxes) if box is not None]
    boxes = torch.tensor([word_boxes[b][t] for b, t in where])  # [W, 4]
    top = torch.stack([cross_weights[b, :, t].argmax(-1) for b, t in where])  # [W, H]
    x, y = top % grid * patch_size, top // grid * patch_size
    inside = ((x < boxes[:, 2:3]) & (boxes[:, 0:1] < x + patch_size) & (y < boxes[:, 3:4])
              & (boxes[:, 1:2] < y + patch_size))  # [W, H]
    return inside.double().mean(dim=0)


def grounding_patch_boxes(cross_weights, word_boxes, patch_size):
    grid = math.isqrt(cross_weights.shape[-1])
    patches = cl.captioning.patch_boxes(grid, patch_size).tolist()  # (x0, y0, x1, y1) per patch
    scores = []
    for h in range(cross_weights.shape[1]):
        hits = []
        for b, boxes in enumerate(word_boxes):
            for t, box in enumerate(boxes):
                if box is not None:
                    px0, py0, px1, py1 = patches[int(cross_weights[b, h, t].argmax())]
                    hits.append(px0 < box[2] and box[0] < px1 and py0 < box[3] and box[1] < py1)
        scores.append(sum(hits) / len(hits))
    return torch.tensor(scores)


ALTERNATIVES = [
    ("check_patchify", patchify_reshape), ("check_patchify", patchify_loops),
    ("check_patchify", lambda images, p: F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)),
    ("check_patchify", lambda images, p: cl.vision.patchify(images, p)),
    ("check_positions_2d", positions_meshgrid), ("check_positions_2d", positions_repeat),
    ("check_positions_2d", lambda rows, cols, d: cl.vision.patch_positions_2d(rows, cols, d)),
    ("check_word_heatmap", heatmap_kron), ("check_word_heatmap", heatmap_nearest),
    ("check_word_heatmap", lambda w, t, size: cl.vision_charts.weights_to_pixels(w[:, t].mean(0), size)),
    ("check_word_heatmap", lambda w, t, size: word_heatmap(w, t, size).double()),  # any float dtype
    ("check_word_heatmap", lambda w, t, size: word_heatmap(w.double(), t, size).numpy()),
    ("check_grounding", grounding_vectorised), ("check_grounding", grounding_patch_boxes),
    ("check_grounding", lambda w, boxes, p: cl.captioning.grounded_words(w, boxes, p)[0].float().mean(dim=1)),
]


@pytest.mark.parametrize(("name", "alternative"), ALTERNATIVES)
def test_correct_alternatives_pass(name, alternative) -> None:
    result = CHECKS[name][0](alternative)
    assert result.passed, result


# --- generic mistake classes ----------------------------------------------------------------------------------------

def _patchify_square_only(images, p):
    b, c, h, _ = images.shape  # the width taken to be the height
    return images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, (h // p) ** 2, c * p * p)


def _heatmap_editing_weights(cross_weights, t, image_size):
    cross_weights[:, t] /= cross_weights[:, t].sum(-1, keepdim=True)
    return word_heatmap(cross_weights, t, image_size)


def _grounding_first_image(cross_weights, word_boxes, patch_size):
    return grounding(cross_weights[:1], word_boxes[:1], patch_size)


def _grounding_editing_boxes(cross_weights, word_boxes, patch_size):
    out = grounding(cross_weights, word_boxes, patch_size)
    word_boxes.append(())
    return out


GENERIC = [
    ("check_patchify", returns_numpy(patchify), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_patchify", returns_list(patchify), "wrong_type", "list"),
    ("check_patchify", batch_one_only(patchify), "batch_one_only", "right for a batch of 1"),
    ("check_patchify", batch_one_only_raising(patchify), "batch_one_only", "right for a batch of 1"),
    ("check_patchify", casts_to(patchify, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_patchify", mutates_input(patchify, 0), "mutated_input", "`images`"),
    ("check_patchify", _patchify_square_only, "square_only", "right for a square image"),
    ("check_positions_2d", returns_numpy(positions_2d), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_positions_2d", returns_list(positions_2d), "wrong_type", "list"),
    ("check_positions_2d", casts_to(positions_2d, torch.float64), "wrong_dtype", "torch.float64"),
    ("check_word_heatmap", returns_list(word_heatmap), "wrong_type", "a numpy array [image_size, image_size] of "
     "floats is fine too"),
    ("check_word_heatmap", mutates_input(word_heatmap, 0), "mutated_input", "`cross_weights`"),
    ("check_word_heatmap", _heatmap_editing_weights, "mutated_input", "`cross_weights`"),
    ("check_grounding", returns_numpy(grounding), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_grounding", returns_list(grounding), "wrong_type", "list"),
    ("check_grounding", _grounding_first_image, "batch_one_only", "right for a batch of 1"),
    ("check_grounding", mutates_input(grounding, 0), "mutated_input", "`cross_weights`"),
    ("check_grounding", _grounding_editing_boxes, "mutated_input", "`word_boxes`"),
]


@pytest.mark.parametrize(("name", "wrong", "mistake", "phrase"), GENERIC)
def test_generic_mistakes_are_diagnosed(name, wrong, mistake, phrase) -> None:
    assert_diagnosed(CHECKS[name][0](wrong), mistake, phrase)


# --- exercise 1: patchify ---------------------------------------------------------------------------------------------

def _unfolded(images, p):
    return images.unfold(2, p, p).unfold(3, p, p)  # [B, C, rows, cols, p, p]


def _channel_last(images, p):
    b, c, h, w = images.shape
    hwc = images.permute(0, 2, 3, 1)  # [B, H, W, C]
    grid = hwc.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)  # [B, rows, cols, p, p, C]
    return grid.reshape(b, -1, p * p * c)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_channel_last, "channel_last", "channel first, then pixel rows, then pixel columns"),
    (lambda x, p: _unfolded(x, p).permute(0, 3, 2, 1, 4, 5).reshape(x.shape[0], -1, x.shape[1] * p * p),
     "column_major", "going down the columns; the course numbers patches row by row, like reading"),
    (lambda x, p: x.unfold(3, p, p).unfold(2, p, p).permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], -1,
                                                                                      x.shape[1] * p * p),
     "transposed_patch", "Unfold the height (dim 2) before the width (dim 3)"),
    (lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), "plain_reshape", "a reshape alone does not cut"),
    (lambda x, p: _unfolded(x, p).reshape(x.shape[0], -1, x.shape[1] * p * p), "no_permute",
     "without moving its axes"),
    (lambda x, p: F.unfold(x, p, stride=p), "unfold_not_transposed", "add .transpose(1, 2)"),
    (lambda x, p: patchify(x, p).flatten(0, 1), "batch_flattened", "keep the batch axis"),
    (lambda x, p: patchify(x, p).unflatten(1, (x.shape[2] // p, x.shape[3] // p)), "grid_not_flattened",
     "flatten the grid"),
    (lambda x, p: patchify(x, p) + 0.01, None, "differs from the reference"),
])
def test_hand_written_patchify_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson10.check_patchify(wrong), mistake, phrase)


def test_patchify_hints_quote_the_grid() -> None:
    result = lesson10.check_patchify(
        lambda x, p: _unfolded(x, p).permute(0, 3, 2, 1, 4, 5).reshape(x.shape[0], -1, x.shape[1] * p * p))
    assert "patch n sits at row n // 3, column n % 3" in result.message, result.message


def test_patchify_cases_cover_shapes_channels_and_dtypes() -> None:
    shapes = [(c.args[0].shape, c.args[1]) for c in lesson10.PATCHIFY_CASES]
    assert {1, 3} <= {s[1] for s, _ in shapes}  # one channel and three
    assert any(s[2] > s[3] for s, _ in shapes) and any(s[2] < s[3] for s, _ in shapes)  # tall and wide images
    assert any(s[0] == 1 for s, _ in shapes) and any(s[2] == s[3] for s, _ in shapes)
    assert {c.args[0].dtype for c in lesson10.PATCHIFY_CASES} == {torch.float32, torch.float64}


def test_patchify_first_case_tells_the_mistakes_apart() -> None:
    case = lesson10.PATCHIFY_CASES[0]
    outputs = [lesson10.patchify_reference(*case.args)] + [m.wrong(*case.args) for m in lesson10.PATCHIFY_MISTAKES]
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert a.shape != b.shape or not torch.equal(a, b)


# --- exercise 2: 2-D positions ----------------------------------------------------------------------------------------

def _codes(rows, cols, d):
    return sinusoidal_positions(rows, d // 2), sinusoidal_positions(cols, d // 2)


def _column_major_meshgrid(rows, cols, d):
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="xy")  # [cols, rows]: row fastest
    row_code, col_code = _codes(rows, cols, d)
    return torch.cat([row_code[r.flatten()], col_code[c.flatten()]], dim=-1)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda rows, cols, d: positions_2d(rows, cols, d).roll(d // 2, dims=1), "halves_swapped", "swapped"),
    (lambda rows, cols, d: sinusoidal_positions(rows * cols, d), "one_d_positions", "1-D table over the raster"),
    (lambda rows, cols, d: _codes(rows, cols, d)[0].repeat_interleave(cols, 0).repeat(1, 2), "row_code_twice",
     "both halves hold the row's code"),
    (lambda rows, cols, d: _codes(rows, cols, d)[1].repeat(rows, 2), "column_code_twice",
     "both halves hold the column's code"),
    (_column_major_meshgrid, "column_major", "the row changes fastest"),
    (lambda rows, cols, d: torch.cat([sinusoidal_positions(rows, d)[:, :d // 2].repeat_interleave(cols, 0),
                                      sinusoidal_positions(cols, d)[:, :d // 2].repeat(rows, 1)], dim=-1),
     "sliced_full_width_tables", "you took half of a table"),
    (lambda rows, cols, d: sinusoidal_positions(rows, d).repeat_interleave(cols, 0)
     + sinusoidal_positions(cols, d).repeat(rows, 1), "summed_codes", "you added a row code and a column code"),
    (lambda rows, cols, d: positions_2d(rows, cols, d).reshape(rows, cols, d), "grid_not_flattened",
     ".reshape(rows * cols, d_model)"),
    (lambda rows, cols, d: positions_2d(rows, cols, d) * 1.01, None, "differs from the reference"),
])
def test_hand_written_positions_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson10.check_positions_2d(wrong), mistake, phrase)


def test_positions_cases_are_not_square_and_use_two_widths() -> None:
    assert all(rows != cols for rows, cols, _ in (c.args for c in lesson10.POSITIONS_CASES))
    assert {8, 16} <= {d for _, _, d in (c.args for c in lesson10.POSITIONS_CASES)}


def test_positions_first_case_tells_the_mistakes_apart() -> None:
    args = lesson10.POSITIONS_CASES[0].args
    outputs = [lesson10.positions_2d_reference(*args)] + [m.wrong(*args) for m in lesson10.POSITIONS_MISTAKES]
    assert len({(tuple(o.shape), tuple(o.flatten().tolist())) for o in outputs}) == len(outputs)


# --- exercise 3: a word's heatmap on the image ------------------------------------------------------------------------

def _grid(w, t):
    g = math.isqrt(w.shape[-1])
    return w[:, t].mean(0).reshape(g, g), g


def _top_left_only(w, t, size):
    grid, g = _grid(w, t)
    out = torch.zeros(size, size, dtype=w.dtype)
    out[::size // g, ::size // g] = grid  # the whole weight on the patch's first pixel
    return out


def _mean_kept_but_noisy(w, t, size):
    heat = word_heatmap(w, t, size).double()
    p = size // math.isqrt(w.shape[-1])
    wobble = torch.tensor([[0.01, -0.01], [-0.01, 0.01]], dtype=torch.float64).repeat(size // 2, size // 2)
    assert p % 2 == 0  # each patch holds whole 2 x 2 blocks of the wobble, so its mean stays the same
    return heat + wobble


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda w, t, size: word_heatmap(w, t - 1, size), "previous_row", "the one that *writes* word t"),
    (lambda w, t, size: word_heatmap(w, t + 1, size), "next_row", "Off by one between the decoder's input"),
    (lambda w, t, size: word_heatmap(w, t, size).T, "transposed_grid", "your map is transposed"),
    (lambda w, t, size: np.kron(w[:, t].mean(0).numpy().reshape(math.isqrt(w.shape[-1]), -1, order="F"),
                                np.ones((size // math.isqrt(w.shape[-1]),) * 2)), "transposed_grid",
     "no column-major (Fortran) order"),
    (lambda w, t, size: word_heatmap(w[:1], t, size), "one_head", "head 0 only"),
    (lambda w, t, size: word_heatmap(w, t, size) * w.shape[0], "heads_summed", "you summed the heads"),
    (lambda w, t, size: word_heatmap(w.transpose(1, 2), t, size), "column_of_weights", "you took a column"),
    (lambda w, t, size: word_heatmap(w, t, size) / (size // math.isqrt(w.shape[-1])) ** 2, "divided_by_patch_area",
     "you divided it among the p x p"),
    (lambda w, t, size: F.interpolate(_grid(w, t)[0][None, None].double(), size=(size, size), mode="bilinear")[0, 0],
     "smooth_upsampling", "blurs the patch grid"),
    (lambda w, t, size: _grid(w, t)[0], "not_upsampled", "you returned the grid of patches"),
    (_top_left_only, "uneven_within_patch", "each patch holds the right total weight, but the values inside"),
    (_mean_kept_but_noisy, "uneven_within_patch", "each patch holds the right mean weight"),
    (lambda w, t, size: word_heatmap(w, t, size) + 0.01, None, "differs from the reference"),
])
def test_hand_written_heatmap_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson10.check_word_heatmap(wrong), mistake, phrase)


def test_heatmap_hints_quote_the_case() -> None:
    result = lesson10.check_word_heatmap(lambda w, t, size: word_heatmap(w, t, size).T)
    assert "patch n sits at grid row n // 3, column n % 3" in result.message, result.message


def test_heatmap_cases_hold_the_first_and_last_word_and_a_column_that_fits() -> None:
    cases = lesson10.HEATMAP_CASES
    assert any(t == 0 for _, t, _ in (c.args for c in cases))
    assert any(t == w.shape[1] - 1 for w, t, _ in (c.args for c in cases))
    assert any(lesson10._column_fits(c) for c in cases) and not all(lesson10._column_fits(c) for c in cases)
    assert all(c.args[0].shape[0] >= 2 for c in cases)  # head 0 is never the mean
    assert {c.args[0].dtype for c in cases} == {torch.float16, torch.float32, torch.float64}


# --- exercise 4: grounding per head -----------------------------------------------------------------------------------

def _grounding_with(*, top=None, rule=None, every_word=False, transposed=False):
    """The solution with one step changed the way a learner gets it wrong."""
    def wrong(cross_weights, word_boxes, p):
        grid = math.isqrt(cross_weights.shape[-1])
        hits, words = 0, 0
        for b, boxes in enumerate(word_boxes):
            for t, box in enumerate(boxes):
                if box is None:
                    words += every_word
                    continue
                n = top(cross_weights, b, t) if top else cross_weights[b, :, t].argmax(dim=-1)
                row, col = (n % grid, n // grid) if transposed else (n // grid, n % grid)
                x, y = col * p, row * p
                x0, y0, x1, y1 = box
                inside = rule(x, y, p, box) if rule else (x < x1) & (x0 < x + p) & (y < y1) & (y0 < y + p)
                hits, words = hits + inside.float(), words + 1
        return hits / words
    return wrong


def _centre(x, y, p, box):
    cx, cy = x + p / 2, y + p / 2
    return (box[0] <= cx) & (cx < box[2]) & (box[1] <= cy) & (cy < box[3])


def _touching(x, y, p, box):
    return (x <= box[2]) & (box[0] <= x + p) & (y <= box[3]) & (box[1] <= y + p)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_grounding_with(top=lambda w, b, t: w[b, :, t].argmax(dim=0)), "argmax_over_heads", "runs over the heads"),
    (_grounding_with(top=lambda w, b, t: w.argmax(dim=2)[b, :, t]), "argmax_over_words", "runs over the words"),
    (_grounding_with(top=lambda w, b, t: w[b, :, t + 1].argmax(dim=-1)), "next_row", "row t + 1"),
    (_grounding_with(every_word=True), "every_word_counted", "object words only"),
    (_grounding_with(rule=_centre), "centre_inside", "a stricter rule"),
    (_grounding_with(rule=_touching), "end_inclusive", "end exclusive"),
    (_grounding_with(transposed=True), "transposed_grid", "you swapped the patch's row and column"),
    (_grounding_with(top=lambda w, b, t: w[b, :, t].mean(0).argmax().repeat(w.shape[1])), "heads_averaged_first",
     "before the argmax"),
    (lambda w, boxes, p: grounding(w, boxes, p).mean(), "one_number", "one share per head"),
    (lambda w, boxes, p: (grounding(w, boxes, p) * sum(b is not None for bs in boxes for b in bs)).round().long(),
     "hit_counts", "counts of hits"),
    (lambda w, boxes, p: grounding(w, boxes, p) + 0.01, None, "differs from the reference"),
])
def test_hand_written_grounding_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson10.check_grounding(wrong), mistake, phrase)


def _pixels_held(top, box, grid, p):
    """How many pixels of ``box`` patch ``top`` holds, and whether it borders the box."""
    row, col = divmod(top, grid)
    x, y = col * p, row * p
    held = max(0, min(x + p, box[2]) - max(x, box[0])) * max(0, min(y + p, box[3]) - max(y, box[1]))
    return held, held == 0 and lesson10._touches(top, box, grid, p)


def test_grounding_cases_hold_the_edge_cases() -> None:
    """Some top patch reaches its box by a single pixel row or column, some only borders its box; captions have
    words with no object and are shorter than the rows of the weights (which run on to <eos>)."""
    one_line, bordering = False, False
    for case in lesson10.GROUNDING_CASES:
        weights, word_boxes, p = case.args
        grid = math.isqrt(weights.shape[-1])
        assert weights.shape[2] == max(len(boxes) for boxes in word_boxes) + 1
        assert all(None in boxes for boxes in word_boxes if len(boxes) > 3) and any(None in b for b in word_boxes)
        for b, boxes in enumerate(word_boxes):
            for t, box in enumerate(boxes):
                if box is None:
                    continue
                for top in weights[b, :, t].argmax(dim=-1).tolist():
                    held, borders = _pixels_held(top, box, grid, p)
                    row, col = divmod(top, grid)
                    widths = (min((col + 1) * p, box[2]) - max(col * p, box[0]),
                              min((row + 1) * p, box[3]) - max(row * p, box[1]))
                    one_line |= held > 0 and 1 in widths
                    bordering |= borders
    assert one_line and bordering


def test_grounding_mistakes_give_distinct_scores_in_each_case() -> None:
    """Where two mistakes both differ from the reference in a case, they differ from each other too, so the
    checker never names one for the other."""
    for case in lesson10.GROUNDING_CASES:
        expected = lesson10.grounding_reference(*case.args)
        outputs = {}
        for mistake in lesson10.GROUNDING_MISTAKES:
            try:
                out = mistake.wrong(*case.args).double()
            except IndexError:  # the argmax over the words, where a caption is longer than the patches
                continue
            if out.shape != expected.shape or not torch.allclose(out, expected):
                outputs[mistake.name] = out
        names = list(outputs)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert outputs[a].shape != outputs[b].shape or not torch.allclose(outputs[a], outputs[b]), \
                    (case.name, a, b)


def test_centre_rule_is_named_only_where_it_differs() -> None:
    centre = next(m for m in lesson10.GROUNDING_MISTAKES if m.name == "centre_inside")
    differs = [not torch.allclose(centre.wrong(*c.args), lesson10.grounding_reference(*c.args))
               for c in lesson10.GROUNDING_CASES]
    assert any(differs) and not all(differs)  # evidence in some cases; the p = 16 case cannot tell them apart
    result = lesson10.check_grounding(_grounding_with(rule=_centre))
    assert differs[[c.name for c in lesson10.GROUNDING_CASES].index(result.case)]


def test_grounding_uses_the_lessons_scenes() -> None:
    boxes = lesson10.GROUNDING_CASES[0].args[1][0]
    scene = cl.scenes.scene_from_objects([("square", "red", 0, 0, (4, 4)), ("diamond", "blue", 1, 2, (0, 3))])
    assert tuple(boxes) == scene.word_boxes and str(scene) == "a red square above a blue diamond"
