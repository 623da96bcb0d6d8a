"""Lesson 11's experiments: the data (questions about lesson 10's scenes, read through its frozen image encoder),
training each fusion model once and caching it, and the measurements the lesson and the bench report (exact match
per question kind, a source left out, padding, each source's share of attention, the cost of latents).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .captioning import load_or_train_captioner
from .data import EOS_ID
from .env import course_cache_dir, save_atomically
from .fusion import FlamingoQA, FusionConfig, FusionQA, PrefixQA, QuestionOnlyLM, trainable_parameters
from .questions import KINDS, QAData, Sources, exact_match_by_kind, qa_data
from .training import History, TrainConfig, train

MODELS = {
    "concatenation": "one memory: projected patches and question states, a source-type embedding, one mask",
    "separate": "two cross-attention sublayers per decoder layer: the patches, then the question",
    "prefix": "decoder-only (lesson 09): projected patches before the question, no cross-attention",
    "text only": "decoder-only reading the question alone: the language model Flamingo freezes",
    "gated": "the frozen text-only model + tanh-gated cross-attention blocks (gates start at 0)",
    "ungated": "the frozen text-only model + the same blocks without gates",
    "latents": "concatenation, reading M Perceiver latents instead of the 36 patches",
}
LEARNING_RATE = 2e-3  # every model but the latent ones (README, lesson 11: a short sweep of 1e-3, 2e-3 and 5e-3)
LATENT_LEARNING_RATE = 1e-3  # the resampler's latents learned slowly at 2e-3 and hardly at all at 5e-3
DEFAULT_STEPS = {"concatenation": 1000, "separate": 1000, "prefix": 1000, "text only": 300, "gated": 800,
                 "ungated": 800, "latents": 1000}


def lesson11_data(seed: int = 0, sizes: dict[str, int] | None = None, *, device: torch.device | str = "cpu",
                  progress: bool = True
                  ) -> dict[str, QAData]:
    """``questions.qa_data(seed, sizes)`` with every image's patch features from lesson 10's captioner (seed 0),
    frozen: loaded from the cache folder, or trained first (about two minutes) when lesson 10 has not run."""
    encoder = load_or_train_captioner(0, device=device, progress=progress).model.encoder  # features kept on the CPU
    data = qa_data(seed, sizes)
    for split in data.values():
        split.encode_images(encoder)
    return data


def fusion_config(data: QAData, n_latents: int | None = None) -> FusionConfig:
    """Lesson 11's sizes for ``data``'s vocabularies and feature width: d_model 64, 4 heads, a one-layer question
    encoder, two decoder layers (three in the decoder-only models), d_ff 192."""
    if data.features is None:
        raise ValueError("fusion_config needs data with image features: call encode_images first")
    return FusionConfig(len(data.src_vocab), len(data.tgt_vocab), d_image=data.features.shape[-1],
                        n_latents=n_latents)


def build_model(kind: str, config: FusionConfig, text_model: QuestionOnlyLM | None = None) -> nn.Module:
    """A fresh model of ``kind`` (a key of ``MODELS``). "gated" and "ungated" need the trained ``text_model``
    (copied, then frozen inside); "latents" needs ``config.n_latents``."""
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, MODELS))}; got {kind!r}")
    if kind in ("concatenation", "separate"):
        return FusionQA(config, kind)
    if kind == "latents":
        if config.n_latents is None:
            raise ValueError("kind 'latents' needs FusionConfig(n_latents=M); got n_latents=None")
        return FusionQA(config, "concatenation")
    if kind == "prefix":
        return PrefixQA(config)
    if kind == "text only":
        return QuestionOnlyLM(config)
    if text_model is None:
        raise ValueError(f"kind {kind!r} needs the trained text-only model (text_model=...); got None")
    return FlamingoQA(copy.deepcopy(text_model), gated=kind == "gated")


class TrainedQA(NamedTuple):
    """A trained model, its ``kind`` and what happened: ``info`` holds seed, steps, seconds, ms per step,
    validation exact match over training and, for Flamingo's models, the gates every 25 steps."""

    model: nn.Module
    kind: str
    info: dict


