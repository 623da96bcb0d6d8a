"""Checkers for the exercises of lesson 05 (the encoder-decoder).

Each exercise is its reference, its cases and its list of named mistakes (``MISTAKES``), run by
``_harness.run_cases`` (or ``check_answer`` for predictions). References: ``course_lib.sinusoidal_positions``,
and course_lib's ``DecoderLayer`` / ``EncoderLayer``, checked when the cases are built against PyTorch's own
``nn.TransformerDecoderLayer`` / ``nn.TransformerEncoderLayer`` holding the same (randomised) weights.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import DecoderLayer, EncoderLayer, sinusoidal_positions
from ..masks import causal_mask, key_padding_mask_from_mask, padding_mask
from ..model import Seq2SeqTransformer, TransformerConfig
from ..reference import load_torch_decoder_layer, load_torch_encoder_layer
from ._answers import as_int, check_answer
from ._cases import Case, Mistake, require_function
from ._compare import same
from ._harness import run_cases
from ._results import Hint, NotDone, checker, short_repr

# --- Exercise 1 · sinusoidal_positions(max_len, d_model) ----------------------------------------------

def positions_reference(max_len: int, d_model: int) -> Tensor:
    """``[max_len, d_model]`` float32: sin in even features, cos in odd features."""
    return sinusoidal_positions(max_len, d_model)


def _table(max_len: int, d: int, *, exponent: str = "2i", start: int = 0, swap: bool = False,
           halves: bool = False, inverted: bool = False) -> Tensor:
    """The sinusoidal table ``[max_len, d]`` (computed in float64, returned as float32), or a typical wrong
    version of it."""
    position = torch.arange(start, start + max_len, dtype=torch.float64)[:, None]  # [max_len, 1]
    j = torch.arange(d, dtype=torch.float64)  # feature index
    i = j % (d // 2) if halves else j // 2  # the pair each feature belongs to
    power = {"2i": 2 * i, "i": i, "4i": 4 * i, "j": j}[exponent] / d
    angle = position * 10000.0 ** (power if inverted else -power)  # [max_len, d]
    use_sin = (j < d // 2) if halves else (j % 2 == 0)
    return torch.where(use_sin != swap, torch.sin(angle), torch.cos(angle)).float()


POSITIONS_CASES = [
    Case("max_len=50, d_model=16", (50, 16)),
    Case("max_len=7, d_model=64", (7, 64)),
    Case("max_len=1, d_model=2", (1, 2)),
    Case("max_len=20, d_model=6", (20, 6)),
    # Multiplying by 10000^(2i/d) gives huge angles whose sines float32 cannot reproduce: two rows, loose tolerance.
    Case("the first two positions, d_model=8", (2, 8), atol=1e-2, rtol=1e-2),
]
POSITIONS_MISTAKES = [
    Mistake("sin_cos_swapped", "sin and cos are swapped: even features (0, 2, 4, ...) take the sine, odd features "
            "the cosine", lambda n, d: _table(n, d, swap=True)),
    Mistake("exponent_i", "the exponent uses the pair index i where the formula has 2i: pair i (features 2i and "
            "2i+1) has frequency 1 / 10000^(2i/d_model)", lambda n, d: _table(n, d, exponent="i")),
    Mistake("exponent_4i", "the exponent is twice too large (4i/d_model): '2i' in the formula already is the even "
            "feature index, use torch.arange(0, d_model, 2)", lambda n, d: _table(n, d, exponent="4i")),
    Mistake("frequency_per_feature", "odd feature 2i+1 must share the frequency of feature 2i (its sine partner): "
            "compute one frequency per pair, not per feature", lambda n, d: _table(n, d, exponent="j")),
    Mistake("positions_from_1", "positions start at 1: the first position is 0, so row 0 is [0, 1, 0, 1, ...] "
            "(sin 0 = 0, cos 0 = 1)", lambda n, d: _table(n, d, start=1)),
    Mistake("sines_then_cosines", "all the sines come first and all the cosines second: this course interleaves "
            "them, sin in even features and cos in odd features", lambda n, d: _table(n, d, halves=True)),
    Mistake("frequencies_inverted", "the frequencies grow with the feature index: divide the position by "
            "10000^(2i/d_model), do not multiply by it", lambda n, d: _table(n, d, inverted=True)),
    Mistake("transposed", "the table is [d_model, max_len]: rows are positions and columns features, so it is "
            "[max_len, d_model]", lambda n, d: positions_reference(n, d).T, match="shape"),
    Mistake("integer_table", "the table holds integers, so every sine and cosine was cut to 0 (or 1): create it "
            "as floats, e.g. torch.zeros(max_len, d_model), not from an integer torch.arange",
            lambda n, d: positions_reference(n, d).long()),
]


def _float64_as_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A float64 table is as good as a float32 one: compare it in the reference's dtype."""
    def run(max_len: int, d_model: int) -> Any:
        out = fn(max_len, d_model)
        return out.float() if isinstance(out, Tensor) and out.dtype == torch.float64 else out
    return run


