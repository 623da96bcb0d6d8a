"""Lesson 13's experiments: respellers trained with and without a cross-attention bias, and lesson 07's translator
tuned with its order or its time restricted.

``load_or_train_respeller`` trains an ``OrderedTransformer`` on ``respelling`` (short strings) for one of
``RESPELLING_VARIANTS``; ``load_or_tune_translator`` starts from lesson 07's translator and tunes it for a few hundred
steps under one of ``TRANSLATOR_VARIANTS`` (no encoder positions, a causal encoder, wait-k, a diagonal bias, an
alignment loss on one head). Both keep their models in ``$COURSE_CACHE_DIR/lesson13/`` (with the training record),
so a second run loads them. The measurements: ``exact_match_by_wait``, ``order_matters``, ``first_error_positions``.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch

from .data import ParallelData, Vocabulary, build_vocabularies
from .env import course_cache_dir, save_atomically
from .metrics import alignment_scores, evaluate, first_error, translate_data
from .model import Seq2SeqTransformer, TransformerConfig
from .order_models import OrderedTransformer, OrderSettings, RunRecord, required_wait, train_ordered
from .respelling import respelling_splits
from .toy_language import NOUNS, PLACES
from .training import (
    TrainConfig,
    load_or_train_translator,
    load_translator,
    save_translator,
    toy_data,
    toy_model_config,
    train,
    train_toy_translator,
)

__all__ = ["RESPELLING_STEPS", "RESPELLING_VARIANTS", "TRANSLATOR_VARIANTS", "TUNE_STEPS", "GUIDED_HEAD",
           "RespellingData", "exact_match_by_wait", "first_error_positions", "load_or_train_respeller",
           "load_or_tune_translator", "order_benchmark", "order_matters", "respelling_config", "respelling_data",
           "translator_scores"]

RESPELLING_STEPS = 1000
TUNE_STEPS = 250
GUIDED_HEAD = (1, 0)  # (decoder layer, head) that the alignment loss steers

RESPELLING_VARIANTS = {  # label -> settings (source_per_target is filled in from the data)
    "no bias": OrderSettings(),
    "diagonal bias": OrderSettings(cross_bias="diagonal"),
    "learned buckets": OrderSettings(cross_bias="buckets"),
    "diagonal bias, no encoder positions": OrderSettings(cross_bias="diagonal", encoder_positions=False),
}
TRANSLATOR_VARIANTS = {  # label -> (settings, alignment loss on GUIDED_HEAD)
    "full source": (OrderSettings(), False),
    "no encoder positions": (OrderSettings(encoder_positions=False), False),
    "causal encoder": (OrderSettings(causal_encoder=True), False),
    "wait-1": (OrderSettings(wait_k=1, causal_encoder=True), False),
    "wait-2": (OrderSettings(wait_k=2, causal_encoder=True), False),
    "wait-4": (OrderSettings(wait_k=4, causal_encoder=True), False),
    "diagonal bias": (OrderSettings(cross_bias="diagonal", source_per_target=0.94), False),  # the data: 0.954
    "alignment loss": (OrderSettings(), True),
}


class RespellingData(NamedTuple):
    """The respelling splits, encoded (``train``, ``valid``, ``test``, ``long``), their vocabularies, the source
    letters per target letter of the training split, and the longest training target (in tokens, ``<eos>`` too)."""

    data: dict[str, ParallelData]
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    source_per_target: float
    trained_up_to: int


def respelling_data(seed: int = 0) -> RespellingData:
    """Training strings of 6-16 letters, ``long`` strings of 24-32 (1.5-2x): ``respelling.respelling_splits``."""
    splits = respelling_splits(seed, train_lengths=(6, 16), long_lengths=(24, 32))
    src_vocab, tgt_vocab = build_vocabularies(splits["train"])
    data = {name: ParallelData(examples, src_vocab, tgt_vocab) for name, examples in splits.items()}
    train = splits["train"]
    rate = sum(len(e.source) for e in train) / sum(len(e.target) for e in train)
    return RespellingData(data, src_vocab, tgt_vocab, rate, int(data["train"].tgt_lengths.max()))


def respelling_config(src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> TransformerConfig:
    """d_model 64, 4 heads, one encoder and one decoder layer, d_ff 256, pre-norm."""
    return TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=64, n_heads=4, n_encoder_layers=1,
                             n_decoder_layers=1, d_ff=256, pad_id=src_vocab.pad_id)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def _cache_path(kind: str, label: str, seed: int, steps: int) -> Path:
    return course_cache_dir() / "lesson13" / f"{kind}-{_slug(label)}-seed{seed}-steps{steps}.pt"


def _load(path: Path, model: OrderedTransformer, device: torch.device | str) -> RunRecord | None:
    """The cached weights into ``model`` and the record, or None (no file, or one that does not fit)."""
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(saved["state_dict"])
        return RunRecord(**saved["record"])
    except (FileNotFoundError, KeyError, RuntimeError, TypeError):
        return None


def load_or_train_respeller(label: str, *, seed: int = 0, steps: int = RESPELLING_STEPS,
                            data: RespellingData | None = None, device: torch.device | str = "cpu"
                            ) -> tuple[OrderedTransformer, RunRecord]:
    """A respeller of ``RESPELLING_VARIANTS[label]`` trained from ``seed`` for ``steps`` steps (about 20 s for
    1 000 on a laptop core), or the one cached by an earlier run; and its ``RunRecord``.

    Raises:
        ValueError: for an unknown ``label``.
    """
    if label not in RESPELLING_VARIANTS:
        raise ValueError(f"label must be one of {list(RESPELLING_VARIANTS)}; got {label!r}")
    data = data or respelling_data()
    settings = OrderSettings(**{**asdict(RESPELLING_VARIANTS[label]), "source_per_target": data.source_per_target})
    torch.manual_seed(seed)
    model = OrderedTransformer(respelling_config(data.src_vocab, data.tgt_vocab), settings).to(device)
    path = _cache_path("respell", label, seed, steps)
    record = _load(path, model, device)
    if record is None:
        record = train_ordered(model, data.data["train"], steps=steps, valid=data.data["valid"], eval_every=50,
                               seed=seed)
        save_atomically({"state_dict": model.state_dict(), "record": record.as_dict()}, path)
    return model.eval(), record


def load_or_tune_translator(label: str, *, seed: int = 0, steps: int = TUNE_STEPS,
                            base: Seq2SeqTransformer | None = None, device: torch.device | str = "cpu"
                            ) -> tuple[OrderedTransformer, RunRecord]:
    """Lesson 07's translator (``base``, default ``training.load_or_train_translator``) tuned for ``steps`` steps
    (Adam, learning rate 1e-3) under ``TRANSLATOR_VARIANTS[label]``, or the one cached by an earlier run; and its
    ``RunRecord`` (teacher-forced validation exact match every 50 steps). About 7 s for 250 steps on a laptop core.

    Raises:
        ValueError: for an unknown ``label``.
    """
    if label not in TRANSLATOR_VARIANTS:
        raise ValueError(f"label must be one of {list(TRANSLATOR_VARIANTS)}; got {label!r}")
    settings, guided = TRANSLATOR_VARIANTS[label]
    base = base if base is not None else load_or_train_translator(device=device, progress=False).model
    model = OrderedTransformer(base.config, settings).to(device)
    model.load_state_dict(base.state_dict(), strict=False)  # a new bias table (if any) starts at zero
    path = _cache_path("translator", label, seed, steps)
    record = _load(path, model, device)
    if record is None:
        data, _, _ = toy_data(0)
        record = train_ordered(model, data["train"], steps=steps, valid=data["valid"], eval_every=50, lr=1e-3,
                               warmup_steps=30, seed=seed, guided_head=GUIDED_HEAD if guided else None)
        save_atomically({"state_dict": model.state_dict(), "record": record.as_dict()}, path)
    return model.eval(), record


def exact_match_by_wait(predictions: Sequence[Sequence[str]], examples: Sequence) -> dict[int, tuple[int, float]]:
    """``{needed wait: (sentences, exact match)}``, sentences grouped by ``order_models.required_wait``."""
    if len(predictions) != len(examples):
        raise ValueError(f"need one prediction per example; got {len(predictions)} and {len(examples)}")
    groups: dict[int, list[bool]] = {}
    for prediction, example in zip(predictions, examples):
        groups.setdefault(required_wait(example), []).append(list(prediction) == list(example.target))
    return {k: (len(v), sum(v) / len(v)) for k, v in sorted(groups.items())}


_NOUN_WORDS = frozenset(w for singular, plural, _ in NOUNS.values() for w in (singular, plural)) | frozenset(PLACES)


def order_matters(example) -> bool:
    """True when the source holds two or more nouns (people, animals or places): exchanging them gives another
    sentence with another translation, which a model that sees the source as a bag of words cannot tell apart. With
    one noun, every word's role follows from the word itself."""
    return sum(word in _NOUN_WORDS for word in example.source) >= 2


