"""The lesson 11 checkers: hand-written wrong answers get their hints, the cases hold the edge cases that tell the
mistakes apart, the references agree with course_lib.fusion, and a check leaves the learner's state alone. What
every function checker must do runs in tests/test_checks_generic.py, over this module's CHECKS, GENERIC,
ALTERNATIVES and BROKEN (with learner_version and weird_versions for exercise 3, whose answer is a class); the part
of it the lesson's exercises depend on most (each named mistake, stubs, crashes, weird results) is also run here."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checker_helpers import (
    assert_diagnosed,
    assert_fail,
    assert_named,
    batch_one_only,
    batch_one_only_raising,
    broken_answers,
    casts_to,
    learner_state,
    messy_answer,
    mutates_input,
    raise_not_implemented,
    raise_value_error,
    returns_list,
    returns_numpy,
    weird_answers,
)
from torch import nn

from course_lib.checks import CheckResult, lesson11
from course_lib.fusion import FusionConfig, FusionQA, GatedCrossAttention, Memory
from course_lib.masks import padding_mask_from_ids
from course_lib.questions import Sources

pytestmark = pytest.mark.usefixtures("single_thread")


# --- the solutions, as a learner writes them in the exercise notebook of lesson 11 ---------------------------------
def two_source_mask(question_ids, n_patches, pad_id=0):
    image_real = torch.ones(question_ids.shape[0], n_patches, dtype=torch.bool)  # [B, N]: no padding in an image
    question_real = question_ids != pad_id  # [B, Q]
    return torch.cat([image_real, question_real], dim=1)[:, None, None, :]  # [B, 1, 1, N + Q]


def concatenated_memory(image_states, question_states, source_type):
    image = image_states + source_type.weight[0]  # [B, N, d]: tagged "image"
    question = question_states + source_type.weight[1]  # [B, Q, d]: tagged "question"
    return torch.cat([image, question], dim=1)  # [B, N + Q, d]


class GatedBlock(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross = cross
        self.alpha = nn.Parameter(torch.zeros(1))  # closed gate: tanh(0) = 0

    def forward(self, x, image):
        attended, _ = self.cross(x, image)  # [B, L, d_model]
        return x + torch.tanh(self.alpha) * attended


def resample(latents, features, attention):
    queries = latents.expand(features.shape[0], -1, -1)  # [B, M, d]: the same queries for every image
    output, _ = attention(queries, features)
    return output  # [B, M, d]


# every function checker with its solution: tests/test_checks_generic.py runs over CHECKS, GENERIC, ALTERNATIVES
# and BROKEN
CHECKS = {
    "check_two_source_mask": (lesson11.check_two_source_mask, two_source_mask),
    "check_concatenated_memory": (lesson11.check_concatenated_memory, concatenated_memory),
    "check_gated_block": (lesson11.check_gated_block, GatedBlock),
    "check_resample": (lesson11.check_resample, resample),
}
FUNCTIONS = [name for name in CHECKS if name != "check_gated_block"]


def learner_version(name: str, mistake: Any) -> Any:
    """What a learner would hand in: exercise 3's mistakes are stored as the checker runs them (``_driven``)."""
    return mistake.wrong.args[0] if name == "check_gated_block" else mistake.wrong


def _block_with(forward: Callable[..., Any], alpha: Callable[[], Any] = lambda: nn.Parameter(torch.zeros(1)),
                ) -> type[nn.Module]:
    """A GatedBlock whose forward is ``forward(block, x, image)``."""
    class Block(nn.Module):
        def __init__(self, cross):
            super().__init__()
            self.cross = cross
            self.alpha = alpha()

        def forward(self, x, image):
            return forward(self, x, image)
    return Block


def weird_versions(name: str, weird: Callable[..., Any]) -> list[Any]:
    """A weird result, as each exercise gets it: exercise 3's answer is a class, so a weird result can come from
    building the block or from its forward."""
    if name == "check_gated_block":
        return [weird, _block_with(lambda block, x, image: weird(x, image))]
    return [weird]


def _blocks_returning(make: Callable[[Any], Any]) -> type[nn.Module]:
    return _block_with(lambda block, x, image: make(GatedBlock.forward(block, x, image)))


