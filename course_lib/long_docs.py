"""Lesson 12's long-document task: look facts up in a source of a thousand tokens, and what the approximations of
cross-attention cost there in accuracy.

**The task.** A document is ``t_src`` tokens of filler words with ``n_facts`` facts scattered at random places,
each fact two adjacent tokens: a key name, then its value (``... w17 w3 k42 v07 w88 ...``). Key names are unique
within a document. The target asks for the values of ``n_queries`` of the keys: the decoder's input is the queried
key names, in the order their facts appear in the document, and its output at each position is that key's value
(one answer per query, all answered at once). The order gives local windows the diagonal they assume (query ``i``
of ``T_q`` sits near key ``i * T_k / T_q``); in a random order no window narrower than the document could work.

**The model** (``LongDocReader``) is cheap in ``T_src`` on the source side: token embeddings and a width-3
depthwise convolution (so the state at a key name also holds the value next to it), no self-attention over the
thousand tokens and no positions (the lookup is by content; the convolution gives the local order). The target
side is the course's ``DecoderLayer``: its cross-attention is where the approximations are swapped in
(``long_attention.use_attention_core``). Each query reads only itself in the decoder's self-attention (an identity
mask): the questions are independent, and letting them mix slowed training down badly. With ``n_latents = M`` a
Perceiver resampler (lesson 11's ``LatentResampler``) first compresses the source into ``M`` latents, and the
decoder reads those instead.

**Training** starts on short documents and ends on long ones (a curriculum of lengths, ``stage_lengths``). On
1024-token documents alone the attention must first find the right key among 1024 by chance before a gradient
points at it: 400 steps (54 s) there stayed at chance, the loss flat at ``ln 32`` (the 32 values' prior). On
64-token documents the lookup is found in a few hundred cheap steps, and the model (which has no positions) carries
it over to long ones: 1000 steps, two thirds of them short, reach 100 % in about 25 s. Every batch is freshly drawn.
"""
from __future__ import annotations

import math
import statistics
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionCore
from .env import course_cache_dir, num_threads, save_atomically, small_model_threads
from .fusion import LatentResampler
from .layers import DecoderLayer
from .long_attention import (
    attention_modules,
    attention_multiply_adds,
    exact_core,
    linear_core,
    topk_core,
    use_attention_core,
    window_core,
)

KINDS = {
    "softmax": "exact softmax cross-attention",
    "linear": "trained with linear attention (Katharopoulos et al. 2020) in the cross-attention",
    "latents": "the decoder reads M Perceiver latents that read the source (softmax everywhere)",
}
DEFAULT_STEPS = {"softmax": 1000, "linear": 800, "latents": 600}  # ~25, ~24 and ~17 s on one CPU thread
LEARNING_RATES = {"softmax": 3e-3, "linear": 1e-2, "latents": 3e-3}  # a short sweep of 1e-3, 3e-3, 5e-3, 1e-2
BATCH_SIZE = 32


# --- the data ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocVocabulary:
    """Token ids: ``n_filler`` filler words, then ``n_keys`` key names, then ``n_values`` values."""

    n_filler: int = 128
    n_keys: int = 64
    n_values: int = 32

    @property
    def size(self) -> int:
        return self.n_filler + self.n_keys + self.n_values

    @property
    def first_key(self) -> int:
        return self.n_filler

    @property
    def first_value(self) -> int:
        return self.n_filler + self.n_keys

    def name(self, token: int) -> str:
        """``w17`` (filler), ``k42`` (key name) or ``v07`` (value)."""
        if not 0 <= token < self.size:
            raise ValueError(f"token must be in 0..{self.size - 1}; got {token}")
        if token < self.first_key:
            return f"w{token}"
        if token < self.first_value:
            return f"k{token - self.first_key:02d}"
        return f"v{token - self.first_value:02d}"


