"""A trained translator (model + vocabularies), and saving/loading it so a later lesson can reuse the
model trained in lesson 07. Nothing pretrained ships with the course: the file is what *you* trained.

The default file is ``$COURSE_CACHE_DIR/toy_translator.pt``, or
``~/.cache/cross-attention-from-scratch/toy_translator.pt`` when that variable is not set.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import Vocabulary
from .generate import beam_search, greedy_decode
from .model import Seq2SeqTransformer, TransformerConfig


@dataclass
class Translator:
    """A trained model with its vocabularies; ``info`` holds plain values (scores, training time)."""

    model: Seq2SeqTransformer
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    info: dict = field(default_factory=dict)

    def source_ids(self, sentence: str | Sequence[str]) -> torch.Tensor:
        """``[1, S]`` ids of one source sentence; ValueError naming any unknown word."""
        ids = self.src_vocab.encode(sentence)
        if not ids:
            raise ValueError("the sentence is empty: type at least one word")
        return torch.tensor([ids], device=next(self.model.parameters()).device)

    @torch.no_grad()
    def translate(self, sentence: str | Sequence[str], *, beam_size: int = 1,
                  max_new_tokens: int | None = None) -> list[str]:
        """Translate one sentence (a string or a list of words): greedy, or beam search if ``beam_size > 1``;
        at most ``max_new_tokens`` words (default ``2 S + 8``)."""
        src_ids = self.source_ids(sentence)  # [1, S]
        self.model.eval()
        if max_new_tokens is None:
            max_new_tokens = min(2 * src_ids.shape[1] + 8, self.model.config.max_len - 1)
        kwargs = dict(bos_id=self.tgt_vocab.bos_id, eos_id=self.tgt_vocab.eos_id, max_new_tokens=max_new_tokens)
        if beam_size > 1:
            tokens = beam_search(self.model, src_ids, beam_size=beam_size, **kwargs).tokens
        else:
            tokens = greedy_decode(self.model, src_ids, **kwargs).tokens
        return self.tgt_vocab.decode(tokens[0].cpu())

    @torch.no_grad()
    def cross_attention(self, sentence: str | Sequence[str], *, beam_size: int = 1) -> tuple[list[str], torch.Tensor]:
        """Translate ``sentence``, then run the model teacher-forced on ``<bos>`` + its own translation.

        Returns:
            the translation (``T`` words, no ``<eos>``) and the cross-attention ``[L, H, T + 1, S]`` on the CPU:
            row ``j`` is the decoder position that writes target word ``j`` (the last row writes ``<eos>``).
        """
        words = self.translate(sentence, beam_size=beam_size)
        src_ids = self.source_ids(sentence)  # [1, S]
        tgt_in = torch.tensor([[self.tgt_vocab.bos_id, *self.tgt_vocab.encode(words)]], device=src_ids.device)
        self.model.eval()
        _, maps = self.model.forward_with_attention(src_ids, tgt_in)  # decoder_cross: L x [1, H, T + 1, S]
        return words, torch.stack(maps.decoder_cross)[:, 0].cpu()


def default_model_path() -> Path:
    """``$COURSE_CACHE_DIR/toy_translator.pt``, else ``~/.cache/cross-attention-from-scratch/toy_translator.pt``."""
    folder = os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "cross-attention-from-scratch"
    return Path(folder) / "toy_translator.pt"


def save_translator(translator: Translator, path: str | Path | None = None) -> Path:
    """Write config, vocabularies, weights and ``info`` (plain values) to ``path``; return the path."""
    path = Path(path) if path is not None else default_model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in translator.model.state_dict().items()}
    torch.save({"format": 1, "config": asdict(translator.model.config), "src_vocab": list(translator.src_vocab.tokens),
                "tgt_vocab": list(translator.tgt_vocab.tokens), "state_dict": state, "info": translator.info}, path)
    return path


def load_translator(path: str | Path | None = None, *, device: torch.device | str = "cpu") -> Translator:
    """Read what ``save_translator`` wrote (the model in eval mode on ``device``).

    Raises:
        FileNotFoundError: when nothing was saved at ``path`` (train and save a model first).
    """
    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise FileNotFoundError(f"no trained translator at {path}: run lesson 07 (or train one) and save it first")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = Seq2SeqTransformer(TransformerConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return Translator(model.to(device).eval(), Vocabulary(saved["src_vocab"]), Vocabulary(saved["tgt_vocab"]),
                      saved.get("info", {}))
