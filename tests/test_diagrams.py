"""The course's pictures: every shape written in a diagram comes from its arguments, text stays readable and
apart, bad sizes raise, no figure is left open; the stored payoff data is well formed; the per-head grid
shares one colour bar and hatches masked columns in every panel."""
from __future__ import annotations

import itertools
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import is_color_like
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

import course_lib as cl
from course_lib import alignment_plots, attention_diagrams, diagrams, payoff_data, plotting
from course_lib.data import build_vocabularies
from course_lib.toy_language import Example, make_splits
from course_lib.translator import Translator

LESSON_03 = dict(batch=2, t_tgt=5, t_src=7, d_model=24, n_heads=4,
                 tgt_tokens=["le", "chat", "noir", "dort", "<eos>"],
                 src_tokens=["the", "black", "cat", "is", "sleeping", "<eos>", "<pad>"])
LESSON_05 = dict(batch=2, src_len=6, tgt_len=5, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2,
                 src_vocab=20, tgt_vocab=24)
LESSON_06 = dict(batch=2, n_heads=4, src_len=7, d_head=16)


@pytest.fixture(autouse=True)
def no_figure_left_open():
    """Each test closes the one figure a function returns; a second, leaked figure would fail here."""
    plt.close("all")
    yield
    leaked = plt.get_fignums()
    plt.close("all")
    assert leaked == [], f"figures left open: {leaked}"


def texts_of(fig: Figure) -> list[str]:
    """Every non-empty text in ``fig`` (titles, tick labels, annotations); closes the figure."""
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
    plt.close(fig)
    return texts


