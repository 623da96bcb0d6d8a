"""Lesson 11: one decoder, two sources. Ways to let a model read an image *and* a question.

- ``FusionQA(config, fusion="concatenation")``: both sources in **one memory** (image patches projected to the
  decoder's width, question states), each token tagged with a learned **source-type embedding**, one combined
  padding mask; one cross-attention per decoder layer.
- ``FusionQA(config, fusion="separate")``: **one cross-attention per source**, in sequence inside each decoder
  layer (image, then question), each with its own mask and its own source LayerNorm.
- ``PrefixQA``: **no cross-attention**: projected patches are placed before the question in lesson 09's
  decoder-only model (``conditioning.DecoderOnlyTranslator``), as LLaVA places an image before its prompt.
- ``FlamingoQA``: a frozen text-only language model (the question's answerer without the image) with a
  ``GatedCrossAttention`` block inserted before each of its layers; the gates ``tanh(alpha)`` start at 0, so at
  initialisation the model *is* the frozen language model, to the last bit.
- ``LatentResampler``: ``M`` learned latent queries cross-attend to the ``N`` patches (Perceiver); the decoder then
  reads ``M`` latents instead of ``N`` patches (``FusionConfig(n_latents=M)``).

The image side is lesson 10's: a trained captioner's ``PatchEncoder``, frozen, as real systems freeze a pretrained
vision encoder (Flamingo, LLaVA); each image's patch features ``[N, d_image]`` are computed once
(``QAData.encode_images``). Every model takes ``questions.Sources`` (those features and the question ids) and answer
ids, like a translator takes source
and target ids, so lesson 07's ``training.train`` trains it and ``metrics.translate_data`` decodes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import require_ndim, require_tensor, shape_str
from .attention import MultiHeadAttention
from .conditioning import DecoderOnlyConfig, DecoderOnlyTranslator
from .data import BOS_ID, PAD_ID
from .generate import greedy_tokens
from .layers import EncoderLayer, FeedForward, sinusoidal_positions
from .masks import causal_mask, combine_masks, padding_mask_from_ids
from .questions import Sources
from .vision import CrossAttentionBlock

FUSIONS = ("concatenation", "separate")
SOURCE_NAMES = ("image", "question")
IMAGE_TYPE, QUESTION_TYPE = 0, 1  # rows of the source-type embedding


@dataclass
class FusionConfig:
    """Sizes shared by lesson 11's models; ``d_image`` is lesson 10's captioner's feature width."""

    question_vocab_size: int
    answer_vocab_size: int
    d_image: int = 96  # width of the frozen image encoder's patch features
    d_model: int = 64
    n_heads: int = 4
    n_question_layers: int = 1
    n_decoder_layers: int = 2
    d_ff: int = 192
    max_question_len: int = 16
    max_answer_len: int = 8
    n_latents: int | None = None  # Perceiver latents between the patches and the decoder (None: read the patches)
    pad_id: int = PAD_ID

    def __post_init__(self) -> None:
        if self.n_latents is not None and self.n_latents < 1:
            raise ValueError(f"n_latents must be None or >= 1; got {self.n_latents}")


def check_sources(sources: Sources, config: FusionConfig) -> None:
    """Raise ValueError unless ``sources`` is ``Sources(image [B, N, d_image], question_ids [B, Q])`` of one batch
    size, with at least one real word per question and ids inside the question vocabulary."""
    if not isinstance(sources, Sources):
        raise ValueError(f"sources must be questions.Sources(image, question_ids); got a {type(sources).__name__}")
    image, question_ids = sources
    require_tensor("question_ids", question_ids)
    require_ndim("question_ids", question_ids, 2, "[B, Q]")
    require_tensor("image", image)
    if image.ndim != 3 or image.shape[0] != question_ids.shape[0] or image.shape[2] != config.d_image:
        raise ValueError(f"the image must be patch features [B={question_ids.shape[0]}, N, d_image={config.d_image}] "
                         f"(one per question); got {shape_str(image.shape)}")
    if not image.dtype.is_floating_point:
        raise ValueError(f"image features must be floating point; got dtype {image.dtype}")
    if question_ids.dtype != torch.long:
        raise ValueError(f"question_ids must be int64 word ids; got dtype {question_ids.dtype}")
    if question_ids.shape[1] == 0 or bool(((question_ids != config.pad_id).sum(dim=1) == 0).any()):
        raise ValueError("every question needs at least one real word: got an empty (all-padding) question; to "
                         "leave a source out, use drop=\"question\"")
    if question_ids.shape[1] > config.max_question_len:
        raise ValueError(f"questions hold at most max_question_len={config.max_question_len} words; got "
                         f"{question_ids.shape[1]}")
    if int(question_ids.min()) < 0 or int(question_ids.max()) >= config.question_vocab_size:
        raise ValueError(f"question_ids holds ids outside 0..{config.question_vocab_size - 1}")