def first_error_positions(model: Seq2SeqTransformer, data: ParallelData) -> list[int | None]:
    """Greedy outputs' first wrong target position per example (``metrics.first_error``; None: all right)."""
    predictions = translate_data(model, data)
    return [first_error(p, list(e.target)) for p, e in zip(predictions, data.examples)]


# --- the benchmark: every experiment over several seeds ---------------------------------------------------------------

def _base_translator(seed: int, device: torch.device | str) -> Seq2SeqTransformer:
    """Lesson 07's translator for seed 0 (``load_or_train_translator``); for another seed, the same recipe from that
    seed, cached in ``lesson13/``."""
    if seed == 0:
        return load_or_train_translator(device=device, progress=False).model
    path = course_cache_dir() / "lesson13" / f"base-translator-seed{seed}.pt"
    try:
        return load_translator(path, device=device).model
    except FileNotFoundError:
        translator = train_toy_translator(seed=seed, device=device, progress=False).translator
        save_translator(translator, path)
        return translator.model


def _from_scratch(label: str, settings: OrderSettings, seed: int, device: torch.device | str,
                  config: TrainConfig | None) -> dict:
    """Lesson 07's recipe (``training.train``) from ``seed`` for an ``OrderedTransformer`` with ``settings``."""
    data, src_vocab, tgt_vocab = toy_data(0)
    torch.manual_seed(seed)
    model = OrderedTransformer(toy_model_config(src_vocab, tgt_vocab), settings).to(device)
    history = train(model, data["train"], data["valid"], config or TrainConfig(seed=seed), progress=False)
    return dict(label=label, seed=seed, steps=history.steps, stop_reason=history.stop_reason,
                test_exact_match=evaluate(model, data["test"], with_bleu=False).exact_match)


