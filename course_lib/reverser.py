"""Lesson 05's experiment: a small encoder learns to reverse its input.

Reversing is impossible without positions, so the task shows what the √d_model scaling of the embeddings
(``embed_scale``) and the LayerNorm's place (``norm_first``: pre- or post-norm) do to training.
``train_reverser`` returns a ``ReverserRun``, which ``charts.training_runs_figure`` draws.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import PositionalEncoding
from .model import Encoder


class Reverser(torch.nn.Module):
    """Token ids ``[B, L]`` -> logits ``[B, L, V]``: embeddings (times ``embed_scale``) plus sinusoidal positions,
    an encoder stack of ``n_layers`` (4 heads, d_ff = 2 d_model, final LayerNorm), a linear layer."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, *, norm_first: bool = True,
                 embed_scale: float = 1.0, max_len: int = 32) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, d_model)
        self.embed_scale = embed_scale
        self.positions = PositionalEncoding(d_model, max_len=max_len)
        self.encoder = Encoder(d_model, 4, 2 * d_model, n_layers, norm_first=norm_first)
        self.output = torch.nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoder(self.positions(self.embed(ids) * self.embed_scale))  # [B, L, d_model]
        return self.output(h)  # [B, L, V]


@dataclass
class ReverserRun:
    """What ``train_reverser`` measured."""

    losses: list[float]  # the training loss at every step
    grad_norms: torch.Tensor  # [steps, n_layers]: norm of each encoder layer's parameter gradient at every step
    accuracy: float  # share of tokens right on 512 fresh sequences after training
    seconds: float


def train_reverser(*, norm_first: bool = True, embed_scale: float = 1.0, n_layers: int = 6, d_model: int = 32,
                   steps: int = 120, lr: float = 1e-2, seed: int = 0, vocab_size: int = 16, length: int = 10,
                   batch_size: int = 32, device: torch.device | str | None = None) -> ReverserRun:
    """Train a ``Reverser`` to output its input sequence reversed: Adam (0.9, 0.98) at a constant ``lr``, no warm-up.

    ``seed`` fixes the initial weights (``torch.manual_seed(seed)`` inside ``fork_rng``, so the caller's random state
    is left as it was) and the batches (a generator seeded with ``seed + 1``): runs that differ only in
    ``norm_first`` or ``embed_scale`` start from the same weights and see the same batches. Reversing is
    impossible without positions, so the task shows how well they get through.
    Raises ``ValueError`` for sizes, ``steps``, ``lr`` or ``embed_scale`` that are not positive.
    """
    sizes = dict(n_layers=n_layers, d_model=d_model, steps=steps, vocab_size=vocab_size, length=length,
                 batch_size=batch_size)
    if any(not isinstance(v, int) or v < 1 for v in sizes.values()) or d_model % 4:
        raise ValueError(f"sizes must be positive ints and d_model a multiple of 4 heads; got {sizes}")
    if not lr > 0 or not embed_scale > 0:
        raise ValueError(f"lr and embed_scale must be > 0; got lr={lr}, embed_scale={embed_scale}")
    device = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG stays as it was
        torch.manual_seed(seed)
        model = Reverser(vocab_size, d_model, n_layers, norm_first=norm_first, embed_scale=embed_scale).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    batches = torch.Generator(device=device).manual_seed(seed + 1)
    losses, grad_norms, start = [], [], time.perf_counter()
    for _ in range(steps):
        ids = torch.randint(0, vocab_size, (batch_size, length), generator=batches, device=device)  # [B, L]
        loss = F.cross_entropy(model(ids).flatten(0, 1), ids.flip(1).flatten())  # target: the input reversed
        optimizer.zero_grad()
        loss.backward()
        grad_norms.append([torch.cat([p.grad.flatten() for p in layer.parameters()]).norm().item()
                           for layer in model.encoder.layers])
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        ids = torch.randint(0, vocab_size, (512, length), generator=batches, device=device)  # [512, L]
        accuracy = (model(ids).argmax(-1) == ids.flip(1)).float().mean().item()
    return ReverserRun(losses, torch.tensor(grad_norms), accuracy, time.perf_counter() - start)