BROKEN = [(name, answer, phrase) for name in FUNCTIONS
          for answer, phrase in broken_answers(torch.zeros(1, 2, 3, 4, 5, dtype=torch.bool))]
BROKEN += [
    ("check_gated_block", raise_value_error, "raised ValueError: boom"),
    ("check_gated_block", lambda cross: [1, 2, 3], "should build an nn.Module, but returned a list"),
    ("check_gated_block", _blocks_returning(lambda out: out.tolist()), "should be a torch.Tensor, but is list"),
    ("check_gated_block", _blocks_returning(lambda out: out[:, :1]), "has shape [2, 2, 1, 16]"),
    ("check_gated_block", _blocks_returning(lambda out: (out, out)), "of GatedBlock returned a tuple of 2 tensors"),
    ("check_gated_block", 42, "should be a function"),
]


def test_titles_follow_one_pattern() -> None:
    for n, (check, _) in enumerate(CHECKS.values(), start=1):
        assert check(None).title.startswith(f"Exercise {n} · ")


def test_every_checker_is_fast() -> None:
    for check, solution in CHECKS.values():
        check(solution)  # warm up
        start = time.perf_counter()
        assert check(solution).passed
        assert time.perf_counter() - start < 0.2, check.__name__


# --- what each checker must do: the solution and the reference pass, every mistake is named ------------------------

@pytest.mark.parametrize("name", CHECKS)
def test_the_solution_and_the_reference_pass(name) -> None:
    check, solution = CHECKS[name]
    for answer in (solution, lesson11.REFERENCES[name]):
        result = check(answer)
        assert result.passed and result.mistake is None, result


@pytest.mark.parametrize(("name", "mistake"), [(name, m) for name in CHECKS for m in lesson11.MISTAKES[name]],
                         ids=lambda x: getattr(x, "name", x))
def test_every_named_mistake_gets_its_own_hint(name, mistake) -> None:
    assert_named(CHECKS[name][0](learner_version(name, mistake)), mistake, lesson11.CASES[name])


def test_the_registries_agree() -> None:
    assert set(lesson11.MISTAKES) == set(lesson11.CASES) == set(lesson11.REFERENCES) == set(CHECKS)
    for mistakes in lesson11.MISTAKES.values():
        assert len({m.name for m in mistakes}) == len(mistakes) >= 6


def _noise_like(solution):
    def wrong(*args):
        out = solution(*args)
        if out.dtype == torch.bool:
            return torch.rand(out.shape) < 0.5
        return torch.rand(out.shape, dtype=out.dtype)  # right shape and dtype, values from nowhere
    return wrong


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_random_answer_fails_without_a_named_hint(name) -> None:
    check, solution = CHECKS[name]
    assert_diagnosed(check(_noise_like(solution)), None, "differs from the reference")


def test_a_random_block_fails_without_a_named_hint() -> None:
    noisy = _block_with(lambda block, x, image: x + torch.tanh(block.alpha) * torch.rand(x.shape, dtype=x.dtype))
    assert_diagnosed(lesson11.check_gated_block(noisy), None, "differs from the reference")


@pytest.mark.parametrize("name", CHECKS)
def test_stubs_none_crashes_and_non_functions_do_not_raise(name) -> None:
    check = CHECKS[name][0]
    stub = check(raise_not_implemented)
    assert stub.status == "not_done" and "not done yet" in stub.message and str(stub).startswith("⏳")
    assert check(None).status == "not_done"
    crash = check(raise_value_error)
    assert_diagnosed(crash, "raised", "raised ValueError: boom")
    assert crash.case is not None
    assert_diagnosed(check(42), "not_a_function", "should be a function")


@pytest.mark.parametrize(("name", "answer", "phrase"), BROKEN)
def test_broken_answers_fail_without_raising(name, answer, phrase) -> None:
    assert_fail(CHECKS[name][0](answer), phrase)


@pytest.mark.parametrize(("label", "weird"), weird_answers(), ids=[w[0] for w in weird_answers()])
@pytest.mark.parametrize("name", CHECKS)
def test_weird_results_fail_without_raising(name, label, weird) -> None:
    for answer in weird_versions(name, weird):
        result = CHECKS[name][0](answer)
        assert isinstance(result, CheckResult) and result.status == "fail", result
        assert "the check itself hit" not in result.message, result.message