@dataclass
class LongDocs:
    """A set of documents with their questions; every tensor has one row per document.

    ``sources [N, T_src]``; ``queries [N, Q]`` (key names, document order) and ``answers [N, Q]`` (their values);
    ``fact_positions [N, F]`` (where each key name is, increasing; its value is at the next position),
    ``fact_keys [N, F]``, ``fact_values [N, F]``."""

    sources: Tensor
    queries: Tensor
    answers: Tensor
    fact_positions: Tensor
    fact_keys: Tensor
    fact_values: Tensor
    vocab: DocVocabulary

    def __len__(self) -> int:
        return self.sources.shape[0]

    @property
    def t_src(self) -> int:
        return self.sources.shape[1]

    def to(self, device: torch.device | str) -> LongDocs:
        moved = {name: value.to(device) if isinstance(value, Tensor) else value for name, value in vars(self).items()}
        return LongDocs(**moved)

    def select(self, rows: Tensor | slice) -> LongDocs:
        """The documents at ``rows``."""
        return LongDocs(**{name: value[rows] if isinstance(value, Tensor) else value
                           for name, value in vars(self).items()})

    def batches(self, batch_size: int) -> Iterator[LongDocs]:
        """Consecutive batches, in order (the last may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.select(slice(start, start + batch_size))


def _check_sizes(t_src: int, n_facts: int, n_queries: int, vocab: DocVocabulary) -> None:
    if n_facts < 1 or n_queries < 1:
        raise ValueError(f"need n_facts >= 1 and n_queries >= 1; got n_facts={n_facts}, n_queries={n_queries}")
    if n_queries > n_facts:
        raise ValueError(f"n_queries must be <= n_facts (a query asks for a fact of the document): "
                         f"got n_queries={n_queries} > n_facts={n_facts}")
    if n_facts > vocab.n_keys:
        raise ValueError(f"n_facts must be <= vocab.n_keys={vocab.n_keys} (key names are unique in a document); "
                         f"got n_facts={n_facts}")
    if t_src < 2 * n_facts:
        raise ValueError(f"t_src too small for the facts: {n_facts} facts of 2 tokens need t_src >= {2 * n_facts}; "
                         f"got t_src={t_src}")


def generate_docs(n_docs: int, t_src: int, generator: torch.Generator, *, n_facts: int = 16, n_queries: int = 8,
                  vocab: DocVocabulary | None = None) -> LongDocs:
    """``n_docs`` fresh documents of ``t_src`` tokens (on the CPU), drawn with ``generator``.

    Fact ``f`` of a document takes positions ``p_f`` and ``p_f + 1``: ``n_facts`` distinct starts are drawn from
    ``0 .. t_src - n_facts - 1``, sorted, and start ``f`` is shifted right by ``f``, so pairs never overlap (they
    may touch) and every placement is equally likely. Keys: ``n_facts`` distinct names; values: any, repeats allowed.
    Queries: ``n_queries`` distinct facts, kept in document order."""
    vocab = DocVocabulary() if vocab is None else vocab
    _check_sizes(t_src, n_facts, n_queries, vocab)
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1; got {n_docs}")
    sources = torch.randint(0, vocab.n_filler, (n_docs, t_src), generator=generator)  # [N, T_src]
    starts = torch.rand(n_docs, t_src - n_facts, generator=generator).argsort(dim=1)[:, :n_facts]
    positions = starts.sort(dim=1).values + torch.arange(n_facts)  # [N, F], each at least 2 after the last
    keys = torch.rand(n_docs, vocab.n_keys, generator=generator).argsort(dim=1)[:, :n_facts] + vocab.first_key
    values = torch.randint(0, vocab.n_values, (n_docs, n_facts), generator=generator) + vocab.first_value
    sources.scatter_(1, positions, keys)
    sources.scatter_(1, positions + 1, values)
    asked = torch.rand(n_docs, n_facts, generator=generator).argsort(dim=1)[:, :n_queries].sort(dim=1).values
    return LongDocs(sources, keys.gather(1, asked), values.gather(1, asked), positions, keys, values, vocab)


def _split_seed(seed: int, split: str) -> int:
    return seed * 1_000_003 + zlib.crc32(split.encode())  # the same split for the same seed, whatever else is asked


def long_doc_data(seed: int = 0, sizes: dict[str, int] | None = None, *, t_src: int = 1024, n_facts: int = 16,
                  n_queries: int = 8, vocab: DocVocabulary | None = None, device: torch.device | str = "cpu"
                  ) -> dict[str, LongDocs]:
    """Fixed splits of documents (default ``{"valid": 256, "test": 512}``), each drawn from its own seed (so a
    split does not change when others are added), on ``device``. Training draws fresh documents instead
    (``train_long_doc_reader``).

    Raises:
        ValueError: ``t_src < 2 * n_facts``, ``n_queries > n_facts``, more facts than key names, an empty split.
    """
    sizes = {"valid": 256, "test": 512} if sizes is None else sizes
    out = {}
    for split, n_docs in sizes.items():
        generator = torch.Generator().manual_seed(_split_seed(seed, split))
        out[split] = generate_docs(n_docs, t_src, generator, n_facts=n_facts, n_queries=n_queries,
                                   vocab=vocab).to(device)
    return out


# --- the model ---------------------------------------------------------------------------------------------------
@dataclass
class LongDocConfig:
    """Sizes of a ``LongDocReader``; ``cross_core`` says how the decoder's cross-attention computes ("softmax" or
    "linear"), ``n_latents`` (or None) how many Perceiver latents it reads instead of the source."""

    vocab_size: int
    d_model: int = 64
    n_heads: int = 2
    d_ff: int = 128
    n_layers: int = 1
    n_latents: int | None = None
    cross_core: str = "softmax"

    def __post_init__(self) -> None:
        if self.n_latents is not None and self.n_latents < 1:
            raise ValueError(f"n_latents must be None or >= 1; got {self.n_latents}")
        if self.cross_core not in ("softmax", "linear"):
            raise ValueError(f"cross_core must be 'softmax' or 'linear'; got {self.cross_core!r}")
        if min(self.vocab_size, self.d_model, self.n_heads, self.d_ff, self.n_layers) < 1:
            raise ValueError(f"sizes must be >= 1; got {self}")


class LongDocReader(nn.Module):
    """Reads a long source cheaply (embeddings + width-3 depthwise convolution, optionally ``M`` latents) and
    answers every query at once with ``DecoderLayer``s whose cross-attention reads the source."""

    def __init__(self, config: LongDocConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embedding = nn.Embedding(config.vocab_size, d)  # shared by source and queries
        self.mixer = nn.Conv1d(d, d, kernel_size=3, padding=1, groups=d)  # each channel: previous, self, next
        self.source_norm = nn.LayerNorm(d)
        self.resampler = None if config.n_latents is None else LatentResampler(config.n_latents, d, config.n_heads,
                                                                               config.d_ff)
        self.layers = nn.ModuleList(DecoderLayer(d, config.n_heads, config.d_ff) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, config.vocab_size)
        if config.cross_core == "linear":
            for attention in attention_modules(self, "cross"):
                attention.attention_core = linear_core()

    def read_source(self, sources: Tensor) -> Tensor:
        """``sources [B, T_src]`` token ids -> memory ``[B, T_src, d]`` (or ``[B, M, d]`` with latents)."""
        x = self.embedding(sources)  # [B, T_src, d]
        x = self.source_norm(x + self.mixer(x.transpose(1, 2)).transpose(1, 2))  # [B, T_src, d]
        if self.resampler is not None:
            x, _ = self.resampler(x)  # [B, M, d]
        return x

    def forward(self, sources: Tensor, queries: Tensor) -> Tensor:
        """``sources [B, T_src]``, ``queries [B, Q]`` (token ids) -> logits ``[B, Q, vocab_size]``."""
        for name, ids in (("sources", sources), ("queries", queries)):
            if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype != torch.long:
                shape = list(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
                raise ValueError(f"{name} must be int64 token ids [B, T]; got {shape}")
        if sources.shape[0] != queries.shape[0]:
            raise ValueError(f"sources and queries need the same batch size; got {list(sources.shape)} and "
                             f"{list(queries.shape)}")
        memory = self.read_source(sources)
        y = self.embedding(queries)  # [B, Q, d]
        own_only = torch.eye(queries.shape[1], dtype=torch.bool, device=queries.device)  # each query reads itself
        for layer in self.layers:
            y = layer(y, memory, self_mask=own_only).y
        return self.output(self.final_norm(y))  # [B, Q, vocab]


def build_reader(kind: str, vocab: DocVocabulary | None = None, *, n_latents: int = 16) -> LongDocReader:
    """A fresh reader of ``kind`` (a key of ``KINDS``); ``n_latents`` is used by "latents" only."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    if n_latents < 1:
        raise ValueError(f"n_latents must be >= 1; got {n_latents}")
    vocab = DocVocabulary() if vocab is None else vocab
    return LongDocReader(LongDocConfig(vocab.size, n_latents=n_latents if kind == "latents" else None,
                                       cross_core="linear" if kind == "linear" else "softmax"))


