"""How many CPU threads training and decoding use (``env.small_model_threads``), and that the count comes back."""
from __future__ import annotations

import os

import pytest
import torch

import course_lib as cl
from course_lib.env import num_threads, small_model_threads
from course_lib.generate import decoding_threads


def tiny_model() -> cl.Seq2SeqTransformer:
    torch.manual_seed(0)
    config = cl.TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2, n_encoder_layers=1,
                                  n_decoder_layers=1, d_ff=32, max_len=32)
    return cl.Seq2SeqTransformer(config).eval()


def threads_seen_by_the_decoder(model: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    return seen


@pytest.fixture
def two_threads():
    """Start from 2 intra-op threads (whatever the machine has), restore the count afterwards."""
    with num_threads(2):
        yield


def test_small_models_use_one_thread_less_than_the_cores(two_threads) -> None:
    assert small_model_threads() == max(1, min(2, (os.cpu_count() or 1) - 1))


def test_num_threads_restores_the_count_even_after_an_error(two_threads) -> None:
    with pytest.raises(RuntimeError), num_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        num_threads(0)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_decoding_runs_on_the_small_model_thread_count_and_restores_it(two_threads, search: str) -> None:
    model = tiny_model()
    seen = threads_seen_by_the_decoder(model.decoder)
    src = torch.tensor([[4, 5, 6, 2], [7, 8, 2, 0]])
    if search == "greedy":
        cl.greedy_decode(model, src, bos_id=1, eos_id=2, max_new_tokens=5)
    else:
        cl.beam_search(model, src, bos_id=1, eos_id=2, beam_size=3, max_new_tokens=5)
    assert seen and set(seen) == {small_model_threads()}
    assert torch.get_num_threads() == 2


def test_an_explicit_thread_count_wins(two_threads) -> None:
    model = tiny_model()
    seen = threads_seen_by_the_decoder(model.decoder)
    cl.greedy_decode(model, torch.tensor([[4, 5, 2]]), bos_id=1, max_new_tokens=3, threads=2)
    assert set(seen) == {2}
    assert decoding_threads(torch.zeros(1, 1, dtype=torch.long), 3) == 3


def test_the_decoders_of_lesson_09_follow_the_same_rule(two_threads) -> None:
    """``generate.greedy_tokens`` is the step loop of lesson 09's GRU and decoder-only translators and of lesson
    10's captioner."""
    seen: list[int] = []

    def next_logits(last: torch.Tensor, step: int) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return torch.zeros(last.shape[0], 5)

    cl.generate.greedy_tokens(next_logits, 2, bos_id=1, eos_id=None, pad_id=0, max_new_tokens=4,
                              device=torch.device("cpu"))
    assert seen == [small_model_threads()] * 4
    assert torch.get_num_threads() == 2
