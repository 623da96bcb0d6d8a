"""Lesson 12's long-document task (``course_lib.long_docs``): the documents against a brute-force search, the reader's
shapes and attention cores, the cache, a short training run and the approximation table, on small sizes (no long
training here)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from course_lib import long_docs as ld
from course_lib.long_attention import attention_multiply_adds, exact_core, linear_core, topk_core, use_attention_core

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {"t_src": 64, "n_facts": 6, "n_queries": 4}


def docs(n: int = 8, seed: int = 0, *, t_src: int = 64, n_facts: int = 6, n_queries: int = 4) -> ld.LongDocs:
    return ld.generate_docs(n, t_src, torch.Generator().manual_seed(seed), n_facts=n_facts, n_queries=n_queries)


def brute_force_answers(data: ld.LongDocs) -> list[list[int]]:
    """Each query's answer found by reading the document token by token: the token after the query's key name."""
    answers = []
    for source, queries in zip(data.sources.tolist(), data.queries.tolist()):
        row = []
        for key in queries:
            places = [i for i, token in enumerate(source) if token == key]
            assert len(places) == 1, f"key {key} appears {len(places)} times"
            row.append(source[places[0] + 1])
        answers.append(row)
    return answers


# --- the documents ---------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t_src=st.integers(12, 200), n_facts=st.integers(1, 6), data=st.data())
def test_answers_are_what_a_brute_force_search_of_the_document_finds(seed: int, t_src: int, n_facts: int,
                                                                     data: st.DataObject) -> None:
    n_queries = data.draw(st.integers(1, n_facts))
    t_src = max(t_src, 2 * n_facts)
    d = ld.generate_docs(5, t_src, torch.Generator().manual_seed(seed), n_facts=n_facts, n_queries=n_queries)
    assert d.sources.shape == (5, t_src) and d.queries.shape == d.answers.shape == (5, n_queries)
    assert brute_force_answers(d) == d.answers.tolist()


def test_facts_sit_where_they_say_and_do_not_overlap() -> None:
    d = docs(50, t_src=40, n_facts=12)
    rows = torch.arange(50)[:, None]
    assert torch.equal(d.sources[rows, d.fact_positions], d.fact_keys)
    assert torch.equal(d.sources[rows, d.fact_positions + 1], d.fact_values)
    gaps = d.fact_positions.diff(dim=1)
    assert int(gaps.min()) >= 2  # a key's value is never another fact's key
    assert int(d.fact_positions.min()) >= 0 and int(d.fact_positions.max()) + 1 < 40


def test_token_kinds_are_disjoint_and_keys_unique_per_document() -> None:
    d = docs(200, t_src=64, n_facts=16)
    v = d.vocab
    is_key = (d.sources >= v.first_key) & (d.sources < v.first_value)
    is_value = d.sources >= v.first_value
    assert torch.equal(is_key.sum(dim=1), torch.full((200,), 16))  # keys only where facts are
    assert torch.equal(is_value.sum(dim=1), torch.full((200,), 16))
    for keys in d.fact_keys.tolist():
        assert len(set(keys)) == len(keys)
    assert int(d.sources.max()) < v.size and int(d.sources.min()) >= 0


def test_queries_are_in_document_order_and_distinct() -> None:
    d = docs(100, t_src=64, n_facts=8, n_queries=5)
    for positions, keys, queries in zip(d.fact_positions.tolist(), d.fact_keys.tolist(), d.queries.tolist()):
        where = [positions[keys.index(q)] for q in queries]
        assert where == sorted(where) and len(set(where)) == len(where)


def test_same_seed_same_documents_and_splits_do_not_depend_on_each_other() -> None:
    a = ld.long_doc_data(3, {"valid": 6, "test": 7}, **SMALL)
    b = ld.long_doc_data(3, {"test": 7}, **SMALL)
    c = ld.long_doc_data(4, {"test": 7}, **SMALL)
    assert torch.equal(a["test"].sources, b["test"].sources) and torch.equal(a["test"].answers, b["test"].answers)
    assert not torch.equal(a["test"].sources, c["test"].sources)
    assert not torch.equal(a["valid"].sources, a["test"].sources[:6])


def test_vocabulary_names() -> None:
    v = ld.DocVocabulary()
    assert [v.name(0), v.name(v.first_key + 3), v.name(v.first_value + 7)] == ["w0", "k03", "v07"]
    with pytest.raises(ValueError, match="0..223"):
        v.name(v.size)


@pytest.mark.parametrize(("sizes", "message"), [
    ({"t_src": 11, "n_facts": 6, "n_queries": 2}, "t_src too small.*t_src >= 12.*got t_src=11"),
    ({"t_src": 64, "n_facts": 3, "n_queries": 4}, "n_queries must be <= n_facts.*n_queries=4 > n_facts=3"),
    ({"t_src": 300, "n_facts": 65, "n_queries": 4}, "n_facts must be <= vocab.n_keys=64"),
    ({"t_src": 64, "n_facts": 0, "n_queries": 0}, "n_facts >= 1"),
])
def test_sizes_that_cannot_make_a_document_are_rejected(sizes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ld.long_doc_data(0, {"test": 2}, **sizes)


# --- the reader ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(ld.KINDS))
def test_reader_shapes(kind: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = ld.build_reader(kind, n_latents=5).to(device)
    d = docs(3).to(device)
    logits = model(d.sources, d.queries)
    assert logits.shape == (3, 4, d.vocab.size) and logits.device.type == device.type
    memory = model.read_source(d.sources)
    assert memory.shape == ((3, 5, 64) if kind == "latents" else (3, 64, 64))


def test_exact_core_gives_the_same_outputs_as_no_core() -> None:
    torch.manual_seed(0)
    model = ld.build_reader("softmax").double()
    d = docs(4)
    plain = model(d.sources, d.queries)  # SDPA path
    with use_attention_core(model, exact_core()):  # the course's hand-written attention
        swapped = model(d.sources, d.queries)
    assert_close(swapped, plain, atol=1e-10, rtol=1e-10)
    with use_attention_core(model, linear_core()):  # and a different core does change them (the test can fail)
        assert (model(d.sources, d.queries) - plain).abs().max() > 1e-3


def test_linear_kind_is_the_softmax_reader_with_linear_attention_in_its_cross_attention() -> None:
    torch.manual_seed(0)
    linear = ld.build_reader("linear")
    softmax = ld.build_reader("softmax")
    softmax.load_state_dict(linear.state_dict())
    d = docs(4)
    with use_attention_core(softmax, linear_core()):
        assert_close(linear(d.sources, d.queries), softmax(d.sources, d.queries), atol=1e-6, rtol=1e-5)


def test_queries_do_not_read_each_other() -> None:
    torch.manual_seed(0)
    model = ld.build_reader("softmax")
    d = docs(2)
    logits = model(d.sources, d.queries)
    changed = d.queries.clone()
    changed[:, 1:] = changed[:, :1]  # every query but the first replaced
    assert_close(model(d.sources, changed)[:, 0], logits[:, 0], atol=1e-6, rtol=1e-5)


def test_bad_reader_inputs_are_rejected() -> None:
    model = ld.build_reader("softmax")
    d = docs(2)
    with pytest.raises(ValueError, match="kind must be one of"):
        ld.build_reader("sparse")
    with pytest.raises(ValueError, match="n_latents must be >= 1; got 0"):
        ld.build_reader("latents", n_latents=0)
    with pytest.raises(ValueError, match="n_latents must be None or >= 1; got 0"):
        ld.LongDocConfig(100, n_latents=0)
    with pytest.raises(ValueError, match="int64 token ids"):
        model(d.sources.float(), d.queries)
    with pytest.raises(ValueError, match="same batch size"):
        model(d.sources, d.queries[:1])
    with pytest.raises(ValueError, match="kind must be one of"):
        ld.train_long_doc_reader("sparse", steps=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        ld.run_path("sparse")


# --- training and the cache ------------------------------------------------------------------------------------
def test_stage_lengths_add_up_and_end_on_the_long_documents() -> None:
    assert ld.stage_lengths(1000, 1024, 16) == [(64, 650), (256, 250), (1024, 100)]
    assert ld.stage_lengths(7, 1024, 40) == [(160, 4), (256, 1), (1024, 2)]
    assert ld.stage_lengths(5, 100, 4) == [(64, 3), (100, 2)]  # an empty stage is left out
    assert sum(n for _, n in ld.stage_lengths(333, 512, 8)) == 333


def test_a_short_training_run_lowers_the_loss() -> None:
    trained = ld.train_long_doc_reader("softmax", steps=40, progress=False, batch_size=16,
                                       valid=docs(8), **SMALL)
    loss = trained.info["loss"]
    assert len(loss) == 40 and sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.5  # chance is ln(224) = 5.4, then 3.5
    assert not trained.model.training and trained.info["stages"][-1]["length"] == 64


def test_training_is_deterministic_by_seed() -> None:
    runs = [ld.train_long_doc_reader("linear", seed=seed, steps=3, progress=False, batch_size=4, valid=docs(2),
                                     **SMALL) for seed in (1, 1, 2)]
    assert runs[0].info["loss"] == runs[1].info["loss"] != runs[2].info["loss"]


def test_cache_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    first = ld.load_or_train_long_doc_reader("latents", 0, steps=3, n_latents=3, progress=False, **SMALL)
    path = ld.run_path("latents", seed=0, steps=3, n_latents=3, **SMALL)
    assert path.parent == tmp_path / "lesson12" and path.exists() and not first.info["from_cache"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(ld, "train_long_doc_reader", no_training)
    second = ld.load_or_train_long_doc_reader("latents", 0, steps=3, n_latents=3, progress=False, **SMALL)
    assert second.info["from_cache"] and second.model.config == first.model.config
    d = docs(3)
    assert torch.equal(second.model(d.sources, d.queries), first.model(d.sources, d.queries))


# --- measurements ----------------------------------------------------------------------------------------------
def test_evaluate_counts_queries_and_whole_documents() -> None:
    torch.manual_seed(0)
    model = ld.build_reader("softmax")
    d = docs(6)
    predicted = ld.answer(model, d, batch_size=4)
    right = predicted == d.answers
    scores = ld.evaluate(model, d, batch_size=4)
    assert scores["accuracy"] == pytest.approx(right.float().mean().item())
    assert scores["exact_match"] == pytest.approx(right.all(dim=1).float().mean().item())

    class Oracle(torch.nn.Module):  # answers from the documents themselves: everything right
        def __init__(self, data: ld.LongDocs) -> None:
            super().__init__()
            self.weight, self.data = torch.nn.Parameter(torch.zeros(1)), data

        def forward(self, sources: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
            return F.one_hot(self.data.answers[:len(sources)], self.data.vocab.size).float()

    assert ld.evaluate(Oracle(d), d, batch_size=6) == {"accuracy": 1.0, "exact_match": 1.0}


def test_approximation_table_records() -> None:
    torch.manual_seed(0)
    exact, linear, latents = (ld.build_reader(kind, n_latents=4) for kind in ld.KINDS)
    d = docs(6)
    records = ld.approximation_table(exact, d, linear_model=linear, latent_model=latents, ks=(1, 64),
                                     half_widths=(4,), time_docs=2)
    names = [r["name"] for r in records]
    assert names == ["exact", "top-1", "top-64", "window ±4", "linear, retrofitted", "linear, trained",
                     "latents M=4"]
    assert all(set(r) == {"name", "trained", "kind", "parameter", "accuracy", "exact_match", "multiply_adds", "ms"}
               for r in records)
    by_name = {r["name"]: r for r in records}
    assert by_name["exact"]["accuracy"] == pytest.approx(ld.evaluate(exact, d)["accuracy"])
    assert by_name["top-64"]["accuracy"] == by_name["exact"]["accuracy"]  # k = T_src keeps every key
    with use_attention_core(exact, topk_core(1)):
        assert by_name["top-1"]["accuracy"] == pytest.approx(ld.evaluate(exact, d)["accuracy"])
    assert by_name["exact"]["multiply_adds"] == attention_multiply_adds("exact", 4, 64, 32)
    assert by_name["latents M=4"]["multiply_adds"] == attention_multiply_adds("latents", 4, 64, 32, n_latents=4)
    assert by_name["linear, trained"]["accuracy"] == pytest.approx(ld.evaluate(linear, d)["accuracy"])
    with pytest.raises(ValueError, match="softmax-trained reader"):
        ld.approximation_table(linear, d)
