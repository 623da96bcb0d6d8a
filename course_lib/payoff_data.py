"""Lesson 00's payoff: a trained translator's cross-attention on two test sentences, stored as data in
``course_lib/assets/payoff_attention.json`` so that lesson 00 can show it (``payoff()``, also
``diagrams.payoff``) before anything is trained.

Made by ``python -m course_lib.diagrams payoff-data``: it loads the translator saved in ``$COURSE_CACHE_DIR``
(lesson 07's), or trains one with ``training.train_toy_translator`` for 1000 steps (lesson 07's recipe with a
step budget instead of its 90 s time budget, so a busy CPU gives the same model, only later), then stores, for
the first test sentences of 6-8 words with reordering that the model translates correctly, the last decoder
layer's cross-attention averaged over its heads, rounded to 3 decimals.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .alignment_plots import attention_with_alignment
from .plotting import ATTENTION_CMAP, SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL
from .toy_language import Example, make_splits
from .training import TrainConfig, train_toy_translator
from .translator import Translator, load_translator

PAYOFF_FILE = "payoff_attention.json"
COMMAND = "python -m course_lib.diagrams payoff-data"


def payoff_path() -> Path:
    """Where the stored payoff data lives inside the installed package."""
    return Path(str(resources.files("course_lib") / "assets" / PAYOFF_FILE))


def load_payoff_data(path: str | Path | None = None) -> dict:
    """The stored payoff: ``{"sentences": [{"source", "target", "alignment", "weights" [T][S]}, ...], ...}``."""
    return json.loads(Path(path or payoff_path()).read_text())


def _reorders(example: Example) -> bool:
    """True when two target words come in the opposite order of the source words they translate."""
    links = sorted(example.alignment, key=lambda link: link[1])
    return any(s2 < s1 for (s1, _), (s2, _) in zip(links, links[1:]))


def _last_layer_mean(translator: Translator, example: Example) -> torch.Tensor:
    """``[T, S]``: the last decoder layer's cross-attention, mean over heads, teacher-forced on the gold target;
    row ``j`` is the decoder position that writes target word ``j`` (the ``<eos>`` row is dropped)."""
    src_ids = translator.source_ids(list(example.source))  # [1, S]
    tgt_in = torch.tensor([[translator.tgt_vocab.bos_id, *translator.tgt_vocab.encode(list(example.target))]],
                          device=src_ids.device)  # [1, T + 1]
    with torch.no_grad():
        _, maps = translator.model.eval().forward_with_attention(src_ids, tgt_in)
    return maps.decoder_cross[-1][0].mean(dim=0)[:-1].float().cpu()  # [T, S]


def choose_sentences(translator: Translator, examples: list[Example]) -> list[Example]:
    """The first sentence with a plural marker ``li`` and the first with a past marker ``ta`` among test
    sentences of 6-8 source words whose word order changes and which the model translates correctly."""
    chosen: list[Example] = []
    for marker in ("li", "ta"):
        for example in examples:
            if (6 <= len(example.source) <= 8 and marker in example.target and _reorders(example)
                    and example not in chosen and translator.translate(list(example.source)) == list(example.target)):
                chosen.append(example)
                break
    return chosen


def make_payoff_data(translator: Translator, seed: int = 0) -> dict:
    """The JSON-ready payoff of ``translator``, on the test split of ``make_splits(seed)``."""
    test = make_splits(seed, {"train": 0, "valid": 0})["test"]  # the same test split as lesson 07's
    sentences = []
    for example in choose_sentences(translator, test):
        weights = _last_layer_mean(translator, example)  # [T, S]
        sentences.append({"source": list(example.source), "target": list(example.target),
                          "alignment": [list(link) for link in example.alignment],
                          "weights": [[round(w, 3) for w in row] for row in weights.tolist()]})
    info = {k: round(v, 3) if isinstance(v, float) else v for k, v in translator.info.items()
            if isinstance(v, (int, float, str)) or v is None}
    return {"about": "last decoder layer's cross-attention, mean over heads, of the course's toy translator "
                     "(teacher-forced on the gold target; rows: the target word being written, columns: source "
                     "words; alignment: gold (source index, target index) links)",
            "command": COMMAND, "model": info, "sentences": sentences}


def write_payoff_data(path: str | Path | None = None, *, seed: int = 0) -> Path:
    """Load the translator saved in ``$COURSE_CACHE_DIR`` (or train and save one), write its payoff to ``path``."""
    try:
        translator = load_translator()  # $COURSE_CACHE_DIR/toy_translator.pt, e.g. lesson 07's
    except FileNotFoundError:  # a step budget, not a time budget: the same model on a fast or a busy CPU
        translator = train_toy_translator(seed=seed, config=TrainConfig(time_budget_s=None, max_steps=1000)).translator
    text = json.dumps(make_payoff_data(translator, seed), indent=1)
    flat = lambda m: re.sub(r"\s+", "", m.group(0))
    text = re.sub(r"\[[^\[\]{}]*\]", flat, text)  # every innermost list on one line ...
    text = re.sub(r"\[(\s*\[\d+,\d+\],?)+\s*\]", flat, text)  # ... and the alignment links too
    path = Path(path or payoff_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


DEFINITION = ("Cross-attention: each word the decoder writes sends a query to the source sentence and reads back\n"
              "a mix of the source tokens, weighted by how well their keys match that query.")


def payoff(*, path: str | Path | None = None) -> Figure:
    """Lesson 00: what the course builds, in one picture: a trained toy translator's cross-attention (last
    decoder layer, mean over heads) on two test sentences, the true alignment outlined, under a one-sentence
    definition. The weights are stored data (``payoff_data``; remade by ``python -m course_lib.diagrams
    payoff-data``), so nothing is trained here."""
    data = load_payoff_data(path)
    sentences = data["sentences"]
    fig, axes = plt.subplots(1, len(sentences), figsize=(9.5, 4.2), squeeze=False, constrained_layout=True)
    for ax, sentence in zip(axes[0], sentences):
        attention_with_alignment(np.asarray(sentence["weights"], dtype=float), sentence["source"],
                                 sentence["target"], [tuple(link) for link in sentence["alignment"]], ax=ax)
        ax.tick_params(labelsize=9)
        ax.tick_params(axis="x", rotation=0)
    scale = plt.cm.ScalarMappable(plt.Normalize(0.0, 1.0), ATTENTION_CMAP)
    fig.colorbar(scale, ax=axes[0].tolist(), shrink=0.85, aspect=25).set_label("attention weight", fontsize=9)
    fig.suptitle(DEFINITION, fontsize=10.5)
    model = data.get("model", {})
    steps = model.get("steps", "?")
    fig.supxlabel(f"The course's toy translator after {steps} training steps (you train it in lesson 07): "
                  "its last decoder layer, averaged over heads.\nGreen boxes: the true word alignment. "
                  f"Rows: the {WRITTEN_WORD_LABEL}; columns: the {SOURCE_TOKEN_LABEL}s.", fontsize=8, color="0.3")
    return fig