def _check_answer(tgt_ids: Tensor, config: FusionConfig) -> None:
    """Raise ValueError unless ``tgt_ids`` is ``[B, T]`` with ``T <= config.max_answer_len``."""
    require_tensor("tgt_ids", tgt_ids)
    require_ndim("tgt_ids", tgt_ids, 2, "[B, T]")
    if tgt_ids.shape[1] > config.max_answer_len:
        raise ValueError(f"answers hold at most max_answer_len={config.max_answer_len} tokens; got "
                         f"{tgt_ids.shape[1]}")


def _check_drop(drop: str | None) -> None:
    if drop is not None and drop not in SOURCE_NAMES:
        raise ValueError(f"drop must be None, 'image' or 'question'; got {drop!r}")


class QuestionEncoder(nn.Module):
    """Question ids ``[B, Q]`` -> states ``[B, Q, d_model]``: embeddings + sinusoidal positions, pre-norm encoder
    layers that ignore padding, a LayerNorm."""

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, d_ff: int, n_layers: int, max_len: int,
                 pad_id: int = PAD_ID) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, activation="gelu") for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, question_ids: Tensor) -> Tensor:
        mask = padding_mask_from_ids(question_ids, self.pad_id)  # [B, 1, 1, Q]
        x = self.embed(question_ids) + self.positions[:question_ids.shape[1]]  # [B, Q, d_model]
        for layer in self.layers:
            x, _ = layer(x, mask)
        return self.norm(x)