# --- training and the cache --------------------------------------------------------------------------------------
CURRICULUM = ((64, 0.65), (256, 0.25), (None, 0.10))
"""(document length, share of the steps): short documents first; None is the long documents' own length."""


def stage_lengths(steps: int, t_src: int, n_facts: int) -> list[tuple[int, int]]:
    """The curriculum for ``steps`` steps as ``[(length, steps), ...]``: ``CURRICULUM``'s lengths, none longer
    than ``t_src`` nor shorter than ``4 * n_facts`` (so that facts stay a minority), shares rounded down, the
    remainder added to the last (``t_src``) stage; stages of the same length are merged, empty ones dropped."""
    stages = []
    for length, share in CURRICULUM:
        length = t_src if length is None else min(t_src, max(length, 4 * n_facts))
        stages.append((length, int(steps * share)))
    stages[-1] = (stages[-1][0], steps - sum(n for _, n in stages[:-1]))
    merged: list[tuple[int, int]] = []
    for length, n in stages:
        if merged and merged[-1][0] == length:  # a length clipped to its neighbour's: one stage
            merged[-1] = (length, merged[-1][1] + n)
        elif n > 0:
            merged.append((length, n))
    return merged


class TrainedReader(NamedTuple):
    """A trained reader, its ``kind``, and ``info``: seed, steps, the stages (length, steps, seconds), seconds,
    steps per second, the loss per step, validation accuracy and exact match, the data's sizes."""

    model: LongDocReader
    kind: str
    info: dict