class MessyBlock(GatedBlock):
    """The right block, from code that draws random numbers and changes threads and grad mode on the way."""

    def __init__(self, cross):
        super().__init__(cross)
        torch.rand(3)
        np.random.rand(2)
        random.random()

    def forward(self, x, image):
        torch.set_num_threads(3)
        torch.set_grad_enabled(True)
        torch.rand(1)
        return super().forward(x, image)




@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("name", CHECKS)
def test_a_check_leaves_the_learners_rng_threads_and_grad_mode_alone(name, grad) -> None:
    check, solution = CHECKS[name]
    messy = MessyBlock if name == "check_gated_block" else messy_answer(solution)
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    with torch.set_grad_enabled(grad):
        before = learner_state()
        for answer in (solution, messy, learner_version(name, lesson11.MISTAKES[name][0]), raise_value_error):
            check(answer)
            after = learner_state()
            assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]), answer
            assert before[2:] == after[2:], answer
        assert check(messy).passed


def test_building_the_cases_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state()
    lesson11._block_case(*lesson11._BLOCKS[0])
    lesson11._resample_case(*lesson11._RESAMPLES[0])
    assert torch.equal(before, torch.get_rng_state())


# --- the references are the lesson's models ---------------------------------------------------------------------------

def _fusion_qa() -> tuple[FusionQA, Sources]:
    config = FusionConfig(question_vocab_size=20, answer_vocab_size=10, d_image=12, d_model=16, n_heads=4, d_ff=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FusionQA(config, fusion="concatenation").eval()
        features = torch.randn(2, 5, config.d_image)
    question_ids = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]])
    return model, Sources(features, question_ids)


def test_mask_and_memory_references_are_what_fusion_qa_builds() -> None:
    model, sources = _fusion_qa()
    with torch.no_grad():
        [memory] = model.encode(sources)
        image = model.image_proj(sources.image)  # [B, N, d_model]
        question = model.question_encoder(sources.question_ids)  # [B, Q, d_model]
        expected_states = lesson11.concatenated_memory_reference(image, question, model.source_type)
    assert torch.equal(memory.mask, lesson11.two_source_mask_reference(sources.question_ids, 5))
    torch.testing.assert_close(memory.states, expected_states)


def test_gated_block_reference_is_the_attention_half_of_gated_cross_attention() -> None:
    case = lesson11.BLOCK_CASES[0]
    cross, x, states, mask, _ = case.args
    flamingo = GatedCrossAttention(16, 12, 4, 32)
    flamingo.cross.load_state_dict(cross.state_dict())
    reference = lesson11.GatedBlockReference(flamingo.cross)
    image = Memory(states, mask)
    with torch.no_grad():
        assert torch.equal(flamingo(x, image)[0], x) and torch.equal(reference(x, image), x)  # both start closed
        flamingo.alpha_attn.fill_(0.7)  # the feed-forward's gate stays closed: it adds exactly 0
        reference.alpha.fill_(0.7)
        torch.testing.assert_close(flamingo(x, image)[0], reference(x, image))


# --- correct alternatives (they must pass) ------------------------------------------------------------------------

def mask_padded(question_ids, n_patches, pad_id=0):
    return F.pad(question_ids != pad_id, (n_patches, 0), value=True).view(question_ids.shape[0], 1, 1, -1)


def mask_from_course_helper(question_ids, n_patches, pad_id=0):
    fill = torch.full((question_ids.shape[0], n_patches), pad_id + 1)  # any id that is not padding
    return padding_mask_from_ids(torch.cat([fill, question_ids], dim=1), pad_id)


def memory_by_ids(image_states, question_states, source_type):
    b, n, q = image_states.shape[0], image_states.shape[1], question_states.shape[1]
    kinds = torch.cat([torch.zeros(b, n, dtype=torch.long), torch.ones(b, q, dtype=torch.long)], dim=1)
    return torch.cat([image_states, question_states], dim=1) + source_type(kinds)


def memory_tagged_after(image_states, question_states, source_type):
    memory = torch.cat([image_states, question_states], dim=1).clone()
    n = image_states.shape[1]
    memory[:, :n] += source_type.weight[0]
    memory[:, n:] += source_type.weight[1]
    return memory