class LatentResampler(nn.Module):
    """Perceiver-style resampler: ``n_latents`` learned queries ``[M, d]`` cross-attend to the patch features
    ``[B, N, d]`` (a ``CrossAttentionBlock`` per layer, source LayerNorm included) -> latents ``[B, M, d]``.

    Each layer costs ``M * N`` query-key scores per head, instead of the ``N * N`` of self-attention over the
    patches; whatever reads the latents afterwards pays for ``M`` tokens instead of ``N``."""

    def __init__(self, n_latents: int, d_model: int, n_heads: int, d_ff: int, n_layers: int = 1) -> None:
        super().__init__()
        if n_latents < 1 or n_layers < 1:
            raise ValueError(f"need n_latents >= 1 and n_layers >= 1; got {n_latents} and {n_layers}")
        self.latents = nn.Parameter(torch.randn(n_latents, d_model) * d_model**-0.5)  # [M, d]
        self.blocks = nn.ModuleList(CrossAttentionBlock(d_model, d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, features: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``features [B, N, d]`` -> ``(latents [B, M, d], weights per layer [B, H, M, N] if need_weights)``."""
        require_tensor("features", features)
        require_ndim("features", features, 3, "[B, N, d]")
        x = self.latents.expand(features.shape[0], -1, -1)  # [B, M, d]
        weights = []
        for block in self.blocks:
            x, w = block(x, features, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        return self.norm(x), weights


class Memory(NamedTuple):
    """One source as a decoder reads it: ``states [B, S, d]`` and ``mask`` (bool ``[B, 1, 1, S]``, True = real
    token, or None: all real)."""

    states: Tensor
    mask: Tensor | None


class SourceAttention(nn.Module):
    """Pre-norm cross-attention sublayer with its own source LayerNorm: returns the **update**
    ``attn(norm_query(x), norm_source(source))`` (the caller adds it to ``x``), so its size can be measured."""

    def __init__(self, d_model: int, d_source: int, n_heads: int) -> None:
        super().__init__()
        self.norm_query, self.norm_source = nn.LayerNorm(d_model), nn.LayerNorm(d_source)
        self.attn = MultiHeadAttention(d_model, n_heads, d_source=d_source)

    def forward(self, x: Tensor, memory: Memory, *, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        return self.attn(self.norm_query(x), self.norm_source(memory.states), mask=memory.mask,
                         need_weights=need_weights)


class LayerTrace(NamedTuple):
    """What one ``FusionDecoderLayer`` did: per memory, its cross-attention weights ``[B, H, T, S]`` (or None) and
    its update ``[B, T, d_model]`` (what the sublayer added to the residual stream)."""

    weights: list[Tensor | None]
    updates: list[Tensor]


class FusionDecoderLayer(nn.Module):
    """Causal self-attention, then one cross-attention sublayer per memory (in order), then a feed-forward; each
    pre-norm inside a residual connection."""

    def __init__(self, d_model: int, d_sources: tuple[int, ...], n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm_self, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross = nn.ModuleList(SourceAttention(d_model, d, n_heads) for d in d_sources)
        self.ffn = FeedForward(d_model, d_ff, activation="gelu")

    def forward(self, y: Tensor, memories: list[Memory], *, self_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, LayerTrace]:
        y = y + self.self_attn(self.norm_self(y), mask=self_mask)[0]
        weights, updates = [], []
        for sublayer, memory in zip(self.cross, memories, strict=True):
            update, w = sublayer(y, memory, need_weights=need_weights)  # [B, T, d_model]
            y = y + update
            weights.append(w)
            updates.append(update)
        return y + self.ffn(self.norm_ffn(y)), LayerTrace(weights, updates)


class FusionQA(nn.Module):
    """An encoder-decoder that reads two sources: the image's patch features (from lesson 10's frozen encoder), a
    ``QuestionEncoder`` for the question, and a decoder of ``FusionDecoderLayer``s that writes the answer.

    ``fusion="concatenation"``: one memory ``[B, N + Q, d_model]`` = projected patches and question states, plus a
    source-type embedding; its mask is the concatenation of the two sources' masks. ``fusion="separate"``: two
    memories, the patches (width ``d_image``) and the question, each with its own cross-attention sublayer.
    With ``config.n_latents`` a ``LatentResampler`` turns the ``N`` patches into ``M`` latents first.
    """

    def __init__(self, config: FusionConfig, fusion: str = "concatenation") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")
        c, self.config, self.fusion = config, config, fusion
        self.resampler = None if c.n_latents is None else LatentResampler(c.n_latents, c.d_image, c.n_heads, c.d_ff)
        self.question_encoder = QuestionEncoder(c.question_vocab_size, c.d_model, c.n_heads, c.d_ff,
                                                c.n_question_layers, c.max_question_len, c.pad_id)
        if fusion == "concatenation":
            self.image_proj = nn.Linear(c.d_image, c.d_model)  # one memory needs one width
            self.source_type = nn.Embedding(2, c.d_model)  # row 0: image token, row 1: question token
            d_sources: tuple[int, ...] = (c.d_model,)
        else:
            d_sources = (c.d_image, c.d_model)
        self.embed = nn.Embedding(c.answer_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.register_buffer("positions", sinusoidal_positions(c.max_answer_len, c.d_model), persistent=False)
        self.layers = nn.ModuleList(FusionDecoderLayer(c.d_model, d_sources, c.n_heads, c.d_ff)
                                    for _ in range(c.n_decoder_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.output = nn.Linear(c.d_model, c.answer_vocab_size)

    def image_tokens(self, features: Tensor) -> Tensor:
        """The image as the decoder reads it: the patch features ``[B, N, d_image]`` or ``M`` latents made from
        them ``[B, M, d_image]``."""
        return features if self.resampler is None else self.resampler(features)[0]

    def encode(self, sources: Sources, *, drop: str | None = None) -> list[Memory]:
        """The memories the decoder reads: one (concatenation) or two (separate: image, question).

        ``drop="image"`` or ``"question"`` leaves that source out by masking all its tokens: in one memory the
        other source's tokens take all the attention; a separate sublayer with nothing to read returns zeros
        before its output projection (the course's rule for a fully masked row)."""
        check_sources(sources, self.config)
        _check_drop(drop)
        features, question_ids = sources
        image = self.image_tokens(features)  # [B, N, d_image]
        question = self.question_encoder(question_ids)  # [B, Q, d_model]
        b, n, device = image.shape[0], image.shape[1], image.device
        image_real = torch.full((b, n), drop != "image", dtype=torch.bool, device=device)  # [B, N]
        question_real = (question_ids != self.config.pad_id) & (drop != "question")  # [B, Q]
        if self.fusion == "separate":
            return [Memory(image, image_real[:, None, None, :]), Memory(question, question_real[:, None, None, :])]
        types = self.source_type.weight  # [2, d_model]
        states = torch.cat([self.image_proj(image) + types[IMAGE_TYPE], question + types[QUESTION_TYPE]], dim=1)
        return [Memory(states, torch.cat([image_real, question_real], dim=1)[:, None, None, :])]  # [B, N + Q, d]

    def decode(self, tgt_ids: Tensor, memories: list[Memory], *, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerTrace]]:
        """Answer ids ``[B, T]`` (``<bos>`` + words) over the memories -> ``(logits [B, T, V], a LayerTrace per
        layer)``."""
        _check_answer(tgt_ids, self.config)
        t = tgt_ids.shape[1]
        y = self.embed(tgt_ids) + self.positions[:t]  # [B, T, d_model]
        mask = causal_mask(t, device=tgt_ids.device)
        traces = []
        for layer in self.layers:
            y, trace = layer(y, memories, self_mask=mask, need_weights=need_weights)
            traces.append(trace)
        return self.output(self.norm(y)), traces

    def forward(self, sources: Sources, tgt_ids: Tensor, *, drop: str | None = None) -> Tensor:
        """Teacher-forced answer logits ``[B, T, V]``."""
        return self.decode(tgt_ids, self.encode(sources, drop=drop))[0]

    @torch.no_grad()
    def greedy_decode(self, sources: Sources, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int | None = None, drop: str | None = None) -> Tensor:
        """Greedy answers ``[B, T_new]`` (no ``<bos>``; after ``eos_id``, the pad id). The sources are encoded
        once; each step reruns the (short) answer so far."""
        memories = self.encode(sources, drop=drop)
        return _greedy(lambda prefix: self.decode(prefix, memories)[0][:, -1], len(sources.image), bos_id, eos_id,
                       self.config, max_new_tokens, sources.image.device)


def _max_new_tokens(config: FusionConfig, max_new_tokens: int | None) -> int:
    """``max_new_tokens`` (default: as many as an answer can hold), checked against ``config.max_answer_len``."""
    max_new_tokens = config.max_answer_len - 1 if max_new_tokens is None else max_new_tokens
    if not 1 <= max_new_tokens < config.max_answer_len:
        raise ValueError(f"max_new_tokens must be in 1..{config.max_answer_len - 1}; got {max_new_tokens}")
    return max_new_tokens


def _greedy(step_logits, batch: int, bos_id: int, eos_id: int | None, config: FusionConfig,
            max_new_tokens: int | None, device: torch.device) -> Tensor:
    """``greedy_tokens`` around ``step_logits(answer prefix [B, t]) -> [B, V]``."""
    max_new_tokens = _max_new_tokens(config, max_new_tokens)
    prefix = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)

    def next_logits(last: Tensor, step: int) -> Tensor:
        nonlocal prefix
        if step:
            prefix = torch.cat([prefix, last], dim=1)
        return step_logits(prefix)

    return greedy_tokens(next_logits, batch, bos_id=bos_id, eos_id=eos_id, pad_id=config.pad_id,
                         max_new_tokens=max_new_tokens, device=device)