def _learning_rate(lr: float, step: int, steps: int, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 0 at ``steps``."""
    return lr * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def train_long_doc_reader(kind: str = "softmax", *, seed: int = 0, steps: int | None = None, t_src: int = 1024,
                          n_facts: int = 16, n_queries: int = 8, n_latents: int = 16,
                          batch_size: int = BATCH_SIZE, lr: float | None = None, valid: LongDocs | None = None,
                          device: torch.device | str = "cpu", threads: int | None = None,
                          progress: bool = True) -> TrainedReader:
    """Train a fresh reader of ``kind`` for ``steps`` steps (default ``DEFAULT_STEPS[kind]``) on freshly drawn
    documents, short ones first (``stage_lengths``); Adam (learning rate ``LEARNING_RATES[kind]`` unless ``lr``),
    warm-up then cosine decay, gradient clipping at 1, cross-entropy on every answer. ``threads``: CPU threads while
    training (default ``env.small_model_threads()``). Validation (``valid``, default
    ``long_doc_data(seed)["valid"]``) at the end.

    Raises:
        ValueError: for an unknown kind, ``n_latents < 1``, ``steps < 1`` and the sizes ``long_doc_data``
            rejects."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    steps = DEFAULT_STEPS[kind] if steps is None else steps
    lr = LEARNING_RATES[kind] if lr is None else lr
    if steps < 1 or batch_size < 1:
        raise ValueError(f"need steps >= 1 and batch_size >= 1; got steps={steps}, batch_size={batch_size}")
    vocab = DocVocabulary()
    _check_sizes(t_src, n_facts, n_queries, vocab)
    torch.manual_seed(seed)
    model = build_reader(kind, vocab, n_latents=n_latents).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(_split_seed(seed, "train"))
    losses: list[float] = []
    stages = []
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=f"training ({kind})", disable=not progress)
    model.train()
    with num_threads(small_model_threads() if threads is None else threads):
        for length, stage_steps in stage_lengths(steps, t_src, n_facts):
            start = time.perf_counter()
            for _ in range(stage_steps):
                batch = generate_docs(batch_size, length, generator, n_facts=n_facts, n_queries=n_queries,
                                      vocab=vocab).to(device)
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(lr, len(losses), steps)
                logits = model(batch.sources, batch.queries)  # [B, Q, vocab]
                loss = F.cross_entropy(logits.flatten(0, 1), batch.answers.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
                bar.update(1)
                if len(losses) % 10 == 0:
                    bar.set_postfix_str(f"length {length}, loss {losses[-1]:.3f}")
            stages.append({"length": length, "steps": stage_steps, "seconds": time.perf_counter() - start})
        bar.close()
        model.eval()
        valid = long_doc_data(seed, {"valid": 256}, t_src=t_src, n_facts=n_facts, n_queries=n_queries,
                              device=device)["valid"] if valid is None else valid
        scores = evaluate(model, valid)
    seconds = sum(stage["seconds"] for stage in stages)
    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "stages": stages, "seconds": seconds,
            "steps_per_s": steps / seconds, "loss": losses, "valid_accuracy": scores["accuracy"],
            "valid_exact_match": scores["exact_match"], "t_src": t_src, "n_facts": n_facts, "n_queries": n_queries,
            "n_latents": n_latents if kind == "latents" else None,
            "parameters": sum(p.numel() for p in model.parameters())}
    return TrainedReader(model, kind, info)