class GatedBlockScalar(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross = cross
        self.alpha = nn.Parameter(torch.tensor(0.0))  # a 0-d gate

    def forward(self, x, image):
        return self.cross(x, image)[0] * self.alpha.tanh() + x


class GatedBlockPerFeature(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross = cross
        self.alpha = nn.Parameter(torch.zeros(cross.attn.d_model))  # one gate per feature, all set alike here

    def forward(self, x, image):
        update, _weights = self.cross(x, image, need_weights=True)
        return torch.addcmul(x, torch.tanh(self.alpha), update)


def resample_by_loop(latents, features, attention):
    return torch.cat([attention(latents[None], f[None])[0] for f in features])


def resample_projected_once(latents, features, attention):
    queries = latents.unsqueeze(0).repeat(features.shape[0], 1, 1)
    return attention(queries, source_kv=attention.project_source(features))[0]


ALTERNATIVES = [
    ("check_two_source_mask", mask_padded), ("check_two_source_mask", mask_from_course_helper),
    ("check_two_source_mask", lambda ids, n, pad_id=0: torch.cat(
        [ids.new_ones(ids.shape[0], n, dtype=torch.bool), ids.ne(pad_id)], dim=-1).unsqueeze(1).unsqueeze(1)),
    ("check_concatenated_memory", memory_by_ids), ("check_concatenated_memory", memory_tagged_after),
    ("check_gated_block", GatedBlockScalar), ("check_gated_block", GatedBlockPerFeature),
    ("check_gated_block", lesson11.GatedBlockReference),
    ("check_resample", resample_by_loop), ("check_resample", resample_projected_once),
    ("check_resample", lambda latents, features, attention: attention(
        latents[None].expand(len(features), -1, -1), features, need_weights=True)[0]),
]


@pytest.mark.parametrize(("name", "alternative"), ALTERNATIVES)
def test_correct_alternatives_pass(name, alternative) -> None:
    result = CHECKS[name][0](alternative)
    assert result.passed, result


# --- generic mistake classes ----------------------------------------------------------------------------------------

def _mask_first_question_only(question_ids, n_patches, pad_id=0):
    return two_source_mask(question_ids[:1], n_patches, pad_id).expand(question_ids.shape[0], -1, -1, -1)


def _mask_editing_ids(question_ids, n_patches, pad_id=0):
    mask = two_source_mask(question_ids, n_patches, pad_id)
    question_ids.add_(1)
    return mask


def _memory_tagging_in_place(image_states, question_states, source_type):
    image_states += source_type.weight[0]
    question_states += source_type.weight[1]
    return torch.cat([image_states, question_states], dim=1)


GENERIC = [
    ("check_two_source_mask", returns_numpy(two_source_mask), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_two_source_mask", returns_list(two_source_mask), "wrong_type", "list"),
    ("check_two_source_mask", _mask_first_question_only, "batch_one_only", "right for a batch of 1"),
    ("check_two_source_mask", _mask_editing_ids, "mutated_input", "`question_ids`"),
    ("check_concatenated_memory", returns_numpy(concatenated_memory), "wrong_type", "numpy.ndarray"),
    ("check_concatenated_memory", returns_list(concatenated_memory), "wrong_type", "list"),
    ("check_concatenated_memory", batch_one_only(concatenated_memory), "batch_one_only", "right for a batch of 1"),
    ("check_concatenated_memory", batch_one_only_raising(concatenated_memory), "batch_one_only",
     "right for a batch of 1"),
    ("check_concatenated_memory", casts_to(concatenated_memory, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_concatenated_memory", _memory_tagging_in_place, "mutated_input", "`image_states`"),
    ("check_gated_block", _block_with(lambda block, x, image: GatedBlock.forward(block, x[:1], _first(image))
                                      .expand_as(x)), "batch_one_only", "right for a batch of 1"),
    ("check_gated_block", _block_with(lambda block, x, image: x.add_(torch.tanh(block.alpha)
                                                                     * block.cross(x, image)[0])),
     "mutated_input", "`x`"),
    ("check_gated_block", _block_with(lambda block, x, image: GatedBlock.forward(block, x, image).float()),
     "wrong_dtype", "torch.float32"),
    ("check_gated_block", _block_with(lambda block, x, image: GatedBlock.forward(block, x, image).numpy()),
     "wrong_type", "numpy.ndarray"),
    ("check_resample", returns_numpy(resample), "wrong_type", "numpy.ndarray (its values are right"),
    ("check_resample", returns_list(resample), "wrong_type", "list"),
    ("check_resample", batch_one_only(resample), "batch_one_only", "right for a batch of 1"),
    ("check_resample", batch_one_only_raising(resample), "batch_one_only", "right for a batch of 1"),
    ("check_resample", casts_to(resample, torch.float32), "wrong_dtype", "torch.float32"),
    ("check_resample", mutates_input(resample, 0), "mutated_input", "`latents`"),
    ("check_resample", mutates_input(resample, 1), "mutated_input", "`features`"),
]


def _first(image: Memory) -> Memory:
    return Memory(image.states[:1], None if image.mask is None else image.mask[:1])


@pytest.mark.parametrize(("name", "wrong", "mistake", "phrase"), GENERIC)
def test_generic_mistakes_are_diagnosed(name, wrong, mistake, phrase) -> None:
    assert_diagnosed(CHECKS[name][0](wrong), mistake, phrase)


# --- exercise 1: the mask of two sources ------------------------------------------------------------------------------

def _ones(ids, n):
    return torch.ones(ids.shape[0], n, dtype=torch.bool)


def _by_lengths(ids, n, pad_id=0):
    lengths = (ids != pad_id).sum(dim=1)
    words = torch.arange(ids.shape[1]).expand(ids.shape[0], -1) < lengths[:, None]
    return torch.cat([_ones(ids, n), words], dim=1).unsqueeze(1).unsqueeze(2)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda ids, n, pad_id=0: torch.cat([torch.zeros(ids.shape[0], n, dtype=torch.bool), ids == pad_id],
                                        dim=1)[:, None, None], "inverted", "marks the padding as True"),
    (lambda ids, n, pad_id=0: torch.cat([_ones(ids, n), ids.eq(pad_id)], dim=1)[:, None, None],
     "question_padding_true", "True at the padding"),
    (lambda ids, n, pad_id=0: torch.cat([ids != pad_id, _ones(ids, n)], dim=1).view(ids.shape[0], 1, 1, -1),
     "question_first", "image first"),
    (lambda ids, n, pad_id=0: padding_mask_from_ids(ids, pad_id), "image_left_out", "covers the question only"),
    (lambda ids, n, pad_id=0: (ids == pad_id)[:, None, None], "image_left_out", "[B, 1, 1, Q]"),
    (lambda ids, n, pad_id=0: torch.cat([_ones(ids, n) & False, ids != pad_id], dim=1)[:, None, None],
     "image_masked_out", "hides every image patch"),
    (lambda ids, n, pad_id=0: torch.cat([_ones(ids, n), ids != pad_id], dim=1), "no_broadcast_dims",
     "add the two broadcast axes"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n, pad_id).to(torch.float32), "numeric_mask", "bool"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n, pad_id).long(), "numeric_mask", ".long()"),
    (lambda ids, n, pad_id=0: 1 - two_source_mask(ids, n, pad_id).int(), "wrong_dtype", "expected torch.bool"),
    (lambda ids, n, pad_id=0: torch.where(two_source_mask(ids, n, pad_id), 0.0, float("-inf")), "additive_mask",
     "additive mask"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n), "pad_id_ignored", "pad_id = 3"),
    (_by_lengths, "assumes_padding_at_the_end", "padded on the left"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n, pad_id)[:, 0], "wrong_shape", "expected [3, 1, 1, 10]"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n + 1, pad_id), "wrong_shape", "expected [3, 1, 1, 10]"),
    (lambda ids, n, pad_id=0: two_source_mask(ids, n, pad_id) & (torch.arange(n + ids.shape[1]) != n), None,
     "differs from the reference"),
])
def test_hand_written_mask_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson11.check_two_source_mask(wrong), mistake, phrase)


