"""Copy weights from PyTorch's own modules into course_lib's, so the two can be compared
output for output. Used by the lessons and the tests; each function returns its first argument."""
from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention
from .layers import DecoderLayer, EncoderLayer
from .model import Decoder, Encoder
from .vision import CrossAttentionBlock


@torch.no_grad()
def load_torch_mha(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> MultiHeadAttention:
    """``nn.MultiheadAttention`` packs W_q, W_k, W_v into one ``in_proj_weight`` ``[3*d, d]`` (or keeps
    them apart when kdim/vdim differ); copy them into ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``."""
    if (ours.d_model, ours.n_heads) != (theirs.embed_dim, theirs.num_heads):
        raise ValueError(
            f"sizes differ: ours d_model={ours.d_model}, n_heads={ours.n_heads}; "
            f"theirs embed_dim={theirs.embed_dim}, num_heads={theirs.num_heads}"
        )
    if theirs.in_proj_weight is not None:
        w_q, w_k, w_v = theirs.in_proj_weight.chunk(3, dim=0)  # each [d, d]
    else:
        w_q, w_k, w_v = theirs.q_proj_weight, theirs.k_proj_weight, theirs.v_proj_weight
    for proj, weight in ((ours.q_proj, w_q), (ours.k_proj, w_k), (ours.v_proj, w_v)):
        proj.weight.copy_(weight)
    if theirs.in_proj_bias is not None:
        for proj, bias in zip((ours.q_proj, ours.k_proj, ours.v_proj), theirs.in_proj_bias.chunk(3)):
            proj.bias.copy_(bias)
    ours.out_proj.load_state_dict(theirs.out_proj.state_dict())
    return ours


def _load_common(ours: EncoderLayer | DecoderLayer, theirs: nn.Module, n_norms: int) -> None:
    load_torch_mha(ours.self_attn, theirs.self_attn)
    ours.ffn.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ffn.linear2.load_state_dict(theirs.linear2.state_dict())
    for i in range(1, n_norms + 1):
        getattr(ours, f"norm{i}").load_state_dict(getattr(theirs, f"norm{i}").state_dict())


def load_torch_encoder_layer(ours: EncoderLayer, theirs: nn.TransformerEncoderLayer) -> EncoderLayer:
    """Copy an ``nn.TransformerEncoderLayer`` (batch_first) into an ``EncoderLayer``."""
    if ours.norm_first != theirs.norm_first:
        raise ValueError(f"norm_first differs: ours {ours.norm_first}, theirs {theirs.norm_first}")
    _load_common(ours, theirs, n_norms=2)
    return ours


def load_torch_decoder_layer(ours: DecoderLayer, theirs: nn.TransformerDecoderLayer) -> DecoderLayer:
    """Copy an ``nn.TransformerDecoderLayer`` (batch_first) into a ``DecoderLayer``; PyTorch calls the
    cross-attention ``multihead_attn``."""
    if ours.norm_first != theirs.norm_first:
        raise ValueError(f"norm_first differs: ours {ours.norm_first}, theirs {theirs.norm_first}")
    _load_common(ours, theirs, n_norms=3)
    load_torch_mha(ours.cross_attn, theirs.multihead_attn)
    return ours


def load_torch_transformer(encoder: Encoder, decoder: Decoder, theirs: nn.Transformer) -> tuple[Encoder, Decoder]:
    """Copy an ``nn.Transformer``'s encoder and decoder stacks, final norms included."""
    pairs = ((encoder.layers, theirs.encoder.layers), (decoder.layers, theirs.decoder.layers))
    for our_layers, their_layers in pairs:
        if len(our_layers) != len(their_layers):
            raise ValueError(f"layer counts differ: ours {len(our_layers)}, theirs {len(their_layers)}")
    for ours, layer in zip(encoder.layers, theirs.encoder.layers):
        load_torch_encoder_layer(ours, layer)
    for ours, layer in zip(decoder.layers, theirs.decoder.layers):
        load_torch_decoder_layer(ours, layer)
    with torch.no_grad():
        encoder.norm.load_state_dict(theirs.encoder.norm.state_dict())
        decoder.norm.load_state_dict(theirs.decoder.norm.state_dict())
    return encoder, decoder


class TorchCrossAttentionBlock(nn.Module):
    """``vision.CrossAttentionBlock`` built from PyTorch's own modules: three ``nn.LayerNorm`` (query, source,
    feed-forward), ``nn.MultiheadAttention`` with ``kdim = vdim = d_source`` and an ``nn.Sequential`` feed-forward
    with ``nn.GELU``; pre-norm, residual connections. Returns ``(x, weights [B, H, T, S])``."""

    def __init__(self, d_model: int, d_source: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm_query, self.norm_source, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_source), \
            nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, kdim=d_source, vdim=d_source, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, source: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm_source(source)
        attended, weights = self.attn(self.norm_query(x), normed, normed, key_padding_mask=key_padding_mask,
                                      average_attn_weights=False)
        x = x + attended
        return x + self.ffn(self.norm_ffn(x)), weights


@torch.no_grad()
def load_torch_cross_attention_block(ours: CrossAttentionBlock, theirs: TorchCrossAttentionBlock
                                     ) -> CrossAttentionBlock:
    """Copy ``theirs``' weights into ``ours`` (same sizes): the attention with ``load_torch_mha``, the rest by name."""
    load_torch_mha(ours.attn, theirs.attn)
    for name in ("norm_query", "norm_source", "norm_ffn"):
        getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())
    ours.ffn.linear1.load_state_dict(theirs.ffn[0].state_dict())
    ours.ffn.linear2.load_state_dict(theirs.ffn[2].state_dict())
    return ours