def run_path(kind: str, *, seed: int = 0, steps: int | None = None, t_src: int = 1024, n_facts: int = 16,
             n_queries: int = 8, n_latents: int = 16) -> Path:
    """``$COURSE_CACHE_DIR/lesson12/long-docs-<kind>[-M<n_latents>]-T<t_src>-F<n_facts>-Q<n_queries>-seed<seed>-
    steps<steps>.pt`` (without the variable: under ``~/.cache/cross-attention-from-scratch``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    folder = course_cache_dir()
    steps = DEFAULT_STEPS[kind] if steps is None else steps
    name = kind + (f"-M{n_latents}" if kind == "latents" else "")
    return Path(folder) / "lesson12" / f"long-docs-{name}-T{t_src}-F{n_facts}-Q{n_queries}-seed{seed}-steps{steps}.pt"


def save_reader(trained: TrainedReader, path: str | Path) -> Path:
    """Write kind, config, weights and info (to a temporary file, then renamed: a reader never sees half)."""
    return save_atomically({"kind": trained.kind, "config": asdict(trained.model.config),
                            "state_dict": trained.model.state_dict(), "info": trained.info}, path)


def load_reader(path: str | Path, *, device: torch.device | str = "cpu") -> TrainedReader:
    """Read what ``save_reader`` wrote."""
    saved = torch.load(Path(path), map_location=device, weights_only=False)
    model = LongDocReader(LongDocConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return TrainedReader(model.to(device).eval(), saved["kind"], saved["info"])


def load_or_train_long_doc_reader(kind: str = "softmax", seed: int = 0, *, steps: int | None = None,
                                  t_src: int = 1024, n_facts: int = 16, n_queries: int = 8, n_latents: int = 16,
                                  device: torch.device | str = "cpu", progress: bool = True) -> TrainedReader:
    """The reader cached at ``run_path(...)`` if there is one, else ``train_long_doc_reader(...)``, saved there.
    ``info["from_cache"]`` says which."""
    sizes = {"t_src": t_src, "n_facts": n_facts, "n_queries": n_queries}
    path = run_path(kind, seed=seed, steps=steps, n_latents=n_latents, **sizes)
    if path.exists():
        trained = load_reader(path, device=device)
        trained.info["from_cache"] = True
        return trained
    trained = train_long_doc_reader(kind, seed=seed, steps=steps, n_latents=n_latents, device=device,
                                    progress=progress, **sizes)
    save_reader(trained, path)
    trained.info["from_cache"] = False
    return trained


# --- measurements ------------------------------------------------------------------------------------------------
@torch.no_grad()
def answer(model: LongDocReader, data: LongDocs, *, batch_size: int = 128) -> Tensor:
    """The model's answer to every query: value ids ``[N, Q]`` (argmax over the vocabulary)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(b.sources.to(device), b.queries.to(device)).argmax(dim=-1).cpu()
                      for b in data.batches(batch_size)])


