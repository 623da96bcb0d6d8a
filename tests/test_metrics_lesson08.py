"""metrics.attention_entropy and metrics.ablated_heads (lesson 08): values pinned against PyTorch's
Categorical entropy and against attention computed with one head's context removed by hand; lesson 07's
first_error and score (on test_head_analysis's small model and split). The split-wide head measures are
tested in test_head_analysis.py."""
from __future__ import annotations

import math

import pytest
import test_head_analysis
import torch
from hypothesis import given
from hypothesis import strategies as st

import course_lib as cl
from course_lib import metrics

pytestmark = pytest.mark.usefixtures("single_thread")
toy = test_head_analysis.toy  # the module-scoped fixture: a small random model and a split


def _softmax_rows(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entropy_matches_pytorchs_categorical(dtype) -> None:
    weights = _softmax_rows(2, 4, 3, 7, dtype=dtype)  # [B, H, T_q, S]
    expected = torch.distributions.Categorical(probs=weights).entropy()  # [B, H, T_q]
    torch.testing.assert_close(metrics.attention_entropy(weights), expected)


def test_entropy_is_zero_on_one_key_and_ln_n_when_even() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(metrics.attention_entropy(weights), torch.tensor([0.0, math.log(4), math.log(2)]))


def test_padded_keys_count_only_in_the_normalisation() -> None:
    weights = torch.tensor([[[[0.5, 0.5, 0.0, 0.0]]], [[[0.25, 0.25, 0.25, 0.25]]]])  # [B=2, H=1, T=1, S=4]
    key_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])[:, None, None, :]  # [B,1,1,S]
    raw = metrics.attention_entropy(weights, key_mask)
    torch.testing.assert_close(raw, torch.tensor([[[math.log(2)]], [[math.log(4)]]]))
    torch.testing.assert_close(metrics.attention_entropy(weights, key_mask, normalise=True), torch.ones(2, 1, 1))
    # without the mask, the first row counts its two padded keys: ln 2 / ln 4
    torch.testing.assert_close(metrics.attention_entropy(weights, normalise=True), torch.tensor([[[0.5]], [[1.0]]]))


def test_rows_with_fewer_than_two_keys_get_zero_not_nan() -> None:
    weights = torch.tensor([[[[1.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0]]]])  # one key; no key (fully masked)
    key_mask = torch.tensor([[True, False, False], [False, False, False]])[:, None, None, :]
    out = metrics.attention_entropy(weights, key_mask, normalise=True)
    assert out.tolist() == [[[0.0]], [[0.0]]]
    assert metrics.attention_entropy(weights).tolist() == [[[0.0]], [[0.0]]]


@given(st.integers(2, 6), st.integers(0, 4), st.integers(0, 10_000))
def test_padding_does_not_change_the_normalised_entropy(n_real: int, n_pad: int, seed: int) -> None:
    weights = _softmax_rows(3, n_real, seed=seed)  # [T_q, n_real]
    padded = torch.cat([weights, torch.zeros(3, n_pad)], dim=-1)  # [T_q, n_real + n_pad]
    key_mask = torch.arange(n_real + n_pad) < n_real  # [S]
    expected = metrics.attention_entropy(weights, normalise=True)
    torch.testing.assert_close(metrics.attention_entropy(padded, key_mask, normalise=True), expected)
    assert bool(((expected >= -1e-6) & (expected <= 1 + 1e-6)).all())


@pytest.mark.parametrize("weights, key_mask, phrase", [
    ([[0.5, 0.5]], None, "torch.Tensor"),
    (torch.ones(3, dtype=torch.float32), None, "[..., T_q, S]"),
    (torch.ones(2, 3, dtype=torch.long), None, "float tensor"),
    (torch.full((2, 3), 1 / 3), torch.ones(3), "bool"),
    (torch.full((2, 3), 1 / 3), torch.ones(4, dtype=torch.bool), "must broadcast"),
])
def test_entropy_rejects_bad_inputs(weights, key_mask, phrase) -> None:
    with pytest.raises(ValueError, match=phrase.replace("[", r"\[").replace(".", r"\.")):
        metrics.attention_entropy(weights, key_mask, normalise=True)


# --- ablated_heads -----------------------------------------------------------------------------------------
def _model(seed: int = 0) -> cl.Seq2SeqTransformer:
    torch.manual_seed(seed)
    config = cl.TransformerConfig(20, 20, d_model=16, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=32)
    return cl.Seq2SeqTransformer(config).eval()


