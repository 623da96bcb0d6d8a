"""Training a translator: the loop (Adam, warm-up + cosine decay, gradient clipping, a time budget),
its ``History``, and the course's recipe for the toy pair (``train_toy_translator``). Saving and
loading live in ``course_lib.translator`` and are re-exported here.

Training is **reproducible**: by default (``budget_by="steps"``) the learning-rate schedule runs on
``step / max_steps`` and training stops at ``max_steps`` or when validation exact match reaches its target, so the
same seed gives the same model on the same machine. ``time_budget_s`` is then only a safety cap: if it fires, the
history's ``stop_reason`` and the progress bar say so. ``budget_by="time"`` makes the wall clock the budget
instead (lesson 09 compares models at equal training *time*): the schedule then runs on the larger of
``step / max_steps`` and ``elapsed / time_budget_s``, so its cosine decay ends with the budget, and two runs can
differ by a few steps.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Batch, ParallelData, Vocabulary, build_vocabularies, length_repeats
from .env import small_model_threads
from .metrics import exact_match, translate_data
from .model import Seq2SeqTransformer, TransformerConfig
from .toy_language import make_splits
from .translator import Translator, default_model_path, load_translator, save_translator

__all__ = ["History", "TrainConfig", "TrainingRun", "Translator", "default_model_path", "learning_rate",
           "training_threads",
           "load_or_train_translator", "load_translator", "save_translator", "toy_data", "toy_model_config", "train",
           "train_toy_translator", "validation_exact_match"]


@dataclass
class TrainConfig:
    """Settings of ``train``. Training stops at ``max_steps``, when validation exact match reaches
    ``target_exact_match``, or after ``time_budget_s`` seconds (evaluation included): a safety cap with
    ``budget_by="steps"`` (the default: reproducible), the budget that the schedule follows with ``budget_by="time"``.

    ``repeat_long_from``: long sentences are rare (6 % of the toy pair's have 16 words or more) and
    are where a model fails first, so an example of ``S`` source words appears
    ``ceil((S / repeat_long_from) ** repeat_long_power)`` times per epoch (None: every example once).
    """

    batch_size: int = 64
    lr: float = 5e-3
    warmup_steps: int = 100
    max_steps: int = 1400
    time_budget_s: float | None = 90.0
    budget_by: str = "steps"  # "steps": reproducible, time_budget_s a safety cap; "time": the clock is the budget
    target_exact_match: float | None = 0.995
    eval_every: int = 200
    clip_norm: float = 1.0
    label_smoothing: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    repeat_long_from: int | None = 7  # a source of S words is shown ceil((S / 7) ** 2) times per epoch
    repeat_long_power: float = 2.0
    seed: int = 0
    threads: int | None = None  # intra-op CPU threads while training; None: one less than the cores, at least 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"need lr > 0, warmup_steps >= 0, 0 <= label_smoothing < 1; got {self}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive or None; got {self.time_budget_s}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1; got {self.threads}")
        if self.budget_by not in ("steps", "time") or (self.budget_by == "time" and self.time_budget_s is None):
            raise ValueError(f"budget_by must be 'steps', or 'time' with a time_budget_s; got {self.budget_by!r} "
                             f"with time_budget_s={self.time_budget_s}")


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 as ``progress`` goes from 0 to 1."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


@dataclass
class History:
    """What happened during training.

    Per step: ``loss``, ``lr``, ``elapsed`` (seconds since the start). Per evaluation: ``eval_steps``,
    ``eval_elapsed``, ``eval_exact_match`` (validation). ``tokens``: source + target tokens trained
    on (padding excluded); ``train_seconds``: time spent in training steps (evaluation excluded).
    """

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_elapsed: list[float] = field(default_factory=list)
    eval_exact_match: list[float] = field(default_factory=list)
    tokens: int = 0
    train_seconds: float = 0.0
    stop_reason: str = ""

    @property
    def steps(self) -> int:
        return len(self.loss)

    @property
    def seconds(self) -> float:
        """Seconds from the start to the end of training, the last evaluation included."""
        return max([0.0, *self.elapsed[-1:], *self.eval_elapsed[-1:]])

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else float("nan")

    def time_to(self, exact_match: float) -> float | None:
        """Seconds (evaluation included) until validation exact match first reached ``exact_match``."""
        return next((t for t, em in zip(self.eval_elapsed, self.eval_exact_match) if em >= exact_match), None)


def validation_exact_match(model: Seq2SeqTransformer, data: ParallelData) -> float:
    """Exact match of greedy translations (K/V cache) of ``data``."""
    return exact_match(translate_data(model, data), [list(e.target) for e in data.examples])


def train(model: Seq2SeqTransformer, train_data: ParallelData, valid_data: ParallelData | None = None,
          config: TrainConfig | None = None, *, callback: Callable[[History], None] | None = None,
          callback_every: int = 50, progress: bool = True) -> History:
    """Train ``model`` with teacher forcing and cross-entropy on ``train_data``'s batches.

    Args:
        valid_data: evaluated every ``config.eval_every`` steps and at the end (exact match), if given.
        callback: called with the ``History`` every ``callback_every`` steps and at the end (for a
            live loss curve).
        progress: show a ``tqdm`` bar (a widget in notebooks).

    Returns:
        the ``History``; the model is left in eval mode.
    """
    config = config or TrainConfig()
    if callback_every < 1:
        raise ValueError(f"callback_every must be >= 1; got {callback_every}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(training_threads(config))
    try:
        return _train(model, train_data, valid_data, config, callback, callback_every, progress)
    finally:
        torch.set_num_threads(previous_threads)


def training_threads(config: TrainConfig) -> int:
    """``config.threads``, or ``env.small_model_threads()``: one less than the CPU cores (at least 1). The toy
    models' operations are small: on 2 cores one thread trained faster than two whether the machine was idle or
    busy (README, "Threads")."""
    if config.threads is not None:
        return config.threads
    return small_model_threads()


def _train(model: Seq2SeqTransformer, train_data: ParallelData, valid_data: ParallelData | None,
           config: TrainConfig, callback: Callable[[History], None] | None, callback_every: int,
           progress: bool) -> History:
    device, pad_id = next(model.parameters()).device, model.config.pad_id
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, eps=1e-9,
                                 fused=_can_fuse(model))  # one kernel for all parameters: ~10 % faster steps here
    generator = torch.Generator().manual_seed(config.seed)
    history = History()
    bar = tqdm(total=100, desc="training", unit="%", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
    epoch: Iterator[Batch] = iter(())
    repeats = None if config.repeat_long_from is None else length_repeats(
        train_data.src_lengths, config.repeat_long_from, config.repeat_long_power)
    start = time.perf_counter()
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        by_steps = len(history.loss) / config.max_steps
        by_time = elapsed / config.time_budget_s if config.time_budget_s else 0.0
        progress_now = max(by_steps, by_time) if config.budget_by == "time" else by_steps
        if by_steps >= 1.0:
            history.stop_reason = "max_steps"
            break
        if by_time >= 1.0:
            history.stop_reason = "time budget" if config.budget_by == "time" else \
                "time cap (schedule not finished)"
            break
        step_start = time.perf_counter()
        batch = next(epoch, None)
        if batch is None:  # a new epoch: a fresh shuffle
            epoch = train_data.batches(config.batch_size, generator=generator, repeats=repeats)
            batch = next(epoch)
        batch = batch.to(device)
        lr = learning_rate(config, len(history.loss), progress_now)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(batch.src_ids, batch.tgt_in)  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=pad_id,
                               label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        history.loss.append(loss.item())
        history.lr.append(lr)
        history.elapsed.append(time.perf_counter() - start)
        history.tokens += batch.n_source_tokens(pad_id) + batch.n_target_tokens(pad_id)
        history.train_seconds += time.perf_counter() - step_start
        step = len(history.loss)
        if valid_data is not None and step % config.eval_every == 0:
            if _evaluate(model, valid_data, history, start, config):
                history.stop_reason = "target reached"
                break
        if callback is not None and step % callback_every == 0:
            callback(history)
        if step % 10 == 0:  # redrawing the bar every step would cost more than the step
            bar.n = min(100, round(100 * progress_now))
            bar.set_postfix_str(_postfix(history))
    if valid_data is not None and (not history.eval_steps or history.eval_steps[-1] != history.steps):
        _evaluate(model, valid_data, history, start, config)
    bar.n = 100
    bar.set_postfix_str(f"{_postfix(history)}, stopped: {history.stop_reason}", refresh=False)
    bar.close()
    if callback is not None:
        callback(history)
    model.eval()
    return history


def _can_fuse(model: torch.nn.Module) -> bool:
    """Adam's fused implementation handles floating-point parameters on the CPU and CUDA (torch >= 2.4)."""
    return all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in model.parameters()) and \
        tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)


