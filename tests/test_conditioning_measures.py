"""Lesson 09's measurements and figures: the cost formula equals a FLOP count and the caches' size, exact match
by length and the first failing length, loss by position, the bench table, and the figures' refusals."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import bench  # noqa: E402
from course_lib import conditioning as cd  # noqa: E402
from course_lib import conditioning_charts as charts  # noqa: E402
from course_lib import toy_language as tl  # noqa: E402
from course_lib.data import ParallelData, build_vocabularies  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy():
    examples = tl.make_splits(0, {"train": 300, "valid": 10, "test": 10, "generalisation": 10})["train"]
    src_vocab, tgt_vocab = build_vocabularies(examples)
    return ParallelData(examples, src_vocab, tgt_vocab), src_vocab, tgt_vocab


@pytest.mark.parametrize("kind", ["cross-attention", "one vector", "decoder-only", "prefix-LM"])
@pytest.mark.parametrize("t", [1, 4, 9])
def test_cost_formula_equals_the_flop_count_and_the_cache_size(kind, t, toy) -> None:
    torch.manual_seed(0)
    model = cd.build_conditioner(kind, toy[1], toy[2]).eval()
    src = toy[0].batch([3]).src_ids  # one unpadded source
    assert cd.predicted_step_cost(model, src.shape[1], t) == cd.measured_step_cost(model, src, t)
    assert all(m.use_sdpa for m in model.modules() if hasattr(m, "use_sdpa")), "the fast path is restored"


def test_decoder_only_cost_grows_with_the_source_in_every_layer(toy) -> None:
    torch.manual_seed(0)
    pair = cd.build_conditioner("cross-attention", toy[1], toy[2])
    only = cd.build_conditioner("decoder-only", toy[1], toy[2])
    # per attending layer both read S + t + 1 keys; the decoder-only model has 4 attending layers, the pair 2
    for s, t in ((5, 1), (20, 7)):
        flops = cd.predicted_step_cost(only, s, t).attention_flops
        assert flops == 2 * cd.predicted_step_cost(pair, s, t).attention_flops
    with pytest.raises(ValueError, match="t >= 1"):
        cd.predicted_step_cost(pair, 5, 0)
    with pytest.raises(ValueError, match="unpadded"):
        cd.measured_step_cost(pair, torch.tensor([[5, 6, 0]]), 2)
    with pytest.raises(ValueError, match="transformer"):
        cd.predicted_step_cost(cd.build_conditioner("GRU", toy[1], toy[2]), 5, 1)


def test_first_length_below_skips_rare_lengths_and_says_none() -> None:
    lengths = torch.tensor([3] * 30 + [4] * 5 + [5] * 30)
    correct = torch.tensor([True] * 30 + [False] * 5 + [True] * 10 + [False] * 20)
    assert cd.first_length_below(lengths, correct) == 5  # length 4 has only 5 sentences
    assert cd.first_length_below(lengths, correct, min_count=5) == 4
    assert cd.first_length_below(lengths, torch.ones(65, dtype=torch.bool)) is None
    with pytest.raises(ValueError, match="one size"):
        cd.first_length_below(lengths, correct[:-1])


def test_exact_match_by_bucket() -> None:
    buckets = cd.exact_match_by_bucket(torch.tensor([3, 4, 7, 7]), torch.tensor([True, False, True, True]),
                                       buckets=((3, 5), (6, 8), (9, 11)))
    assert buckets == {"3-5": 0.5, "6-8": 1.0, "9-11": None}


def test_loss_by_position_is_the_mean_nll_of_the_sentences_reaching_each_position(toy) -> None:
    torch.manual_seed(0)
    model = cd.build_conditioner("one vector", toy[1], toy[2]).eval()
    data = ParallelData(toy[0].examples[:7], toy[1], toy[2])
    loss, count = cd.loss_by_position(model, data, batch_size=3)
    assert count.tolist() == [int((data.tgt_lengths > j).sum()) for j in range(data.tgt_in.shape[1])]
    batch = data.batch(range(7))
    with torch.no_grad():
        nll = -torch.log_softmax(model(batch.src_ids, batch.tgt_in), -1).gather(-1, batch.tgt_out[..., None])[..., 0]
    real = batch.tgt_out != 0
    torch.testing.assert_close(loss[: nll.shape[1]], (nll * real).sum(0) / real.sum(0))


def test_conditioning_table_has_one_row_per_kind_with_ranges() -> None:
    rows = [dict(kind=k, seed=s, parameters=10, steps=100 + s, tokens_per_s=1000.0, exact_match=0.5 + 0.1 * s,
                 buckets={"3-5": 1.0, "6-8": None if s else 0.5}) for k in ("one vector", "GRU") for s in (0, 1)]
    table = bench.format_conditioning_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| one vector | 10 | 100 (100–101)")
    assert "55 (50–60)" in lines[2] and "| 50 |" in lines[2]  # the bucket of one seed has no range


def test_three_ways_figure_draws_one_panel_per_design() -> None:
    fig = charts.three_ways_figure(src_len=4, tgt_len=3)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert {"1 · one vector", "2 · cross-attention", "3 · decoder-only"} <= set(texts)
    assert any("[B, H, T, 1]" in t for t in texts) and any("[B, H, T, S]" in t for t in texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="src_len"):
        charts.three_ways_figure(src_len=1)


def test_hidden_cross_attention_figure_outlines_the_block_and_refuses_wrong_shapes() -> None:
    full = torch.softmax(torch.randn(7, 7), -1)  # 3 source, <sep>, 3 target
    block, pair = torch.rand(3, 3), torch.rand(3, 3)
    fig = charts.hidden_cross_attention_figure(full, 3, ["a", "b", "c"], ["x", "y", "z"], block, pair, [(0, 0)])
    outline = [p for p in fig.axes[0].patches if p.get_width() == 3 and p.get_height() == 3]
    assert len(outline) == 1 and outline[0].get_xy() == (0, 3)
    assert fig.axes[1].get_ylabel() == "word being written"
    plt.close(fig)
    with pytest.raises(ValueError, match="block must be"):
        charts.hidden_cross_attention_figure(full, 3, ["a", "b", "c"], ["x", "y", "z"], block[:2], pair, [])


def test_loss_and_sentence_figures_refuse_mismatched_inputs() -> None:
    ax = charts.loss_by_position_figure({"m": (torch.tensor([1.0, 0.5, 0.2]), torch.tensor([30, 30, 2]))})
    assert len(ax.lines) == 1 and list(ax.lines[0].get_xdata()) == [1, 2]
    plt.close("all")
    with pytest.raises(ValueError, match="one size"):
        charts.loss_by_position_figure({"m": (torch.ones(3), torch.ones(2))})
    fig = charts.sentence_view_figure(torch.rand(2, 3), ["a", "b", "c"], ["x", "y"], [(0, 0)],
                                      {"m": torch.tensor([0.2, 0.9])})
    assert len(fig.axes[1].patches) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match=r"\[T\]"):
        charts.sentence_view_figure(torch.rand(2, 3), ["a", "b", "c"], ["x", "y"], [], {"m": torch.ones(3)})
