"""course_lib: the tested pieces built in *Cross-Attention from Scratch*, in lesson order.

Imported before torch (as by ``python -m course_lib.bench``), it sets ``OMP_WAIT_POLICY=PASSIVE`` unless you set
it yourself, as every notebook's setup cell does: waiting CPU threads then sleep instead of spinning, which keeps
training fast on a CPU that other programs also use (measured in the README).
"""
import os
import sys

if "torch" not in sys.modules:  # OpenMP reads the policy once, when torch loads it
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .attention import MultiHeadAttention, SourceKV, scaled_dot_product_attention
from .cache import DecoderCache, KVCache, StaticKVCache
from .env import pick_device, seed_everything
from .generate import CACHE_MODES, Generation, beam_search, greedy_decode
from .layers import DecoderLayer, EncoderLayer, FeedForward, PositionalEncoding, sinusoidal_positions
from .masks import (
    additive_mask_from_mask,
    causal_mask,
    combine_masks,
    cross_document_mask,
    document_mask,
    key_padding_mask_from_mask,
    mask_from_additive_mask,
    mask_from_key_padding_mask,
    padding_mask,
    padding_mask_from_ids,
    prefix_lm_mask,
)
from .model import AttentionMaps, Decoder, DecoderOutput, Encoder, Seq2SeqTransformer, TransformerConfig

__version__ = "0.1.0"

# Submodules that pull in Matplotlib, seaborn, ipywidgets or sacrebleu, and the lesson 07-08 modules, load on first
# use: `cl.plotting.attention_heatmap`, `cl.training.train`.
_LAZY_SUBMODULES = {"alignment_plots", "attention_diagrams", "authoring", "bench", "captioning", "charts", "checks",
                    "conditioning", "conditioning_charts", "data", "decoding_costs", "diagrams", "fusion",
                    "fusion_charts", "fusion_runs", "head_analysis", "long_attention", "long_charts", "long_docs",
                    "long_runs", "measure", "metrics", "order_charts", "order_models", "order_runs", "plotting",
                    "position", "questions", "reference", "respelling", "retrieval", "reverser", "scenes", "tour",
                    "toy_language", "training", "translation_charts", "translator", "vision", "vision_charts",
                    "vision_widgets", "widgets"}


def __getattr__(name: str):  # PEP 562
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentionMaps", "CACHE_MODES", "Decoder", "DecoderCache", "DecoderLayer", "DecoderOutput", "Encoder",
    "EncoderLayer", "FeedForward", "Generation", "KVCache", "MultiHeadAttention", "PositionalEncoding",
    "Seq2SeqTransformer", "SourceKV", "StaticKVCache", "TransformerConfig", "additive_mask_from_mask", "beam_search",
    "causal_mask", "combine_masks", "cross_document_mask", "document_mask", "greedy_decode",
    "key_padding_mask_from_mask", "mask_from_additive_mask", "mask_from_key_padding_mask", "padding_mask",
    "padding_mask_from_ids", "pick_device", "prefix_lm_mask", "scaled_dot_product_attention", "seed_everything",
    "sinusoidal_positions", "__version__",
]