def test_mask_cases_hold_the_edge_cases() -> None:
    cases = lesson11.MASK_CASES
    real = [case.args[0] != (case.args[2] if len(case.args) > 2 else 0) for case in cases]
    assert any(case.args[0].shape[0] == 1 for case in cases)
    assert any(bool(r.all()) for r in real)  # a question with no padding
    assert any(bool((r.sum(dim=1) == 1).any()) and r.shape[1] >= 5 for r in real)  # one that is mostly padding
    assert any(bool((~r[:, 0]).any()) for r in real)  # padding on the left
    assert any(len(case.args) > 2 and case.args[2] != 0 and bool((case.args[0] == 0).any()) for case in cases)
    assert all(case.args[1] != case.args[0].shape[1] for case in cases)  # N != Q: shapes tell parts apart


def test_mask_first_case_tells_the_mistakes_apart() -> None:
    args = lesson11.MASK_CASES[0].args
    outputs = [lesson11.two_source_mask_reference(*args)] + [m.wrong(*args) for m in lesson11.MASK_MISTAKES
                                                             if m.name != "pad_id_ignored"]
    keys = {(tuple(o.shape), o.dtype, tuple(o.flatten().tolist())) for o in outputs}
    assert len(keys) == len(outputs) - 1  # the pad_id and padding-at-the-end mistakes show in their own cases
    # the two that agree with the reference here differ from it in another case
    for name in ("pad_id_ignored", "assumes_padding_at_the_end"):
        mistake = next(m for m in lesson11.MASK_MISTAKES if m.name == name)
        assert any(not torch.equal(mistake.wrong(*c.args), lesson11.two_source_mask_reference(*c.args))
                   for c in lesson11.MASK_CASES)


