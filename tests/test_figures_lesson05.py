"""Lesson 05's helpers: its three figures, the reversal experiment and the parameter table."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import course_lib as cl  # noqa: E402
from course_lib import charts, diagrams, measure, reverser  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- positional_encoding_figure ------------------------------------------------------------------------


def test_positional_figure_draws_the_table_and_one_curve_per_feature() -> None:
    table = cl.sinusoidal_positions(50, 16)
    fig = charts.positional_encoding_figure(table, features=(2, 6, 10))
    ax_map, ax_curves = fig.axes[:2]
    np.testing.assert_array_equal(ax_map.images[0].get_array(), table.numpy())
    assert len(ax_curves.lines) == 3
    np.testing.assert_allclose(ax_curves.lines[1].get_ydata(), table[:, 6].numpy())
    wavelength = 2 * math.pi * 10000 ** (6 / 16)
    assert f"wavelength {wavelength:,.0f}" in ax_curves.get_legend().get_texts()[1].get_text()


@pytest.mark.parametrize("features", [(3,), (16,), (-2,)])
def test_positional_figure_rejects_odd_or_missing_features(features) -> None:
    with pytest.raises(ValueError, match="even"):
        charts.positional_encoding_figure(cl.sinusoidal_positions(10, 16), features=features)


def test_positional_figure_rejects_a_table_that_is_not_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        charts.positional_encoding_figure(torch.zeros(2, 10, 16))


# --- training_runs_figure ------------------------------------------------------------------------------


class _Run:
    def __init__(self, steps: int, layers: int, offset: float) -> None:
        self.losses = [3.0 - offset * s / steps for s in range(steps)]
        self.grad_norms = torch.arange(steps * layers, dtype=torch.float32).reshape(steps, layers) + offset


def test_training_runs_figure_plots_losses_and_mean_layer_gradients() -> None:
    runs = {"a": _Run(8, 3, 0.0), "b": _Run(8, 3, 1.0)}
    fig = charts.training_runs_figure(runs, chance=math.log(16), grad_steps=4)
    ax_loss, ax_grad = fig.axes
    np.testing.assert_allclose(ax_loss.lines[1].get_ydata(), runs["b"].losses)
    assert ax_loss.lines[2].get_ydata()[0] == pytest.approx(math.log(16))  # the chance line
    np.testing.assert_allclose(ax_grad.lines[0].get_ydata(), runs["a"].grad_norms[:4].mean(dim=0).numpy())
    assert [t.get_text() for t in ax_grad.get_legend().get_texts()] == ["a", "b"]


def test_training_runs_figure_rejects_no_runs_and_mismatched_gradients() -> None:
    with pytest.raises(ValueError, match="empty"):
        charts.training_runs_figure({})
    run = _Run(8, 3, 0.0)
    run.grad_norms = run.grad_norms[:5]
    with pytest.raises(ValueError, match=r"steps=8"):
        charts.training_runs_figure({"short": run})


# --- decoding_work_figure ------------------------------------------------------------------------------


def test_decoding_work_figure_draws_triangular_decoder_work() -> None:
    fig = diagrams.decoding_work_figure(src_len=6, new_tokens=5)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths[0] == 6  # the encoder, once over the source
    decoder = [w for p, w in zip(ax.patches, widths) if p.get_hatch() is None][1:]
    assert decoder == [1, 2, 3, 4, 5]  # step t processes t positions
    assert sum(p.get_hatch() == "///" for p in ax.patches) == 5  # cached: one position per step
    assert ax.get_xlim()[1] == pytest.approx(6 + 15 + 0.5)


def test_decoding_work_figure_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        diagrams.decoding_work_figure(src_len=0, new_tokens=3)


# --- train_reverser and Reverser -----------------------------------------------------------------------

SMALL = dict(n_layers=1, d_model=16, steps=25, lr=3e-3, length=6, batch_size=16)


def test_reverser_scales_only_the_embeddings() -> None:
    cl.seed_everything(0)
    model = reverser.Reverser(10, 16, 1, embed_scale=3.0).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    by_hand = model.output(model.encoder(model.positions(3.0 * model.embed(ids)))[0])  # [1, 4, V]
    torch.testing.assert_close(model(ids), by_hand)


def test_train_reverser_repeats_and_its_variants_share_the_initial_weights() -> None:
    first, again = reverser.train_reverser(**SMALL, seed=3), reverser.train_reverser(**SMALL, seed=3)
    assert first.losses == again.losses
    assert first.grad_norms.shape == (25, 1) and 0.0 <= first.accuracy <= 1.0
    post = reverser.train_reverser(**SMALL, seed=3, norm_first=False)
    assert post.losses[0] != first.losses[0] or not torch.equal(post.grad_norms[0], first.grad_norms[0])
    assert reverser.train_reverser(**SMALL, seed=4).losses[0] != first.losses[0]


def test_train_reverser_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    reverser.train_reverser(**{**SMALL, "steps": 2}, seed=0)
    torch.testing.assert_close(torch.rand(3), expected)

def test_train_reverser_learns() -> None:
    run = reverser.train_reverser(**{**SMALL, "steps": 60})
    assert sum(run.losses[-5:]) / 5 < run.losses[0] - 0.3


@pytest.mark.parametrize("bad", [dict(steps=0), dict(d_model=18), dict(lr=0.0), dict(embed_scale=-1.0),
                                 dict(n_layers=1.5)])
def test_train_reverser_rejects_bad_settings(bad) -> None:
    with pytest.raises(ValueError):
        reverser.train_reverser(**{**SMALL, **bad})


# --- parameter_table -----------------------------------------------------------------------------------


def test_parameter_table_adds_up_to_the_model() -> None:
    config = cl.TransformerConfig(src_vocab_size=20, tgt_vocab_size=24, d_model=32, n_heads=4, d_ff=64)
    model = cl.Seq2SeqTransformer(config)
    lines = measure.parameter_table(model).splitlines()
    total = sum(p.numel() for p in model.parameters())
    assert lines[-1].split()[-1] == f"{total:,}"
    counted = [int(line.split()[-2].replace(",", "")) for line in lines[:-1] if line.endswith("%")]
    assert sum(counted) == total
    enc, dec = model.encoder.layers[0], model.decoder.layers[0]
    cross = sum(p.numel() for p in dec.cross_attn.parameters())
    assert any(f"cross-attn {cross:,}" in line for line in lines)
    assert any(f"x {sum(p.numel() for p in enc.parameters()):,}" in line for line in lines)


def test_parameter_table_rejects_other_modules() -> None:
    with pytest.raises(ValueError, match="Seq2SeqTransformer"):
        measure.parameter_table(torch.nn.Linear(2, 2))


# --- CallCounter ---------------------------------------------------------------------------------------


def test_call_counter_counts_calls_and_positions_then_stops() -> None:
    config = cl.TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2, d_ff=32)
    model = cl.Seq2SeqTransformer(config).eval()
    src_ids = torch.tensor([[3, 4, 5, 6, 7]])  # [B=1, S=5]
    with torch.no_grad(), measure.CallCounter(encoder=model.encoder, decoder=model.decoder) as calls:
        cl.greedy_decode(model, src_ids, bos_id=1, max_new_tokens=4, cache="encoder")
    assert calls.counts == {"encoder calls": 1, "encoder positions": 5, "decoder calls": 4,
                            "decoder positions": 1 + 2 + 3 + 4}
    with torch.no_grad():
        model.encode(src_ids)
    assert calls.counts["encoder calls"] == 1  # the hooks are gone after the with block


@pytest.mark.parametrize("modules", [{}, {"encoder": "not a module"}])
def test_call_counter_rejects_missing_or_wrong_modules(modules) -> None:
    with pytest.raises(ValueError, match="modules by name"):
        measure.CallCounter(**modules)