def order_benchmark(seeds: Sequence[int] = (0, 1, 2), *, quick: bool = False,
                    device: torch.device | str = "cpu") -> dict[str, list[dict]]:
    """Lesson 13's experiments for each seed (models cached in ``lesson13/``):

    - ``respelling``: each of ``RESPELLING_VARIANTS`` trained ``RESPELLING_STEPS`` steps: steps to 90 % teacher-
      forced validation exact match, greedy exact match on the test and the 1.5-2x longer strings, median first
      wrong position on the longer ones;
    - ``scratch``: the toy language from scratch with lesson 07's recipe, with and without the diagonal bias;
    - ``tuned``: lesson 07's translator (retrained from the seed for seeds other than 0) tuned under each of
      ``TRANSLATOR_VARIANTS``: test exact match, by order-matters, by needed wait, and AER of ``GUIDED_HEAD``.

    ``quick``: one seed, a few steps, tiny data (for tests).
    """
    seeds = seeds[:1] if quick else seeds
    result: dict[str, list[dict]] = {"respelling": [], "scratch": [], "tuned": []}
    spelling = respelling_data()
    if quick:
        spelling = spelling._replace(data={k: ParallelData(v.examples[:40], spelling.src_vocab, spelling.tgt_vocab)
                                           for k, v in spelling.data.items()})
    toy, _, _ = toy_data(0)
    test = ParallelData(toy["test"].examples[:40], toy["test"].src_vocab, toy["test"].tgt_vocab) if quick \
        else toy["test"]
    for seed in seeds:
        for label in RESPELLING_VARIANTS:
            model, record = load_or_train_respeller(label, seed=seed, steps=3 if quick else RESPELLING_STEPS,
                                                    data=spelling, device=device)
            errors = [e for e in first_error_positions(model, spelling.data["long"]) if e is not None]
            result["respelling"].append(dict(
                label=label, seed=seed, steps_to_90=record.steps_to(0.9),
                test_exact_match=evaluate(model, spelling.data["test"], with_bleu=False).exact_match,
                long_exact_match=evaluate(model, spelling.data["long"], with_bleu=False).exact_match,
                median_first_error=statistics.median(errors) if errors else None,
                trained_up_to=spelling.trained_up_to))
        for label, settings in (("no bias", OrderSettings()),
                                ("diagonal bias", TRANSLATOR_VARIANTS["diagonal bias"][0])):
            config = TrainConfig(max_steps=3, eval_every=3, seed=seed) if quick else None
            result["scratch"].append(_from_scratch(label, settings, seed, device, config))
        base = _base_translator(seed, device) if not quick else _tiny_base(toy, device)
        for label in TRANSLATOR_VARIANTS:
            model, _ = load_or_tune_translator(label, seed=seed, steps=2 if quick else TUNE_STEPS, base=base,
                                               device=device)
            scores = translator_scores(model, test)
            del scores["predictions"], scores["aer"]
            result["tuned"].append(dict(label=label, seed=seed, **scores))
    return result


def translator_scores(model: Seq2SeqTransformer, data: ParallelData) -> dict:
    """A toy-language translator on ``data`` (greedy): ``exact_match``, and on the sentences where word order
    matters (``order_matters``) and where it does not (``order_free``), ``by_wait`` (``exact_match_by_wait``),
    AER of ``GUIDED_HEAD`` and of the best head (teacher-forced, ``metrics.alignment_scores``), ``predictions``."""
    predictions = translate_data(model, data)
    right = [list(p) == list(e.target) for p, e in zip(predictions, data.examples)]
    matters = [order_matters(e) for e in data.examples]
    aer = alignment_scores(model, data).per_head  # [L, H]
    return dict(exact_match=sum(right) / len(right), order_matters=_share([r for r, m in zip(right, matters) if m]),
                order_free=_share([r for r, m in zip(right, matters) if not m]),
                by_wait=exact_match_by_wait(predictions, data.examples), guided_head_aer=float(aer[GUIDED_HEAD]),
                best_head_aer=float(aer.min()), aer=aer, predictions=predictions)


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _tiny_base(toy: dict[str, ParallelData], device: torch.device | str) -> Seq2SeqTransformer:
    """An untrained small translator for the quick benchmark."""
    torch.manual_seed(0)
    config = TransformerConfig(len(toy["train"].src_vocab), len(toy["train"].tgt_vocab), d_model=16, n_heads=4,
                               n_encoder_layers=1, n_decoder_layers=2, d_ff=32)
    return Seq2SeqTransformer(config).to(device)