@checker("Exercise 1 · sinusoidal_positions(max_len, d_model)")
def check_sinusoidal_positions(fn: Callable[[int, int], Tensor]) -> str:
    """``fn(max_len, d_model) -> [max_len, d_model]`` (float32 or float64), against ``cl.sinusoidal_positions``."""
    what = "sinusoidal_positions(max_len, d_model)"
    require_function(fn, what)
    return run_cases(_float64_as_float32(fn), reference=positions_reference, cases=POSITIONS_CASES,
                     mistakes=POSITIONS_MISTAKES, what=what,
                     passed="matches cl.sinusoidal_positions, including max_len=1 and d_model=2 (5 cases)")


# --- Exercises 2 and 3: decoder and encoder layers ---------------------------------------------------
_UNPACK = ("cl.MultiHeadAttention returns a pair (output, attn_weights): unpack it, "
           "e.g. `attended, _ = layer.self_attn(...)`")
LEAK = ("the future leaks: changing the last target token changed the outputs at earlier positions. "
        "Pass self_mask (the causal mask) to the self-attention")
ORDER = ("cross-attention came before self-attention: first each position gathers its prefix (masked "
         "self-attention), then it queries the source with what it gathered, then the feed-forward block")
NORMS = ("each sublayer has its own LayerNorm, in order: norm1 before the self-attention, norm2 before the "
         "cross-attention, norm3 before the feed-forward block")


@torch.no_grad()
def _randomise(module: nn.Module) -> nn.Module:
    """Give LayerNorms and biases (initialised to 1 and 0) random values, so that mixing them up shows."""
    for name, p in module.named_parameters():
        if "norm" in name or "bias" in name:
            p.add_(0.3 * torch.randn_like(p))
    return module


def decoder_reference(layer: DecoderLayer, y: Tensor, memory: Tensor, self_mask: Tensor,
                      memory_mask: Tensor) -> Tensor:
    """The pre-norm decoder layer's own forward pass (checked against nn.TransformerDecoderLayer below)."""
    with torch.no_grad():
        return layer(y, memory, self_mask=self_mask, memory_mask=memory_mask).y


def _decoder(layer: DecoderLayer, y: Tensor, memory: Tensor, self_mask: Tensor | None, memory_mask: Tensor | None,
             *, swap: str = "", skip: str = "", post: bool = False, norm_memory: bool = False,
             cross: str = "memory", norms: str = "123") -> Tensor:
    """A pre-norm decoder layer, or one typical mistake of it.

    ``swap``: "blocks" runs cross- before self-attention (each with its own norm), "attention" swaps only the
    attention calls; ``skip``: the residual to leave out; ``cross``: "none" gives the cross-attention no memory,
    "query" passes memory as its queries, "causal" gives it the causal mask; ``norms``: which of norm1..3 each
    sublayer uses, in order.
    """
    def self_part(h: Tensor) -> Tensor:
        return layer.self_attn(h, mask=self_mask)[0]

    def cross_part(h: Tensor) -> Tensor:
        if cross == "none":
            return layer.cross_attn(h)[0]
        if cross == "causal":
            return layer.cross_attn(h, memory, mask=self_mask)[0]
        if cross.endswith("query"):
            return layer.cross_attn(memory, h, mask=memory_mask if cross == "masked query" else None)[0]
        return layer.cross_attn(h, layer.norm2(memory) if norm_memory else memory, mask=memory_mask)[0]

    norm1, norm2, norm3 = (getattr(layer, f"norm{n}") for n in norms)
    blocks = [("self", norm1, self_part), ("cross", norm2, cross_part), ("ffn", norm3, layer.ffn)]
    if swap == "blocks":
        blocks[0], blocks[1] = blocks[1], blocks[0]
    elif swap == "attention":
        blocks[0], blocks[1] = (("cross", norm1, cross_part), ("self", norm2, self_part))
    with torch.no_grad():
        for name, norm, f in blocks:
            y = norm(y + f(y)) if post else (0 if skip == name else y) + f(norm(y))
    return y


