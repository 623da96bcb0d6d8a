"""Lesson 11's models that read two sources (course_lib.fusion) and their experiments (course_lib.fusion_runs):
cross-attention against PyTorch's own, Flamingo's closed gates against the frozen language model, padding and
dropped sources, the Perceiver's latents and their cost, greedy decoding, bad input, training, the cache."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from course_lib import fusion as fu
from course_lib import fusion_runs as fr
from course_lib import questions as qs
from course_lib.data import BOS_ID, EOS_ID, PAD_ID
from course_lib.reference import TorchCrossAttentionBlock, load_torch_mha
from course_lib.vision import PatchEncoder

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = {"train": 64, "valid": 16, "test": 16}
D_IMAGE = 32
TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}
KINDS = list(fr.MODELS)  # concatenation, separate, prefix, text only, gated, ungated, latents


@pytest.fixture(scope="module")
def data() -> dict[str, qs.QAData]:
    torch.manual_seed(0)
    encoder = PatchEncoder(image_size=48, patch_size=8, channels=3, d_image=D_IMAGE, n_heads=4, n_layers=1, d_ff=64)
    splits = qs.qa_data(0, SIZES)
    for split in splits.values():
        split.encode_images(encoder)
    return splits


@pytest.fixture(scope="module")
def config(data) -> fu.FusionConfig:
    return fu.FusionConfig(len(data["train"].src_vocab), len(data["train"].tgt_vocab), d_image=D_IMAGE, d_model=32,
                           n_heads=4, d_ff=64)


@pytest.fixture(scope="module")
def batch(data) -> qs.QABatch:
    batch = data["train"].batch(range(8))
    lengths = (batch.src_ids.question_ids != PAD_ID).sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # questions of several lengths: padding is there to be ignored
    return batch


def make(kind: str, config: fu.FusionConfig, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A fresh model of ``kind``; Flamingo's models freeze a fresh (untrained) text-only model."""
    torch.manual_seed(seed)
    if kind == "latents":
        config = replace(config, n_latents=4)
    text = fu.QuestionOnlyLM(config) if kind in ("gated", "ungated") else None
    return fr.build_model(kind, config, text).to(dtype).eval()


def in_dtype(sources: qs.Sources, dtype: torch.dtype) -> qs.Sources:
    return qs.Sources(sources.image.to(dtype), sources.question_ids)


def open_gates(model: fu.FlamingoQA, value: float = 0.3) -> None:
    with torch.no_grad():
        for block in model.blocks:
            block.alpha_attn.fill_(value)
            block.alpha_ffn.fill_(value)


def output_layer(model: nn.Module) -> nn.Linear:
    return model.output if isinstance(model, fu.FusionQA) else model.lm.output


