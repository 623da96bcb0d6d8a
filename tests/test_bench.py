"""The benchmark tables' functions on tiny sizes: structure and sanity only (speed is measured, never asserted)."""
from __future__ import annotations

import pytest
import torch

from course_lib import CACHE_MODES, bench
from course_lib.bench import decoding_benchmark

NEW_TOKENS = (3, 6)


@pytest.fixture(scope="module")
def decoding_rows() -> list[dict]:
    return decoding_benchmark(batch=4, max_src_len=6, new_tokens=NEW_TOKENS, repeats=1)


def test_decoding_lists_every_cache_mode_for_every_length(decoding_rows: list[dict]) -> None:
    assert [(row["new_tokens"], row["mode"]) for row in decoding_rows] == [
        (n, mode) for n in NEW_TOKENS for mode in CACHE_MODES
    ]


def test_decoding_speedup_is_time_of_none_over_time_of_mode(decoding_rows: list[dict]) -> None:
    for n in NEW_TOKENS:
        rows = {row["mode"]: row for row in decoding_rows if row["new_tokens"] == n}
        for row in rows.values():
            assert row["median_s"] > 0
            assert row["speedup"] == pytest.approx(rows["none"]["median_s"] / row["median_s"])
        assert rows["none"]["speedup"] == pytest.approx(1.0)


def test_cache_modes_give_identical_tokens_and_close_logits(decoding_rows: list[dict]) -> None:
    for row in decoding_rows:
        assert row["tokens_identical"] is True
        assert row["max_logit_diff"] < 1e-4


def test_decoding_benchmark_refuses_a_cache_that_changes_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    real_decode = bench.greedy_decode

    def broken_decode(*args, cache: str, **kwargs):
        generation = real_decode(*args, cache=cache, **kwargs)
        if cache == "full":
            generation.tokens = generation.tokens + 1
        return generation

    monkeypatch.setattr(bench, "greedy_decode", broken_decode)
    with pytest.raises(AssertionError, match="full"):
        decoding_benchmark(batch=2, max_src_len=4, new_tokens=(2,), repeats=1)


def test_main_quick_prints_both_markdown_tables(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    assert sum(line.startswith("| ---: |") for line in out.splitlines()) == 2  # one rule line per table
    assert "Tokens identical in all 4 cache modes at 8 new tokens: yes" in out
    for mode in CACHE_MODES:
        assert f"| `{mode}` |" in out


def test_threads_benchmark_measures_every_setting_in_its_own_process() -> None:
    from course_lib import bench

    rows = bench.threads_benchmark(steps=2)
    assert [r["setting"] for r in rows] == list(bench.THREAD_SETTINGS)
    assert all(r["tokens_per_s"] > 0 and r["busy"] is False for r in rows)


def test_peer_benchmark_times_both_searches_against_a_same_sized_bart() -> None:
    pytest.importorskip("transformers")
    from course_lib import bench

    rows = bench.peer_benchmark(batch=2, max_src_len=6, new_tokens=(3,), beam_size=2, repeats=1)
    assert [(r["search"], r["new_tokens"]) for r in rows] == [("greedy", 3), ("beam 2", 3)]
    assert all(r["ours_s"] > 0 and r["peer_s"] > 0 and r["ratio"] == r["peer_s"] / r["ours_s"] for r in rows)
    assert all(r["ours_rule_s"] > 0 and r["rule_ratio"] == r["peer_s"] / r["ours_rule_s"] for r in rows)
    model, _ = bench.decoding_setup(max_new_tokens=8)
    peer = bench.peer_model(model)
    assert peer.config.d_model == model.config.d_model and peer.config.decoder_layers == model.config.n_decoder_layers
    assert peer.generation_config.eos_token_id is None  # no end token: both run every step


def test_peer_benchmark_says_so_without_transformers(monkeypatch, capsys) -> None:
    import builtins

    from course_lib import bench

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("transformers") else real_import(name, *a, **k))
    bench.main(["--peer", "--quick"])
    assert "transformers is not installed" in capsys.readouterr().out


def test_captioning_benchmark_quick_prints_one_row_per_seed(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--captioning", "--quick"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| 0 |")]
    assert len(table) == 1 and "grounding" in out
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[4] == "20" or cells[5] == "target reached"  # 20 steps at most
    assert cells[10].endswith("%") and 0 <= int(cells[10][:-1]) <= 100


def test_fusion_benchmark_quick_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--fusion", "--quick"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line and "model" not in line}
    assert set(rows) == {"concatenation", "separate", "prefix", "text only", "gated", "ungated", "latents M=1",
                         "latents M=4"}
    assert rows["gated"][3] == "3"  # steps
    assert int(rows["gated"][2].replace(",", "")) < int(rows["gated"][1].replace(",", ""))  # the LM is frozen
    assert rows["concatenation"][-1] != "—" and rows["latents M=1"][-1] == "—"
    assert "final gates" in out


def test_long_source_benchmark_quick_checks_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--long", "--quick"])
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    lengths = [r for r in rows if len(r) == 10]
    assert [r[0] for r in lengths] == ["64", "256"] and len(rows) == 4
    assert all(float(r[-1]) < 1e-4 for r in lengths)  # the three paths agree
    assert "T_tgt=8" in out


def test_order_benchmark_quick_prints_every_table(capsys: pytest.CaptureFixture[str], tmp_path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    bench.main(["--order", "--quick"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| :")}
    for label in ("no bias", "learned buckets", "diagonal bias, no encoder positions", "wait-1", "wait-4",
                  "causal encoder", "full source", "alignment loss", "no encoder positions"):
        assert label in rows, label
    assert len(rows["wait-2"]) == 6 and len(rows["no bias"]) in (4, 5)
    assert "Respelling (monotonic)" in out and "Wait-k: exact match by the lookahead" in out
    assert len(list((tmp_path / "lesson13").glob("*.pt"))) == 4 + 8  # respellers and tuned translators cached