def _evaluate(model: Seq2SeqTransformer, data: ParallelData, history: History, start: float,
              config: TrainConfig) -> bool:
    """Record validation exact match; True if it reached the target."""
    score = validation_exact_match(model, data)
    model.train()
    history.eval_steps.append(history.steps)
    history.eval_elapsed.append(time.perf_counter() - start)
    history.eval_exact_match.append(score)
    return config.target_exact_match is not None and score >= config.target_exact_match


def _postfix(history: History) -> str:
    text = f"step {history.steps}, loss {sum(history.loss[-20:]) / max(1, len(history.loss[-20:])):.3f}"
    if history.eval_exact_match:
        text += f", valid exact match {history.eval_exact_match[-1]:.1%}"
    return text


# --- the course's recipe for the toy pair ------------------------------------------------------------
def toy_model_config(src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> TransformerConfig:
    """The model lesson 07 trains: d_model 64, 4 heads, 1 encoder and 2 decoder layers, d_ff 256, pre-norm."""
    return TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=64, n_heads=4, n_encoder_layers=1,
                             n_decoder_layers=2, d_ff=256, pad_id=src_vocab.pad_id)


def toy_data(seed: int = 0, sizes: dict[str, int] | None = None
             ) -> tuple[dict[str, ParallelData], Vocabulary, Vocabulary]:
    """The toy pair's splits (``toy_language.make_splits``; default sizes 40 000 / 1 000 / 2 000 / 1 000),
    encoded with vocabularies built from the training split."""
    splits = make_splits(seed, sizes)
    src_vocab, tgt_vocab = build_vocabularies(splits["train"])
    return {name: ParallelData(examples, src_vocab, tgt_vocab) for name, examples in splits.items()}, src_vocab, \
        tgt_vocab