def _joined_positions(ids: Tensor, pad_id: int) -> Tensor:
    """Positions of joint ids ``[B, L]`` counting real tokens only (lesson 09's rule: padding moves nothing)."""
    return ((ids != pad_id).cumsum(dim=1) - 1).clamp(min=0)


def decoder_only_config(config: FusionConfig) -> DecoderOnlyConfig:
    """Lesson 09's decoder-only model sized for the questions: question words are its source, answers its target."""
    return DecoderOnlyConfig(config.question_vocab_size, config.answer_vocab_size, d_model=config.d_model,
                             n_heads=config.n_heads, n_layers=config.n_decoder_layers + 1, d_ff=config.d_ff,
                             max_len=config.max_question_len + config.max_answer_len, pad_id=config.pad_id)


class PrefixQA(nn.Module):
    """Prefix fusion (LLaVA's recipe): ``[projected patches | question <sep> answer]`` through lesson 09's
    decoder-only model, causal over the whole sequence. No cross-attention: the answer's self-attention reads the
    image and the question as earlier tokens of one sequence."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        c, self.config = config, config
        self.image_proj = nn.Linear(c.d_image, c.d_model)  # patch features -> "word embeddings"
        self.lm = DecoderOnlyTranslator(decoder_only_config(c))

    def run(self, sources: Sources, tgt_ids: Tensor, *, drop: str | None = None, need_weights: bool = False
            ) -> tuple[Tensor, list[Tensor], int]:
        """``(logits of the answer rows [B, T, V], self-attention weights per layer [B, H, L, L], N + Q)``, where
        the sequence is ``N`` image tokens, ``Q`` (left-padded) question words, ``<sep>`` and the answer."""
        check_sources(sources, self.config)
        _check_answer(tgt_ids, self.config)
        _check_drop(drop)
        features, question_ids = sources
        lm = self.lm
        ids = lm.join(question_ids, tgt_ids)  # [B, Q + T]
        text = lm.embed(ids) + lm.position_table[_joined_positions(ids, lm.config.pad_id)]  # [B, Q + T, d]
        image = self.image_proj(features)  # [B, N, d]: patch features as "word embeddings"
        x = torch.cat([image, text], dim=1)  # [B, N + Q + T, d]
        n, length = image.shape[1], x.shape[1]
        real = torch.cat([torch.full(image.shape[:2], drop != "image", dtype=torch.bool, device=x.device),
                          ids != lm.config.pad_id], dim=1)  # [B, L]
        if drop == "question":
            real[:, n:n + question_ids.shape[1]] = False
        mask = combine_masks(causal_mask(length, device=x.device), real[:, None, None, :])  # [B, 1, L, L]
        weights = []
        for layer in lm.layers:
            x, w = layer(x, mask, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        start = n + question_ids.shape[1]  # the <sep> row predicts the first answer word
        return lm.output(lm.norm(x[:, start:])), weights, start

    def forward(self, sources: Sources, tgt_ids: Tensor, *, drop: str | None = None) -> Tensor:
        return self.run(sources, tgt_ids, drop=drop)[0]

    @torch.no_grad()
    def greedy_decode(self, sources: Sources, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int | None = None, drop: str | None = None) -> Tensor:
        """Greedy answers ``[B, T_new]``; each step reruns the whole sequence (it is short: about 50 tokens)."""
        return _greedy(lambda prefix: self.run(sources, prefix, drop=drop)[0][:, -1], len(sources.image), bos_id,
                       eos_id, self.config, max_new_tokens, sources.image.device)


class QuestionOnlyLM(nn.Module):
    """Lesson 09's decoder-only model reading the question alone (``question <sep> answer``): the text-only language
    model that ``FlamingoQA`` freezes. Takes ``Sources`` and ignores the image."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.lm = DecoderOnlyTranslator(decoder_only_config(config))

    def forward(self, sources: Sources, tgt_ids: Tensor) -> Tensor:
        check_sources(sources, self.config)
        _check_answer(tgt_ids, self.config)
        return self.lm(sources.question_ids, tgt_ids)

    @torch.no_grad()
    def greedy_decode(self, sources: Sources, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int | None = None) -> Tensor:
        check_sources(sources, self.config)
        return self.lm.greedy_decode(sources.question_ids, bos_id=bos_id, eos_id=eos_id,
                                     max_new_tokens=_max_new_tokens(self.config, max_new_tokens))


