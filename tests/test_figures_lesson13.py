"""Lesson 13's figures: the numbers drawn are the numbers given (or computed by ``position``'s functions, which the
figures must not recompute their own way), the two mask helpers equal brute-force loops, the shapes written are the
arguments', and bad input is refused with a ValueError."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from course_lib import order_charts as oc  # noqa: E402
from course_lib.order_models import RunRecord  # noqa: E402
from course_lib.plotting import SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL  # noqa: E402
from course_lib.position import alibi_slopes, alignment_distance, diagonal_bias, relative_position_buckets, wait_k_mask  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend(ax_or_fig) -> list[str]:
    legend = ax_or_fig.get_legend() if hasattr(ax_or_fig, "get_legend") else None
    legend = legend or ax_or_fig.legends[0]
    return [t.get_text() for t in legend.get_texts()]


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


# --- 1. the data flow ------------------------------------------------------------------------------------------
def test_biased_cross_attention_writes_the_shapes_of_its_arguments() -> None:
    fig = oc.draw_biased_cross_attention()
    texts = set(_texts(fig))
    assert {"[B, 4, 5, 16]", "[B, 4, 8, 16]", "[B, 4, 5, 8]", "[4, 5, 8]", "[B, 1, 5, 8]"} <= texts
    assert {"+ bias (float)", "~mask → −inf", "mask (bool, True = may attend)", "padding, wait-k", "Q Kᵀ / √d",
            "fixed slopes or learned buckets", "softmax over T_k", "× V", "V [B, 4, 8, 16]"} <= texts
    other = set(_texts(oc.draw_biased_cross_attention(t_q=3, t_k=12, d_head=8, n_heads=2)))
    assert {"[B, 2, 3, 8]", "[B, 2, 12, 8]", "[B, 2, 3, 12]", "[2, 3, 12]", "[B, 1, 3, 12]"} <= other
    assert "[B, 4, 5, 16]" not in other


def test_biased_cross_attention_pictures_the_bias_and_the_mask_it_names() -> None:
    ax = oc.draw_biased_cross_attention(t_q=5, t_k=8, n_heads=4).axes[0]
    bias_image, mask_image = ax.images
    np.testing.assert_allclose(bias_image.get_array(), diagonal_bias(5, 8, alibi_slopes(4))[0].numpy())
    assert np.array_equal(mask_image.get_array(), wait_k_mask(5, [8], 3)[0, 0].numpy())
    large = oc.draw_biased_cross_attention(t_q=64, t_k=4096, n_heads=8)  # too many cells to see: a small example
    assert [image.get_array().shape for image in large.axes[0].images] == [(5, 8), (5, 8)]
    assert "(pictured for T_q = 5, T_k = 8)" in "\n".join(_texts(large)) and "[B, 8, 64, 4096]" in _texts(large)


@pytest.mark.parametrize("sizes", [dict(t_q=0), dict(t_k=2.5), dict(d_head=True), dict(n_heads=-1)])
def test_biased_cross_attention_refuses_impossible_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="positive int"):
        oc.draw_biased_cross_attention(**sizes)


# --- 2. the permutation test -----------------------------------------------------------------------------------
SOURCE = "the small dog sees a red ball .".split()
TARGET = "le petit chien voit une balle".split()
ORDER = [3, 0, 6, 1, 7, 2, 5, 4]


def _weights() -> torch.Tensor:
    return torch.softmax(torch.randn(6, 8, generator=torch.Generator().manual_seed(1)), dim=-1)


def test_permutation_test_draws_both_matrices_with_the_tokens_in_each_order() -> None:
    weights = _weights()
    fig = oc.plot_permutation_test(weights, weights[:, ORDER], ORDER, SOURCE, TARGET, 3.2e-7)
    left, right = (ax for ax in fig.axes if ax.images)
    np.testing.assert_allclose(left.images[0].get_array(), weights.numpy(), atol=1e-7)
    np.testing.assert_allclose(right.images[0].get_array(), weights[:, ORDER].numpy(), atol=1e-7)
    assert _ticks(left.get_xticklabels()) == SOURCE
    assert _ticks(right.get_xticklabels()) == [SOURCE[o] for o in ORDER]
    assert _ticks(left.get_yticklabels()) == TARGET
    assert left.get_xlabel() == SOURCE_TOKEN_LABEL and left.get_ylabel() == WRITTEN_WORD_LABEL
    # a token keeps its colour in both panels; the top axis names the position it came from
    colour = {t.get_text(): to_rgba(t.get_color()) for t in left.get_xticklabels()}
    assert all(colour[t.get_text()] == to_rgba(t.get_color()) for t in right.get_xticklabels())
    assert len(set(colour.values())) == 8
    tops = [child for child in right.child_axes if child.get_xlabel() == "came from position"]
    assert tops and _ticks(tops[0].get_xticklabels()) == [str(o) for o in ORDER]
    assert "outputs differ by at most 3.2e-07" in fig.get_supxlabel()


def test_permutation_test_accepts_a_tensor_order() -> None:
    weights = _weights()
    order = torch.tensor(ORDER)
    fig = oc.plot_permutation_test(weights, weights[:, order], order, SOURCE, TARGET, 0.0)
    assert "at most 0.0e+00" in fig.get_supxlabel()


def test_permutation_test_refuses_a_figure_that_would_lie() -> None:
    weights = _weights()
    with pytest.raises(ValueError, match=r"weights\[:, order\]"):  # the columns did not move as order says
        oc.plot_permutation_test(weights, weights, ORDER, SOURCE, TARGET, 0.0)
    with pytest.raises(ValueError, match=r"weights\[:, order\]"):
        oc.plot_permutation_test(weights, weights[:, ORDER] + 1e-3, ORDER, SOURCE, TARGET, 0.0)
    oc.plot_permutation_test(weights, weights[:, ORDER] + 1e-7, ORDER, SOURCE, TARGET, 0.0)  # rounding is fine


@pytest.mark.parametrize("change, match", [
    (dict(order=[0, 0, 1, 2, 3, 4, 5, 6]), "permutation of 0..7"),
    (dict(order=[0, 1, 2]), "permutation of 0..7"),
    (dict(order=[0.0] * 8), "ints"),
    (dict(source_tokens=SOURCE[:-1]), "T_k = 8 source tokens"),
    (dict(target_tokens=TARGET + ["."]), "T_q = 6 target tokens"),
    (dict(max_abs_output_diff=-1.0), "finite number >= 0"),
    (dict(max_abs_output_diff=float("nan")), "finite number >= 0"),
    (dict(permuted_weights=torch.zeros(6, 7)), "same shape"),
    (dict(weights=torch.zeros(8)), r"\[T_q, T_k\]"),
])
def test_permutation_test_refuses_inputs_that_do_not_fit(change, match) -> None:
    weights = _weights()
    arguments = dict(weights=weights, permuted_weights=weights[:, ORDER], order=ORDER, source_tokens=SOURCE,
                     target_tokens=TARGET, max_abs_output_diff=1e-7) | change
    with pytest.raises(ValueError, match=match):
        oc.plot_permutation_test(**arguments)


# --- 3. alignment distance and the fixed bias ------------------------------------------------------------------
def _left_and_heads(fig):
    left = next(ax for ax in fig.axes if ax.get_title().startswith("alignment distance"))
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head ")]
    return left, heads


def test_alignment_distance_draws_position_s_numbers_and_the_diagonal() -> None:
    fig = oc.plot_alignment_distance(5, 8)
    left, heads = _left_and_heads(fig)
    np.testing.assert_allclose(left.images[0].get_array(), alignment_distance(5, 8).numpy())
    assert len(left.texts) == 40  # every value written: 5 * 8 <= 80
    assert left.texts[1].get_text() == "1.0" and left.texts[8].get_text() == "−1.6"  # row 1: 0 - 1.6
    low, high = left.images[0].get_clim()
    assert low == -high  # centred at 0
    diagonal = left.lines[0]
    xs, ys = np.asarray(diagonal.get_xdata(), float), np.asarray(diagonal.get_ydata(), float)
    np.testing.assert_allclose(xs, ys * 8 / 5)  # j = i * T_k / T_q
    assert "≠" in left.get_title() and "S = 8" in left.get_title() and "T = 5" in left.get_title()
    assert left.get_xlabel() == SOURCE_TOKEN_LABEL and left.get_ylabel() == WRITTEN_WORD_LABEL
    bias = diagonal_bias(5, 8, alibi_slopes(4)).numpy()
    assert [ax.get_title() for ax in heads] == [f"head {h}: slope {s:.3g}" for h, s in enumerate([1 / 4, 1 / 16,
                                                                                                   1 / 64, 1 / 256])]
    for h, ax in enumerate(heads):
        np.testing.assert_allclose(ax.images[0].get_array(), bias[h])
        assert ax.images[0].get_clim() == heads[0].images[0].get_clim()  # one scale for every head


def test_alignment_distance_takes_given_slopes_and_skips_values_when_large() -> None:
    slopes = torch.tensor([2.0, 0.5, 0.1])
    fig = oc.plot_alignment_distance(12, 9, slopes)
    left, heads = _left_and_heads(fig)
    assert not left.texts  # 108 cells: no values written
    assert "≠" in left.get_title()
    assert len(heads) == 3 and heads[2].get_title() == "head 2: slope 0.1"
    np.testing.assert_allclose(heads[0].images[0].get_array(), diagonal_bias(12, 9, slopes)[0].numpy())
    same = oc.plot_alignment_distance(4, 4)
    assert "S = 4 source positions = T = 4" in _left_and_heads(same)[0].get_title()


@pytest.mark.parametrize("t_q, t_k, slopes, match", [
    (0, 4, None, "positive int"), (4, 2.0, None, "positive int"), (4, 65, None, "at most 64"),
    (4, 4, torch.tensor([1, 2]), "float tensor"), (4, 4, torch.ones(2, 2), "float tensor"),
    (4, 4, [0.5, 0.25], "float tensor"), (4, 4, torch.tensor([0.5, -0.1]), "> 0"),
    (4, 4, torch.tensor([0.5, float("inf")]), "finite"), (4, 4, torch.ones(17), "H <= 16"),
])
def test_alignment_distance_refuses_bad_sizes_and_slopes(t_q, t_k, slopes, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.plot_alignment_distance(t_q, t_k, slopes)


# --- 4. the buckets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_buckets, max_distance, span", [(16, 32, 48), (8, 10, 20), (32, 128, 40), (3, 4, 6)])
def test_buckets_step_plot_draws_relative_position_buckets(n_buckets, max_distance, span) -> None:
    ax = oc.plot_buckets(n_buckets, max_distance, span).axes[0]
    steps = ax.lines[0]
    distance = torch.arange(-span, span + 1)
    assert list(steps.get_xdata()) == distance.tolist()
    assert list(steps.get_ydata()) == relative_position_buckets(distance, n_buckets, max_distance).tolist()
    assert steps.get_drawstyle() == "steps-mid"
    marked = sorted(line.get_xdata()[0] for line in ax.lines[1:] if line.get_linestyle() == "--")
    assert marked == ([-max_distance, max_distance] if max_distance <= span else [])
    texts = "\n".join(t.get_text() for t in ax.texts)
    exact = n_buckets // 2 // 2
    assert (f"per |d| < {exact}" in texts) == (exact > 0)
    assert (f"{exact} ≤ |d| < {max_distance}" in texts) == (max_distance > exact)
    assert (f"−max_distance = −{max_distance}" in texts) == (max_distance <= span)


@pytest.mark.parametrize("sizes, match", [(dict(n_buckets=1), ">= 2"), (dict(span=0), "positive int"),
                                          (dict(max_distance=2.5), "positive int"), (dict(span=5000), "at most")])
def test_buckets_refuse_impossible_sizes(sizes, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.plot_buckets(**sizes)


# --- 5. learning curves ----------------------------------------------------------------------------------------
RECORDS = {"no bias": RunRecord(eval_steps=[50, 100, 150, 200], eval_exact_match=[0.0, 0.2, 0.6, 0.85]),
           "diagonal bias": RunRecord(eval_steps=[50, 100, 150, 200], eval_exact_match=[0.1, 0.7, 0.92, 0.99])}


def test_learning_curves_draw_each_record_and_where_it_reached_the_target() -> None:
    ax = oc.plot_learning_curves(RECORDS, target=0.9, title="respellers").axes[0]
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert list(lines)[:2] == ["no bias: never 90%", "diagonal bias: 90% at step 150"]
    for label, record in zip(lines, RECORDS.values()):
        assert list(lines[label].get_xdata()) == record.eval_steps
        assert list(lines[label].get_ydata()) == record.eval_exact_match
    rings = [line for line in ax.lines if line.get_label().startswith("_") and line.get_marker() == "o"
             and len(line.get_xdata()) == 1]
    reached = RECORDS["diagonal bias"].steps_to(0.9)
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in rings] == [(reached, 0.92)]
    assert any(list(line.get_ydata()) == [0.9, 0.9] for line in ax.lines)  # the target line
    assert ax.get_title() == "respellers"
    plain = oc.plot_learning_curves(RECORDS).axes[0]
    assert [line.get_label() for line in plain.lines] == ["no bias", "diagonal bias"]


@pytest.mark.parametrize("records, target, match", [
    ({}, None, "at least one"),
    ({"a": RunRecord()}, None, "at least one"),
    ({"a": RunRecord(eval_steps=[10, 20], eval_exact_match=[0.5])}, None, "as many"),
    ({"a": RunRecord(eval_steps=[10], eval_exact_match=[50.0])}, None, "0..1"),
    ({"a": RunRecord(eval_steps=[20, 10], eval_exact_match=[0.1, 0.2])}, None, "increasing"),
    ({"a": [0.1, 0.2]}, None, "RunRecord"),
    (RECORDS, 90, "0..1"),
])
def test_learning_curves_refuse_records_that_cannot_be_drawn(records, target, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.plot_learning_curves(records, target=target)


# --- 6. first errors -------------------------------------------------------------------------------------------
FIRST_ERRORS = {"no bias": [3, 12, 12, None, 20, 14], "diagonal bias": [None, None, 19, 25, None, 19]}


def test_first_errors_count_each_position_and_the_outputs_that_are_all_right() -> None:
    fig = oc.plot_first_errors(FIRST_ERRORS, trained_up_to=17)
    ax = fig.axes[0]
    outlines = [patch for patch in ax.patches if patch.get_label() and not patch.get_label().startswith("_")]
    assert [patch.get_label() for patch in outlines] == ["no bias: wrong 5, all right: 1",
                                                         "diagonal bias: wrong 3, all right: 3"]
    for patch, positions in zip(outlines, FIRST_ERRORS.values()):
        values, edges, _ = patch.get_data()
        expected = np.bincount([p for p in positions if p is not None], minlength=26)
        assert list(values) == expected.tolist()
        assert list(edges) == list(np.arange(-0.5, 26))  # one bin per position 0..25
    boundary = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in boundary] == [16.5]  # between trained position 16 and untrained 17
    assert "17 tokens" in "\n".join(t.get_text() for t in ax.texts)
    assert _legend(fig) == [patch.get_label() for patch in outlines]


def test_first_errors_draw_a_variant_that_is_always_right() -> None:
    ax = oc.plot_first_errors({"perfect": [None, None], "other": [2]}, trained_up_to=4).axes[0]
    perfect = next(patch for patch in ax.patches if patch.get_label() == "perfect: wrong 0, all right: 2")
    assert not perfect.get_data().values.any()


@pytest.mark.parametrize("errors, trained, match", [
    ({}, 5, "at least one"), ({"a": []}, 5, "non-empty"), ({"a": [1, -1]}, 5, "ints >= 0"),
    ({"a": [1.5]}, 5, "ints >= 0"), ({"a": [True]}, 5, "ints >= 0"), ({"a": "12"}, 5, "non-empty list"),
    ({"a": [1]}, 0, "positive int"),
])
def test_first_errors_refuse_positions_that_are_not_positions(errors, trained, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.plot_first_errors(errors, trained_up_to=trained)


# --- 7. masks that restrict time -------------------------------------------------------------------------------
def _flamingo_loops(image_of_token: list[int], patches: int, n_images: int) -> torch.Tensor:
    mask = torch.zeros(len(image_of_token), patches * n_images, dtype=torch.bool)
    for i, image in enumerate(image_of_token):
        for j in range(patches * n_images):
            if image >= 0 and image * patches <= j < (image + 1) * patches:
                mask[i, j] = True
    return mask


def _retro_loops(t_q: int, chunk: int, neighbours: int) -> torch.Tensor:
    n_chunks = (t_q + chunk - 1) // chunk
    mask = torch.zeros(t_q, n_chunks * neighbours, dtype=torch.bool)
    for i in range(t_q):
        for j in range(n_chunks * neighbours):
            mask[i, j] = i // chunk >= 1 and j // neighbours == i // chunk - 1
    return mask


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.lists(st.integers(0, 6), min_size=1, max_size=12), st.data())
def test_flamingo_media_mask_equals_loops(n_images, patches, steps, data) -> None:
    """A non-decreasing image index per token (-1 before the first image), built from random increments."""
    start = data.draw(st.integers(-1, n_images - 1))
    image_of_token = [min(start + sum(steps[:i + 1]) // 3, n_images - 1) for i in range(len(steps))]
    mask = oc.flamingo_media_mask(image_of_token, patches, n_images)
    assert mask.dtype == torch.bool and mask.shape == (len(steps), patches * n_images)
    assert torch.equal(mask, _flamingo_loops(image_of_token, patches, n_images))
    assert torch.equal(mask, oc.flamingo_media_mask(torch.tensor(image_of_token), patches, n_images))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(1, 7), st.integers(1, 4))
def test_retro_chunk_mask_equals_loops(t_q, chunk, neighbours) -> None:
    mask = oc.retro_chunk_mask(t_q, chunk, neighbours)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, _retro_loops(t_q, chunk, neighbours))
    assert not mask[:chunk].any()  # the first chunk reads nothing


@pytest.mark.parametrize("images, patches, n_images, match", [
    ([0, 1, 3], 2, 3, r"-1 \.\. n_images - 1"), ([0, -2], 2, 3, r"-1 \.\. n_images - 1"),
    ([1, 0], 2, 3, "never decrease"), ([], 2, 3, "non-empty"), ([0.0, 1.0], 2, 3, "int"),
    ([[0, 1]], 2, 3, "1-D"), ([0], 0, 3, "positive int"), ([0], 2, True, "positive int"),
])
def test_flamingo_media_mask_refuses_impossible_interleavings(images, patches, n_images, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.flamingo_media_mask(images, patches, n_images)


@pytest.mark.parametrize("sizes", [(0, 2, 2), (8, 0, 2), (8, 2, 1.5)])
def test_retro_chunk_mask_refuses_impossible_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="positive int"):
        oc.retro_chunk_mask(*sizes)


def test_time_masks_draw_the_masks_the_helpers_and_position_build() -> None:
    fig = oc.draw_time_masks(8, 10)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    visible = torch.tensor([2, 3, 4, 5, 7, 8, 9, 10])  # min(2 + i * 10 // 8, 10)
    expected = [torch.arange(10)[None, :] < visible[:, None],
                wait_k_mask(8, [10], 3)[0, 0],
                oc.flamingo_media_mask([0, 0, 0, 1, 1, 1, 2, 2], 3, 3),
                oc.retro_chunk_mask(8, 2, 2)]
    for ax, mask in zip(panels, expected):
        assert np.array_equal(ax.images[0].get_array(), mask.numpy())
    titles = [ax.get_title(loc="left") for ax in panels]
    assert all(title.startswith(start) for title, start in zip(titles, ["(a) streaming", "(b) wait-3",
                                                                        "(c) Flamingo", "(d) RETRO"]))
    assert all(len(title.split("\n")) == 2 for title in titles)  # what it is, then what it means
    assert _ticks(panels[0].get_yticklabels())[4] == "4 (7)"  # step 4 has received 7 tokens
    assert _ticks(panels[2].get_xticklabels()) == ["image 1", "image 2", "image 3"]
    assert _ticks(panels[3].get_xticklabels()) == ["N(1)", "N(2)", "N(3)", "N(4)"]
    assert [t.get_text() for t in panels[3].texts] == ["chunk 1", "chunk 2", "chunk 3", "chunk 4"]
    assert panels[0].get_xlabel() == SOURCE_TOKEN_LABEL
    for name, mask in oc.time_mask_examples(5, 7).items():
        assert mask.dtype == torch.bool and mask.shape[0] == 5, name


@pytest.mark.parametrize("t_q, t_k, match", [(0, 10, "positive int"), (8, 2, "at least 3"), (25, 10, "at most 24")])
def test_time_masks_refuse_sizes_they_cannot_draw(t_q, t_k, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.draw_time_masks(t_q, t_k)


# --- 8. wait-k against the lookahead ---------------------------------------------------------------------------
WAIT_RESULTS = {"wait-2": {2: (309, 1.0), 3: (669, 0.03), 4: (511, 0.03), 5: (358, 0.0)},
                "wait-4": {2: (309, 1.0), 3: (669, 0.997), 4: (511, 0.996), 5: (358, 0.07), 6: (127, 0.13)},
                "full source": {6: (127, 0.99), 2: (309, 0.997), 3: (669, 0.996), 4: (511, 1.0), 5: (358, 0.99)}}


def test_wait_k_draws_one_line_per_policy_and_marks_each_k() -> None:
    ax = oc.plot_wait_k(WAIT_RESULTS).axes[0]
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert list(lines) == list(WAIT_RESULTS)
    for label, by_wait in WAIT_RESULTS.items():
        assert list(lines[label].get_xdata()) == sorted(by_wait)
        assert list(lines[label].get_ydata()) == [by_wait[x][1] for x in sorted(by_wait)]
    assert _ticks(ax.get_xticklabels()) == ["2\n309 sent.", "3\n669 sent.", "4\n511 sent.", "5\n358 sent.",
                                            "6\n127 sent."]
    markers = [line for line in ax.lines if line.get_label().startswith("_") and line.get_xdata()[0] ==
               line.get_xdata()[-1]]
    assert sorted(line.get_xdata()[0] for line in markers) == [2, 4]  # wait-2 and wait-4; "full source" has none
    for line in markers:
        k = int(line.get_xdata()[0])
        assert to_rgba(line.get_color())[:3] == to_rgba(lines[f"wait-{k}"].get_color())[:3]
    assert sorted(t.get_text() for t in ax.texts) == ["k = 2", "k = 4"]


@pytest.mark.parametrize("results, match", [
    ({}, "at least one"), ({"wait-2": {}}, "must map"), ({"wait-2": {0: (3, 0.5)}}, "int >= 1"),
    ({"wait-2": {2: (3, 50.0)}}, "0..1"), ({"wait-2": {2: (0, 0.5)}}, "sentences >= 1"),
    ({"wait-2": {2: 0.5}}, "sentences >= 1"),
    ({"wait-2": {2: (3, 0.5)}, "full source": {2: (4, 0.9)}}, "same sentences"),
])
def test_wait_k_refuses_results_that_do_not_fit(results, match) -> None:
    with pytest.raises(ValueError, match=match):
        oc.plot_wait_k(results)


# --- 9. guided alignment ---------------------------------------------------------------------------------------
AER_CONTROL = torch.tensor([[0.62, 0.55, 0.71, 0.68], [0.35, 0.58, 0.66, 0.49]])
AER_GUIDED = torch.tensor([[0.64, 0.57, 0.70, 0.69], [0.06, 0.61, 0.67, 0.52]])


def test_guided_alignment_draws_both_models_per_head_and_marks_the_guided_one() -> None:
    fig = oc.plot_guided_alignment(AER_CONTROL, AER_GUIDED, 0.974, 0.968, (1, 0))
    ax = fig.axes[0]
    control, guided = ax.containers
    assert [bar.get_height() for bar in control] == pytest.approx(AER_CONTROL.flatten().tolist())
    assert [bar.get_height() for bar in guided] == pytest.approx(AER_GUIDED.flatten().tolist())
    labels = ax.get_xticklabels()
    assert labels[4].get_text() == "L1\nH0" and labels[4].get_fontweight() == "bold"
    assert labels[0].get_fontweight() != "bold"
    span = next(patch for patch in ax.patches if patch.get_x() == pytest.approx(3.5))  # the shaded group of head 4
    assert span.get_width() == pytest.approx(1.0)
    assert "control 97.4%, guided 96.8%" in ax.get_title()
    assert _legend(fig) == ["control (no alignment loss)", "alignment loss on layer 1, head 0"]


@pytest.mark.parametrize("change, match", [
    (dict(aer_guided=AER_GUIDED[:, :3]), r"\[L, H\]"), (dict(aer_control=AER_CONTROL.flatten()), r"\[L, H\]"),
    (dict(aer_control=AER_CONTROL * 2), "0..1"), (dict(exact_guided=96.8), "0..1"),
    (dict(guided_head=(2, 0)), "0 <= layer < 2"), (dict(guided_head=(0, 4)), "0 <= head < 4"),
    (dict(guided_head=1), "guided_head"),
])
def test_guided_alignment_refuses_inputs_that_do_not_fit(change, match) -> None:
    arguments = dict(aer_control=AER_CONTROL, aer_guided=AER_GUIDED, exact_control=0.97, exact_guided=0.96,
                     guided_head=(1, 0)) | change
    with pytest.raises(ValueError, match=match):
        oc.plot_guided_alignment(**arguments)