def check_layout(fig: Figure) -> None:
    """Notebook width, labels of at least 8 pt, and no two texts overlapping."""
    width = fig.get_size_inches()[0]
    assert 8.0 <= width <= 10.0, f"figure is {width} inches wide"
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
    assert min(t.get_fontsize() for t in texts) >= 8
    boxes = [(t, t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in texts]
    overlaps = [(a.get_text(), b.get_text()) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
                if box_a.overlaps(box_b) and not (a.get_rotation() and b.get_rotation())]  # (slanted labels in a
    assert overlaps == []  # row have overlapping bounding boxes, not overlapping letters)


# --- lesson 03: cross_attention_flow ------------------------------------------------------------------------
def test_cross_attention_flow_writes_the_lessons_shapes_and_tokens() -> None:
    fig = attention_diagrams.cross_attention_flow(**LESSON_03)
    assert isinstance(fig, Figure)
    check_layout(fig)
    texts = texts_of(fig)
    for expected in ["decoder states", "encoder output", "Q", "K", "V", "attention weights", "output",
                     "[2, 5, 24]", "[2, 4, 5, 6]", "[2, 7, 24]", "[2, 4, 7, 6]", "[2, 4, 5, 7]", "5 rows",
                     "7 columns", *LESSON_03["tgt_tokens"], *LESSON_03["src_tokens"]]:
        assert expected in texts, expected
    assert any("residual stream" in t for t in texts)


def test_cross_attention_flow_shapes_follow_the_arguments() -> None:
    texts = texts_of(attention_diagrams.cross_attention_flow(batch=3, t_tgt=4, t_src=9, d_model=32, n_heads=2,
                                                             d_source=10))
    for expected in ["[3, 4, 32]", "[3, 2, 4, 16]", "[3, 9, 10]", "[3, 2, 9, 16]", "[3, 2, 4, 9]"]:
        assert expected in texts, expected
    assert "[2, 5, 24]" not in texts and "[2, 4, 5, 7]" not in texts


def test_cross_attention_flow_stays_readable_with_long_sequences() -> None:
    check_layout(attention_diagrams.cross_attention_flow(batch=8, t_tgt=12, t_src=30, d_model=512, n_heads=8,
                                                         d_source=768))
    plt.close("all")


@pytest.mark.parametrize("change, message", [
    (dict(batch=0), "batch must be a positive int; got 0"),
    (dict(t_src=True), "t_src must be a positive int; got True"),
    (dict(n_heads=5), "divisible by n_heads; got d_model=24, n_heads=5"),
    (dict(d_source=-3), "d_source must be a positive int"),
    (dict(tgt_tokens=["le", "chat"]), "tgt_tokens must have t_tgt = 5 tokens; got 2"),
    (dict(src_tokens=["the"] * 8), "src_tokens must have t_src = 7 tokens; got 8"),
])
def test_cross_attention_flow_rejects_impossible_sizes(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        attention_diagrams.cross_attention_flow(**{**LESSON_03, **change})


# --- lesson 05: encoder_decoder, norm_placement ------------------------------------------------------------
def test_encoder_decoder_feeds_memory_into_every_decoder_layer() -> None:
    fig = diagrams.encoder_decoder(**LESSON_05)
    check_layout(fig)
    texts = texts_of(fig)
    for expected in ["source ids", "memory", "masked self-attention", "cross-attention", "feed-forward",
                     "encoder layer × 2", "layer 1", "layer 2", "[2, 6]", "[2, 5]", "[2, 6, 32]", "[2, 5, 32]",
                     "[2, 5, 24]"]:
        assert expected in texts, expected
    assert texts.count("memory: K, V") == 2  # one arrow per decoder layer
    assert texts.count("cross-attention") == 2


@pytest.mark.parametrize("n_layers", [1, 3])
def test_encoder_decoder_draws_each_of_up_to_three_decoder_layers(n_layers: int) -> None:
    texts = texts_of(diagrams.encoder_decoder(**{**LESSON_05, "n_decoder_layers": n_layers, "tgt_vocab": None}))
    assert texts.count("memory: K, V") == n_layers
    assert [t for t in texts if t.startswith("layer ")] == [f"layer {i}" for i in range(1, n_layers + 1)]
    assert "[2, 5, V]" in texts  # no vocabulary size given: the logits' last axis is named


def test_encoder_decoder_with_many_layers_still_sends_memory_to_each() -> None:
    fig = diagrams.encoder_decoder(**{**LESSON_05, "n_encoder_layers": 6, "n_decoder_layers": 6})
    check_layout(fig)
    texts = texts_of(fig)
    assert texts.count("memory: K, V") == 2 and "memory × 4" in texts  # layers 1 and 6, and the 4 between
    assert "layers 2 to 5, the same" in texts and "encoder layer × 6" in texts


@pytest.mark.parametrize("change, message", [
    (dict(n_decoder_layers=0), "n_decoder_layers must be a positive int; got 0"),
    (dict(d_model=30), "divisible by n_heads"),
    (dict(tgt_vocab=0), "tgt_vocab must be a positive int"),
    (dict(src_len=2.5), "src_len must be a positive int; got 2.5"),
])
def test_encoder_decoder_rejects_impossible_sizes(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diagrams.encoder_decoder(**{**LESSON_05, **change})


def test_norm_placement_shows_both_orders() -> None:
    fig = diagrams.norm_placement()
    check_layout(fig)
    texts = texts_of(fig)
    assert "LayerNorm(x + sublayer(x))" in texts and "x + sublayer(LayerNorm(x))" in texts
    assert texts.count("LayerNorm") == 2 and texts.count("sublayer") == 2


# --- lesson 06: decoder_cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 4, 6])
def test_decoder_cache_grows_the_self_cache_and_keeps_the_cross_kv(steps: int) -> None:
    fig = diagrams.decoder_cache(**LESSON_06, steps=steps)
    check_layout(fig)
    texts = texts_of(fig)
    assert "self-attention K/V cache" in texts and "cross-attention K/V" in texts
    for t in range(1, steps + 1):
        assert f"step t = {t}" in texts and f"[2, 4, {t}, 16]" in texts
    assert steps + 1 == LESSON_06["src_len"] or f"[2, 4, {steps + 1}, 16]" not in texts
    assert texts.count("[2, 4, 7, 16]") == steps  # the cross-attention K/V: the same at every step


def test_decoder_cache_highlights_one_new_column_per_step() -> None:
    fig = diagrams.decoder_cache(**LESSON_06, steps=3)
    cache = plotting.COLORS["cache"]
    strong = [p for p in fig.findobj(Rectangle) if p.get_facecolor()[:3] == pytest.approx(plt.matplotlib.colors
                                                                                        .to_rgb(cache))]
    plt.close(fig)
    assert len(strong) == 2 * 3  # K and V of the new position, in each of the 3 steps


@pytest.mark.parametrize("change, message", [
    (dict(steps=7), "steps must be at most 6"), (dict(steps=0), "steps must be a positive int"),
    (dict(d_head=0), "d_head must be a positive int"), (dict(src_len=None), "src_len must be a positive int"),
])
def test_decoder_cache_rejects_impossible_sizes(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diagrams.decoder_cache(**{**LESSON_06, **change})


# --- lesson 00: payoff -------------------------------------------------------------------------------------
def test_payoff_data_is_stored_small_and_well_formed() -> None:
    path = payoff_data.payoff_path()
    assert path.stat().st_size < 8_000
    data = payoff_data.load_payoff_data()
    assert data["command"] == "python -m course_lib.diagrams payoff-data" and data["model"]["steps"] > 0
    assert 1 <= len(data["sentences"]) <= 2
    for sentence in data["sentences"]:
        weights = np.asarray(sentence["weights"])
        assert weights.shape == (len(sentence["target"]), len(sentence["source"]))
        assert ((weights >= 0) & (weights <= 1)).all()
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=0.01)  # each row: a softmax, rounded
        assert np.round(weights, 3).tolist() == weights.tolist()  # stored with 3 decimals
        links = [tuple(link) for link in sentence["alignment"]]
        assert all(0 <= s < len(sentence["source"]) and 0 <= t < len(sentence["target"]) for s, t in links)
        assert sorted(t for _, t in links) == list(range(len(sentence["target"])))  # one gold link per target word
        hits = sum(weights[t].argmax() == s for s, t in links)
        assert hits >= 2 * len(links) / 3, "the stored attention no longer shows an alignment"


def test_payoff_shows_the_stored_sentences_under_a_definition() -> None:
    data = payoff_data.load_payoff_data()
    fig = diagrams.payoff()
    colour_bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(colour_bars) == 1
    assert fig.get_size_inches()[0] <= 10
    texts = texts_of(fig)
    assert payoff_data.DEFINITION in texts and "Cross-attention" in payoff_data.DEFINITION
    for sentence in data["sentences"]:
        assert set(sentence["source"]) | set(sentence["target"]) <= set(texts)
    assert texts.count(plotting.WRITTEN_WORD_LABEL) == len(data["sentences"])


def test_payoff_data_comes_from_the_last_layers_head_mean(tmp_path) -> None:
    """The generator's pieces on a small untrained model: rows of the head mean sum to 1, one per target word."""
    examples = make_splits(0, {"train": 200, "valid": 0, "test": 0, "generalisation": 0})["train"]
    src_vocab, tgt_vocab = build_vocabularies(examples)
    torch.manual_seed(0)
    config = cl.TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=16, n_heads=2, n_encoder_layers=1,
                                  n_decoder_layers=2, d_ff=32, pad_id=src_vocab.pad_id)
    translator = Translator(cl.Seq2SeqTransformer(config).eval(), src_vocab, tgt_vocab)
    weights = payoff_data._last_layer_mean(translator, examples[0])
    assert weights.shape == (len(examples[0].target), len(examples[0].source))
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(len(examples[0].target)))
    assert payoff_data.choose_sentences(translator, examples[:20]) == []  # an untrained model translates nothing


def test_reordering_is_detected_from_the_alignment() -> None:
    straight = Example(("a", "b"), ("A", "B"), ((0, 0), (1, 1)))
    swapped = Example(("a", "b"), ("B", "A"), ((1, 0), (0, 1)))
    assert not payoff_data._reorders(straight) and payoff_data._reorders(swapped)


def test_the_command_line_names_its_one_command() -> None:
    with pytest.raises(SystemExit, match="payoff-data"):
        diagrams.main(["something-else"])


def test_stored_payoff_json_is_plain_json() -> None:
    json.loads(payoff_data.payoff_path().read_text())  # raises if a hand edit broke it


# --- shared colours and the per-head grid ------------------------------------------------------------------
def test_colors_name_every_role_once() -> None:
    assert set(plotting.COLORS) == {"decoder", "encoder", "weights", "cache", "residual", "norm"}
    assert all(is_color_like(c) for c in plotting.COLORS.values())
    assert len(set(plotting.COLORS.values())) == len(plotting.COLORS)


def _hatched(ax) -> list[tuple[float, float]]:
    return [p.get_xy() for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]


def test_attention_grid_shares_one_colour_bar_and_hatches_masked_columns_in_every_panel() -> None:
    weights = torch.softmax(torch.randn(8, 5, 7), dim=-1)  # [H, T_q, T_k]
    padded = torch.tensor([False] * 5 + [True] * 2)  # [T_k]: the last two keys are padding
    fig = plotting.attention_grid(weights, list("abcde"), list("ABCDEFG"), masked=padded,
                                  xlabel=plotting.SOURCE_TOKEN_LABEL, ylabel=plotting.WRITTEN_WORD_LABEL)
    assert fig.get_size_inches()[0] <= 10
    colour_bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    panels = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    assert len(colour_bars) == 1 and len(panels) == 8
    for ax in panels:
        assert sorted(_hatched(ax)) == sorted((col, row) for row in range(5) for col in (5, 6))
        assert all(label.get_fontsize() >= 8 for label in ax.get_xticklabels() + ax.get_yticklabels())
    assert [t.get_text() for t in panels[0].get_yticklabels()] == list("abcde")  # only the outer panels' labels
    assert not panels[5].yaxis.get_tick_params()["labelleft"]  # an inner panel: its rows are labelled at the left
    assert [ax.get_ylabel() for ax in panels] == [plotting.WRITTEN_WORD_LABEL, "", "", ""] * 2
    assert [ax.get_xlabel() for ax in panels] == [""] * 4 + [plotting.SOURCE_TOKEN_LABEL] * 4
    plt.close(fig)


def test_attention_grid_accepts_a_full_mask_and_keeps_the_lesson_03_call_working() -> None:
    weights = torch.softmax(torch.randn(5, 5, 7), dim=-1)
    causal = torch.ones(5, 7, dtype=torch.bool).triu(1)  # [T_q, T_k]
    fig = plotting.attention_grid(weights, list("abcde"), list("ABCDEFG"), titles=[f"p{i}" for i in range(5)],
                                  n_cols=3, panel_size=2.9, suptitle="five panels", masked=causal)
    assert fig.axes[5].axison is False  # the unused sixth panel, where lesson 03 draws its own colour bar
    assert len(_hatched(fig.axes[0])) == int(causal.sum())
    assert fig.axes[0].get_xlabel() == "" and fig.axes[3].get_xlabel() == "keys (attended to)"
    plt.close(fig)


@pytest.mark.parametrize("kwargs, message", [
    (dict(masked=torch.zeros(6, dtype=torch.bool)), r"masked must be \[T_q, T_k\] = \[5, 7\] or \[T_k\] = \[7\]"),
    (dict(titles=["only one"]), "1 titles for 3 panels"),
    (dict(n_cols=0), "n_cols must be >= 1"),
])
def test_attention_grid_rejects_what_does_not_fit(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plotting.attention_grid(torch.rand(3, 5, 7), **kwargs)


def test_attention_with_alignment_labels_rows_by_the_word_being_written() -> None:
    ax = alignment_plots.attention_with_alignment(np.full((2, 3), 1 / 3), ["a", "b", "c"], ["x", "y"], [(0, 0), (2, 1)])
    assert (ax.get_ylabel(), ax.get_xlabel()) == (plotting.WRITTEN_WORD_LABEL, plotting.SOURCE_TOKEN_LABEL)
    plt.close(ax.figure)