class GatedCrossAttention(nn.Module):
    """Flamingo's block, inserted before a frozen LM layer (Alayrac et al. 2022):

    ``x = x + tanh(alpha_attn) * attn(norm(x), image)``, then ``x = x + tanh(alpha_ffn) * ffn(norm(x))``.

    Both ``alpha`` start at 0, so the block starts as the identity. ``gated=False`` drops the gates (the plain
    residual block, for comparison)."""

    def __init__(self, d_model: int, d_source: int, n_heads: int, d_ff: int, *, gated: bool = True) -> None:
        super().__init__()
        self.cross = SourceAttention(d_model, d_source, n_heads)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, activation="gelu")
        self.gated = gated
        self.alpha_attn = nn.Parameter(torch.zeros(1)) if gated else None
        self.alpha_ffn = nn.Parameter(torch.zeros(1)) if gated else None

    def gates(self) -> tuple[float, float]:
        """``(tanh(alpha_attn), tanh(alpha_ffn))``; (1, 1) when ungated."""
        if not self.gated:
            return 1.0, 1.0
        return float(torch.tanh(self.alpha_attn.detach())), float(torch.tanh(self.alpha_ffn.detach()))

    def forward(self, x: Tensor, image: Memory, *, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``x [B, L, d_model]`` reads ``image`` -> ``(x [B, L, d_model], weights [B, H, L, N] or None)``."""
        attended, weights = self.cross(x, image, need_weights=need_weights)  # [B, L, d_model]
        attn_gate = torch.tanh(self.alpha_attn) if self.gated else 1.0
        x = x + attn_gate * attended  # a closed gate (tanh 0 = 0) adds exactly 0
        ffn_gate = torch.tanh(self.alpha_ffn) if self.gated else 1.0
        return x + ffn_gate * self.ffn(self.norm_ffn(x)), weights


class FlamingoQA(nn.Module):
    """A frozen text-only LM (``QuestionOnlyLM``) that learns to look: one ``GatedCrossAttention`` block (the only
    trained part) before each frozen LM layer; every text token reads the frozen image encoder's patch features.

    With ``gated=True`` the gates start closed and the logits at initialisation equal the frozen LM's exactly."""

    def __init__(self, text_model: QuestionOnlyLM, *, gated: bool = True) -> None:
        super().__init__()
        c = self.config = text_model.config
        self.lm = text_model.lm
        for parameter in self.lm.parameters():
            parameter.requires_grad_(False)
        self.blocks = nn.ModuleList(GatedCrossAttention(c.d_model, c.d_image, c.n_heads, c.d_ff, gated=gated)
                                    for _ in self.lm.layers)

    def gates(self) -> list[tuple[float, float]]:
        """Per inserted block, ``(tanh(alpha_attn), tanh(alpha_ffn))``."""
        return [block.gates() for block in self.blocks]

    def run(self, sources: Sources, tgt_ids: Tensor, *, need_weights: bool = False
            ) -> tuple[Tensor, list[Tensor | None]]:
        """``(answer logits [B, T, V], each block's cross-attention weights [B, H, Q + T, N])``."""
        check_sources(sources, self.config)
        _check_answer(tgt_ids, self.config)
        features, question_ids = sources
        lm = self.lm
        ids = lm.join(question_ids, tgt_ids)  # [B, Q + T]: the frozen LM's own sequence
        x = lm.embed(ids) + lm.position_table[_joined_positions(ids, lm.config.pad_id)].to(lm.embed.weight.dtype)
        mask = lm.sequence_mask(ids)  # [B, 1, L, L]
        image = Memory(features, None)  # [B, N, d_image]
        weights = []
        for block, layer in zip(self.blocks, lm.layers, strict=True):
            x, w = block(x, image, need_weights=need_weights)
            weights.append(w)
            x, _ = layer(x, mask)
        return lm.output(lm.norm(x))[:, question_ids.shape[1]:], weights

    def forward(self, sources: Sources, tgt_ids: Tensor) -> Tensor:
        return self.run(sources, tgt_ids)[0]

    @torch.no_grad()
    def greedy_decode(self, sources: Sources, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int | None = None) -> Tensor:
        """Greedy answers ``[B, T_new]``; each step reruns the sequence."""
        return _greedy(lambda prefix: self.run(sources, prefix)[0][:, -1], len(sources.image), bos_id, eos_id,
                       self.config, max_new_tokens, sources.image.device)


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["FUSIONS", "FlamingoQA", "FusionConfig", "FusionDecoderLayer", "FusionQA", "GatedCrossAttention",
           "LatentResampler", "LayerTrace", "Memory", "PrefixQA", "QuestionEncoder", "QuestionOnlyLM",
           "SourceAttention", "check_sources", "decoder_only_config", "trainable_parameters"]
