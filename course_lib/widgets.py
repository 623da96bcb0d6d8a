"""Interactive attention explorers on core ipywidgets (7.7+ and 8.x: JupyterLab, Notebook, VS Code, Colab):
``AttentionExplorer`` for any attention weights, ``TranslationExplorer`` for a translator's cross-attention.

Figures are drawn with Matplotlib and placed in an ``Output`` as PNG images, so the explorer works the
same in every front end and can be tested without a browser.
"""
from __future__ import annotations

import difflib
import html
import io
import string
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image
from matplotlib.figure import Figure

from ._checks import shape_str
from .data import EOS
from .plotting import SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL, attention_heatmap
from .translator import Translator

MEAN = -1  # head selector value for "mean over heads"


def show_figure(output: widgets.Output, figure: Figure, previous: Figure | None = None) -> Figure:
    """Put ``figure`` in ``output`` as a PNG (at most 880 px wide at 80 dpi: it fits an output area), replacing what
    was there, and close ``previous``. Returns ``figure`` (kept for saving)."""
    if previous is not None:
        plt.close(previous)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    output.outputs = ()
    output.append_display_data(Image(data=buffer.getvalue(), format="png"))
    return figure


def save_figure_png(figure: Figure, path: str | Path) -> Path:
    """Save ``figure`` at 150 dpi to ``path`` (".png" added if it has another suffix); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    figure.savefig(path, dpi=150)
    return path


def _to_4d(name: str, values: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[T_q, T_k]``, ``[H, T_q, T_k]`` or ``[L, H, T_q, T_k]`` -> float array ``[L, H, T_q, T_k]``."""
    array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if array.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must have shape [T_q, T_k], [heads, T_q, T_k] or [layers, heads, T_q, T_k]; "
            f"got {shape_str(array.shape)}"
        )
    return array.reshape((1,) * (4 - array.ndim) + array.shape)


