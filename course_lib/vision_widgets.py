"""Lesson 10's caption explorer on core ipywidgets (7.7+ and 8.x): pick a test image or build a scene, see the
captioner's caption, and step through its words with each word's cross-attention laid on the image.

The figure is drawn with Matplotlib into an ``Output`` as a PNG, as in ``course_lib.widgets``, so it works in every
front end and can be tested without a browser.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .data import EOS, Vocabulary
from .scenes import COLOURS, GRID, SHAPES, Scene, render, scene_from_objects
from .vision import Captioner
from .vision_charts import GOLD_BOX_COLOR, OVERLAY_CMAP, weights_to_pixels
from .widgets import save_figure_png, show_figure

MEAN = -1  # head selector value for "mean over heads"
NONE = "(none)"  # an object slot left empty
_ERROR_STYLE = "color: var(--jp-error-color1, #c62828)"


class CaptionExplorer:
    """Caption an image and see where each word looks.

    ``scenes``: scenes to pick from with the "image" slider (e.g. a test split's); "Build a scene" places up to
    three objects from the dropdowns (shape, colour, cell 0-8 in reading order). The caption is the model's own
    (greedy); the weights are its cross-attention teacher-forced on ``<bos>`` + that caption, so word ``t``'s row is
    the query that wrote it. Layer and head (or the mean over heads) select the weights; the word slider steps
    through the caption. A scene that cannot be built (two objects in one cell) gets a message, never an exception.
    """

    def __init__(self, model: Captioner, vocab: Vocabulary, scenes: Sequence[Scene], *, index: int = 0,
                 seed: int = 0) -> None:
        if not scenes:
            raise ValueError("CaptionExplorer needs at least one scene to start from; got none")
        self.model, self.vocab, self.scenes, self.seed = model.eval(), vocab, list(scenes), seed
        self.scene: Scene | None = None
        self.image: torch.Tensor | None = None  # [3, H, W]
        self.caption: list[str] = []
        self.weights: torch.Tensor | None = None  # [layers, heads, T, N]
        self.figure: Figure | None = None
        n_layers, n_heads = len(model.layers), model.config.n_heads
        self.picker = widgets.IntSlider(value=index, min=0, max=len(self.scenes) - 1, description="image",
                                        continuous_update=False)
        self.slots = [(widgets.Dropdown(options=[NONE, *SHAPES], value=NONE, layout=widgets.Layout(width="110px")),
                       widgets.Dropdown(options=list(COLOURS), layout=widgets.Layout(width="90px")),
                       widgets.Dropdown(options=list(range(GRID * GRID)), value=k * 4,
                                        layout=widgets.Layout(width="60px"))) for k in range(3)]
        self.slots[0][0].value = "ring"
        self.build = widgets.Button(description="Build a scene", button_style="primary")
        self.layer = widgets.Dropdown(options=list(range(n_layers)), value=0, description="layer")
        self.head = widgets.Dropdown(options=[("mean", MEAN)] + [(str(h), h) for h in range(n_heads)], value=MEAN,
                                     description="head")
        self.word = widgets.IntSlider(value=0, min=0, max=0, description="word", continuous_update=False)
        self.save = widgets.Button(description="Save PNG")
        self.message, self.status, self.output = widgets.HTML(), widgets.Label(), widgets.Output()
        rows = [widgets.HBox([widgets.Label(f"object {k + 1}"), *slot]) for k, slot in enumerate(self.slots)]
        self.widget = widgets.VBox([self.picker, widgets.HBox([widgets.VBox(rows), self.build]), self.message,
                                    widgets.HBox([self.layer, self.head]), self.word, self.output,
                                    widgets.HBox([self.save, self.status])])
        self.widget.add_class("caption-explorer")  # handles for browser tests and custom CSS
        for control, name in ((self.word, "caption-word"), (self.head, "caption-head"), (self.build, "caption-build"),
                              (self.message, "caption-message"), (self.output, "caption-figure")):
            control.add_class(name)
        for k, (shape, _, cell) in enumerate(self.slots):
            shape.add_class(f"caption-shape-{k}")
            cell.add_class(f"caption-cell-{k}")
        self.picker.observe(lambda change: self.show(self.scenes[change["new"]]), names="value")
        self.build.on_click(lambda button: self.build_scene())
        for control in (self.layer, self.head, self.word):
            control.observe(lambda change: self.redraw(), names="value")
        self.save.on_click(lambda button: self.save_png("caption_explorer.png"))
        self.show(self.scenes[index])

    def build_scene(self) -> Scene | None:
        """The scene the dropdowns describe, captioned and drawn; None (with a message) if it cannot be built."""
        specs = [(shape.value, colour.value, cell.value // GRID, cell.value % GRID)
                 for shape, colour, cell in self.slots if shape.value != NONE]
        try:
            scene = scene_from_objects(specs)
        except ValueError as exc:
            self.message.value = f'<span style="{_ERROR_STYLE}">{html.escape(str(exc), quote=False)}</span>'
            return None
        self.show(scene)
        return scene

    @torch.no_grad()
    def show(self, scene: Scene) -> list[str]:
        """Caption ``scene`` and redraw; returns the caption's words."""
        device = next(self.model.parameters()).device
        image = torch.from_numpy(render([scene], self.seed)).to(device)  # [1, 3, H, W]
        tokens = self.model.greedy_decode(image, bos_id=self.vocab.bos_id, eos_id=self.vocab.eos_id)[0]
        caption = self.vocab.decode(tokens.cpu())
        prefix = torch.tensor([[self.vocab.bos_id, *self.vocab.encode(caption)]], device=device)  # [1, T]
        _, maps = self.model.forward_with_attention(image, prefix)
        self.scene, self.image, self.caption = scene, image[0].cpu(), caption
        self.weights = torch.stack([w[0] for w in maps.decoder_cross]).cpu()  # [layers, heads, T, N]
        right = list(caption) == list(scene.caption)
        verdict = "right" if right else f"the scene's caption is: {html.escape(' '.join(scene.caption))}"
        self.message.value = (f"<b>{html.escape(' '.join(caption)) or '<i>(empty caption)</i>'}</b> &nbsp; "
                              f"<span style='opacity: 0.7'>({verdict})</span>")
        with self.word.hold_trait_notifications():
            self.word.max = len(caption)  # the last row writes <eos>
            self.word.value = min(self.word.value, self.word.max)
        self.redraw()
        return caption

    def selected(self) -> torch.Tensor:
        """The weights of the chosen word over the patches ``[N]``: chosen layer, head or mean over heads."""
        per_head = self.weights[self.layer.value, :, self.word.value]  # [H, N]
        return per_head.mean(dim=0) if self.head.value == MEAN else per_head[self.head.value]

    def draw(self) -> Figure:
        """The image with the chosen word's weights laid on it, and its gold box when the caption is right."""
        words = [*self.caption, EOS]
        t, pixels = self.word.value, self.image.permute(1, 2, 0).clamp(0, 1).numpy()
        heat = weights_to_pixels(self.selected(), pixels.shape[0])
        heat = heat / max(float(heat.max()), 1e-9)
        colours = plt.get_cmap(OVERLAY_CMAP)(0.45 + 0.55 * heat)
        colours[..., 3] = 0.8 * heat
        fig, ax = plt.subplots(figsize=(4.2, 4.6))
        ax.imshow(pixels)
        ax.imshow(colours)
        boxes = self.scene.word_boxes if list(self.caption) == list(self.scene.caption) else ()
        if t < len(boxes) and boxes[t] is not None:
            x0, y0, x1, y1 = boxes[t]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.6, ls="--",
                                   edgecolor=GOLD_BOX_COLOR))
        head = "mean over heads" if self.head.value == MEAN else f"head {self.head.value}"
        ax.set_title(f"'{words[t]}' (word {t}) · layer {self.layer.value} · {head}", fontsize=10)
        ax.axis("off")
        fig.tight_layout()
        return fig

    def redraw(self) -> None:
        """Replace the figure in the output area with one for the current controls."""
        self.figure = show_figure(self.output, self.draw(), self.figure)

    def save_png(self, path: str | Path) -> Path:
        """Save the figure now on screen as a PNG (what the "Save PNG" button does)."""
        path = save_figure_png(self.figure, path)
        self.status.value = f"saved {path}"
        return path

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