def _decoder_cases() -> tuple[list[Case], Tensor]:
    """The four cases (layers from seeds 50..53, inputs from one generator seeded 5), and the probe for leaks:
    case 0's target with its last token changed."""
    gen = torch.Generator().manual_seed(5)
    cases, later = [], None
    shapes = [  # name, B, T, S, source lengths, dtype
        ("B=2, T = S = 5, second source padded", 2, 5, 5, [5, 3], torch.float32),
        ("T=5, S=7", 2, 5, 7, [7, 4], torch.float32),
        ("batch of 1, T=3, S=9", 1, 3, 9, [6], torch.float32),
        ("float64, T=6, S=4", 2, 6, 4, [4, 2], torch.float64),
    ]
    for index, (name, b, t, s, lengths, dtype) in enumerate(shapes):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(50 + index)
            theirs = _randomise(nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True,
                                                           dtype=dtype)).eval()
            layer = load_torch_decoder_layer(DecoderLayer(16, 4, 32, norm_first=True).to(dtype), theirs).eval()
        y = torch.randn(b, t, 16, generator=gen, dtype=dtype)  # [B, T, d_model]
        memory = torch.randn(b, s, 16, generator=gen, dtype=dtype)  # [B, S, d_model]
        self_mask, memory_mask = causal_mask(t), padding_mask(torch.tensor(lengths), s)  # [T, T], [B, 1, 1, S]
        if index == 0:
            later = y.clone()
            later[:, -1] = torch.randn(b, 16, generator=gen)
        with torch.no_grad():
            theirs_out = theirs(y, memory, tgt_mask=~self_mask,
                                memory_key_padding_mask=key_padding_mask_from_mask(memory_mask))
        torch.testing.assert_close(decoder_reference(layer, y, memory, self_mask, memory_mask), theirs_out)
        cases.append(Case(name, (layer, y, memory, self_mask, memory_mask), square=t == s))
    assert later is not None
    return cases, later


DECODER_CASES, _LATER_TARGET = _decoder_cases()
DECODER_MISTAKES = [
    Mistake("cross_before_self", ORDER, lambda *a: _decoder(*a, swap="blocks")),
    Mistake("attention_calls_swapped", ORDER, lambda *a: _decoder(*a, swap="attention")),
    Mistake("no_causal_mask", LEAK, lambda layer, y, memory, self_mask, memory_mask: _decoder(
        layer, y, memory, None, memory_mask)),
    Mistake("post_norm", "that is post-norm, norm(y + f(y)): here the norm comes *before* each sublayer, "
            "y + f(norm(y))", lambda *a: _decoder(*a, post=True)),
    Mistake("no_memory_mask", "padded source positions were attended to: pass memory_mask to the cross-attention",
            lambda layer, y, memory, self_mask, memory_mask: _decoder(layer, y, memory, self_mask, None)),
    Mistake("no_self_residual", "the residual around self-attention is missing: y = y + attended",
            lambda *a: _decoder(*a, skip="self")),
    Mistake("no_cross_residual", "the residual around cross-attention is missing: y = y + attended",
            lambda *a: _decoder(*a, skip="cross")),
    Mistake("no_ffn_residual", "the residual around the feed-forward block is missing: return y + "
            "layer.ffn(layer.norm3(y))", lambda *a: _decoder(*a, skip="ffn")),
    Mistake("memory_normalised", "memory was normalised by norm2: the norm applies to the queries' input y only; "
            "the encoder already normalised memory", lambda *a: _decoder(*a, norm_memory=True)),
    Mistake("cross_without_memory", "the cross-attention got no memory, so it attended over the decoder states "
            "(self-attention again): call layer.cross_attn(h, memory, ...)", lambda *a: _decoder(*a, cross="none")),
    Mistake("memory_as_queries", "memory was passed as the queries: the queries come from the decoder (y), keys and "
            "values from memory", lambda *a: _decoder(*a, cross="query")),
    Mistake("memory_as_queries_masked", "memory was passed as the queries: the queries come from the decoder (y), "
            "keys and values from memory", lambda *a: _decoder(*a, cross="masked query")),
    Mistake("causal_cross_attention", "the cross-attention got the causal mask: the source is known in full, "
            "nothing in it is in the future, so it takes memory_mask", lambda *a: _decoder(*a, cross="causal")),
    Mistake("norm1_norm2_swapped", NORMS + "; your self-attention read norm2(y) and the cross-attention norm1(y)",
            lambda *a: _decoder(*a, norms="213")),
    Mistake("norm2_norm3_swapped", NORMS + "; your cross-attention read norm3(y) and the feed-forward block "
            "norm2(y)", lambda *a: _decoder(*a, norms="132")),
    Mistake("one_norm_for_all", NORMS + "; you used norm1 for all three",
            lambda *a: _decoder(*a, norms="111")),
]


