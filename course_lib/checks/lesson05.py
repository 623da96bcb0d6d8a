"""Checkers for the exercises of lesson 05 (the encoder-decoder).

References: ``course_lib.sinusoidal_positions`` and PyTorch's own ``nn.TransformerDecoderLayer`` /
``nn.TransformerEncoderLayer`` with weights copied into course_lib's layers. Each typical wrong answer (sin
and cos swapped, cross-attention before self-attention, no causal mask, pre-norm instead of post-norm, ...)
is computed and named in its hint.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import shape_str
from ..layers import DecoderLayer, EncoderLayer, sinusoidal_positions
from ..masks import causal_mask, key_padding_mask_from_mask, padding_mask
from ..model import Seq2SeqTransformer, TransformerConfig
from ..reference import load_torch_decoder_layer, load_torch_encoder_layer
from ._harness import Hint, NotDone, call_learner, checker, compare, expect_int, expect_tensor, is_close


def _isolated(check: Callable[..., str]) -> Callable[..., str]:
    """Run a checker on one CPU thread (its tensors are tiny, and a thread pool on a busy CPU is slow) and with
    its own random state; the learner's thread count and random state are left as they were."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> str:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                return check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


# --- Exercise 1: sinusoidal positional encoding ------------------------------------------------------
def _table(max_len: int, d: int, *, exponent: str = "2i", start: int = 0, swap: bool = False,
           halves: bool = False, inverted: bool = False) -> Tensor:
    """The sinusoidal table ``[max_len, d]`` (float64), or a typical wrong version of it."""
    position = torch.arange(start, start + max_len, dtype=torch.float64)[:, None]  # [max_len, 1]
    j = torch.arange(d, dtype=torch.float64)  # feature index
    i = j % (d // 2) if halves else j // 2  # the pair each feature belongs to
    power = {"2i": 2 * i, "i": i, "4i": 4 * i, "j": j}[exponent] / d
    angle = position * 10000.0 ** (power if inverted else -power)  # [max_len, d]
    use_sin = (j < d // 2) if halves else (j % 2 == 0)
    return torch.where(use_sin != swap, torch.sin(angle), torch.cos(angle))


@checker("sinusoidal positional encoding")
@_isolated
def check_sinusoidal_positions(fn: Callable[[int, int], Tensor]) -> str:
    """``fn(max_len, d_model) -> [max_len, d_model]``, against ``cl.sinusoidal_positions``."""
    what = "sinusoidal_positions(max_len, d_model)"
    for max_len, d in ((50, 16), (7, 64), (1, 2), (20, 6)):
        case = f"max_len={max_len}, d_model={d}"
        out = call_learner(fn, max_len, d, what=what)
        if isinstance(out, Tensor) and tuple(out.shape) == (d, max_len) and d != max_len:
            raise Hint(f"case '{case}': shape {shape_str(out.shape)} is [d_model, max_len]: rows are positions, "
                       "columns features, so the table is [max_len, d_model]")
        out = expect_tensor(out, what, expected_shape=(max_len, d))
        if not out.dtype.is_floating_point:
            raise Hint(f"{what} returned dtype {out.dtype}; positions and sines are floats (use dtype=torch.float)")
        mistakes = [
            (_table(max_len, d, swap=True), "sin and cos are swapped: even features (0, 2, 4, ...) take the sine, "
                                            "odd features the cosine"),
            (_table(max_len, d, exponent="i"), "the exponent uses the pair index i where the formula has 2i: "
                                               "pair i (features 2i and 2i+1) has frequency 1 / 10000^(2i/d_model)"),
            (_table(max_len, d, exponent="4i"), "the exponent is twice too large (4i/d_model): '2i' in the formula "
                                                "already is the even feature index, use torch.arange(0, d_model, 2)"),
            (_table(max_len, d, exponent="j"), "odd feature 2i+1 must share the frequency of feature 2i (its "
                                               "sine partner): compute one frequency per pair, not per feature"),
            (_table(max_len, d, start=1), "positions start at 1: the first position is 0, so row 0 is "
                                          "[0, 1, 0, 1, ...] (sin 0 = 0, cos 0 = 1)"),
            (_table(max_len, d, halves=True), "all the sines come first and all the cosines second: this course "
                                              "interleaves them, sin in even features and cos in odd features"),
        ]
        try:
            compare(out.double(), sinusoidal_positions(max_len, d).double(), what=what, case=case, mistakes=mistakes)
        except Hint:
            # Huge angles lose float precision, so this one is recognised on the first two positions only.
            if is_close(out[:2].double(), _table(max_len, d, inverted=True)[:2], atol=1e-2, rtol=1e-2):
                raise Hint("the frequencies grow with the feature index: divide the position by "
                           "10000^(2i/d_model), do not multiply by it") from None
            raise
    return "matches cl.sinusoidal_positions, including max_len=1 and d_model=2 (4 cases)"


# --- Exercises 2 and 3: decoder and encoder layers ---------------------------------------------------
_UNPACK = ("cl.MultiHeadAttention returns a pair (output, attn_weights): unpack it, "
           "e.g. `attended, _ = layer.self_attn(...)`")
LEAK = ("the future leaks: changing the last target token changed the outputs at earlier positions. "
        "Pass self_mask (the causal mask) to the self-attention")


@torch.no_grad()
def _randomise(module: nn.Module) -> nn.Module:
    """Give LayerNorms and biases (initialised to 1 and 0) random values, so that mixing them up shows."""
    for name, p in module.named_parameters():
        if "norm" in name or "bias" in name:
            p.add_(0.3 * torch.randn_like(p))
    return module


def _call_layer(fn: Any, *args: Any, what: str) -> Any:
    try:
        return call_learner(fn, *args, what=what)
    except Hint as hint:
        if "tuple" in str(hint):
            raise Hint(f"{hint}. {_UNPACK}") from None
        raise


def _decoder(layer: DecoderLayer, y: Tensor, memory: Tensor, self_mask: Tensor | None, memory_mask: Tensor | None,
             *, swap: str = "", skip: str = "", post: bool = False, norm_memory: bool = False,
             cross: str = "memory") -> Tensor:
    """A pre-norm decoder layer, or one typical mistake of it.

    ``swap``: "blocks" runs cross- before self-attention (each with its own norm), "attention" swaps only the
    attention calls; ``skip``: the residual to leave out; ``cross``: "none" gives the cross-attention no memory,
    "query" passes memory as its queries, "causal" gives it the causal mask.
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

    blocks = [("self", layer.norm1, self_part), ("cross", layer.norm2, cross_part), ("ffn", layer.norm3, layer.ffn)]
    if swap == "blocks":
        blocks[0], blocks[1] = blocks[1], blocks[0]
    elif swap == "attention":
        blocks[0], blocks[1] = (("cross", layer.norm1, cross_part), ("self", layer.norm2, self_part))
    for name, norm, f in blocks:
        y = norm(y + f(y)) if post else (0 if skip == name else y) + f(norm(y))
    return y


_DEC_CASES = [  # name, B, T, S, source lengths, dtype
    ("B=2, T = S = 5, second source padded", 2, 5, 5, [5, 3], torch.float32),
    ("T=5, S=7", 2, 5, 7, [7, 4], torch.float32),
    ("batch of 1, T=3, S=9", 1, 3, 9, [6], torch.float32),
    ("float64, T=6, S=4", 2, 6, 4, [4, 2], torch.float64),
]


@checker("decoder layer forward (pre-norm)")
@_isolated
def check_decoder_layer_forward(fn: Callable[..., Tensor]) -> str:
    """``fn(layer, y, memory, self_mask, memory_mask) -> [B, T, d_model]``, against
    ``nn.TransformerDecoderLayer(norm_first=True)`` with the same weights."""
    what = "decoder_layer_forward(layer, y, memory, self_mask, memory_mask)"
    gen = torch.Generator().manual_seed(5)
    for index, (name, b, t, s, lengths, dtype) in enumerate(_DEC_CASES):
        torch.manual_seed(50 + index)
        theirs = _randomise(nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True,
                                                       dtype=dtype))
        layer = load_torch_decoder_layer(DecoderLayer(16, 4, 32, norm_first=True).to(dtype), theirs).eval()
        y = torch.randn(b, t, 16, generator=gen, dtype=dtype)  # [B, T, d_model]
        memory = torch.randn(b, s, 16, generator=gen, dtype=dtype)  # [B, S, d_model]
        self_mask, memory_mask = causal_mask(t), padding_mask(torch.tensor(lengths), s)  # [T, T], [B, 1, 1, S]
        with torch.no_grad():
            out = expect_tensor(_call_layer(fn, layer, y.clone(), memory.clone(), self_mask, memory_mask, what=what),
                                what, expected_shape=(b, t, 16))
            leaks = False
            if index == 0:  # change the last target position: nothing before it may change
                later = y.clone()
                later[:, -1] = torch.randn(b, 16, generator=gen)
                out_later = expect_tensor(_call_layer(fn, layer, later, memory.clone(), self_mask, memory_mask,
                                                      what=what), what, expected_shape=(b, t, 16))
                leaks = not is_close(out[:, :-1], out_later[:, :-1])
            expected = theirs(y, memory, tgt_mask=~self_mask,
                              memory_key_padding_mask=key_padding_mask_from_mask(memory_mask))
            args = (layer, y, memory, self_mask, memory_mask)
            order = ("cross-attention came before self-attention: first each position gathers its prefix (masked "
                     "self-attention), then it queries the source with what it gathered, then the feed-forward block")
            mistakes = [
                (_decoder(*args, swap="blocks"), order),
                (_decoder(*args, swap="attention"), order),
                (_decoder(layer, y, memory, None, memory_mask), LEAK),
                (_decoder(*args, post=True), "that is post-norm, norm(y + f(y)): here the norm comes *before* "
                                             "each sublayer, y + f(norm(y))"),
                (_decoder(*args[:4], None), "padded source positions were attended to: pass memory_mask to "
                                            "the cross-attention"),
                (_decoder(*args, skip="self"), "the residual around self-attention is missing: y = y + attended"),
                (_decoder(*args, skip="cross"), "the residual around cross-attention is missing: y = y + attended"),
                (_decoder(*args, skip="ffn"), "the residual around the feed-forward block is missing: "
                                              "return y + layer.ffn(layer.norm3(y))"),
                (_decoder(*args, norm_memory=True), "memory was normalised by norm2: the norm applies to the "
                                                    "queries' input y only; the encoder already normalised memory"),
                (_decoder(*args, cross="none"), "the cross-attention got no memory, so it attended over the decoder "
                                                "states (self-attention again): call layer.cross_attn(h, memory, ...)"),
            ]
            if s == t:
                mistakes += [(_decoder(*args, cross=query), "memory was passed as the queries: the queries come "
                                                            "from the decoder (y), keys and values from memory")
                             for query in ("query", "masked query")]
                mistakes.append((_decoder(*args, cross="causal"), "the cross-attention got the causal mask: the "
                                 "source is known in full, nothing in it is in the future, so it takes memory_mask"))
            try:
                compare(out, expected, what=what, case=name, mistakes=mistakes)
            except Hint as hint:
                if leaks and "differs from the reference" in str(hint):
                    raise Hint(LEAK) from None
                raise
    return ("matches nn.TransformerDecoderLayer(norm_first=True): masked self-attention, then cross-attention, "
            "then feed-forward; later tokens do not leak into earlier positions (4 cases)")


@checker("post-norm encoder layer")
@_isolated
def check_post_norm_encoder_layer(fn: Callable[..., Tensor]) -> str:
    """``fn(layer, x, mask) -> [B, S, d_model]``, against ``nn.TransformerEncoderLayer(norm_first=False)``."""
    what = "encoder_layer_post_norm(layer, x, mask)"
    gen = torch.Generator().manual_seed(6)
    for index, (name, b, s, lengths, dtype) in enumerate([
        ("B=2, S=6, second sequence padded", 2, 6, [6, 3], torch.float32),
        ("batch of 1, no mask", 1, 4, None, torch.float32),
        ("float64, S=5", 3, 5, [5, 2, 4], torch.float64),
    ]):
        torch.manual_seed(60 + index)
        theirs = _randomise(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=False,
                                                       dtype=dtype)).train()  # dropout 0; train() skips the fast path
        layer = load_torch_encoder_layer(EncoderLayer(16, 4, 32, norm_first=False).to(dtype), theirs).eval()
        x = torch.randn(b, s, 16, generator=gen, dtype=dtype)  # [B, S, d_model]
        mask = None if lengths is None else padding_mask(torch.tensor(lengths), s)  # [B, 1, 1, S]
        with torch.no_grad():
            out = expect_tensor(_call_layer(fn, layer, x.clone(), mask, what=what), what, expected_shape=(b, s, 16))
            expected = theirs(x, src_key_padding_mask=None if mask is None else key_padding_mask_from_mask(mask))
            attended = layer.self_attn(x, mask=mask)[0]  # [B, S, d_model]
            pre = x + layer.self_attn(layer.norm1(x), mask=mask)[0]
            x1 = layer.norm1(x + attended)
            mistakes = [
                (pre + layer.ffn(layer.norm2(pre)), "that is pre-norm, x + f(norm(x)). Post-norm normalises after "
                 "adding the residual: x = norm1(x + attended), then norm2(x + ffn(x))"),
                (x + layer.norm1(attended) + layer.norm2(layer.ffn(x + layer.norm1(attended))),
                 "only the sublayer's output was normalised, x + norm(f(x)): normalise the sum, norm1(x + attended)"),
                (layer.norm2(x1 + layer.ffn(x)), "the feed-forward block read the layer's input x instead of the "
                 "attention sublayer's output: feed it x = norm1(x + attended)"),
                (layer.norm2(layer.ffn(x1)), "the residual around the feed-forward block is missing: "
                 "norm2(x + ffn(x))"),
                (layer.norm2(layer.norm1(attended) + layer.ffn(layer.norm1(attended))),
                 "the residual around self-attention is missing: norm1(x + attended)"),
                (layer.norm1(x1 + layer.ffn(x1)), "norm1 was used twice: the second sublayer has its own norm2"),
            ]
            if mask is not None:
                x1_all = layer.norm1(x + layer.self_attn(x)[0])
                mistakes.append((layer.norm2(x1_all + layer.ffn(x1_all)),
                                 "padded positions were attended to: pass mask to layer.self_attn"))
            compare(out, expected, what=what, case=name, mistakes=mistakes)
    return "matches nn.TransformerEncoderLayer(norm_first=False): norm(x + f(x)) twice (3 cases)"


# --- Exercise 4: predict, then verify: parameter counts ----------------------------------------------
PARAM_CONFIG = dict(src_vocab_size=1000, tgt_vocab_size=800, d_model=64, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, d_ff=256)


def _n(module: nn.Module, part: str = "") -> int:
    """Parameters of ``module`` (only those whose name contains ``part``)."""
    return sum(p.numel() for name, p in module.named_parameters() if part in name)


def _layer_hints(layer: nn.Module, heads: int, d: int, d_ff: int) -> dict[int, str]:
    """Typical miscounts of one layer, as (guess - actual) -> hint."""
    attention = _n(layer, "attn")
    norms = _n(layer, "norm")
    return {
        -sum(m.bias.numel() for m in layer.modules() if isinstance(m, nn.Linear)):
            "the biases are missing (each nn.Linear has one per output feature)",
        -norms: f"the LayerNorms are missing: each has 2 * d_model = {2 * d} parameters (a scale and a shift)",
        -norms // 2: "each LayerNorm has a scale *and* a shift (2 * d_model), and there is one per sublayer",
        (heads - 1) * attention: "the attention matrices are d_model x d_model for all heads together: heads split "
                                 "them, they do not multiply them",
        -attention + attention // heads: "that counts one head's share of the attention matrices; together the heads "
                                         "use all of each d_model x d_model matrix",
        -d_ff * d: "the feed-forward block has two matrices, d_model x d_ff and d_ff x d_model",
    }


@checker("parameter count of a Seq2SeqTransformer")
@_isolated
def check_param_counts(encoder_layer: Any, decoder_layer: Any, total: Any) -> str:
    """Predicted parameters of one encoder layer, one decoder layer and the whole model for ``PARAM_CONFIG``."""
    guesses = [expect_int(v, w) for v, w in ((encoder_layer, "encoder_layer"), (decoder_layer, "decoder_layer"),
                                          (total, "total"))]
    model = Seq2SeqTransformer(TransformerConfig(**PARAM_CONFIG))
    c = model.config
    enc, dec = model.encoder.layers[0], model.decoder.layers[0]
    mha, d = _n(enc.self_attn), c.d_model
    for name, guess, layer, extra in (
        ("encoder_layer", guesses[0], enc, {}),
        ("decoder_layer", guesses[1], dec, {
            -mha: "a decoder layer has two attention blocks: masked self-attention *and* cross-attention",
            -mha - 2 * d: "the cross-attention block and its LayerNorm are missing",
            -2 * d: "a decoder layer has three LayerNorms, one per sublayer"}),
    ):
        if guess != _n(layer):
            hint = {**_layer_hints(layer, c.n_heads, d, c.d_ff), **extra}.get(
                guess - _n(layer), "add the attention blocks (4 x (d^2 + d) each), the feed-forward block and "
                                   "2 * d_model per LayerNorm")
            raise Hint(f"{name}: {guess:,} is not it: {hint}")
    actual = _n(model)
    hints = {
        -4 * d: "the encoder and the decoder each end with a final LayerNorm (2 * d_model each)",
        -2 * d: "the encoder *and* the decoder end with a final LayerNorm",
        -_n(model.output): "the output layer (d_model -> tgt_vocab_size, with a bias) is missing",
        -c.tgt_vocab_size: "the output layer has a bias too: tgt_vocab_size of them",
        -_n(model.src_embed): "the source embedding table (src_vocab_size x d_model) is missing",
        -_n(model.tgt_embed): "the target embedding table (tgt_vocab_size x d_model) is missing",
        -_n(enc): f"there are n_encoder_layers = {c.n_encoder_layers} encoder layers",
        -_n(dec): f"there are n_decoder_layers = {c.n_decoder_layers} decoder layers",
        model.positions.table.numel(): "the sinusoidal table is computed, not learned: it has no parameters",
    }
    if guesses[2] != actual:
        hint = hints.get(guesses[2] - actual, "embeddings + layers + two final LayerNorms + the output layer")
        raise Hint(f"total: {guesses[2]:,} is not it: {hint}")
    share = (_n(model.src_embed) + _n(model.tgt_embed) + _n(model.output)) / actual
    return (f"encoder layer {_n(enc):,}, decoder layer {_n(dec):,}, model {actual:,}; the embeddings and the "
            f"output layer hold {share:.0%} of it")


# --- Exercise 5: predict, then verify: which outputs change ------------------------------------------
def _as_positions(value: Any, what: str) -> set[int]:
    if value is None:
        raise NotDone(f"not done yet: {what} is still None")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in value):
        raise Hint(f"{what} should be a collection of positions such as {{0, 2}}, but got {value!r}")
    return set(value)


@checker("which outputs change")
@_isolated
def check_what_changes(changed_by_source: Any, changed_by_target: Any) -> str:
    """Target positions 0..4 whose logits change when source token 2 / target token 3 is edited."""
    by_source, by_target = (_as_positions(changed_by_source, "changed_by_source"),
                            _as_positions(changed_by_target, "changed_by_target"))
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = Seq2SeqTransformer(TransformerConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=32, d_ff=64))
    src, tgt = torch.randint(1, 20, (1, 6), generator=gen), torch.randint(1, 20, (1, 5), generator=gen)
    src2, tgt2 = src.clone(), tgt.clone()
    src2[0, 2], tgt2[0, 3] = src[0, 2] % 19 + 1, tgt[0, 3] % 19 + 1
    with torch.no_grad():
        base = model(src, tgt)[0]  # [T, V]
        measured = [{t for t in range(5) if not is_close(base[t], model(s, g)[0, t], atol=1e-6, rtol=0)}
                    for s, g in ((src2, tgt), (src, tgt2))]
    if by_source != measured[0]:
        hint = ("every target position reads every source position through cross-attention (there is no causal "
                "mask on the source, and nothing ties target position t to source position t)")
        raise Hint(f"editing source token 2 changed positions {sorted(measured[0])}, not {sorted(by_source)}: {hint}")
    if by_target != measured[1]:
        if by_target > measured[1]:
            hint = "the causal mask stops positions 0..2 from seeing token 3, in every layer"
        else:
            hint = ("position 3 sees its own token (the diagonal of the causal mask) and positions after it read it "
                    "through self-attention")
        raise Hint(f"editing target token 3 changed positions {sorted(measured[1])}, not {sorted(by_target)}: {hint}")
    return ("a source edit reaches every target position (cross-attention sees the whole source); a target edit "
            f"reaches only its own and later positions {sorted(measured[1])} (the causal mask)")


__all__ = ["PARAM_CONFIG", "check_decoder_layer_forward", "check_param_counts", "check_post_norm_encoder_layer",
           "check_sinusoidal_positions", "check_what_changes"]