# --- exercise 2: one memory -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda img, q, types: torch.cat([img, q], dim=1), "no_type_embedding", "without the source-type embedding"),
    (lambda img, q, types: torch.cat([img + types.weight[1], q + types.weight[0]], 1), "types_swapped", "swapped"),
    (lambda img, q, types: torch.cat([img, q], 1) + types.weight[0], "image_type_for_both", "both sources got row 0"),
    (lambda img, q, types: torch.cat([img, q], 1) + types(torch.ones(1, dtype=torch.long)), "question_type_for_both",
     "both sources got row 1"),
    (lambda img, q, types: torch.cat([img + types.weight[0], q + types.weight[1]], dim=2), "feature_axis",
     "torch.cat([...], dim=1)"),
    (lambda img, q, types: torch.cat([q + types.weight[1], img + types.weight[0]], dim=1), "question_first",
     "image first"),
    (lambda img, q, types: torch.cat([img + types.weight, q + types.weight], 1), "raised",
     "source_type.weight is the whole table"),
    (lambda img, q, types: concatenated_memory(img, q, types) * 1.01, None, "differs from the reference"),
])
def test_hand_written_memory_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson11.check_concatenated_memory(wrong), mistake, phrase)


def test_memory_cases_have_different_lengths_and_dtypes() -> None:
    cases = lesson11.MEMORY_CASES
    assert all(c.args[0].shape[1] != c.args[1].shape[1] for c in cases)  # N != Q
    assert any(c.args[0].shape[0] == 1 for c in cases) and any(c.args[0].shape[1] == 1 for c in cases)
    assert {c.args[0].dtype for c in cases} == {torch.float32, torch.float64}
    assert all(c.args[2].weight.dtype == c.args[0].dtype for c in cases)


def test_memory_first_case_tells_the_mistakes_apart() -> None:
    args = lesson11.MEMORY_CASES[0].args
    outputs = [lesson11.concatenated_memory_reference(*args)]
    for mistake in lesson11.MEMORY_MISTAKES:
        if mistake.name != "feature_axis":  # it raises: N != Q
            outputs.append(mistake.wrong(*args))
    assert len({(tuple(o.shape), tuple(o.flatten().tolist())) for o in outputs}) == len(outputs)


# --- exercise 3: a gated block --------------------------------------------------------------------------------------

class GatedBlockInPlace(GatedBlock):
    def forward(self, x, image):
        x += torch.tanh(self.alpha) * self.cross(x, image)[0]
        return x


class GatedBlockNoSuper(nn.Module):
    def __init__(self, cross):
        self.cross = cross
        super().__init__()

    def forward(self, x, image):
        return x


class GatedBlockOtherName(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.attn = cross
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x, image):
        return x + torch.tanh(self.alpha) * self.cross(x, image)[0]