def _leaks(fn: Callable[..., Any]) -> bool:
    """Whether changing case 0's last target token changes the learner's outputs at earlier positions."""
    layer, y, memory, self_mask, memory_mask = DECODER_CASES[0].args
    try:
        outs = [fn(copy.deepcopy(layer), target.clone(), memory.clone(), self_mask.clone(), memory_mask.clone())
                for target in (y, _LATER_TARGET)]
        return all(isinstance(o, Tensor) and o.shape == y.shape for o in outs) and not same(
            outs[0][:, :-1], outs[1][:, :-1])
    except Exception:  # noqa: BLE001 - a probe of the learner's code; a crash here is not evidence
        return False


@checker("Exercise 2 · decoder_layer_forward(layer, y, memory, self_mask, memory_mask)")
def check_decoder_layer_forward(fn: Callable[..., Tensor]) -> str:
    """``fn(layer, y, memory, self_mask, memory_mask) -> [B, T, d_model]``, against
    ``nn.TransformerDecoderLayer(norm_first=True)`` with the same weights."""
    what = "decoder_layer_forward(layer, y, memory, self_mask, memory_mask)"
    torch.set_num_threads(1)  # tiny tensors; @checker restores the learner's thread count
    try:
        with torch.no_grad():
            return run_cases(fn, reference=decoder_reference, cases=DECODER_CASES, mistakes=DECODER_MISTAKES,
                             what=what, error_tips=[("tuple", _UNPACK)],
                             passed="matches nn.TransformerDecoderLayer(norm_first=True): masked self-attention, then "
                                    "cross-attention, then feed-forward; later tokens do not leak into earlier "
                                    "positions (4 cases)")
    except Hint as hint:
        if hint.mistake in (None, "nan") and _leaks(fn):
            raise Hint(LEAK, mistake="future_leaks", case=DECODER_CASES[0].name) from None
        if hint.mistake == "wrong_type" and "tuple" in str(hint):
            raise Hint(f"{hint}. {_UNPACK}", mistake=hint.mistake, case=hint.case) from None
        raise


def encoder_reference(layer: EncoderLayer, x: Tensor, mask: Tensor | None) -> Tensor:
    """The post-norm encoder layer's own forward pass (checked against nn.TransformerEncoderLayer below)."""
    with torch.no_grad():
        return layer(x, mask)[0]


def _encoder_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(6)
    cases = []
    for index, (name, b, s, lengths, dtype) in enumerate([
        ("B=2, S=6, second sequence padded", 2, 6, [6, 3], torch.float32),
        ("batch of 1, no mask", 1, 4, None, torch.float32),
        ("float64, S=5", 3, 5, [5, 2, 4], torch.float64),
    ]):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(60 + index)
            theirs = _randomise(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=False,
                                                           dtype=dtype)).train()  # train(): no fast path
            layer = load_torch_encoder_layer(EncoderLayer(16, 4, 32, norm_first=False).to(dtype), theirs).eval()
        x = torch.randn(b, s, 16, generator=gen, dtype=dtype)  # [B, S, d_model]
        mask = None if lengths is None else padding_mask(torch.tensor(lengths), s)  # [B, 1, 1, S]
        with torch.no_grad():
            theirs_out = theirs(x, src_key_padding_mask=None if mask is None else key_padding_mask_from_mask(mask))
        torch.testing.assert_close(encoder_reference(layer, x, mask), theirs_out)
        cases.append(Case(name, (layer, x, mask), square=True))
    return cases


