"""Lesson 11's figures: the fusion, Flamingo and latent diagrams carry the shapes their arguments give, the gallery
colours right and wrong answers, and every chart draws the numbers it is given (and refuses what does not fit)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from course_lib import fusion_charts as fc  # noqa: E402
from course_lib import questions, scenes  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _joined(fig) -> str:
    return "\n".join(_texts(fig))


def test_the_fusion_diagrams_write_the_shapes_of_their_arguments() -> None:
    texts = _texts(fc.fusion_diagrams())
    assert {"[B, 36, 96]", "[B, 36, 64]", "[B, 7, 64]", "[B, 36+7, 64]", "[B, 36+7+3, 64]"} <= set(texts)
    assert {"cross-attn: image", "cross-attn: question", "a · concatenation"} <= set(texts)
    small = _texts(fc.fusion_diagrams(n_patches=16, question_len=5, d_image=48, d_model=32))
    assert {"[B, 16, 48]", "[B, 16+5, 32]", "[B, 5, 32]"} <= set(small)
    assert "[B, 36, 96]" not in small


@pytest.mark.parametrize("sizes", [{"n_patches": 0}, {"d_model": 2.5}, {"answer_len": 1}])
def test_the_fusion_diagrams_refuse_impossible_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="must be"):
        fc.fusion_diagrams(**sizes)


def test_the_flamingo_diagram_has_a_gated_block_before_each_frozen_layer() -> None:
    fig = fc.flamingo_diagram(n_layers=2)
    texts, joined = _texts(fig), _joined(fig)
    assert texts.count("gated cross-attention") == 2
    assert {"LM layer 1 (frozen)", "LM layer 2 (frozen)"} <= set(texts) and "LM layer 3 (frozen)" not in texts
    assert "× tanh(α_attn)" in texts and "× tanh(α_ffn)" in texts
    assert "x ← x + tanh(α_attn) · attn(norm(x), image)" in texts and "tanh(0) = 0" in joined
    assert joined.count("[B, 36, 96]") >= 2  # the image reaches the stack and the zoomed block
    with pytest.raises(ValueError, match="at most 4"):
        fc.flamingo_diagram(n_layers=5)


def test_the_latent_diagram_draws_an_m_by_n_grid_and_states_the_cost() -> None:
    fig = fc.latent_diagram(8, 36)
    assert fig.axes[0].images[0].get_array().shape == (8, 36)
    joined = _joined(fig)
    assert "M·N = 8·36 = 288 scores" in joined and "instead of N·N = 1,296" in joined
    assert "[B, 8+7, 64]" in joined
    with pytest.raises(ValueError, match="n_latents"):
        fc.latent_diagram(0, 36)


def _valid_scenes():
    valid = scenes.make_splits(0, {"train": 0, "valid": 8, "test": 0, "generalisation": 0})["valid"]
    asked = questions.ask(valid.scenes, np.random.default_rng(0))
    return valid.images, [" ".join(q.words) for q in asked], [" ".join(q.answer) for q in asked]


def test_the_gallery_titles_each_scene_and_colours_right_and_wrong_predictions() -> None:
    images, asked, gold = _valid_scenes()
    predictions = [g if i % 2 else "nine" for i, g in enumerate(gold)]
    fig = fc.qa_gallery(torch.from_numpy(images), asked, gold, predictions, columns=3)
    assert len(fig.axes) == 9  # 3 x 3 grid, the last one empty
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 8
    for i, ax in enumerate(titled):
        title = ax.get_title()
        assert title.replace("\n", " ").startswith(asked[i]) and f"gold: {gold[i]}" in title
        right = i % 2 == 1
        assert ax.title.get_color() == (fc.RIGHT_COLOR if right else fc.WRONG_COLOR)
        assert title.endswith("✓" if right else "✗")
    plain = fc.qa_gallery(images, asked, gold)  # numpy images work too; without predictions, black titles
    assert {to_rgb(ax.title.get_color()) for ax in plain.axes if ax.get_title()} == {(0.0, 0.0, 0.0)}


def test_the_gallery_refuses_lists_that_do_not_match_the_images() -> None:
    images, asked, gold = _valid_scenes()
    with pytest.raises(ValueError, match="K questions"):
        fc.qa_gallery(images, asked[:-1], gold)
    with pytest.raises(ValueError, match="one prediction per image"):
        fc.qa_gallery(images, asked, gold, gold[:3])
    with pytest.raises(ValueError, match=r"\[K, 3, H, W\]"):
        fc.qa_gallery(images[0], asked[:1], gold[:1])


RESULTS = {"concatenation": {"both sources": 0.9, "no image": 0.3, "no question": 0.125},
           "prefix": {"both sources": 0.8, "no image": 0.25, "no question": 0.1}}


def test_missing_source_bars_have_the_given_heights_and_a_chance_line() -> None:
    fig = fc.missing_source_figure(RESULTS, chance=0.11)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted(v for row in RESULTS.values() for v in row.values())
    assert {"90%", "12%", "25%"} <= {t.get_text() for t in ax.texts}  # bar labels, in percent
    assert [t.get_text() for t in ax.get_xticklabels()] == ["concatenation", "prefix"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["chance (11%)", "both sources", "no image", "no question"]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.11)


def test_missing_source_refuses_uneven_conditions_and_values_outside_0_1() -> None:
    with pytest.raises(ValueError, match="conditions"):
        fc.missing_source_figure({"a": {"both sources": 0.5}, "b": {"no image": 0.5}})
    with pytest.raises(ValueError, match="0..1"):
        fc.missing_source_figure({"a": {"both sources": 87.0}})
    with pytest.raises(ValueError, match="at least one model"):
        fc.missing_source_figure({})


def test_source_shares_stack_image_then_question_per_layer_with_the_notes() -> None:
    shares = {"concatenation": torch.tensor([[0.6, 0.4], [0.75, 0.25]]),
              "separate": torch.tensor([[0.3, 0.7], [0.5, 0.5]])}
    fig = fc.source_share_figure(shares, notes={"concatenation": "attention weight"})
    assert len(fig.axes) == 2
    for ax, array in zip(fig.axes, shares.values()):
        bars = ax.patches
        assert [b.get_width() for b in bars[:2]] == pytest.approx(array[:, 0].tolist())  # image shares
        assert [b.get_x() for b in bars[2:]] == pytest.approx(array[:, 0].tolist())  # question starts there
        assert [b.get_width() for b in bars[2:]] == pytest.approx(array[:, 1].tolist())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["layer 1", "layer 2"]
    notes = [[t.get_text() for t in ax.texts if t.get_text()] for ax in fig.axes]
    assert "attention weight" in notes[0] and any("update size" in n for n in notes[1])
    assert any("not of attention" in t.get_text() for t in fig.texts)  # the caption under the panels


def test_source_shares_refuse_rows_that_do_not_sum_to_one_or_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        fc.source_share_figure({"a": torch.tensor([[0.5, 0.6]])})
    with pytest.raises(ValueError, match=r"\[layers, 2\]"):
        fc.source_share_figure({"a": torch.ones(2, 3) / 3})


def test_gate_curves_draw_a_solid_and_a_dashed_line_per_block() -> None:
    steps = [0, 25, 50]
    gates = [[(0.0, 0.0), (0.0, 0.0)], [(0.2, -0.1), (0.1, 0.05)], [(0.5, -0.2), (0.3, 0.1)]]
    ax = fc.gate_curves(steps, gates).axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) == len(steps)]
    assert len(curves) == 4
    assert [line.get_linestyle() for line in curves] == ["-", "--", "-", "--"]
    assert curves[0].get_color() == curves[1].get_color() != curves[2].get_color()
    assert list(curves[2].get_ydata()) == pytest.approx([0.0, 0.1, 0.3])  # block 2's attention gate
    assert ax.get_ylim() == pytest.approx((-1.05, 1.05))
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the closed-gate line


def test_gate_curves_refuse_gates_that_do_not_match_the_steps() -> None:
    with pytest.raises(ValueError, match="len\\(steps\\)"):
        fc.gate_curves([0, 25], [[(0.0, 0.0)]])
    with pytest.raises(ValueError, match="len\\(steps\\)"):
        fc.gate_curves([0, 25], [[(0.0, 0.0)], [(0.1, 0.0), (0.2, 0.0)]])  # a block appears halfway
    with pytest.raises(ValueError, match="-1..1"):
        fc.gate_curves([0], [[(1.5, 0.0)]])


def test_latent_sweep_has_the_reference_line_and_a_slope_one_guide() -> None:
    m, flops = [1, 4, 16, 64], [1000, 2500, 8500, 32500]
    fig = fc.latent_sweep_figure(m, [0.3, 0.6, 0.85, 0.9], flops, reference_exact_match=0.92)
    left, right = fig.axes
    reference = [line for line in left.lines if line.get_label() == "all 36 patches"]
    assert reference and reference[0].get_ydata()[0] == pytest.approx(0.92)
    guide = next(line for line in right.lines if line.get_label() == "∝ M·N (slope 1)")
    assert list(guide.get_ydata()) == pytest.approx([1000, 4000, 16000, 64000])
    assert left.get_xscale() == right.get_xscale() == right.get_yscale() == "log"
    with pytest.raises(ValueError, match="one exact match per M"):
        fc.latent_sweep_figure(m, [0.3, 0.6], flops)
    with pytest.raises(ValueError, match="flops"):
        fc.latent_sweep_figure(m, [0.3, 0.6, 0.85, 0.9], [1000, 0, 8500, 32500])


def test_cost_scaling_prints_the_fitted_slopes_in_the_legends() -> None:
    mn = np.array([64, 256, 1024, 4096, 16384])
    fig = fc.cost_scaling_figure(mn.tolist(), (3e-7 * mn**0.5).tolist(), (40 * mn).tolist())
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert legends[0][0].endswith("fitted slope 0.50") and legends[1][0].endswith("fitted slope 1.00")
    assert all("slope 1 (∝ M·N)" in legend for legend in legends)
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in fig.axes)
    with pytest.raises(ValueError, match="seconds"):
        fc.cost_scaling_figure([1, 2, 3], [0.1, 0.2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        fc.cost_scaling_figure([4], [0.1], [10])