def train_qa_model(kind: str, data: dict[str, QAData], *, seed: int = 0, steps: int | None = None,
                   n_latents: int | None = None, text_model: QuestionOnlyLM | None = None,
                   device: torch.device | str = "cpu", progress: bool = True) -> TrainedQA:
    """Train a fresh model of ``kind`` for ``steps`` steps (default ``DEFAULT_STEPS[kind]``) with lesson 07's loop
    (batch 64, learning rate ``LEARNING_RATE``, ``LATENT_LEARNING_RATE`` for "latents", warm-up then cosine decay),
    validation exact match every quarter."""
    steps = DEFAULT_STEPS[kind] if steps is None else steps
    torch.manual_seed(seed)
    model = build_model(kind, fusion_config(data["train"], n_latents), text_model).to(device)
    gates: list[list[tuple[float, float]]] = []
    gate_steps: list[int] = []

    def record(h) -> None:  # train calls back every 25 steps and once more at the end: one entry per step
        if not gate_steps or gate_steps[-1] != h.steps:
            gates.append(model.gates())
            gate_steps.append(h.steps)

    flamingo = isinstance(model, FlamingoQA)
    if flamingo:
        record(History())  # step 0: the gates as they start
    lr = LATENT_LEARNING_RATE if kind == "latents" else LEARNING_RATE
    config = TrainConfig(lr=lr, max_steps=steps, eval_every=max(1, steps // 4), time_budget_s=None,
                         target_exact_match=None, repeat_long_from=None, seed=seed)
    history = train(model, data["train"], data["valid"], config, callback=record if flamingo else None,
                    callback_every=25, progress=progress)
    info = {"seed": seed, "lr": lr, "steps": history.steps, "seconds": history.seconds,
            "ms_per_step": 1000 * history.train_seconds / max(1, history.steps),
            "eval_steps": history.eval_steps, "valid_exact_match": history.eval_exact_match,
            "loss": history.loss, "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": trainable_parameters(model), "n_latents": n_latents,
            "gates": gates, "gate_steps": gate_steps}
    return TrainedQA(model.eval(), kind, info)


def run_path(kind: str, *, seed: int = 0, steps: int | None = None, n_latents: int | None = None) -> Path:
    """``$COURSE_CACHE_DIR/lesson11/<kind>[-M<n_latents>]-seed<seed>-steps<steps>.pt``."""
    folder = course_cache_dir()
    steps = DEFAULT_STEPS[kind] if steps is None else steps
    name = kind.replace(" ", "-") + (f"-M{n_latents}" if n_latents is not None else "")
    return Path(folder) / "lesson11" / f"{name}-seed{seed}-steps{steps}.pt"


def save_qa_model(trained: TrainedQA, path: str | Path) -> Path:
    """Write kind, config, weights and info (to a temporary file, then renamed: a reader never sees half)."""
    return save_atomically({"kind": trained.kind, "config": asdict(trained.model.config),
                            "state_dict": trained.model.state_dict(), "info": trained.info}, path)


def load_qa_model(path: str | Path, *, device: torch.device | str = "cpu") -> TrainedQA:
    """Read what ``save_qa_model`` wrote."""
    saved = torch.load(Path(path), map_location=device, weights_only=False)
    config = FusionConfig(**saved["config"])
    kind = saved["kind"]
    text_model = QuestionOnlyLM(config) if kind in ("gated", "ungated") else None
    model = build_model(kind, config, text_model)
    model.load_state_dict(saved["state_dict"])
    return TrainedQA(model.to(device).eval(), kind, saved["info"])


def load_or_train_qa(kind: str, data: dict[str, QAData], *, seed: int = 0, steps: int | None = None,
                     n_latents: int | None = None, text_model: QuestionOnlyLM | None = None,
                     device: torch.device | str = "cpu", progress: bool = True) -> TrainedQA:
    """The cached model of ``run_path(...)`` if there is one, else ``train_qa_model(...)``, saved there."""
    path = run_path(kind, seed=seed, steps=steps, n_latents=n_latents)
    if path.exists():
        trained = load_qa_model(path, device=device)
        trained.info["from_cache"] = True
        return trained
    trained = train_qa_model(kind, data, seed=seed, steps=steps, n_latents=n_latents, text_model=text_model,
                             device=device, progress=progress)
    save_qa_model(trained, path)
    trained.info["from_cache"] = False
    return trained


# --- measurements ----------------------------------------------------------------------------------------------
@torch.no_grad()
def answers(model: nn.Module, data: QAData, *, drop: str | None = None, batch_size: int = 500) -> list[list[str]]:
    """Greedy answers to every question of ``data``, in order; ``drop`` leaves a source out (models that can)."""
    model.eval()
    device = next(model.parameters()).device
    options = {} if drop is None else {"drop": drop}
    out: list[list[str]] = []
    for batch in data.batches(batch_size, shuffle=False):
        tokens = model.greedy_decode(batch.src_ids.to(device), eos_id=EOS_ID, **options)
        out += [data.tgt_vocab.decode(row) for row in tokens.cpu()]
    return out


def scores(model: nn.Module, data: QAData, *, drop: str | None = None) -> dict[str, float]:
    """Exact match per question kind and "all" (``questions.exact_match_by_kind``)."""
    return exact_match_by_kind(answers(model, data, drop=drop), data)


def pad_questions(sources: Sources, extra: int, pad_id: int = 0) -> Sources:
    """The same sources with ``extra`` more padding columns after every question."""
    image, question_ids = sources
    padding = torch.full((question_ids.shape[0], extra), pad_id, dtype=question_ids.dtype, device=question_ids.device)
    return Sources(image, torch.cat([question_ids, padding], dim=1))


@torch.no_grad()
def padding_change(model: nn.Module, data: QAData, *, extra: int = 5, n: int = 200) -> float:
    """Largest change of any answer logit when every question gets ``extra`` padding tokens: 0 up to round-off
    when the model's masks hide padding."""
    batch = data.batch(range(min(n, len(data)))).to(next(model.parameters()).device)
    plain = model(batch.src_ids, batch.tgt_in)
    padded = model(pad_questions(batch.src_ids, extra, model.config.pad_id), batch.tgt_in)
    return float((plain - padded).abs().max())


@torch.no_grad()
def source_shares(model: nn.Module, data: QAData, *, n: int = 500) -> Tensor:
    """How much each source is read while answering, per decoder layer: ``[layers, 2]`` (image, question), rows
    summing to 1, averaged over the answer tokens of the first ``n`` questions (``<eos>`` included).

    - concatenation: the attention weight on image keys and on question keys (mean over heads);
    - prefix: the same, from the self-attention rows that write the answer (what is left reads the answer so far
      and ``<sep>``; the two shares are rescaled to sum to 1);
    - separate: each source has its own softmax (weights sum to 1 on each), so the share is that of each
      sublayer's update size, ``|update| / (|image update| + |question update|)``.
    """
    batch = data.batch(range(min(n, len(data)))).to(next(model.parameters()).device)
    sources, tgt_in = batch.src_ids, batch.tgt_in
    real = (batch.tgt_out != model.config.pad_id).float()  # [B, T]: answer positions that count
    mean = lambda t: (t * real).sum() / real.sum()  # noqa: E731 - over the real answer positions
    rows = []
    if isinstance(model, FusionQA):
        _, traces = model.decode(tgt_in, model.encode(sources), need_weights=True)
        n_image = model.image_tokens(sources.image).shape[1]
        for trace in traces:
            if model.fusion == "separate":
                sizes = torch.stack([mean(u.norm(dim=-1)) for u in trace.updates])
                rows.append(sizes / sizes.sum())
            else:
                w = trace.weights[0].mean(dim=1)  # [B, T, N + Q]
                image_share = mean(w[..., :n_image].sum(-1))
                rows.append(torch.stack([image_share, 1 - image_share]))
    elif isinstance(model, PrefixQA):
        _, weights, start = model.run(sources, tgt_in, need_weights=True)
        n_image = sources.image.shape[1]
        for w in weights:
            w = w.mean(dim=1)[:, start:]  # [B, T, L]: the rows that write the answer
            image_share, question_share = mean(w[..., :n_image].sum(-1)), mean(w[..., n_image:start].sum(-1))
            rows.append(torch.stack([image_share, question_share]) / (image_share + question_share))
    else:
        raise ValueError(f"source_shares reads FusionQA and PrefixQA models; got a {type(model).__name__}")
    return torch.stack(rows)  # [layers, 2]


def latent_attention_flops(n_latents: int, n_patches: int, d_model: int = 96, n_heads: int = 4,
                           batch: int = 1) -> int:
    """Multiply-adds x 2 of one latent cross-attention, counted by ``torch.utils.flop_counter`` on a real module
    (projections included)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .vision import CrossAttentionBlock

    block = CrossAttentionBlock(d_model, d_model, n_heads, 2 * d_model)
    block.attn.use_sdpa = False
    latents, patches = torch.zeros(batch, n_latents, d_model), torch.zeros(batch, n_patches, d_model)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        block(latents, patches)
    return int(counter.get_total_flops())


def latent_score_flops(n_latents: int, n_patches: int, *, d_head: int = 24, n_heads: int = 4, batch: int = 1) -> int:
    """Floating-point operations of the attention itself (scores ``q @ k^T`` and the weighted sum ``weights @ v``)
    of ``n_latents`` queries over ``n_patches`` keys, counted by ``torch.utils.flop_counter`` on the course's
    ``scaled_dot_product_attention``: ``4 * batch * n_heads * M * N * d_head``."""
    from torch.utils.flop_counter import FlopCounterMode

    from .attention import scaled_dot_product_attention

    q = torch.zeros(batch, n_heads, n_latents, d_head)
    k = v = torch.zeros(batch, n_heads, n_patches, d_head)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        scaled_dot_product_attention(q, k, v)
    return int(counter.get_total_flops())


def time_latent_attention(n_latents: int, n_patches: int, *, d_head: int = 24, n_heads: int = 4, batch: int = 8,
                          repeats: int = 7) -> float:
    """Median seconds of the attention itself (the course's hand-written ``scaled_dot_product_attention``) of
    ``n_latents`` queries over ``n_patches`` keys and values, ``[batch, n_heads, ., d_head]``."""
    from .attention import scaled_dot_product_attention

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(batch, n_heads, n_latents, d_head, generator=generator)
    k, v = (torch.randn(batch, n_heads, n_patches, d_head, generator=generator) for _ in range(2))
    times = []
    with torch.no_grad():
        scaled_dot_product_attention(q, k, v)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            scaled_dot_product_attention(q, k, v)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


__all__ = ["DEFAULT_STEPS", "KINDS", "LATENT_LEARNING_RATE", "LEARNING_RATE", "MODELS", "TrainedQA", "answers",
           "build_model", "fusion_config", "latent_attention_flops", "latent_score_flops", "lesson11_data",
           "load_or_train_qa", "load_qa_model", "pad_questions", "padding_change", "run_path", "save_qa_model",
           "scores", "source_shares", "time_latent_attention", "train_qa_model"]