def _post(layer: EncoderLayer, x: Tensor, mask: Tensor | None, *, norms: str = "12", attn_residual: bool = True,
          ffn_residual: str = "x1", ffn_input: str = "x1", at_end: bool = False) -> Tensor:
    """A post-norm encoder layer, or one typical mistake of it: ``norms`` names the norm of each sublayer,
    ``ffn_residual`` what is added around the feed-forward block ("x1", "x" the layer's input, "none"),
    ``ffn_input`` what it reads, ``at_end`` both norms applied after both residuals."""
    first, second = (getattr(layer, f"norm{n}") for n in norms)
    with torch.no_grad():
        attended = layer.self_attn(x, mask=mask)[0]  # [B, S, d_model]
        if at_end:
            x1 = x + attended
            return layer.norm2(layer.norm1(x1 + layer.ffn(x1)))
        x1 = first(x + attended if attn_residual else attended)
        h = layer.ffn(x1 if ffn_input == "x1" else x)
        add = {"x1": x1, "x": x, "none": 0}[ffn_residual]
        return second(add + h)


def _pre_norm(layer: EncoderLayer, x: Tensor, mask: Tensor | None) -> Tensor:
    with torch.no_grad():
        x = x + layer.self_attn(layer.norm1(x), mask=mask)[0]
        return x + layer.ffn(layer.norm2(x))


def _norm_branch_only(layer: EncoderLayer, x: Tensor, mask: Tensor | None) -> Tensor:
    with torch.no_grad():
        attended = layer.norm1(layer.self_attn(x, mask=mask)[0])
        return x + attended + layer.norm2(layer.ffn(x + attended))


ENCODER_CASES = _encoder_cases()
ENCODER_MISTAKES = [
    Mistake("pre_norm", "that is pre-norm, x + f(norm(x)). Post-norm normalises after adding the residual: "
            "x = norm1(x + attended), then norm2(x + ffn(x))", _pre_norm),
    Mistake("norm_branch_only", "only the sublayer's output was normalised, x + norm(f(x)): normalise the sum, "
            "norm1(x + attended)", _norm_branch_only),
    Mistake("ffn_reads_input", "the feed-forward block read the layer's input x instead of the attention "
            "sublayer's output: feed it x = norm1(x + attended)", lambda *a: _post(*a, ffn_input="x")),
    Mistake("no_ffn_residual", "the residual around the feed-forward block is missing: norm2(x + ffn(x))",
            lambda *a: _post(*a, ffn_residual="none")),
    Mistake("no_attention_residual", "the residual around self-attention is missing: norm1(x + attended)",
            lambda *a: _post(*a, attn_residual=False)),
    Mistake("no_residuals", "both residuals are missing: each sublayer adds its input back before the norm, "
            "norm1(x + attended), then norm2(x + ffn(x))", lambda *a: _post(*a, attn_residual=False,
                                                                          ffn_residual="none")),
    Mistake("ffn_residual_from_input", "the residual around the feed-forward block added the layer's input x; it "
            "adds the feed-forward block's own input, x = norm1(x + attended): norm2(x + ffn(x))",
            lambda *a: _post(*a, ffn_residual="x")),
    Mistake("norm1_twice", "norm1 was used twice: the second sublayer has its own norm2",
            lambda *a: _post(*a, norms="11")),
    Mistake("norms_swapped", "norm1 and norm2 are swapped: norm1 belongs to the self-attention sublayer, norm2 to "
            "the feed-forward block", lambda *a: _post(*a, norms="21")),
    Mistake("norms_at_the_end", "both norms were applied at the end, after both residuals: post-norm normalises "
            "each sublayer's sum right away, x = norm1(x + attended), then norm2(x + ffn(x))",
            lambda *a: _post(*a, at_end=True)),
    Mistake("no_padding_mask", "padded positions were attended to: pass mask to layer.self_attn",
            lambda layer, x, mask: _post(layer, x, None)),
]


@checker("Exercise 3 · encoder_layer_post_norm(layer, x, mask)")
def check_post_norm_encoder_layer(fn: Callable[..., Tensor]) -> str:
    """``fn(layer, x, mask) -> [B, S, d_model]``, against ``nn.TransformerEncoderLayer(norm_first=False)``."""
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return run_cases(fn, reference=encoder_reference, cases=ENCODER_CASES, mistakes=ENCODER_MISTAKES,
                             what="encoder_layer_post_norm(layer, x, mask)", error_tips=[("tuple", _UNPACK)],
                             passed="matches nn.TransformerEncoderLayer(norm_first=False): norm(x + f(x)) twice "
                                    "(3 cases)")
    except Hint as hint:
        if hint.mistake == "wrong_type" and "tuple" in str(hint):
            raise Hint(f"{hint}. {_UNPACK}", mistake=hint.mistake, case=hint.case) from None
        raise