def evaluate(model: LongDocReader, data: LongDocs, *, core: AttentionCore | None = None,
             batch_size: int = 128) -> dict[str, float]:
    """``{"accuracy": share of queries answered right, "exact_match": share of documents with every query
    right}``; ``core``: swapped into every decoder cross-attention meanwhile (None: the model as it is)."""
    if core is None:
        predicted = answer(model, data, batch_size=batch_size)
    else:
        with use_attention_core(model, core):
            predicted = answer(model, data, batch_size=batch_size)
    right = predicted == data.answers.cpu()  # [N, Q]
    return {"accuracy": right.float().mean().item(), "exact_match": right.all(dim=1).float().mean().item()}


def _attention_inputs(model: LongDocReader, data: LongDocs) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The ``(q, k, v)`` every attention that reads the source (the decoder's cross-attention, and the
    resampler's when there are latents) gets on ``data``, recorded by a core that passes them on unchanged."""
    modules = attention_modules(model, "cross")
    if model.resampler is not None:
        modules += [block.attn for block in model.resampler.blocks]
    recorded: list[tuple[Tensor, Tensor, Tensor]] = []
    saved = [(m, m.attention_core) for m in modules]

    def wrap(own: AttentionCore | None) -> AttentionCore:
        def core(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool):
            recorded.append((q, k, v))
            return (own or exact_core())(q, k, v, mask, need_weights)
        return core

    try:
        for module, own in saved:
            module.attention_core = wrap(own)
        answer(model, data, batch_size=len(data))
    finally:
        for module, own in saved:
            module.attention_core = own
    return recorded


def _milliseconds(core: AttentionCore, inputs: list[tuple[Tensor, Tensor, Tensor]], repeats: int = 5) -> float:
    """Median milliseconds of ``core`` over every recorded ``(q, k, v)``, added up."""
    times = []
    with torch.no_grad():
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            for q, k, v in inputs:
                core(q, k, v, None, False)
            if q.device.type == "cuda":
                torch.cuda.synchronize(q.device)
            if repeat:  # the first is a warm-up
                times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def approximation_table(model: LongDocReader, data: LongDocs, *, linear_model: LongDocReader | None = None,
                        latent_model: LongDocReader | None = None, ks: Sequence[int] = (1, 2, 4, 8, 32),
                        half_widths: Sequence[int] = (32, 128, 512), batch_size: int = 128,
                        time_docs: int = 32, threads: int | None = None) -> list[dict]:
    """Accuracy against cost of every way to read the source: one flat record per row, for a chart.

    Rows: the softmax-trained ``model`` with exact attention, top-k (each ``k`` of ``ks`` up to ``T_src``),
    windows (each half-width of ``half_widths``; query ``i`` of ``Q`` looks around key ``i * T_src / Q``) and linear
    attention swapped in without retraining; then ``linear_model`` (trained with linear attention) and
    ``latent_model`` (M latents) if given, each with its own attention.

    Each record: ``name``, ``trained`` (the model's kind), ``kind`` and ``parameter`` (as
    ``long_attention.attention_multiply_adds`` takes them: k, half-width, M or None), ``accuracy`` (queries right),
    ``exact_match`` (documents with every query right), ``multiply_adds`` (per head and document, of the
    attention that reads the source: ``attention_multiply_adds``), ``ms`` (median milliseconds of those attention
    cores on ``time_docs`` documents, projections left out, on ``threads`` CPU threads, default
    ``env.small_model_threads()``). Top-k and windows compute every score and then mask, so here they take
    *longer* than exact attention: only a kernel that skips the work saves time.

    With few queries, linear attention and latents cost *more* multiply-adds than exact attention: exact
    cross-attention is already linear in ``T_src`` (``2 Q T_src d``); linear attention costs ``(Q + T_src)(d + 1) d``,
    less only when ``Q > (d + 1) / 2``; latents ``2 M T_src d + 2 Q M d``, less only when ``M < Q`` (roughly).
    """
    if model.config.cross_core != "softmax" or model.resampler is not None:
        raise ValueError("model must be the softmax-trained reader (kind 'softmax': no latents, softmax "
                         f"cross-attention); got cross_core={model.config.cross_core!r}, "
                         f"n_latents={model.config.n_latents}")
    if latent_model is not None and latent_model.resampler is None:
        raise ValueError("latent_model must have latents (kind 'latents'); got n_latents=None")
    t_q, t_k = data.queries.shape[1], data.t_src
    timing_docs = data.select(slice(0, time_docs))
    parameter_names = {"topk": "k", "window": "half_width", "latents": "n_latents"}

    def row(name: str, reader: LongDocReader, kind: str, parameter: int | None = None,
            core: AttentionCore | None = None) -> dict:
        """``core`` swapped into ``reader``'s cross-attention, or None: the reader's own attention."""
        trained = "latents" if reader.resampler is not None else reader.config.cross_core
        d_head = reader.config.d_model // reader.config.n_heads
        option = {parameter_names[kind]: parameter} if kind in parameter_names else {}
        own = linear_core() if reader.config.cross_core == "linear" else exact_core()
        return {"name": name, "trained": trained, "kind": kind, "parameter": parameter,
                **evaluate(reader, data, core=core, batch_size=batch_size),
                "multiply_adds": attention_multiply_adds(kind, t_q, t_k, d_head, **option),
                "ms": _milliseconds(core or own, _attention_inputs(reader, timing_docs))}

    with num_threads(small_model_threads() if threads is None else threads):
        records = [row("exact", model, "exact", core=exact_core())]
        records += [row(f"top-{k}", model, "topk", k, topk_core(k)) for k in ks if k <= t_k]
        records += [row(f"window ±{w}", model, "window", w, window_core(w)) for w in half_widths]
        records.append(row("linear, retrofitted", model, "linear", core=linear_core()))
        if linear_model is not None:
            records.append(row("linear, trained", linear_model, "linear"))
        if latent_model is not None:
            m = latent_model.config.n_latents
            records.append(row(f"latents M={m}", latent_model, "latents", m))
    return records


__all__ = ["BATCH_SIZE", "CURRICULUM", "DEFAULT_STEPS", "KINDS", "LEARNING_RATES", "DocVocabulary", "LongDocConfig",
           "LongDocReader", "LongDocs", "TrainedReader", "answer", "approximation_table", "build_reader",
           "evaluate", "generate_docs", "load_or_train_long_doc_reader", "load_reader", "long_doc_data",
           "run_path", "save_reader", "stage_lengths", "train_long_doc_reader"]
