"""Ways to give a decoder its source (lesson 09), each a translator for the toy pair with the same
interface as lesson 07's ``Seq2SeqTransformer`` (``model(src_ids, tgt_in) -> logits [B, T, V_tgt]``,
``model.config.pad_id``), so ``training.train`` and ``metrics.translate_data`` work on all of them:

- ``OneVectorTransformer``: lesson 07's encoder and decoder, but the cross-attention sees **one** memory
  vector, the masked mean of the encoder states (the bottleneck of early sequence-to-sequence models);
- ``Seq2SeqTransformer`` (``course_lib.model``): cross-attention over every encoder state;
- ``GRUSeq2Seq``: the 2014 recurrent encoder-decoder without attention (the source is one final state);
- ``DecoderOnlyTranslator``: no encoder and no cross-attention: one causal transformer over
  ``source <sep> target``, optionally with the prefix-LM mask.

``load_or_train`` trains any of them for a wall-clock budget and keeps the result in the course's cache
folder, so a second run of the lesson loads it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ._checks import require_ndim, require_tensor, shape_str
from .cache import KVCache
from .data import BOS_ID, PAD_ID, Vocabulary
from .generate import greedy_tokens
from .layers import EncoderLayer, sinusoidal_positions
from .masks import causal_mask, combine_masks, padding_mask_from_ids, prefix_lm_mask
from .model import AttentionMaps, Seq2SeqTransformer, TransformerConfig

__all__ = ["CONDITIONERS", "DecoderOnlyConfig", "DecoderOnlyTranslator", "GRUConfig", "GRUSeq2Seq",
           "LENGTH_BUCKETS", "OneVectorTransformer", "StepCost", "TrainedConditioner", "build_conditioner",
           "conditioner_path", "correct_by_example", "evaluation_sets", "exact_match_by_bucket", "first_length_below",
           "greedy_tokens", "load_conditioner", "load_or_train", "loss_by_position", "masked_mean",
           "measured_step_cost", "predicted_step_cost", "save_conditioner", "train_conditioner"]


# --- one vector ---------------------------------------------------------------------------------------------
def masked_mean(states: Tensor, real: Tensor) -> Tensor:
    """Mean of ``states [B, S, D]`` over the positions where ``real [B, S]`` (bool) is True: ``[B, D]``.

    Padding contributes nothing, so padding a source more never changes its mean.

    Raises:
        ValueError: on shapes that do not fit, a mask that is not bool, or a row with no real position
            (its mean would be 0 / 0).
    """
    require_tensor("states", states)
    require_tensor("real", real)
    require_ndim("states", states, 3, "[B, S, D]")
    if real.dtype != torch.bool or real.shape != states.shape[:2]:
        raise ValueError(f"real must be a bool mask [B, S] = {shape_str(states.shape[:2])} (True at real tokens); "
                         f"got {real.dtype} {shape_str(real.shape)}")
    counts = real.sum(dim=1)  # [B]
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"every source needs at least one real token; row(s) {empty} are all padding")
    weights = real.to(states.dtype)[..., None]  # [B, S, 1]
    return (states * weights).sum(dim=1) / counts[:, None].to(states.dtype)  # [B, D]


class OneVectorTransformer(Seq2SeqTransformer):
    """Lesson 07's encoder-decoder, except that the decoder's cross-attention reads a single memory vector:
    the mean of the encoder states over the real source tokens. ``encode`` returns it as ``[B, 1, d_model]``
    and ``source_mask`` as ``[B, 1, 1, 1]``, so decoding, caching and training are lesson 07's, unchanged.

    With one key, every cross-attention weight is 1: the layer can only copy (a projection of) that vector.
    """

    def encode(self, src_ids: Tensor, *, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``src_ids [B, S]`` -> ``(memory [B, 1, d_model], encoder self-attention weights per layer)``."""
        self._check_ids("src_ids", src_ids, self.config.src_vocab_size)
        real = src_ids != self.config.pad_id  # [B, S]
        x = self.positions(self.src_embed(src_ids))  # [B, S, d_model]
        states, weights = self.encoder(x, padding_mask_from_ids(src_ids, self.config.pad_id),
                                       need_weights=need_weights)  # [B, S, d_model]
        return masked_mean(states, real)[:, None, :], weights  # [B, 1, d_model]

    def source_mask(self, src_ids: Tensor) -> Tensor:
        """The memory is one vector, always there: an all-True mask ``[B, 1, 1, 1]``."""
        return torch.ones(src_ids.shape[0], 1, 1, 1, dtype=torch.bool, device=src_ids.device)