# --- Exercise 4 · predict, then verify: parameter counts ----------------------------------------------
PARAM_CONFIG = dict(src_vocab_size=1000, tgt_vocab_size=800, d_model=64, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, d_ff=256)


def _n(module: nn.Module, part: str = "") -> int:
    """Parameters of ``module`` (only those whose name contains ``part``)."""
    return sum(p.numel() for name, p in module.named_parameters() if part in name)


def _param_model() -> Seq2SeqTransformer:
    with torch.random.fork_rng(devices=[]):
        return Seq2SeqTransformer(TransformerConfig(**PARAM_CONFIG))


_MODEL = _param_model()
_ENC, _DEC = _MODEL.encoder.layers[0], _MODEL.decoder.layers[0]
_D, _HEADS, _D_FF = _MODEL.config.d_model, _MODEL.config.n_heads, _MODEL.config.d_ff
ENCODER_LAYER, DECODER_LAYER, TOTAL = _n(_ENC), _n(_DEC), _n(_MODEL)


def _layer_mistakes(layer: nn.Module, prefix: str) -> list[Mistake]:
    """Typical miscounts of one layer, as wrong values."""
    actual, attention, norms = _n(layer), _n(layer, "attn"), _n(layer, "norm")
    biases = sum(m.bias.numel() for m in layer.modules() if isinstance(m, nn.Linear))
    return [
        Mistake(f"{prefix}_no_biases", "the biases are missing (each nn.Linear has one per output feature)",
                actual - biases),
        Mistake(f"{prefix}_no_norms", f"the LayerNorms are missing: each has 2 * d_model = {2 * _D} parameters "
                "(a scale and a shift)", actual - norms),
        Mistake(f"{prefix}_norm_scale_only", "each LayerNorm has a scale *and* a shift (2 * d_model), and there is "
                "one per sublayer", actual - norms // 2),
        Mistake(f"{prefix}_matrices_per_head", "the attention matrices are d_model x d_model for all heads together: "
                "heads split them, they do not multiply them", actual + (_HEADS - 1) * attention),
        Mistake(f"{prefix}_one_head", "that counts one head's share of the attention matrices; together the heads use "
                "all of each d_model x d_model matrix", actual - attention + attention // _HEADS),
        Mistake(f"{prefix}_one_ffn_matrix", "the feed-forward block has two matrices, d_model x d_ff and d_ff x "
                "d_model", actual - _D_FF * _D),
    ]


_MHA = _n(_ENC.self_attn)
ENCODER_LAYER_MISTAKES = _layer_mistakes(_ENC, "encoder")
DECODER_LAYER_MISTAKES = _layer_mistakes(_DEC, "decoder") + [
    Mistake("decoder_one_attention", "a decoder layer has two attention blocks: masked self-attention *and* "
            "cross-attention", DECODER_LAYER - _MHA),
    Mistake("decoder_as_encoder", "the cross-attention block and its LayerNorm are missing",
            DECODER_LAYER - _MHA - 2 * _D),
    Mistake("decoder_two_norms", "a decoder layer has three LayerNorms, one per sublayer", DECODER_LAYER - 2 * _D),
]
TOTAL_MISTAKES = [
    Mistake("no_final_norms", "the encoder and the decoder each end with a final LayerNorm (2 * d_model each)",
            TOTAL - 4 * _D),
    Mistake("one_final_norm", "the encoder *and* the decoder end with a final LayerNorm", TOTAL - 2 * _D),
    Mistake("no_output_layer", "the output layer (d_model -> tgt_vocab_size, with a bias) is missing",
            TOTAL - _n(_MODEL.output)),
    Mistake("no_output_bias", "the output layer has a bias too: tgt_vocab_size of them",
            TOTAL - _MODEL.config.tgt_vocab_size),
    Mistake("no_source_embedding", "the source embedding table (src_vocab_size x d_model) is missing",
            TOTAL - _n(_MODEL.src_embed)),
    Mistake("no_target_embedding", "the target embedding table (tgt_vocab_size x d_model) is missing",
            TOTAL - _n(_MODEL.tgt_embed)),
    Mistake("no_embeddings", "both embedding tables are missing (src_vocab_size x d_model and tgt_vocab_size x "
            "d_model)", TOTAL - _n(_MODEL.src_embed) - _n(_MODEL.tgt_embed)),
    Mistake("one_encoder_layer", f"there are n_encoder_layers = {_MODEL.config.n_encoder_layers} encoder layers",
            TOTAL - ENCODER_LAYER),
    Mistake("one_decoder_layer", f"there are n_decoder_layers = {_MODEL.config.n_decoder_layers} decoder layers",
            TOTAL - DECODER_LAYER),
    Mistake("one_layer_each", f"there are {_MODEL.config.n_encoder_layers} encoder and "
            f"{_MODEL.config.n_decoder_layers} decoder layers", TOTAL - ENCODER_LAYER - DECODER_LAYER),
    Mistake("sinusoidal_table_counted", "the sinusoidal table is computed, not learned: it has no parameters",
            TOTAL + _MODEL.positions.table.numel()),
]
_LAYER_OTHERWISE = "add the attention blocks (4 x (d^2 + d) each), the feed-forward block and 2 * d_model per LayerNorm"


@checker("Exercise 4 · predict: parameter counts")
def check_param_counts(encoder_layer: Any, decoder_layer: Any, total: Any) -> str:
    """Predicted parameters of one encoder layer, one decoder layer and the whole model for ``PARAM_CONFIG``."""
    answers = (("encoder_layer", encoder_layer), ("decoder_layer", decoder_layer), ("total", total))
    for name, answer in answers:
        if answer is None:
            raise NotDone(f"not done yet: {name} is still None")
    model = Seq2SeqTransformer(TransformerConfig(**PARAM_CONFIG))
    assert (_n(model.encoder.layers[0]), _n(model.decoder.layers[0]), _n(model)) == (
        ENCODER_LAYER, DECODER_LAYER, TOTAL), "the reference counts are out of date"
    template = "{what}: {got:,} is not it: {hint}"
    check_answer(encoder_layer, ENCODER_LAYER, what="encoder_layer", mistakes=ENCODER_LAYER_MISTAKES,
                 template=template, otherwise=_LAYER_OTHERWISE)
    check_answer(decoder_layer, DECODER_LAYER, what="decoder_layer", mistakes=DECODER_LAYER_MISTAKES,
                 template=template, otherwise=_LAYER_OTHERWISE)
    check_answer(total, TOTAL, what="total", mistakes=TOTAL_MISTAKES, template=template,
                 otherwise="embeddings + layers + two final LayerNorms + the output layer")
    share = (_n(model.src_embed) + _n(model.tgt_embed) + _n(model.output)) / TOTAL
    return (f"encoder layer {ENCODER_LAYER:,}, decoder layer {DECODER_LAYER:,}, model {TOTAL:,}; the embeddings "
            f"and the output layer hold {share:.0%} of it")


# --- Exercise 5 · predict, then verify: which outputs change -----------------------------------------
_N_TARGET = 5  # target positions 0..4
_SOURCE_HINT = ("every target position reads every source position through cross-attention (there is no causal "
                "mask on the source, and nothing ties target position t to source position t)")
_FROM_1 = f"positions are numbered from 0: the {_N_TARGET} target positions are 0 to {_N_TARGET - 1}"
SOURCE_MISTAKES = [
    Mistake("source_counted_from_1", _FROM_1, lambda seen: {p + 1 for p in seen}),
    Mistake("source_position_only", _SOURCE_HINT, lambda seen: {2}),
    Mistake("source_causal", "the causal mask is on the target's self-attention only: " + _SOURCE_HINT,
            lambda seen: {2, 3, 4}),
    Mistake("source_changes_nothing", "the source reaches the decoder through cross-attention, in every decoder "
            "layer: " + _SOURCE_HINT, lambda seen: set()),
]
TARGET_MISTAKES = [
    Mistake("target_counted_from_1", _FROM_1, lambda seen: {p + 1 for p in seen}),
    Mistake("target_everywhere", "the causal mask stops positions 0..2 from seeing token 3, in every layer",
            lambda seen: set(range(_N_TARGET))),
    Mistake("target_later_only", "position 3 sees its own token (the diagonal of the causal mask), and positions "
            "after it read it through self-attention", lambda seen: {p for p in seen if p > 3}),
    Mistake("target_own_only", "position 3 sees its own token, and the positions after it read it through "
            "self-attention: they change too", lambda seen: {3}),
    Mistake("target_earlier", "it is the other way round: the causal mask lets a position see itself and the "
            "positions *before* it, so token 3 reaches positions 3 and later", lambda seen: {0, 1, 2, 3}),
]


def _as_positions(value: Any, what: str) -> set[int]:
    """A collection of target positions as a set of ints (3, 3.0 and numpy ints alike)."""
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    if isinstance(value, Tensor):
        raise Hint(f"{what} should be a set of Python ints such as {{0, 2}}, but got a tensor "
                   f"({short_repr(value, 40)}): use .tolist()", mistake="wrong_type")
    items = list(value) if isinstance(value, (set, frozenset, list, tuple, range)) else None
    numbers_ = [as_int(p) for p in items] if items is not None else None
    if numbers_ is None or any(n is None for n in numbers_):
        raise Hint(f"{what} should be a collection of positions such as {{0, 2}}, but got {short_repr(value, 60)}",
                   mistake="wrong_type")
    return {n for n in numbers_ if n is not None}


def _check_positions(answer: set[int], seen: set[int], what: str, edited: str, mistakes: Sequence[Mistake],
                     otherwise: str) -> None:
    if answer == seen:
        return
    said = f"editing {edited} changed positions {sorted(seen)}, not {sorted(answer)}"
    for mistake in mistakes:
        if mistake.wrong(seen) != seen and answer == mistake.wrong(seen):
            raise Hint(f"{said}: {mistake.hint}", mistake=mistake.name)
    raise Hint(f"{said}: {otherwise}")


def what_changes_experiment() -> tuple[set[int], set[int]]:
    """Target positions whose logits change when source token 2 / target token 3 is edited (a fresh model)."""
    gen = torch.Generator().manual_seed(7)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(7)
        model = Seq2SeqTransformer(TransformerConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=32, d_ff=64))
    src, tgt = torch.randint(1, 20, (1, 6), generator=gen), torch.randint(1, 20, (1, _N_TARGET), generator=gen)
    src2, tgt2 = src.clone(), tgt.clone()
    src2[0, 2], tgt2[0, 3] = src[0, 2] % 19 + 1, tgt[0, 3] % 19 + 1
    with torch.no_grad():
        base = model(src, tgt)[0]  # [T, V]
        by_source, by_target = ({t for t in range(_N_TARGET) if not same(base[t], model(s, g)[0, t], atol=1e-6, rtol=0)}
                                for s, g in ((src2, tgt), (src, tgt2)))
    return by_source, by_target


@checker("Exercise 5 · predict: which outputs change")
def check_what_changes(changed_by_source: Any, changed_by_target: Any) -> str:
    """Target positions 0..4 whose logits change when source token 2 / target token 3 is edited."""
    by_source = _as_positions(changed_by_source, "changed_by_source")
    by_target = _as_positions(changed_by_target, "changed_by_target")
    torch.set_num_threads(1)
    seen_source, seen_target = what_changes_experiment()
    _check_positions(by_source, seen_source, "changed_by_source", "source token 2", SOURCE_MISTAKES, _SOURCE_HINT)
    later = by_target > seen_target
    _check_positions(by_target, seen_target, "changed_by_target", "target token 3", TARGET_MISTAKES,
                     TARGET_MISTAKES[1].hint if later else TARGET_MISTAKES[2].hint)
    return ("a source edit reaches every target position (cross-attention sees the whole source); a target edit "
            f"reaches only its own and later positions {sorted(seen_target)} (the causal mask)")


MISTAKES = {
    "check_sinusoidal_positions": POSITIONS_MISTAKES,
    "check_decoder_layer_forward": DECODER_MISTAKES,
    "check_post_norm_encoder_layer": ENCODER_MISTAKES,
    "check_param_counts:encoder_layer": ENCODER_LAYER_MISTAKES,
    "check_param_counts:decoder_layer": DECODER_LAYER_MISTAKES,
    "check_param_counts:total": TOTAL_MISTAKES,
    "check_what_changes:source": SOURCE_MISTAKES,
    "check_what_changes:target": TARGET_MISTAKES,
}
CASES = {"check_sinusoidal_positions": POSITIONS_CASES, "check_decoder_layer_forward": DECODER_CASES,
         "check_post_norm_encoder_layer": ENCODER_CASES}
REFERENCES = {"check_sinusoidal_positions": positions_reference, "check_decoder_layer_forward": decoder_reference,
              "check_post_norm_encoder_layer": encoder_reference}

__all__ = ["PARAM_CONFIG", "check_decoder_layer_forward", "check_param_counts", "check_post_norm_encoder_layer",
           "check_sinusoidal_positions", "check_what_changes"]