class GatedBlockStub(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross = cross
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x, image):
        raise NotImplementedError


class GatedBlockInitStub(nn.Module):
    def __init__(self, cross):
        super().__init__()
        raise NotImplementedError


class GatedBlockNoForward(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.cross = cross


def _forward_of(block, x, image):
    return GatedBlock.forward(block, x, image)


@pytest.mark.parametrize("wrong, mistake, phrase", [
    (_block_with(_forward_of, alpha=lambda: nn.Parameter(torch.full((1,), 0.5))), "gate_open_at_start",
     "must start closed"),
    (_block_with(_forward_of, alpha=lambda: nn.Parameter(torch.full((1,), 1e-8))), "gate_open_at_start",
     "the identity"),
    (_block_with(_forward_of, alpha=lambda: nn.Parameter(torch.randn(1))), "gate_open_at_start", "exactly"),
    (_block_with(lambda b, x, image: (x + b.cross(x, image)[0]) * b.alpha.tanh()), "gate_outside_residual",
     "wipes out x"),
    (_block_with(lambda b, x, image: x + b.alpha * b.cross(x, image)[0]), "no_tanh", "tanh(alpha)"),
    (_block_with(lambda b, x, image: x + b.alpha.sigmoid() * b.cross(x, image)[0]), "sigmoid_gate", "0.5"),
    (_block_with(lambda b, x, image: b.alpha.tanh() * x + b.cross(x, image)[0]), "gate_on_x", "multiplies x"),
    (_block_with(lambda b, x, image: b.alpha.tanh() * b.cross(x, image)[0]), "no_residual", "residual block"),
    (_block_with(_forward_of, alpha=lambda: torch.zeros(1)), "alpha_not_parameter", "plain tensor"),
    (_block_with(_forward_of, alpha=lambda: nn.Parameter(torch.zeros(1), requires_grad=False)),
     "alpha_not_parameter", "nn.Parameter(torch.zeros(1))"),
    (_block_with(lambda b, x, image: x + b.cross(x, image) * torch.tanh(b.alpha)), "cross_output_not_indexed",
     "self.cross(x, image)[0]"),
    (_block_with(lambda b, x, image: (_forward_of(b, x, image), b.cross(x, image)[1])), "returns_pair",
     "returns a pair"),
    (_block_with(lambda b, x, image: x + b.alpha.tanh() * b.cross(x, Memory(image.states, None))[0]),
     "image_mask_dropped", "ignores the image's mask"),
    (GatedBlockInPlace, "mutated_input", "`x`"),
    (GatedBlockNoSuper, "raised", "call super().__init__() first"),
    (GatedBlockOtherName, "raised", "store the sublayer in __init__: self.cross = cross"),
    (_block_with(lambda b, x, image: x + b.cross(x, image)), "raised", "take its first item"),
    (_block_with(lambda b, x, image: x + b.alpha.tanh() * b.cross(x, image.states)[0]), "raised",
     "pass the whole Memory"),
    (_block_with(lambda b, x, image: x + 0.01 * torch.tanh(b.alpha)), None, "differs from the reference"),
])
def test_hand_written_gated_block_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson11.check_gated_block(wrong), mistake, phrase)


def test_a_block_with_its_gate_under_another_name_is_named() -> None:
    class GatedBlockGate(nn.Module):
        def __init__(self, cross):
            super().__init__()
            self.cross = cross
            self.gate = nn.Parameter(torch.zeros(1))

        def forward(self, x, image):
            return x + torch.tanh(self.gate) * self.cross(x, image)[0]

    assert_diagnosed(lesson11.check_gated_block(GatedBlockGate), "gate_not_named_alpha", "no attribute alpha")


def test_an_alpha_in_a_buffer_is_not_trained() -> None:
    class GatedBlockBuffer(GatedBlock):
        def __init__(self, cross):
            nn.Module.__init__(self)
            self.cross = cross
            self.register_buffer("alpha", torch.zeros(1))

    assert_diagnosed(lesson11.check_gated_block(GatedBlockBuffer), "alpha_not_parameter", "the optimiser")


@pytest.mark.parametrize("stub", [GatedBlockStub, GatedBlockInitStub, GatedBlockNoForward])
def test_an_unfinished_block_is_not_done(stub) -> None:
    result = lesson11.check_gated_block(stub)
    assert result.status == "not_done", result