def _check_batch(src_ids: Tensor, tgt_ids: Tensor) -> None:
    for name, ids in (("src_ids", src_ids), ("tgt_ids", tgt_ids)):
        require_tensor(name, ids)
        require_ndim(name, ids, 2, "[B, T]")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token ids; got dtype {ids.dtype}")
    if src_ids.shape[0] != tgt_ids.shape[0]:
        raise ValueError(f"src_ids and tgt_ids must have the same batch size; got {shape_str(src_ids.shape)} "
                         f"and {shape_str(tgt_ids.shape)}")


def _check_sources(src_ids: Tensor, vocab_size: int, pad_id: int) -> Tensor:
    """Validate ``src_ids [B, S]``; return the number of real tokens per row ``[B]``."""
    require_tensor("src_ids", src_ids)
    require_ndim("src_ids", src_ids, 2, "[B, S]")
    if src_ids.dtype.is_floating_point or src_ids.dtype == torch.bool:
        raise ValueError(f"src_ids must hold integer token ids; got dtype {src_ids.dtype}")
    if src_ids.numel() and (int(src_ids.min()) < 0 or int(src_ids.max()) >= vocab_size):
        raise ValueError(f"src_ids holds ids outside 0..{vocab_size - 1}: min {int(src_ids.min())}, "
                         f"max {int(src_ids.max())}")
    lengths = (src_ids != pad_id).sum(dim=1)  # [B]
    if src_ids.shape[1] == 0 or bool((lengths == 0).any()):
        empty = (lengths == 0).nonzero().flatten().tolist() if src_ids.shape[1] else "all"
        raise ValueError(f"every source needs at least one real token; row(s) {empty} are all padding")
    return lengths