# --- cross-attention against PyTorch's -------------------------------------------------------------------------
CASES = [("concatenation", 0, None), ("concatenation", 0, "image"), ("separate", 0, None), ("separate", 1, None)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fusion, index, drop", CASES)
def test_a_cross_attention_sublayer_equals_pytorchs(fusion, index, drop, dtype, config, batch) -> None:
    """The sublayer reading its memory (the combined mask in one memory; the patches, 48 wide, or the padded
    question in two) equals ``nn.MultiheadAttention`` with ``key_padding_mask = ~mask`` and
    ``F.scaled_dot_product_attention`` on the projected q, k, v with the bool mask; both paths of ours."""
    config = replace(config, d_image=48)
    model = make(fusion, config, dtype)
    g = torch.Generator().manual_seed(1)
    features = 3 * torch.randn(8, 36, 48, generator=g, dtype=dtype) + 1
    memory = model.encode(qs.Sources(features, batch.src_ids.question_ids), drop=drop)[index]
    sublayer = model.layers[0].cross[index]
    d_source = memory.states.shape[-1]
    assert d_source == (48 if (fusion, index) == ("separate", 0) else 32)
    theirs = nn.MultiheadAttention(32, 4, batch_first=True, kdim=d_source, vdim=d_source, dtype=dtype)
    with torch.no_grad():
        theirs.in_proj_bias.uniform_(-0.5, 0.5)  # PyTorch starts its biases at 0: copying them must be checked
        load_torch_mha(sublayer.attn, theirs)
        for norm in (sublayer.norm_query, sublayer.norm_source):  # LayerNorms that are not the identity
            norm.weight.uniform_(0.5, 1.5, generator=g)
            norm.bias.uniform_(-0.5, 0.5, generator=g)
    y = torch.randn(8, 3, 32, generator=g, dtype=dtype)
    real = torch.ones(8, memory.states.shape[1], dtype=torch.bool) if memory.mask is None else memory.mask[:, 0, 0]
    if fusion == "concatenation" or index == 1:
        assert not bool(real.all()) and bool(real.any(dim=1).all())  # padded (or dropped) keys, never a whole row
    query, source = sublayer.norm_query(y), sublayer.norm_source(memory.states)
    with torch.no_grad():
        expected, expected_w = theirs(query, source, source, key_padding_mask=~real, average_attn_weights=False)
        attn = sublayer.attn
        split = lambda t: t.view(8, -1, 4, 8).transpose(1, 2)  # [B, H, L, d_head]
        context = F.scaled_dot_product_attention(split(attn.q_proj(query)), split(attn.k_proj(source)),
                                                 split(attn.v_proj(source)), attn_mask=real[:, None, None, :])
        by_sdpa = attn.out_proj(context.transpose(1, 2).reshape(8, 3, 32))
        for use_sdpa in (True, False):
            attn.use_sdpa = use_sdpa
            ours = sublayer(y, memory)[0]
            assert_close(ours, expected, **TOLERANCE[dtype])
            assert_close(ours, by_sdpa, **TOLERANCE[dtype])
        ours, weights = sublayer(y, memory, need_weights=True)
    assert_close(ours, expected, **TOLERANCE[dtype])
    assert_close(weights, expected_w, **TOLERANCE[dtype])


def test_the_concatenated_memory_is_the_projected_patches_then_the_question(config, batch) -> None:
    model = make("concatenation", config)
    (memory,) = model.encode(batch.src_ids)
    features, question_ids = batch.src_ids
    types = model.source_type.weight
    with torch.no_grad():
        expected = torch.cat([model.image_proj(features) + types[fu.IMAGE_TYPE],
                              model.question_encoder(question_ids) + types[fu.QUESTION_TYPE]], dim=1)
    assert_close(memory.states, expected, rtol=0, atol=0)
    assert memory.mask.shape == (8, 1, 1, 36 + question_ids.shape[1])
    assert bool(memory.mask[:, 0, 0, :36].all())
    assert torch.equal(memory.mask[:, 0, 0, 36:], question_ids != PAD_ID)


# --- Flamingo: closed gates, a frozen language model --------------------------------------------------------------
def test_closed_gates_give_the_frozen_text_model_to_the_last_bit(config, batch) -> None:
    torch.manual_seed(0)
    text = fu.QuestionOnlyLM(config)
    gated, ungated = fr.build_model("gated", config, text), fr.build_model("ungated", config, text)
    assert gated.gates() == [(0.0, 0.0)] * 3 and ungated.gates() == [(1.0, 1.0)] * 3
    sources, tgt = batch.src_ids, batch.tgt_in
    for training in (True, False):
        for model in (text, gated, ungated):
            model.train(training)
        reference = text(sources, tgt)
        assert torch.equal(gated(sources, tgt), reference), training
        assert not torch.allclose(ungated(sources, tgt), reference, atol=1e-3), training
    open_gates(gated)
    opened = gated(sources, tgt)
    assert not torch.allclose(opened, reference, atol=1e-3)  # the blocks are there: open gates let the image in
    other = qs.Sources(torch.roll(sources.image, 1, dims=0), sources.question_ids)
    assert not torch.allclose(gated(other, tgt), opened, atol=1e-4)


@pytest.mark.parametrize("gated", [True, False])
def test_a_gated_block_equals_its_pytorch_composition(gated) -> None:
    """``x + tanh(a) * attn(norm(x), norm(image))``, then ``+ tanh(b) * ffn(norm(x))``, from PyTorch's modules
    (``reference.TorchCrossAttentionBlock``'s); without gates, the plain block itself."""
    torch.manual_seed(0)
    theirs = TorchCrossAttentionBlock(32, 48, 4, 64).double().eval()
    block = fu.GatedCrossAttention(32, 48, 4, 64, gated=gated).double().eval()
    with torch.no_grad():
        for norm in (theirs.norm_query, theirs.norm_source, theirs.norm_ffn):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        theirs.attn.in_proj_bias.uniform_(-0.5, 0.5)
        load_torch_mha(block.cross.attn, theirs.attn)
        block.cross.norm_query.load_state_dict(theirs.norm_query.state_dict())
        block.cross.norm_source.load_state_dict(theirs.norm_source.state_dict())
        block.norm_ffn.load_state_dict(theirs.norm_ffn.state_dict())
        block.ffn.linear1.load_state_dict(theirs.ffn[0].state_dict())
        block.ffn.linear2.load_state_dict(theirs.ffn[2].state_dict())
        if gated:
            block.alpha_attn.fill_(0.7)
            block.alpha_ffn.fill_(-0.4)
        x, image = torch.randn(3, 5, 32, dtype=torch.float64), torch.randn(3, 36, 48, dtype=torch.float64)
        got, weights = block(x, fu.Memory(image, None), need_weights=True)
        if gated:
            source = theirs.norm_source(image)
            attended, expected_w = theirs.attn(theirs.norm_query(x), source, source, average_attn_weights=False)
            h = x + math.tanh(0.7) * attended
            expected = h + math.tanh(-0.4) * theirs.ffn(theirs.norm_ffn(h))
        else:
            expected, expected_w = theirs(x, image)
    assert_close(got, expected, **TOLERANCE[torch.float64])
    assert_close(weights, expected_w, **TOLERANCE[torch.float64])
    assert block.gates() == ((pytest.approx(math.tanh(0.7)), pytest.approx(math.tanh(-0.4))) if gated else (1.0, 1.0))


def test_one_optimiser_step_changes_only_the_gated_blocks(config, batch) -> None:
    torch.manual_seed(0)
    text = fu.QuestionOnlyLM(config)
    text_before = copy.deepcopy(text.state_dict())
    model = fr.build_model("gated", config, text).train()
    assert all(p.requires_grad for p in text.parameters())  # build_model freezes a copy, not the caller's model
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(p.requires_grad for p in model.blocks.parameters())
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert fu.trainable_parameters(model) == blocks < sum(p.numel() for p in model.parameters())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # as training.train: every parameter handed over

    def step() -> None:
        logits = model(batch.src_ids, batch.tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {f"blocks.{i}.alpha_{g}" for i in range(3) for g in ("attn", "ffn")} <= changed
    assert all(name.startswith("blocks.") for name in changed)
    assert all(p.grad is None for p in model.lm.parameters())
    assert all(a != 0 and b != 0 for a, b in model.gates())
    step()  # with the gates ajar the blocks' own weights learn too; the language model still does not
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "blocks.0.cross.attn.q_proj.weight" in changed and all(name.startswith("blocks.") for name in changed)
    for name, value in text_before.items():
        assert torch.equal(model.lm.state_dict()[name.removeprefix("lm.")], value)
        assert torch.equal(text.state_dict()[name], value)


# --- padding and dropped sources ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["concatenation", "separate", "prefix", "latents", "ungated"])
def test_extra_question_padding_changes_nothing(kind, config, batch, data) -> None:
    model = make(kind, config)
    sources, tgt = batch.src_ids, batch.tgt_in
    with torch.no_grad():
        plain = model(sources, tgt)
        assert_close(model(fr.pad_questions(sources, 5), tgt), plain, rtol=0, atol=1e-5)
        other = qs.Sources(sources.image, torch.roll(sources.question_ids, 1, dims=0))
        assert not torch.allclose(model(other, tgt), plain, atol=1e-4)  # the question is read
    assert fr.padding_change(model, data["valid"]) < 1e-5
    assert fr.pad_questions(sources, 3).question_ids.shape == (8, sources.question_ids.shape[1] + 3)


@pytest.mark.parametrize("drop", ["image", "question"])
def test_a_dropped_source_in_one_memory_is_a_memory_without_it(drop, config, batch) -> None:
    model = make("concatenation", config, torch.float64)
    sources, tgt = in_dtype(batch.src_ids, torch.float64), batch.tgt_in
    features, question_ids = sources
    types = model.source_type.weight
    with torch.no_grad():
        if drop == "image":  # the question's tokens alone, with their padding mask
            memory = fu.Memory(model.question_encoder(question_ids) + types[fu.QUESTION_TYPE],
                               (question_ids != PAD_ID)[:, None, None, :])
        else:  # the patches alone: every one real
            memory = fu.Memory(model.image_proj(features) + types[fu.IMAGE_TYPE], None)
        expected = model.decode(tgt, [memory])[0]
        got = model(sources, tgt, drop=drop)
    assert_close(got, expected, **TOLERANCE[torch.float64])
    assert not torch.allclose(got, model(sources, tgt), atol=1e-4)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("index, drop", [(0, "image"), (1, "question")])
def test_a_dropped_separate_source_adds_only_its_output_bias(index, drop, need_weights, config, batch) -> None:
    """A sublayer with every key masked attends to nothing: zeros before its output projection, so its update is
    the projection's bias, exactly; the other sublayer still reads its source."""
    model = make("separate", config)
    with torch.no_grad():
        logits, traces = model.decode(batch.tgt_in, model.encode(batch.src_ids, drop=drop), need_weights=need_weights)
    assert torch.isfinite(logits).all()
    for layer, trace in zip(model.layers, traces):
        update, bias = trace.updates[index], layer.cross[index].attn.out_proj.bias
        assert torch.equal(update, bias.expand_as(update))
        other = trace.updates[1 - index]
        assert not torch.allclose(other, layer.cross[1 - index].attn.out_proj.bias.expand_as(other), atol=1e-4)
        if need_weights:
            assert torch.equal(trace.weights[index], torch.zeros_like(trace.weights[index]))
            assert_close(trace.weights[1 - index].sum(-1), torch.ones(8, 4, batch.tgt_in.shape[1]))


def test_prefix_fusion_without_the_image_is_its_language_model_on_the_text(config, batch) -> None:
    model = make("prefix", config, torch.float64)
    sources = in_dtype(batch.src_ids, torch.float64)
    with torch.no_grad():
        assert_close(model(sources, batch.tgt_in, drop="image"), model.lm(sources.question_ids, batch.tgt_in),
                     **TOLERANCE[torch.float64])


@pytest.mark.parametrize("kind", ["concatenation", "separate", "prefix", "latents"])
def test_no_nan_anywhere_with_a_dropped_source(kind, config, batch) -> None:
    model = make(kind, config).train()
    for drop in ("image", "question"):
        model.zero_grad()
        logits = model(batch.src_ids, batch.tgt_in, drop=drop)
        assert torch.isfinite(logits).all(), drop
        F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), drop
        tokens = model.greedy_decode(batch.src_ids, eos_id=EOS_ID, drop=drop)
        assert bool(((tokens >= 0) & (tokens < config.answer_vocab_size)).all())


# --- the Perceiver's latents ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_latents", [1, 4, 64])
def test_latents_are_shared_queries_that_read_every_patch(n_latents, data) -> None:
    torch.manual_seed(0)
    resampler = fu.LatentResampler(n_latents, D_IMAGE, 4, 64).eval()
    features = data["train"].features[:5]  # [5, 36, 32]
    with torch.no_grad():
        latents, weights = resampler(features, need_weights=True)
        assert latents.shape == (5, n_latents, D_IMAGE) and resampler.latents.shape == (n_latents, D_IMAGE)
        assert len(weights) == 1 and weights[0].shape == (5, 4, n_latents, 36)
        assert_close(weights[0].sum(-1), torch.ones(5, 4, n_latents))
        order = torch.tensor([3, 0, 4, 1, 2])
        assert_close(resampler(features[order])[0], latents[order], **TOLERANCE[torch.float32])
        twice = resampler(features[[1, 1]])[0]  # one set of latents for every image
        assert_close(twice[0], twice[1], rtol=0, atol=0)
        assert not torch.allclose(latents[0], latents[1], atol=1e-4)  # but each image gives its own
    assert resampler(features)[1] == []
    seen = []  # what the first block's queries are: the learned latents, the same for every image
    resampler.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    resampler(features)
    assert torch.equal(seen[0], resampler.latents.detach().expand(5, -1, -1))


def test_a_fusion_model_with_latents_reads_m_image_tokens(config, batch) -> None:
    model = make("latents", config)
    assert model.image_tokens(batch.src_ids.image).shape == (8, 4, D_IMAGE)
    (memory,) = model.encode(batch.src_ids)
    assert memory.states.shape == (8, 4 + batch.src_ids.question_ids.shape[1], 32)


def block_flops(m: int, n: int, d: int, batch: int = 1) -> int:
    """Multiply-adds x 2 of a CrossAttentionBlock with d_ff = 2d reading n patches with m latents:
    q and output projections (m d d each), k and v projections (n d d each), scores and weighted sum (m n d each,
    over all heads), feed-forward d -> 2d -> d (2 m d d each); norms, softmax and GELU are not multiply-adds."""
    return 2 * batch * (m * d * d + 2 * n * d * d + 2 * m * n * d + m * d * d + 2 * 2 * m * d * d)


@pytest.mark.parametrize("d_model, n_heads, batch_size", [(96, 4, 1), (32, 2, 3)])
def test_latent_attention_flops_are_linear_in_latents_and_in_patches(d_model, n_heads, batch_size) -> None:
    flops = lambda m, n: fr.latent_attention_flops(m, n, d_model, n_heads, batch_size)
    d, b = d_model, batch_size
    for m, n in ((4, 36), (16, 36), (8, 100)):
        assert flops(2 * m, n) - flops(m, n) == b * (12 * m * d * d + 4 * m * n * d)  # m more latents
        assert flops(m, 2 * n) - flops(m, n) == b * (4 * n * d * d + 4 * m * n * d)  # n more patches
        assert flops(3 * m, n) - flops(2 * m, n) == flops(2 * m, n) - flops(m, n)
        assert flops(m, n) == block_flops(m, n, d, b)


@pytest.mark.parametrize("m, n, d_head, n_heads, batch_size",
                         [(4, 36, 24, 4, 1), (64, 36, 8, 2, 3), (1, 100, 16, 1, 2)])
def test_the_attention_itself_costs_four_m_n_d_per_head(m, n, d_head, n_heads, batch_size) -> None:
    flops = fr.latent_score_flops(m, n, d_head=d_head, n_heads=n_heads, batch=batch_size)
    assert flops == 2 * batch_size * n_heads * (m * n * d_head + m * n * d_head)  # q @ k^T, then weights @ v
    assert fr.time_latent_attention(m, n, d_head=d_head, n_heads=n_heads, batch=batch_size, repeats=1) > 0


# --- greedy decoding ------------------------------------------------------------------------------------------
DECODERS = ["concatenation", "separate", "prefix", "ungated", "latents"]


def teacher_forced_argmax(model: nn.Module, sources: qs.Sources, tokens: torch.Tensor) -> torch.Tensor:
    prefix = torch.cat([torch.full((tokens.shape[0], 1), BOS_ID), tokens[:, :-1]], dim=1)
    with torch.no_grad():
        return model(sources, prefix).argmax(dim=-1)


@pytest.mark.parametrize("kind", DECODERS)
def test_greedy_answers_are_the_argmax_of_their_own_teacher_forced_logits(kind, config, batch) -> None:
    model = make(kind, config, torch.float64)  # float64: no near-tie flips an argmax between the two
    sources = in_dtype(batch.src_ids, torch.float64)
    tokens = model.greedy_decode(sources, eos_id=None)
    assert tokens.shape == (8, config.max_answer_len - 1)
    assert torch.equal(teacher_forced_argmax(model, sources, tokens), tokens)
    assert torch.equal(model.greedy_decode(sources, eos_id=None, max_new_tokens=3), tokens[:, :3])


def after_eos(full: torch.Tensor, eos: int) -> torch.Tensor:
    """What decoding with ``eos`` gives, from the tokens decoded without it: a finished row continues with
    padding, and decoding stops once every row has finished."""
    out, done = full.clone(), torch.zeros(full.shape[0], dtype=torch.bool)
    for t in range(full.shape[1]):
        out[done, t] = PAD_ID
        done = done | (full[:, t] == eos)
        if bool(done.all()):
            return out[:, :t + 1]
    return out


def staggered_eos(full: torch.Tensor) -> list[int]:
    """Tokens to play ``<eos>``: the first decoded one, and the one whose first use differs most between rows
    (rows that finish at different steps, or never)."""
    first = lambda token: {int(row.tolist().index(token)) if token in row.tolist() else -1 for row in full}
    return [int(full[0, 0]), max(sorted(set(full.flatten().tolist())), key=lambda token: len(first(token)))]


@pytest.mark.parametrize("kind", [*DECODERS, "gated", "text only"])
def test_greedy_decoding_stops_at_eos_and_at_max_new_tokens(kind, config, batch) -> None:
    model = make(kind, config, torch.float64)
    sources = in_dtype(batch.src_ids, torch.float64)
    full = model.greedy_decode(sources, eos_id=None)
    assert full.shape == (8, 7)
    for eos in staggered_eos(full):
        assert torch.equal(model.greedy_decode(sources, eos_id=eos), after_eos(full, eos)), eos
    assert model.greedy_decode(sources, eos_id=None, max_new_tokens=2).shape == (8, 2)
    with torch.no_grad():
        output_layer(model).bias[EOS_ID] = 1e4  # every row's first word is <eos>: one step, then stop
    assert torch.equal(model.greedy_decode(sources, eos_id=EOS_ID), torch.full((8, 1), EOS_ID))
    for bad in (0, config.max_answer_len):
        with pytest.raises(ValueError, match=rf"max_new_tokens must be in 1\.\.7; got {bad}"):
            model.greedy_decode(sources, max_new_tokens=bad)


# --- bad input ------------------------------------------------------------------------------------------------
BAD_SOURCES = {
    "image too narrow": (lambda s: qs.Sources(s.image[..., :16], s.question_ids),
                         r"\[B=8, N, d_image=32\].*got \[8, 36, 16\]"),
    "image batch": (lambda s: qs.Sources(s.image[:7], s.question_ids), r"\[B=8, N, d_image=32\].*got \[7, 36, 32\]"),
    "integer features": (lambda s: qs.Sources(s.image.long(), s.question_ids),
                         "image features must be floating point; got dtype torch.int64"),
    "float question ids": (lambda s: qs.Sources(s.image, s.question_ids.float()),
                           "question_ids must be int64 word ids; got dtype torch.float32"),
    "empty question": (lambda s: qs.Sources(s.image, torch.zeros_like(s.question_ids)),
                       "every question needs at least one real word: got an empty"),
    "long question": (lambda s: fr.pad_questions(s, 17 - s.question_ids.shape[1]),
                      "at most max_question_len=16 words; got 17"),
    "unknown word": (lambda s: qs.Sources(s.image, s.question_ids.masked_fill(s.question_ids == 4, 99)),
                     rf"ids outside 0\.\.{len(qs.question_vocabulary()) - 1}$"),
    "not Sources": (lambda s: tuple(s), r"questions.Sources\(image, question_ids\); got a tuple"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_every_model_names_bad_sources(case, kind, config, batch) -> None:
    model = make(kind, config)
    bad, message = BAD_SOURCES[case]
    with pytest.raises(ValueError, match=message):
        model(bad(batch.src_ids), batch.tgt_in)
    if case == "long question":
        with pytest.raises(ValueError, match=message):
            model.greedy_decode(bad(batch.src_ids))


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_names_an_answer_longer_than_max_answer_len(kind, config, batch) -> None:
    model = make(kind, config)
    long_answer = torch.cat([batch.tgt_in, torch.full((8, 9 - batch.tgt_in.shape[1]), 5)], dim=1)  # [8, 9]
    with pytest.raises(ValueError, match="at most max_answer_len=8 tokens; got 9"):
        model(batch.src_ids, long_answer)
    short = qs.Sources(batch.src_ids.image, batch.src_ids.question_ids[:, :4].clamp(min=4))  # a short question too
    with pytest.raises(ValueError, match="at most max_answer_len=8 tokens; got 9"):
        model(short, long_answer)
    assert model(batch.src_ids, long_answer[:, :8]).shape == (8, 8, config.answer_vocab_size)


@pytest.mark.parametrize("kind", ["concatenation", "separate", "prefix"])
def test_drop_takes_one_source_by_name(kind, config, batch) -> None:
    model = make(kind, config)
    for drop in ("both", "text"):
        with pytest.raises(ValueError, match=f"drop must be None, 'image' or 'question'; got '{drop}'"):
            model(batch.src_ids, batch.tgt_in, drop=drop)


def test_building_refuses_what_it_cannot_build(config, data) -> None:
    with pytest.raises(ValueError, match=r"fusion must be one of \('concatenation', 'separate'\); got 'sum'"):
        fu.FusionQA(config, "sum")
    with pytest.raises(ValueError, match="n_latents must be None or >= 1; got 0"):
        replace(config, n_latents=0)
    with pytest.raises(ValueError, match="need n_latents >= 1 and n_layers >= 1; got 0 and 1"):
        fu.LatentResampler(0, 32, 4, 64)
    with pytest.raises(ValueError, match=r"features must have shape \[B, N, d\].*got shape \[36, 32\]"):
        fu.LatentResampler(4, 32, 4, 64)(torch.zeros(36, 32))
    with pytest.raises(ValueError, match="kind 'gated' needs the trained text-only model.*got None"):
        fr.build_model("gated", config)
    with pytest.raises(ValueError, match="kind 'ungated' needs the trained text-only model"):
        fr.build_model("ungated", config)
    with pytest.raises(ValueError, match=r"kind 'latents' needs FusionConfig\(n_latents=M\); got n_latents=None"):
        fr.build_model("latents", config)
    with pytest.raises(ValueError, match="kind must be one of 'concatenation', .*; got 'average'"):
        fr.build_model("average", config)
    with pytest.raises(ValueError, match="call encode_images first"):
        fr.fusion_config(qs.qa_data(0, {"train": 4, "valid": 2, "test": 2})["train"])
    built = fr.fusion_config(data["train"], n_latents=8)
    assert (built.d_image, built.n_latents, built.question_vocab_size) == (D_IMAGE, 8, len(data["train"].src_vocab))


# --- training, saving, the cache ------------------------------------------------------------------------------
def test_three_training_steps_report_what_happened(data) -> None:
    trained = fr.train_qa_model("concatenation", data, steps=3, progress=False)
    info = trained.info
    assert trained.kind == "concatenation" and not trained.model.training
    assert info["steps"] == 3 and info["ms_per_step"] > 0 and len(info["loss"]) == 3
    assert info["parameters"] == sum(p.numel() for p in trained.model.parameters()) == info["trainable"]
    assert info["gates"] == [] and info["gate_steps"] == []
    text = fu.QuestionOnlyLM(fr.fusion_config(data["train"]))
    gated = fr.train_qa_model("gated", data, steps=3, text_model=text, progress=False)
    info = gated.info
    assert info["steps"] == 3 and info["trainable"] < info["parameters"]
    assert info["trainable"] == sum(p.numel() for p in gated.model.blocks.parameters())
    assert info["gates"][0] == [(0.0, 0.0)] * 3  # closed at the start ...
    assert any(g != (0.0, 0.0) for g in info["gates"][-1])  # ... and moved by training
    assert info["gate_steps"] == [0, 3] and len(info["gates"]) == len(info["gate_steps"])
    for name, value in text.state_dict().items():  # the language model stayed frozen
        assert torch.equal(gated.model.lm.state_dict()[name.removeprefix("lm.")], value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_model_loads_with_the_same_logits(kind, config, batch, tmp_path) -> None:
    model = make(kind, config)
    if kind == "gated":
        open_gates(model)  # else the blocks would not show in the logits
    trained = fr.TrainedQA(model, kind, {"steps": 0, "note": kind})
    path = fr.save_qa_model(trained, tmp_path / "sub" / "m.pt")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left
    loaded = fr.load_qa_model(path)
    assert loaded.kind == kind and loaded.info == trained.info and type(loaded.model) is type(model)
    assert loaded.model.config == model.config and not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(batch.src_ids, batch.tgt_in), model(batch.src_ids, batch.tgt_in))
    assert fu.trainable_parameters(loaded.model) == fu.trainable_parameters(model)


def test_load_or_train_trains_once_then_loads(data, batch, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    path = fr.run_path("concatenation", steps=2)
    assert path == tmp_path / "lesson11" / "concatenation-seed0-steps2.pt" and not path.exists()
    first = fr.load_or_train_qa("concatenation", data, steps=2, progress=False)
    assert path.exists() and first.info["from_cache"] is False and first.info["steps"] == 2

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(fr, "train_qa_model", no_training)
    again = fr.load_or_train_qa("concatenation", data, steps=2, progress=False)
    assert again.info["from_cache"] is True
    assert {k: v for k, v in again.info.items() if k != "from_cache"} == \
        {k: v for k, v in first.info.items() if k != "from_cache"}
    with torch.no_grad():
        assert torch.equal(again.model(batch.src_ids, batch.tgt_in), first.model(batch.src_ids, batch.tgt_in))
    named = fr.run_path("text only", seed=1, steps=5, n_latents=4)
    assert named == tmp_path / "lesson11" / "text-only-M4-seed1-steps5.pt"
    assert fr.run_path("gated").name == f"gated-seed0-steps{fr.DEFAULT_STEPS['gated']}.pt"


# --- measurements ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, layers", [("concatenation", 2), ("separate", 2), ("prefix", 3), ("latents", 2)])
def test_source_shares_are_a_row_per_layer_summing_to_one(kind, layers, config, data) -> None:
    shares = fr.source_shares(make(kind, config), data["valid"])
    assert shares.shape == (layers, 2)
    assert_close(shares.sum(dim=1), torch.ones(layers))
    assert bool(((shares > 0) & (shares < 1)).all())


def test_source_shares_on_cases_worked_out_by_hand(config, data) -> None:
    """Queries of zeros in one memory: every real key gets the same weight, so the image's share at answer row
    ``b`` is 36 / (36 + its question's length); a silenced question sublayer leaves the image the whole share."""
    valid = data["valid"]
    real_answer = (valid.tgt_out != PAD_ID).sum(dim=1).double()  # [B]: the answer rows that count
    model = make("concatenation", config)
    with torch.no_grad():
        for layer in model.layers:
            layer.cross[0].attn.q_proj.weight.zero_()
            layer.cross[0].attn.q_proj.bias.zero_()
    expected = (real_answer * 36 / (36 + valid.src_lengths)).sum() / real_answer.sum()
    assert_close(fr.source_shares(model, valid)[:, 0].double(), expected.repeat(2), rtol=0, atol=1e-6)
    model = make("separate", config)
    with torch.no_grad():
        for layer in model.layers:
            layer.cross[1].attn.out_proj.weight.zero_()
            layer.cross[1].attn.out_proj.bias.zero_()
    assert torch.equal(fr.source_shares(model, valid), torch.tensor([[1.0, 0.0]] * 2))


def test_source_shares_refuse_a_model_without_cross_attention_weights(config, data) -> None:
    with pytest.raises(ValueError, match="reads FusionQA and PrefixQA models; got a FlamingoQA"):
        fr.source_shares(make("gated", config), data["valid"])


def test_scores_and_answers_cover_every_question(config, data) -> None:
    model = make("concatenation", config)
    words = fr.answers(model, data["test"], batch_size=5)
    assert len(words) == 16 and all(isinstance(w, list) and len(w) <= 7 for w in words)
    scores = fr.scores(model, data["test"])
    assert scores == qs.exact_match_by_kind(words, data["test"]) and 0 <= scores["all"] <= 1
    assert len(fr.answers(model, data["test"], drop="image")) == 16