class TrainingRun(NamedTuple):
    """What ``train_toy_translator`` returns: ``run.translator``, ``run.history``, ``run.data``."""

    translator: Translator  # the trained model with its vocabularies; info has validation exact match, steps, seconds
    history: History  # loss and validation exact match over the steps
    data: dict[str, ParallelData]  # the encoded splits: train, valid, test, generalisation


def train_toy_translator(*, seed: int = 0, config: TrainConfig | None = None,
                         device: torch.device | str = "cpu", progress: bool = True,
                         callback: Callable[[History], None] | None = None,
                         sizes: dict[str, int] | None = None) -> TrainingRun:
    """Lesson 07 in one call: data, vocabularies, ``toy_model_config`` model, ``train``.

    Returns ``TrainingRun(translator, history, data)``: the ``Translator`` (``info`` has the validation
    exact match, steps and seconds), the ``History`` and the encoded splits (``train``, ``valid``,
    ``test``, ``generalisation``).
    """
    data, src_vocab, tgt_vocab = toy_data(seed, sizes)
    torch.manual_seed(seed)
    model = Seq2SeqTransformer(toy_model_config(src_vocab, tgt_vocab)).to(device)
    history = train(model, data["train"], data["valid"], config, callback=callback, progress=progress)
    info = {"seed": seed, "steps": history.steps, "seconds": history.seconds,
            "valid_exact_match": history.eval_exact_match[-1] if history.eval_exact_match else None}
    return TrainingRun(Translator(model, src_vocab, tgt_vocab, info), history, data)


def load_or_train_translator(path: str | Path | None = None, *, device: torch.device | str = "cpu",
                             progress: bool = True) -> Translator:
    """The translator saved by lesson 07 (``load_translator``), or, if there is none, a new one trained with
    ``train_toy_translator`` (about 90 s on a CPU) and saved to ``path`` for next time."""
    try:
        return load_translator(path, device=device)
    except FileNotFoundError:
        translator = train_toy_translator(device=device, progress=progress).translator
        save_translator(translator, path)
        return translator