# --- the 2014 baseline: a GRU encoder-decoder without attention --------------------------------------------------
@dataclass
class GRUConfig:
    """Sizes of a ``GRUSeq2Seq``; the defaults give about as many parameters as lesson 07's transformer."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_embed: int = 64
    d_hidden: int = 128
    max_len: int = 256
    pad_id: int = PAD_ID


class GRUSeq2Seq(nn.Module):
    """The recurrent encoder-decoder of Cho et al. (2014), without attention.

    A GRU reads the source; its state after the last real word, ``c [B, d_hidden]``, is all the decoder
    learns about the source: it starts the decoder GRU (through ``tanh(W c)``) and is fed again, next to
    the previous word's embedding, at every step and to the output layer.
    """

    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_embed, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_embed, padding_idx=c.pad_id)
        self.encoder = nn.GRU(c.d_embed, c.d_hidden, batch_first=True)
        self.init_state = nn.Linear(c.d_hidden, c.d_hidden)
        self.decoder = nn.GRU(c.d_embed + c.d_hidden, c.d_hidden, batch_first=True)
        self.output = nn.Linear(2 * c.d_hidden, c.tgt_vocab_size)

    def encode(self, src_ids: Tensor) -> Tensor:
        """``src_ids [B, S]`` -> the summary ``c [B, d_hidden]``: the encoder's state after the last real word."""
        lengths = _check_sources(src_ids, self.config.src_vocab_size, self.config.pad_id)
        packed = pack_padded_sequence(self.src_embed(src_ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, final = self.encoder(packed)  # [1, B, d_hidden], padding never read
        return final[0]

    def _decode(self, tgt_ids: Tensor, summary: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``tgt_ids [B, T]`` -> ``(logits [B, T, V], last state [1, B, d_hidden])``."""
        context = summary[:, None, :].expand(-1, tgt_ids.shape[1], -1)  # [B, T, d_hidden]
        outputs, state = self.decoder(torch.cat([self.tgt_embed(tgt_ids), context], dim=-1), state)  # [B, T, H]
        return self.output(torch.cat([outputs, context], dim=-1)), state

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits: ``src_ids [B, S]``, ``tgt_ids [B, T]`` -> ``[B, T, tgt_vocab]``."""
        _check_batch(src_ids, tgt_ids)
        summary = self.encode(src_ids)  # [B, d_hidden]
        return self._decode(tgt_ids, summary, torch.tanh(self.init_state(summary))[None])[0]

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, *, bos_id: int, eos_id: int | None = None,
                      max_new_tokens: int = 64) -> Tensor:
        """Greedy translation ``[B, T_new]``; the decoder's GRU state is its whole cache."""
        summary = self.encode(src_ids)  # [B, d_hidden]
        state = torch.tanh(self.init_state(summary))[None]  # [1, B, d_hidden]

        def next_logits(last: Tensor, step: int) -> Tensor:
            nonlocal state
            logits, state = self._decode(last, summary, state)
            return logits[:, -1]

        return greedy_tokens(next_logits, src_ids.shape[0], bos_id=bos_id, eos_id=eos_id, pad_id=self.config.pad_id,
                             max_new_tokens=max_new_tokens, device=src_ids.device)


# --- decoder-only: source and target in one sequence -------------------------------------------------------------
@dataclass
class DecoderOnlyConfig:
    """Sizes of a ``DecoderOnlyTranslator``. ``prefix_lm``: source positions see each other in both
    directions (the prefix-LM mask) instead of causally."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 4
    d_ff: int = 256
    prefix_lm: bool = False
    norm_first: bool = True
    max_len: int = 256
    pad_id: int = PAD_ID


class DecoderOnlyTranslator(nn.Module):
    """One stack of self-attention layers over ``source <sep> target``; no encoder, no cross-attention.

    **One vocabulary for both languages**: source id ``i`` keeps its id, target id ``j`` becomes
    ``src_vocab_size + j`` (padding stays 0), and the separator is the target's ``<bos>``
    (``sep_id = src_vocab_size + BOS_ID``): it starts the target exactly as ``<bos>`` starts a decoder's.
    **Layout**: ``join`` pads sources on the *left*, so the separator of every row sits in the same column
    ``S`` and generated tokens are appended in step; positions count real tokens only, so padding moves
    nothing. The output layer predicts target words only: the loss is on the target alone.
    """

    def __init__(self, config: DecoderOnlyConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.src_vocab_size + c.tgt_vocab_size, c.d_model)
        self.register_buffer("position_table", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(c.d_model, c.n_heads, c.d_ff, norm_first=c.norm_first)
                                    for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size)

    @property
    def sep_id(self) -> int:
        """Id of ``<sep>`` in the joint vocabulary (the target's ``<bos>``)."""
        return self.config.src_vocab_size + BOS_ID

    def join(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """``src_ids [B, S]`` (right-padded) and ``tgt_ids [B, T]`` (``<bos>`` + words, right-padded) ->
        joint ids ``[B, S + T]``: left-padded source, then ``<sep>`` and the target words in joint ids."""
        _check_batch(src_ids, tgt_ids)
        lengths = _check_sources(src_ids, self.config.src_vocab_size, self.config.pad_id)  # [B]
        c = self.config
        if tgt_ids.shape[1] == 0 or bool((tgt_ids[:, 0] != BOS_ID).any()):
            raise ValueError(f"every target must start with <bos> (id {BOS_ID}), which becomes <sep>; "
                             f"got first ids {tgt_ids[:, 0].tolist() if tgt_ids.shape[1] else 'none (T = 0)'}")
        if int(tgt_ids.min()) < 0 or int(tgt_ids.max()) >= c.tgt_vocab_size:
            raise ValueError(f"tgt_ids holds ids outside 0..{c.tgt_vocab_size - 1}")
        s = src_ids.shape[1]
        shift = s - lengths  # [B]: padding to move to the front
        column = torch.arange(s, device=src_ids.device)[None, :] - shift[:, None]  # [B, S]: source index per column
        left = src_ids.gather(1, column.clamp(min=0)).masked_fill(column < 0, c.pad_id)  # [B, S]
        target = torch.where(tgt_ids == c.pad_id, c.pad_id, tgt_ids + c.src_vocab_size)  # [B, T]
        return torch.cat([left, target], dim=1)  # [B, S + T]

    def _prefix_lengths(self, ids: Tensor) -> Tensor:
        """Per row, the number of positions up to and including the one ``<sep>``: ``[B]``."""
        is_sep = ids == self.sep_id  # [B, L]
        count = is_sep.sum(dim=1)
        if bool((count != 1).any()):
            bad = (count != 1).nonzero().flatten().tolist()
            raise ValueError(f"every sequence needs exactly one <sep> (id {self.sep_id}) between source and target; "
                             f"row(s) {bad} have {count[bad].tolist()}")
        return is_sep.int().argmax(dim=1) + 1  # [B]

    def sequence_mask(self, ids: Tensor) -> Tensor:
        """Attention mask of joint ids ``[B, L]``: causal or prefix-LM, and no padded key. ``[B, 1, L, L]``."""
        length = ids.shape[1]
        order = prefix_lm_mask(self._prefix_lengths(ids), length) if self.config.prefix_lm else \
            causal_mask(length, device=ids.device)
        return combine_masks(order, padding_mask_from_ids(ids, self.config.pad_id))  # [B, 1, L, L]

    def _run(self, ids: Tensor, positions: Tensor, mask: Tensor, *, need_weights: bool = False,
             caches: list[KVCache] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Joint ids ``[B, L]`` at ``positions [B, L]`` -> ``(target-word logits [B, L, V_tgt], weights per layer)``."""
        if int(positions.max()) >= self.config.max_len:
            raise ValueError(f"sequence too long: position {int(positions.max())} >= max_len={self.config.max_len}")
        x = self.embed(ids) + self.position_table[positions].to(self.embed.weight.dtype)  # [B, L, d_model]
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, mask, need_weights=need_weights, kv_cache=caches[i] if caches is not None else None)
            if w is not None:
                weights.append(w)
        return self.output(self.norm(x)), weights

    def forward_sequence(self, ids: Tensor, *, need_weights: bool = False, caches: list[KVCache] | None = None
                         ) -> tuple[Tensor, list[Tensor]]:
        """Joint ids ``[B, L]`` (one ``<sep>`` per row) -> ``(logits [B, L, V_tgt], weights [B, H, L, L] per layer)``.
        Row ``i``'s logits predict the token at ``i + 1``. ``caches``: empty ``KVCache``s to fill (a prompt's
        prefill before cached generation)."""
        require_tensor("ids", ids)
        require_ndim("ids", ids, 2, "[B, L]")
        real = ids != self.config.pad_id  # [B, L]
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]: padding moves nothing
        return self._run(ids, positions, self.sequence_mask(ids), need_weights=need_weights, caches=caches)

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits, as ``Seq2SeqTransformer``: ``src_ids [B, S]``, ``tgt_ids [B, T]`` ->
        ``[B, T, V_tgt]``."""
        logits, _ = self.forward_sequence(self.join(src_ids, tgt_ids))  # [B, S + T, V_tgt]
        return logits[:, src_ids.shape[1]:]  # the rows from <sep> on predict the target

    @torch.no_grad()
    def forward_with_attention(self, src_ids: Tensor, tgt_ids: Tensor) -> tuple[Tensor, AttentionMaps]:
        """As ``forward``, with every layer's self-attention (``maps.decoder_self``, ``[B, H, S + T, S + T]``)
        and the **cross-attention hiding in it** (``maps.decoder_cross``, ``[B, H, T, S]``): the rows of
        ``<sep>`` and the target words (row ``j`` writes target word ``j``), the columns of the real source
        words in source order (padding: 0), the same layout as an encoder-decoder's cross-attention."""
        ids = self.join(src_ids, tgt_ids)
        logits, weights = self.forward_sequence(ids, need_weights=True)
        s, lengths = src_ids.shape[1], (src_ids != self.config.pad_id).sum(dim=1)  # [B]
        column = torch.arange(s, device=ids.device)[None, :] + (s - lengths)[:, None]  # [B, S]: column of word i
        real = column < s  # [B, S]
        index = column.clamp(max=s - 1)[:, None, None, :]  # [B, 1, 1, S]
        cross = []
        for w in weights:  # [B, H, L, L]
            block = w[:, :, s:, :s]  # [B, H, T, S]: target rows x (left-padded) source columns
            cross.append(block.gather(-1, index.expand(*block.shape[:3], -1)) * real[:, None, None, :])
        return logits[:, s:], AttentionMaps(decoder_self=weights, decoder_cross=cross)

    @torch.no_grad()
    def greedy_decode(self, src_ids: Tensor, *, bos_id: int = BOS_ID, eos_id: int | None = None,
                      max_new_tokens: int = 64, use_cache: bool = True, caches: list[KVCache] | None = None
                      ) -> Tensor:
        """Greedy translation ``[B, T_new]`` (target ids). With ``use_cache`` the prompt (source and ``<sep>``)
        runs once and each step feeds one token through the layers' self-attention K/V caches; without it,
        every step reruns the whole sequence. Both give the same tokens. ``caches``: empty ``KVCache``s, one
        per layer, to fill instead of new ones (to look at them afterwards)."""
        if bos_id != BOS_ID:
            raise ValueError(f"the decoder-only model's <sep> is the target's <bos>, id {BOS_ID}; got bos_id={bos_id}")
        batch, device = src_ids.shape[0], src_ids.device
        ids = self.join(src_ids, torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device))  # [B, S + 1]
        if ids.shape[1] + max_new_tokens > self.config.max_len:
            raise ValueError(f"source length + 1 + max_new_tokens must be <= max_len={self.config.max_len}; "
                             f"got {ids.shape[1]} + {max_new_tokens}")
        if caches is not None and (len(caches) != len(self.layers) or any(c.length for c in caches)):
            raise ValueError(f"caches must be {len(self.layers)} empty KVCache objects, one per layer")
        caches = (caches or [KVCache() for _ in self.layers]) if use_cache else None
        shift = self.config.src_vocab_size

        def next_logits(last: Tensor, step: int) -> Tensor:
            nonlocal ids
            if step > 0:  # append the token chosen last step (the prompt already ends with <sep>)
                ids = torch.cat([ids, torch.where(last == self.config.pad_id, last, last + shift)], dim=1)
            if caches is None or step == 0:  # the whole sequence: each uncached step, or the prompt's prefill
                return self.forward_sequence(ids, caches=caches)[0][:, -1]
            real = ids != self.config.pad_id  # [B, L]: the new token's position counts the real ones before it
            position = (real[:, :-1].sum(dim=1, keepdim=True)).clamp(max=self.config.max_len - 1)  # [B, 1]
            mask = padding_mask_from_ids(ids, self.config.pad_id)  # [B, 1, 1, L]: one query, every key so far
            return self._run(ids[:, -1:], position, mask, caches=caches)[0][:, -1]

        return greedy_tokens(next_logits, batch, bos_id=bos_id, eos_id=eos_id, pad_id=self.config.pad_id,
                             max_new_tokens=max_new_tokens, device=device)


# --- building, saving, training ----------------------------------------------------------------------------------
CONDITIONERS: dict[str, str] = {
    "one vector": "OneVectorTransformer: lesson 07's model, cross-attending to the mean of the encoder states",
    "cross-attention": "Seq2SeqTransformer: lesson 07's model, cross-attending to every encoder state",
    "GRU": "GRUSeq2Seq: recurrent encoder-decoder, no attention (Cho et al. 2014)",
    "decoder-only": "DecoderOnlyTranslator: 4 causal layers over source <sep> target",
    "prefix-LM": "DecoderOnlyTranslator: the same, source positions see each other both ways",
}


def build_conditioner(kind: str, src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> nn.Module:
    """A fresh model of one of the ``CONDITIONERS`` for these vocabularies (lesson 07's sizes)."""
    vs, vt = len(src_vocab), len(tgt_vocab)
    if kind in ("one vector", "cross-attention"):
        config = TransformerConfig(vs, vt, d_model=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=256)
        return (OneVectorTransformer if kind == "one vector" else Seq2SeqTransformer)(config)
    if kind == "GRU":
        return GRUSeq2Seq(GRUConfig(vs, vt))
    if kind in ("decoder-only", "prefix-LM"):
        return DecoderOnlyTranslator(DecoderOnlyConfig(vs, vt, prefix_lm=kind == "prefix-LM"))
    raise ValueError(f"kind must be one of {list(CONDITIONERS)}; got {kind!r}")


_CLASSES = {cls.__name__: cls for cls in (OneVectorTransformer, Seq2SeqTransformer, GRUSeq2Seq, DecoderOnlyTranslator)}
_CONFIGS = {"OneVectorTransformer": TransformerConfig, "Seq2SeqTransformer": TransformerConfig,
            "GRUSeq2Seq": GRUConfig, "DecoderOnlyTranslator": DecoderOnlyConfig}


class TrainedConditioner(NamedTuple):
    """A trained model and what its training measured (``info``: steps, seconds, tokens/s, losses, ...)."""

    kind: str
    model: nn.Module
    info: dict


def save_conditioner(trained: TrainedConditioner, path: str | Path) -> Path:
    """Write kind, class, config, weights and ``info`` (plain values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = trained.model
    torch.save({"format": 1, "kind": trained.kind, "class": type(model).__name__, "config": asdict(model.config),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "info": trained.info}, path)
    return path


def load_conditioner(path: str | Path, *, device: torch.device | str = "cpu") -> TrainedConditioner:
    """Read what ``save_conditioner`` wrote (the model in eval mode on ``device``)."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = _CLASSES[saved["class"]](_CONFIGS[saved["class"]](**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return TrainedConditioner(saved["kind"], model.to(device).eval(), saved["info"])


def conditioner_path(kind: str, seed: int, time_budget_s: float) -> Path:
    """``$COURSE_CACHE_DIR/lesson09/<kind>-seed<seed>-<budget>s.pt`` (without the variable: under
    ``~/.cache/cross-attention-from-scratch``)."""
    folder = os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "cross-attention-from-scratch"
    return Path(folder) / "lesson09" / f"{kind.replace(' ', '-')}-seed{seed}-{time_budget_s:g}s.pt"


def train_conditioner(kind: str, data: dict, *, seed: int = 0, time_budget_s: float = 40.0,
                      device: torch.device | str = "cpu", progress: bool = True) -> TrainedConditioner:
    """Train a fresh model of ``kind`` on ``data["train"]`` (``training.toy_data``'s splits) for ``time_budget_s``
    seconds with lesson 07's recipe, no early stop and one validation at the end (so every kind gets the same
    wall-clock budget for training steps)."""
    from .training import TrainConfig, train  # training imports metrics, which imports this module

    torch.manual_seed(seed)
    model = build_conditioner(kind, data["train"].src_vocab, data["train"].tgt_vocab).to(device)
    config = TrainConfig(time_budget_s=time_budget_s, budget_by="time", max_steps=100_000, eval_every=100_000,
                         target_exact_match=None, seed=seed)
    history = train(model, data["train"], data["valid"], config, progress=progress)
    info = {"seed": seed, "time_budget_s": time_budget_s, "steps": history.steps, "seconds": history.seconds,
            "tokens_per_second": history.tokens_per_second, "valid_exact_match": history.eval_exact_match[-1],
            "parameters": sum(p.numel() for p in model.parameters()), "loss": history.loss[::10]}
    return TrainedConditioner(kind, model.eval(), info)


def load_or_train(kind: str, *, seed: int = 0, time_budget_s: float = 40.0, data: dict | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> TrainedConditioner:
    """``train_conditioner``'s model, loaded from the cache folder (``conditioner_path``) when a run with the same
    kind, seed and budget saved one, else trained and saved there.

    ``data``: the splits of ``training.toy_data(seed)`` if you already have them (built otherwise).
    """
    from .training import toy_data

    if kind not in CONDITIONERS:
        raise ValueError(f"kind must be one of {list(CONDITIONERS)}; got {kind!r}")
    path = conditioner_path(kind, seed, time_budget_s)
    if path.exists():
        return load_conditioner(path, device=device)
    trained = train_conditioner(kind, data if data is not None else toy_data(seed)[0], seed=seed,
                                time_budget_s=time_budget_s, device=device, progress=progress)
    save_conditioner(trained, path)
    return trained


def evaluation_sets(data: dict, seed: int = 0, n_long: int = 600) -> dict:
    """Lesson 09's evaluation: ``data["test"]`` and ``n_long`` extra sentences of 16-23 words
    (``toy_language.long_sentences``, none in training), as ``{"test": ParallelData, "long": ParallelData}``."""
    from .data import ParallelData
    from .toy_language import long_sentences

    train_sources = {e.source for e in data["train"].examples}
    long = long_sentences(seed, n_long, 16, exclude=train_sources)
    return {"test": data["test"], "long": ParallelData(long, data["train"].src_vocab, data["train"].tgt_vocab)}


LENGTH_BUCKETS = ((3, 5), (6, 8), (9, 11), (12, 14), (15, 17), (18, 20), (21, 23))


def exact_match_by_bucket(lengths: Tensor, correct: Tensor, buckets=LENGTH_BUCKETS) -> dict[str, float | None]:
    """Exact match per source-length bucket, ``{"3-5": 0.98, ...}`` (None for an empty bucket)."""
    lengths, correct = torch.as_tensor(lengths), torch.as_tensor(correct).float()
    return {f"{lo}-{hi}": (correct[(lengths >= lo) & (lengths <= hi)].mean().item()
                           if bool(((lengths >= lo) & (lengths <= hi)).any()) else None) for lo, hi in buckets}


# --- measuring: exact match by length, loss by position, the cost of one generated token ---------------------------
def correct_by_example(model: nn.Module, data) -> Tensor:
    """Greedy translations of ``data`` (a ``ParallelData``) against its targets: bool ``[N]``, True = exactly right."""
    from .metrics import translate_data

    predictions = translate_data(model, data)
    return torch.tensor([p == list(e.target) for p, e in zip(predictions, data.examples)])


def first_length_below(lengths: Tensor, correct: Tensor, threshold: float = 0.5, min_count: int = 20) -> int | None:
    """The shortest source length whose exact match is below ``threshold`` (lengths with fewer than
    ``min_count`` sentences are skipped); None if there is none."""
    lengths, correct = torch.as_tensor(lengths), torch.as_tensor(correct)
    if lengths.shape != correct.shape or lengths.ndim != 1:
        raise ValueError(f"lengths and correct must be 1-D and of one size; got {shape_str(lengths.shape)} and "
                         f"{shape_str(correct.shape)}")
    for n in sorted(set(lengths.tolist())):
        chosen = correct[lengths == n]
        if len(chosen) >= min_count and chosen.float().mean().item() < threshold:
            return int(n)
    return None


@torch.no_grad()
def loss_by_position(model: nn.Module, data, *, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Teacher-forced loss (``-log p(correct word)``) at each target position, averaged over ``data``'s
    sentences that reach it: ``(mean loss [T_max], sentences per position [T_max])``; the last position of a
    sentence is its ``<eos>``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = count = None
    for index in torch.arange(len(data)).split(batch_size):
        batch = data.batch(index).to(device)
        log_probs = torch.log_softmax(model(batch.src_ids, batch.tgt_in).float(), dim=-1)  # [B, T, V]
        nll = -log_probs.gather(-1, batch.tgt_out[..., None])[..., 0]  # [B, T]
        real = batch.tgt_out != model.config.pad_id  # [B, T]
        width = data.tgt_in.shape[1]
        step_total = F.pad((nll * real).sum(dim=0).cpu(), (0, width - nll.shape[1]))  # [T_max]
        step_count = F.pad(real.sum(dim=0).cpu(), (0, width - nll.shape[1]))
        total = step_total if total is None else total + step_total
        count = step_count if count is None else count + step_count
    model.train(was_training)
    return total / count.clamp(min=1), count


class StepCost(NamedTuple):
    """The work of generating one token: K/V cache bytes after the step, attention FLOPs of the step
    (``q·k`` scores and the weighted sum of values, 2 FLOPs per multiply-add; projections not counted)."""

    cache_bytes: int
    attention_flops: int


def predicted_step_cost(model: nn.Module, n_source: int, t: int) -> StepCost:
    """``StepCost`` of the step that writes target word ``t + 1`` after ``t >= 1`` words, from the sizes alone.

    Encoder-decoder (``L`` decoder layers): the query reads ``t + 1`` cached target positions and ``S`` source
    positions, ``4 d (t + 1 + S)`` FLOPs per layer; its cache holds ``2 d (t + 1)`` self-attention and ``2 d S``
    cross-attention values per layer. Decoder-only (``L`` layers): ``S + 1 + t`` positions (source, ``<sep>``,
    target), ``4 d (S + 1 + t)`` FLOPs and ``2 d (S + 1 + t)`` cached values per layer.
    """
    if n_source < 1 or t < 1:
        raise ValueError(f"need n_source >= 1 and t >= 1; got n_source={n_source}, t={t}")
    bytes_per_value = next(model.parameters()).element_size()
    if isinstance(model, DecoderOnlyTranslator):
        layers, d, keys = model.config.n_layers, model.config.d_model, n_source + 1 + t
        return StepCost(layers * 2 * d * keys * bytes_per_value, layers * 4 * d * keys)
    if isinstance(model, Seq2SeqTransformer):
        layers, d = model.config.n_decoder_layers, model.config.d_model
        if isinstance(model, OneVectorTransformer):
            n_source = 1  # one memory vector
        return StepCost(layers * 2 * d * (t + 1 + n_source) * bytes_per_value, layers * 4 * d * (t + 1 + n_source))
    raise ValueError(f"model must be a transformer translator; got {type(model).__name__}")


@torch.no_grad()
def measured_step_cost(model: nn.Module, src_ids: Tensor, t: int) -> StepCost:
    """``StepCost`` measured: decode ``t`` words of ``src_ids [1, S]`` (no padding) with the K/V caches, then
    run the next step under ``torch.utils.flop_counter.FlopCounterMode`` with the hand-written attention
    (whose matrix products it sees) and read the caches' size."""
    from torch.utils.flop_counter import FlopCounterMode

    if src_ids.ndim != 2 or src_ids.shape[0] != 1 or bool((src_ids == model.config.pad_id).any()) or t < 1:
        raise ValueError(f"need one unpadded source [1, S] and t >= 1; got {shape_str(src_ids.shape)}, t={t}")
    attention = [m for m in model.modules() if hasattr(m, "use_sdpa")]
    saved = [m.use_sdpa for m in attention]
    for m in attention:
        m.use_sdpa = False
    try:
        word = torch.full((1, 1), BOS_ID + 3, dtype=torch.long, device=src_ids.device)  # any word will do
        if isinstance(model, DecoderOnlyTranslator):
            caches = [KVCache() for _ in model.layers]
            ids = model.join(src_ids, torch.full((1, 1), BOS_ID, dtype=torch.long, device=src_ids.device))
            n = ids.shape[1]
            model.forward_sequence(ids, caches=caches)  # the prompt fills the caches
            step = lambda i: model._run(word + model.config.src_vocab_size, torch.tensor([[n + i]]), None,
                                        caches=caches)
            nbytes = lambda: sum(c.nbytes() for c in caches)
        else:
            memory, _ = model.encode(src_ids)
            cache, mask = model.new_cache(memory), model.source_mask(src_ids)
            model.decode(torch.full_like(word, BOS_ID), None, mask, cache=cache)
            step = lambda i: model.decode(word, None, mask, cache=cache)
            nbytes = cache.nbytes
        for i in range(t - 1):
            step(i)
        with FlopCounterMode(display=False) as counter:
            step(t - 1)
    finally:
        for m, use in zip(attention, saved):
            m.use_sdpa = use
    products = {op: n for op, n in counter.get_flop_counts()["Global"].items() if "addmm" not in str(op)}
    return StepCost(nbytes(), int(sum(products.values())))