SRC = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])  # [B, S], the second padded
TGT = torch.tensor([[1, 4, 5, 6], [1, 7, 8, 9]])  # [B, T]


def test_ablating_nothing_changes_nothing() -> None:
    model = _model()
    with torch.no_grad():
        before = model(SRC, TGT)
        with metrics.ablated_heads(model, []) as same:
            assert same is model
            torch.testing.assert_close(model(SRC, TGT), before, rtol=0, atol=0)


@pytest.mark.parametrize("layer, head", [(0, 0), (1, 2), (1, 3)])
def test_silenced_head_equals_attention_without_its_context(layer: int, head: int) -> None:
    """Inside the block, the layer's cross-attention output is out_proj(merged context with the head's
    part set to zero), computed here by hand from the module's own projections."""
    model = _model(1)
    attn = model.decoder.layers[layer].cross_attn
    x, memory = torch.randn(2, 4, 16), torch.randn(2, 5, 16)  # decoder states, encoder output
    mask = model.source_mask(SRC)  # [B, 1, 1, S]
    with torch.no_grad():
        q = attn.split_heads(attn.q_proj(x))  # [B, H, T, d_head]
        k, v = attn.project_source(memory)  # [B, H, S, d_head] each
        context, _ = cl.scaled_dot_product_attention(q, k, v, mask)  # [B, H, T, d_head]
        context[:, head] = 0.0
        expected = attn.out_proj(attn.merge_heads(context))  # [B, T, d_model]
        with metrics.ablated_heads(model, [(layer, head)]):
            silenced, _ = attn(x, memory, mask=mask)
        restored, _ = attn(x, memory, mask=mask)
    torch.testing.assert_close(silenced, expected)
    assert not torch.allclose(restored, expected)


def test_silencing_changes_the_model_only_inside_the_block_and_after_an_error() -> None:
    model = _model(2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(SRC, TGT)
        with metrics.ablated_heads(model, [(0, 1), (1, 0)]):
            assert not torch.allclose(model(SRC, TGT), before)
        with pytest.raises(RuntimeError, match="inside"):
            with metrics.ablated_heads(model, [(1, 1)]):
                raise RuntimeError("an error inside the block")
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_silencing_every_head_of_a_layer_leaves_only_the_bias() -> None:
    model = _model(3)
    attn = model.decoder.layers[1].cross_attn
    x, memory = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    with torch.no_grad(), metrics.ablated_heads(model, [(1, h) for h in range(4)]):
        out, _ = attn(x, memory)
    torch.testing.assert_close(out, attn.out_proj.bias.expand(1, 3, 16))


@pytest.mark.parametrize("heads", [[(2, 0)], [(0, 4)], [(-1, 0)]])
def test_ablated_heads_rejects_heads_the_model_lacks(heads) -> None:
    with pytest.raises(ValueError, match="layer < 2 and head < 4"):
        with metrics.ablated_heads(_model(), heads):
            pass


# --- lesson 07: first_error and score -----------------------------------------------------------------------
@pytest.mark.parametrize("prediction, reference, expected", [
    ("a b c", "a b c", None), ("a x c", "a b c", 1), ("a b", "a b c", 2), ("a b c d", "a b c", 3), ("", "a", 0),
])
def test_first_error_is_the_first_reference_position_gotten_wrong(prediction, reference, expected) -> None:
    assert metrics.first_error(prediction.split(), reference.split()) == expected


def test_first_error_segments_count_the_markers_before_the_first_error() -> None:
    references = ["a b e c d e f", "a b e c d e f", "a b e c d e f", "a b e c", "a b"]
    # right; in clause 2; clause 3 left out (its conjunction is the first error); in clause 1; one word too many
    predictions = ["a b e c d e f", "a b e x d e f", "a b e c d", "a x", "a b c"]
    result = metrics.first_error_segments([p.split() for p in predictions], [r.split() for r in references], {"e"})
    assert result == {0: 2, 1: 1, 2: 1}


def test_first_error_refuses_strings() -> None:
    with pytest.raises(ValueError, match="lists of words"):
        metrics.first_error("a b", ["a", "b"])


def test_score_of_translations_equals_evaluate(toy) -> None:
    model, data = toy
    predictions = metrics.translate_data(model, data)
    scores = metrics.score(predictions, [list(e.target) for e in data.examples])
    assert scores == metrics.evaluate(model, data)