class AttentionExplorer:
    """Explore attention weights layer by layer and head by head.

    Args:
        weights: ``[T_q, T_k]``, ``[heads, T_q, T_k]`` or ``[layers, heads, T_q, T_k]``
            (e.g. ``torch.stack(maps.decoder_cross)[:, 0]`` for the first sentence of a batch).
        query_labels: one label per query position (target tokens for cross-attention).
        key_labels: one label per key position (source tokens).
        scores: optional raw scores, same shape as ``weights``, to show before and after masking.
        mask: optional bool mask broadcastable to ``[T_q, T_k]``, True = may attend.
        title: shown above the figure.
        layer, head, query: the selection shown first (default: the last layer, the mean over heads, query 0).
        row_label, column_label: the heatmap's axis labels (default: queries / keys). For cross-attention
            the course labels rows by the word being written and columns by the source token:
            ``plotting.WRITTEN_WORD_LABEL`` and ``plotting.SOURCE_TOKEN_LABEL``.
    """

    def __init__(
        self,
        weights: torch.Tensor | np.ndarray,
        query_labels: Sequence[str],
        key_labels: Sequence[str],
        *,
        scores: torch.Tensor | np.ndarray | None = None,
        mask: torch.Tensor | np.ndarray | None = None,
        title: str = "attention",
        layer: int | None = None,
        head: int = MEAN,
        query: int = 0,
        row_label: str | None = None,
        column_label: str | None = None,
    ) -> None:
        self.weights = _to_4d("weights", weights)
        self.row_label, self.column_label = row_label, column_label
        n_layers, n_heads, t_q, t_k = self.weights.shape
        if len(query_labels) != t_q or len(key_labels) != t_k:
            raise ValueError(
                f"labels must match the weights [.., T_q={t_q}, T_k={t_k}]: got {len(query_labels)} query labels "
                f"and {len(key_labels)} key labels"
            )
        self.scores = None if scores is None else _to_4d("scores", scores)
        if self.scores is not None and self.scores.shape != self.weights.shape:
            raise ValueError(f"scores must have the weights' shape {shape_str(self.weights.shape)}; "
                             f"got {shape_str(self.scores.shape)}")
        self.mask = None
        if mask is not None:
            mask_array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            if mask_array.dtype != bool:
                raise ValueError(f"mask must be bool (True = may attend); got dtype {mask_array.dtype}")
            try:
                self.mask = np.broadcast_to(mask_array.reshape(mask_array.shape[-2:]), (t_q, t_k))
            except ValueError:
                raise ValueError(f"mask must broadcast to [T_q, T_k] = [{t_q}, {t_k}]; "
                                 f"got {shape_str(mask_array.shape)}") from None
        self.query_labels, self.key_labels, self.title = list(query_labels), list(key_labels), title
        layer = n_layers - 1 if layer is None else layer
        if not (0 <= layer < n_layers and -1 <= head < n_heads and 0 <= query < t_q):
            raise ValueError(f"need 0 <= layer < {n_layers}, head = MEAN or 0 <= head < {n_heads}, "
                             f"0 <= query < {t_q}; got layer={layer}, head={head}, query={query}")
        self.figure: Figure | None = None

        self.layer = widgets.Dropdown(options=[(f"layer {i}", i) for i in range(n_layers)], value=layer,
                                      description="layer", layout=widgets.Layout(width="160px"))
        head_options = [("mean over heads", MEAN)] + [(f"head {i}", i) for i in range(n_heads)]
        self.head = widgets.Dropdown(options=head_options, value=head, description="head",
                                     layout=widgets.Layout(width="220px"))
        self.query = widgets.IntSlider(value=query, min=0, max=t_q - 1, description="query",
                                       continuous_update=False, layout=widgets.Layout(width="320px"))
        views = ["weights"] + (["scores", "scores after mask"] if self.scores is not None else [])
        self.view = widgets.ToggleButtons(options=views, value="weights", description="show")
        self.save_button = widgets.Button(description="Save PNG", icon="download")
        self.filename = widgets.Text(value="attention.png", layout=widgets.Layout(width="200px"))
        self.status = widgets.Label(value="")
        self.output = widgets.Output()
        self.layer.layout.display = None if n_layers > 1 else "none"
        self.view.layout.display = None if len(views) > 1 else "none"
        for control in (self.layer, self.head, self.query, self.view):
            control.observe(lambda change: self.redraw(), names="value")
        self.save_button.on_click(lambda button: self.save_png(self.filename.value))
        self.widget = widgets.VBox([
            widgets.HBox([self.layer, self.head, self.query]),
            self.view,
            self.output,
            widgets.HBox([self.save_button, self.filename, self.status]),
        ])
        self.widget.add_class("attention-explorer")  # a handle for browser tests and custom CSS
        self.redraw()

    def selected(self, kind: str = "weights") -> np.ndarray:
        """The matrix ``[T_q, T_k]`` now on screen: chosen layer, head (or the mean over heads)."""
        source = self.weights if kind == "weights" or self.scores is None else self.scores
        per_head = source[self.layer.value]  # [H, T_q, T_k]
        return per_head.mean(axis=0) if self.head.value == MEAN else per_head[self.head.value]

    def draw(self) -> Figure:
        """Draw the current selection: the heatmap, and the chosen query's row as a bar chart."""
        t_q, t_k = self.weights.shape[-2:]
        head_name = "mean over heads" if self.head.value == MEAN else f"head {self.head.value}"
        fig, (ax_map, ax_row) = plt.subplots(
            1, 2, figsize=(min(11.0, 4.5 + 0.5 * t_k + 3.5), max(3.2, 0.35 * t_q + 1.6)),
            gridspec_kw={"width_ratios": [max(t_k, 3), max(t_k, 3) * 0.8]}, constrained_layout=True,
        )
        blocked = None if self.mask is None else ~self.mask
        if self.view.value == "weights":
            attention_heatmap(self.selected(), self.query_labels, self.key_labels, ax=ax_map, masked=blocked)
        else:
            matrix = self.selected("scores").copy()
            if self.view.value == "scores after mask" and blocked is not None:
                matrix[blocked] = np.nan  # shown blank and hatched: -inf after masking
            limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
            attention_heatmap(matrix, self.query_labels, self.key_labels, ax=ax_map, vmin=-limit, vmax=limit,
                              cmap="vlag", masked=blocked)
        if self.row_label:
            ax_map.set_ylabel(self.row_label)
        if self.column_label:
            ax_map.set_xlabel(self.column_label)
        ax_map.add_patch(plt.Rectangle((0, self.query.value), t_k, 1, fill=False, edgecolor="tab:blue", lw=2.5))
        ax_map.set_title(f"{self.view.value} · layer {self.layer.value} · {head_name}")
        row = self.selected()[self.query.value]  # [T_k]
        row_blocked = np.zeros(t_k, bool) if blocked is None else blocked[self.query.value]
        ax_row.bar(range(t_k), row, color=np.where(row_blocked, "0.75", "tab:blue"), edgecolor="white")
        for key in np.nonzero(row_blocked)[0]:
            ax_row.text(key, 0.02, "masked", rotation=90, ha="center", va="bottom", fontsize=8, color="0.4")
        ax_row.set_xticks(range(t_k), self.key_labels, rotation=45, ha="right")
        ax_row.set_ylim(0, 1)
        ax_row.set_ylabel("attention weight")
        ax_row.set_title(f"query {self.query.value} ({self.query_labels[self.query.value]!r}) attends to")
        fig.suptitle(self.title)
        return fig

    def redraw(self) -> None:
        """Replace the figure in the output area with one for the current controls."""
        self.figure = show_figure(self.output, self.draw(), self.figure)

    def save_png(self, path: str | Path) -> Path:
        """Save the figure now on screen as a PNG (what the "Save PNG" button does)."""
        if self.figure is None:
            self.redraw()
        path = save_figure_png(self.figure, path)
        self.status.value = f"saved {path}"
        return path

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