def test_a_block_instead_of_the_class_gets_a_hint() -> None:
    block = GatedBlock(lesson11.BLOCK_CASES[0].args[0])
    assert_diagnosed(lesson11.check_gated_block(block), "wrong_type", "pass the class itself")


def test_block_cases_hold_the_edge_cases() -> None:
    cases = lesson11.BLOCK_CASES
    assert any(c.args[1].shape[0] == 1 for c in cases) and any(c.args[1].shape[0] > 2 for c in cases)
    assert {c.args[1].dtype for c in cases} == {torch.float32, torch.float64}
    assert all(next(c.args[0].parameters()).dtype == c.args[1].dtype for c in cases)
    masks = [c.args[3] for c in cases]
    assert any(m is None for m in masks)
    assert any(m is not None and not bool(m.all()) for m in masks) and all(m is None or bool(m.any(-1).all())
                                                                           for m in masks)
    assert all(c.args[4] == lesson11.GATES for c in cases)


def test_the_reference_block_starts_as_the_identity_and_is_trained() -> None:
    for case in lesson11.BLOCK_CASES:
        opened, trained, identity = lesson11.gated_block_reference(*case.args)
        assert trained and identity
        assert opened.shape == (len(lesson11.GATES), *case.args[1].shape)


# --- exercise 4: latents that read the image --------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, mistake, phrase", [
    (lambda lat, f, attn: attn(f, lat.expand(f.shape[0], -1, -1))[0], "queries_and_source_swapped",
     "the features asked the latents"),
    (lambda lat, f, attn: attn(lat, f)[0], "no_batch_axis", "no batch axis"),
    (lambda lat, f, attn: attn(lat.unsqueeze(0), f)[0], "latents_not_expanded", "right only for one image"),
    (lambda lat, f, attn: attn(lat.expand(len(f), -1, -1), lat.expand(len(f), -1, -1))[0],
     "self_attention_latents", "the image never enters"),
    (lambda lat, f, attn: f.mean(dim=1)[:, None], "mean_of_features", "one vector per image"),
    (lambda lat, f, attn: attn(q := lat.repeat(len(f), 1, 1), torch.cat([q, f], dim=1))[0], "latents_in_keys",
     "Perceiver Resampler"),
    (lambda lat, f, attn: attn(lat.expand(len(f), -1, -1), f), "returns_pair", "return the output only"),
    (lambda lat, f, attn: attn(lat.expand(len(f), -1, -1), f, need_weights=True)[1], "returns_weights",
     "attention weights [B, H, M, N]"),
    (lambda lat, f, attn: F.scaled_dot_product_attention(lat.expand(len(f), -1, -1), f, f), None,
     "differs from the reference"),
])
def test_hand_written_resample_mistakes(wrong, mistake, phrase) -> None:
    assert_diagnosed(lesson11.check_resample(wrong), mistake, phrase)


def test_resample_cases_cover_the_latent_counts() -> None:
    sizes = [(c.args[0].shape[0], c.args[1].shape[1], c.args[1].shape[0]) for c in lesson11.RESAMPLE_CASES]
    assert any(m < n for m, n, _ in sizes) and any(m > n for m, n, _ in sizes) and any(m == 1 for m, _, _ in sizes)
    assert any(b == 1 for _, _, b in sizes) and any(b > 1 for _, _, b in sizes)
    assert {c.args[1].dtype for c in lesson11.RESAMPLE_CASES} == {torch.float32, torch.float64}


def test_resample_first_case_tells_the_mistakes_apart() -> None:
    args = lesson11.RESAMPLE_CASES[0].args
    outputs = [lesson11.resample_reference(*args)]
    for mistake in lesson11.RESAMPLE_MISTAKES:
        try:
            out = mistake.wrong(*args)
        except ValueError:  # the latents without a batch axis, or with a batch of 1
            continue
        outputs.append(out[0] if isinstance(out, tuple) and out[1] is None else out)
    distinct = {(tuple(o.shape), tuple(o.flatten().tolist())) for o in outputs}
    assert len(distinct) == len(outputs) - 1  # returns_pair holds the reference's output