DEFAULT_SENTENCE = "the small cats saw a happy dog near the river"
_ERROR_STYLE = "color: var(--jp-error-color1, #c62828)"  # JupyterLab's theme colour; a dark red elsewhere


def sentence_words(sentence: str) -> list[str]:
    """Lower-case words, punctuation around each word dropped: ``" The dog sleeps. "`` -> the, dog, sleeps."""
    words = (word.strip(string.punctuation) for word in sentence.lower().split())
    return [word for word in words if word]


def unknown_words_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    """``unknown word 'dgo' (did you mean 'dog'?)`` for each unknown word (plain text, not yet HTML-escaped)."""
    parts = []
    for word in dict.fromkeys(unknown):
        close = [repr(match) for match in difflib.get_close_matches(word, known, n=3)]
        options = " or ".join([", ".join(close[:-1]), close[-1]] if len(close) > 1 else close)
        hint = f"did you mean {options}?" if close else "no similar word is known"
        parts.append(f"unknown word {word!r} ({hint})")
    return "; ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class TranslationExplorer:
    """Type a source sentence, see its translation and explore its cross-attention (layers x heads).

    The weights are the model's own, teacher-forced on ``<bos>`` + its translation
    (``Translator.cross_attention``): row ``j`` is the decoder position that writes target word ``j``
    (the last row writes ``<eos>``); columns are the source words. Bad input (empty, unknown words)
    gets a message, never an exception; the chosen layer, head and query are kept across sentences.
    """

    def __init__(self, translator: Translator, sentence: str = DEFAULT_SENTENCE, *, beam_size: int = 1) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1; got {beam_size}")
        self.translator, self.beam_size = translator, beam_size
        self.text = widgets.Text(description="source", placeholder="type a sentence, then press Enter",
                                 continuous_update=False, layout=widgets.Layout(width="560px"))
        self.button = widgets.Button(description="Translate", button_style="primary")
        self.message = widgets.HTML()
        self.explorer: AttentionExplorer | None = None
        self.translation: list[str] = []
        self.weights: torch.Tensor | None = None
        self._box = widgets.Box()  # holds the current AttentionExplorer's widget
        self._selection: tuple[int | None, int, int] = (None, MEAN, 0)  # layer, head, query to keep
        self._sentence: str | None = None
        self.text.add_class("translation-input")
        self.message.add_class("translation-message")
        self.widget = widgets.VBox([widgets.HBox([self.text, self.button]), self.message, self._box])
        self.widget.add_class("translation-explorer")  # a handle for browser tests and custom CSS
        self.text.observe(self._on_text, names="value")
        self.button.on_click(lambda button: self.translate(self.text.value))
        self.translate(sentence)

    def _on_text(self, change: dict) -> None:
        if change["new"] != self._sentence:  # not the echo of translate() filling the text box
            self.translate(change["new"])

    def translate(self, sentence: str) -> list[str]:
        """Put ``sentence`` in the text box, translate it and redraw. Returns the translation, or ``[]``
        (with a message, the figure cleared) for an empty sentence or unknown words."""
        self._sentence = sentence
        self.text.value = sentence
        if self.explorer is not None:
            self._selection = (self.explorer.layer.value, self.explorer.head.value, self.explorer.query.value)
        words = sentence_words(sentence)
        unknown = [word for word in words if word not in self.translator.src_vocab]
        if not words:
            error = "type a sentence"
        elif unknown:
            error = unknown_words_message(unknown, self.translator.src_vocab.tokens[4:])
        elif len(words) > self.translator.model.config.max_len:
            error = f"too long: this model reads at most {self.translator.model.config.max_len} words"
        else:
            error = ""
            try:
                translation, weights = self.translator.cross_attention(words, beam_size=self.beam_size)
            except ValueError as exc:  # not expected: shown rather than raised
                error = f"could not translate this sentence: {exc}"
        if error:
            self.translation, self.weights, self.explorer, self._box.children = [], None, None, ()
            self.message.value = f'<span style="{_ERROR_STYLE}">{html.escape(error, quote=False)}</span>'
            return []
        n_layers, n_heads, t_q, _ = weights.shape
        layer, head, query = self._selection
        self.explorer = AttentionExplorer(
            weights, [*translation, EOS], words, title="cross-attention: rows write target words, columns are "
            "source words", layer=layer if layer is not None and layer < n_layers else None,
            head=head if head < n_heads else MEAN, query=query if query < t_q else 0,
            row_label=WRITTEN_WORD_LABEL, column_label=SOURCE_TOKEN_LABEL,
        )
        self.translation, self.weights = translation, weights
        self._box.children = (self.explorer.widget,)
        shown = html.escape(" ".join(translation), quote=False) if translation else "<i>(empty translation)</i>"
        self.message.value = (f"<b>{shown}</b> &nbsp; <span style='opacity: 0.7'>({_count(len(words), 'source word')}"
                              f" &rarr; {_count(len(translation), 'target word')})</span>")
        return translation

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
