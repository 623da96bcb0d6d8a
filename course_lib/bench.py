"""The course's benchmark tables: ``python -m course_lib.bench [--quick] [--device cpu|cuda] [--repeats N] [--train]
[--conditioning]``.

Prints two GitHub Markdown tables, ready to paste into the README:

1. hand-written ``scaled_dot_product_attention`` vs ``F.scaled_dot_product_attention`` (forward, no
   grad): median time, time ratio and peak memory of each;
2. ``greedy_decode`` with each cache mode of ``CACHE_MODES``: median time and speedup over ``"none"``,
   after checking that every mode produces the same tokens.

``--conditioning`` prints lesson 09's table instead: five ways to condition a decoder on a
source, each trained for the same time (``conditioning_benchmark``).

``--train`` prints a third table instead: lesson 07's toy translator trained once per seed (time to 95 % and
99 % validation exact match, tokens per second, test scores); see ``training_benchmark``.

The measurements are plain functions returning lists of dicts, so notebooks and tests can reuse them: the
first table's ``attention_benchmark`` lives in ``measure`` with the other measuring helpers the lessons call.
Times are medians of ``repeats`` runs timed with ``time.perf_counter`` after a warm-up run.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from collections.abc import Sequence
from functools import partial

import torch

from .generate import CACHE_MODES, beam_search, greedy_decode
from .measure import attention_benchmark, median_seconds
from .model import Seq2SeqTransformer, TransformerConfig

BOS_ID, FIRST_WORD_ID, VOCAB_SIZE = 1, 3, 200  # pad_id is 0 (the model's default), 2 is left for EOS
FULL = {"attention": dict(batch=32, heads=4, d_head=16, lengths=(128, 512, 1024)),
        "decoding": dict(batch=64, max_src_len=28, new_tokens=(32, 64, 128))}
QUICK = {"attention": dict(batch=4, heads=2, d_head=16, lengths=(32, 128)),
         "decoding": dict(batch=8, max_src_len=10, new_tokens=(4, 8))}


def decoding_setup(
    *, batch: int = 64, max_src_len: int = 28, max_new_tokens: int = 128, vocab_size: int = VOCAB_SIZE,
    device: torch.device | str = "cpu", seed: int = 0,
) -> tuple[Seq2SeqTransformer, torch.Tensor]:
    """An untrained model with the course's default sizes (eval mode) and padded sources ``[batch, max_src_len]``.

    Source lengths are drawn from ``max_src_len // 3 .. max_src_len`` (the first row has the maximum);
    the model's RNG draws happen under ``torch.random.fork_rng``, so the global seed is left alone.
    """
    config = TransformerConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, max_len=max_new_tokens + 32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Seq2SeqTransformer(config).eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    src_lengths = torch.randint(max(1, max_src_len // 3), max_src_len + 1, (batch,), generator=generator)
    src_lengths[0] = max_src_len
    src_ids = torch.randint(FIRST_WORD_ID, vocab_size, (batch, max_src_len), generator=generator)  # [B, S]
    src_ids[torch.arange(max_src_len)[None, :] >= src_lengths[:, None]] = config.pad_id
    return model, src_ids.to(device)


def decoding_benchmark(
    *, batch: int = 64, max_src_len: int = 28, new_tokens: Sequence[int] = (32, 64, 128), repeats: int = 3,
    device: torch.device | str = "cpu", seed: int = 0,
) -> list[dict]:
    """Greedy decoding of exactly ``n`` tokens (no EOS) for each ``n`` in ``new_tokens`` and each cache mode.

    Before timing, every mode decodes ``max(new_tokens)`` tokens (this is also the warm-up) and the tokens
    are asserted identical to ``"none"``'s; shorter runs decode a prefix of these same steps.

    Returns one dict per (n, mode): ``new_tokens``, ``mode``, ``median_s``, ``speedup``
    (``median_s`` of ``"none"`` / this mode's), ``tokens_identical`` (True, else AssertionError) and
    ``max_logit_diff`` (largest ``|logits - logits of "none"|``).
    """
    device = torch.device(device)
    model, src_ids = decoding_setup(batch=batch, max_src_len=max_src_len, max_new_tokens=max(new_tokens),
                                    device=device, seed=seed)
    decode = lambda n, mode: greedy_decode(model, src_ids, bos_id=BOS_ID, max_new_tokens=n, cache=mode)
    reference = {mode: decode(max(new_tokens), mode) for mode in CACHE_MODES}
    logit_diff = {}
    for mode, generation in reference.items():
        assert torch.equal(generation.tokens, reference["none"].tokens), f"cache={mode!r} changed the tokens"
        logit_diff[mode] = (generation.logits - reference["none"].logits).abs().max().item()
    rows = []
    for n in new_tokens:
        times = median_seconds({mode: partial(decode, n, mode) for mode in CACHE_MODES}, repeats, device)
        rows += [dict(new_tokens=n, mode=mode, median_s=t, speedup=times["none"] / t, tokens_identical=True,
                      max_logit_diff=logit_diff[mode]) for mode, t in times.items()]
    return rows


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default all ``r``)."""
    align = align or "r" * len(headers)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = [headers, rule, *[[str(cell) for cell in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def format_attention_table(rows: list[dict]) -> str:
    mib = 2**20
    return markdown_table(
        ["T", "hand-written (ms)", "SDPA (ms)", "hand / SDPA", "hand peak (MiB)", "SDPA peak (MiB)", "max abs diff"],
        [[r["T"], f"{r['hand_s'] * 1e3:.1f}", f"{r['sdpa_s'] * 1e3:.1f}", f"{r['ratio']:.1f}x",
          f"{r['hand_peak_bytes'] / mib:.1f}", f"{r['sdpa_peak_bytes'] / mib:.2f}", f"{r['max_abs_diff']:.1e}"]
         for r in rows])


def format_decoding_table(rows: list[dict]) -> str:
    return markdown_table(
        ["new tokens", "cache", "median (ms)", "speedup vs none", "max abs logit diff vs none"],
        [[r["new_tokens"], f"`{r['mode']}`", f"{r['median_s'] * 1e3:.0f}", f"{r['speedup']:.1f}x",
          f"{r['max_logit_diff']:.1e}"] for r in rows], align="rlrrr")


def header_line(device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} threads (OMP_WAIT_POLICY {policy}), "
            f"{str(dtype).removeprefix('torch.')}, {datetime.date.today().isoformat()}")


def _decoding_threads_text(device: torch.device) -> str:
    from .generate import decoding_threads

    threads = decoding_threads(torch.zeros(1, 1, device=device))
    return "the process's threads" if threads is None else \
        f"{threads} thread{'s' * (threads != 1)} (generate.decoding_threads)"


def _training_threads_text() -> str:
    from .training import TrainConfig, training_threads

    threads = training_threads(TrainConfig())
    return f"training with {threads} thread{'s' * (threads != 1)} (training.training_threads)"


def training_benchmark(*, seeds: Sequence[int] = (0,), time_budget_s: float = 90.0, eval_every: int = 100,
                       device: torch.device | str = "cpu", sizes: dict[str, int] | None = None) -> list[dict]:
    """Train lesson 07's toy translator (``course_lib.training.train_toy_translator``, default recipe, validation
    exact match every ``eval_every`` steps) once per seed, then score it.

    Returns one dict per seed: ``seed``, ``t95_s`` and ``t99_s`` (seconds, evaluation included, until validation
    exact match first reached 95 % / 99 %; None if never), ``seconds`` (the whole run, evaluations included) and
    ``steps`` trained, ``stop_reason``,
    ``tokens_per_s`` (source + target tokens per second of training steps), test ``exact_match``,
    ``token_accuracy`` and ``bleu``, ``generalisation`` exact match, and ``best_head_aer``.
    """
    from .metrics import alignment_scores, evaluate
    from .training import TrainConfig, train_toy_translator

    rows = []
    for seed in seeds:
        config = TrainConfig(time_budget_s=time_budget_s, eval_every=eval_every, seed=seed)
        run = train_toy_translator(seed=seed, config=config, device=device, progress=False, sizes=sizes)
        model, data, history = run.translator.model, run.data, run.history
        test, generalisation = evaluate(model, data["test"]), evaluate(model, data["generalisation"])
        aer = alignment_scores(model, data["test"]).per_head
        rows.append(dict(seed=seed, t95_s=history.time_to(0.95), t99_s=history.time_to(0.99),
                         seconds=history.seconds, steps=history.steps,
                         stop_reason=history.stop_reason, tokens_per_s=history.tokens_per_second,
                         exact_match=test.exact_match, token_accuracy=test.token_accuracy, bleu=test.bleu,
                         generalisation=generalisation.exact_match, best_head_aer=float(aer.min())))
    return rows


def format_training_table(rows: list[dict]) -> str:
    seconds = lambda t: "not reached" if t is None else f"{t:.0f}"
    return markdown_table(
        ["seed", "to 95 % (s)", "to 99 % (s)", "trained (s)", "steps", "stopped by", "tokens/s", "test exact match",
         "test token acc.", "test BLEU", "generalisation exact match", "best head AER"],
        [[r["seed"], seconds(r["t95_s"]), seconds(r["t99_s"]), f"{r['seconds']:.0f}", r["steps"], r["stop_reason"],
          f"{r['tokens_per_s']:,.0f}", f"{r['exact_match']:.1%}", f"{r['token_accuracy']:.1%}", f"{r['bleu']:.1f}",
          f"{r['generalisation']:.1%}", f"{r['best_head_aer']:.3f}"] for r in rows],
        align="rrrrrlrrrrrr")


def training_main(device: torch.device, *, quick: bool, repeats: int) -> None:
    """``--train``: the lesson 07 training table (one row per seed)."""
    budget, sizes = (4.0, {"train": 2_000, "valid": 100, "test": 100, "generalisation": 100}) if quick else (90.0, None)
    print(f"Training benchmark: {header_line(device)}; {_training_threads_text()}; load average "
          f"{os.getloadavg()[0]:.2f} at the start.\n")
    print(f"### Lesson 07 toy translator: time budget {budget:.0f} s, validation exact match every 100 steps\n")
    print(format_training_table(training_benchmark(seeds=range(repeats), time_budget_s=budget, device=device,
                                                   sizes=sizes)))
    print("\nSeconds count from the first training step: data preparation excluded, validation decoding included. "
          "Tokens/s: source + target tokens (no padding) per second spent in training steps.")


def captioning_benchmark(*, seeds: Sequence[int] = (0,), device: torch.device | str = "cpu",
                         sizes: dict[str, int] | None = None, eval_every: int = 100,
                         max_steps: int = 1500) -> list[dict]:
    """Lesson 10: a captioner trained per seed (``captioning.train_captioner``: lesson 07's recipe, stopping at 99 %
    validation exact match or ``max_steps``; nothing read from or written to the cache), scored on the test and
    generalisation splits, and its cross-attention heads' grounding on the test split. One dict per seed."""
    from .captioning import caption_data, grounding_by_head, train_captioner
    from .metrics import exact_match, translate_data
    from .training import TrainConfig

    rows = []
    for seed in seeds:
        data = caption_data(seed, sizes)
        config = TrainConfig(max_steps=max_steps, eval_every=eval_every, time_budget_s=600.0, target_exact_match=0.99,
                             repeat_long_from=None, seed=seed)
        trained, history = train_captioner(data, seed=seed, config=config, device=device, progress=False)
        score = {name: exact_match(translate_data(trained.model, data[name]), [list(e.target) for e in
                                                                              data[name].examples])
                 for name in ("test", "generalisation")}
        grounding = grounding_by_head(trained.model, data["test"])  # [layers, heads]
        best = divmod(int(grounding.argmax()), grounding.shape[1])
        rows.append(dict(seed=seed, t95_s=history.time_to(0.95), t99_s=history.time_to(0.99), seconds=history.seconds,
                         steps=history.steps, stop_reason=history.stop_reason,
                         images_per_s=history.steps * config.batch_size / history.train_seconds,
                         exact_match=score["test"], generalisation=score["generalisation"],
                         best_head=best, best_grounding=float(grounding.max()),
                         worst_grounding=float(grounding.min())))
    return rows


def format_captioning_table(rows: list[dict]) -> str:
    seconds = lambda t: "not reached" if t is None else f"{t:.0f}"
    return markdown_table(
        ["seed", "to 95 % (s)", "to 99 % (s)", "trained (s)", "steps", "stopped by", "images/s", "test exact match",
         "generalisation exact match", "best head (layer, head)", "its grounding", "worst head's grounding"],
        [[r["seed"], seconds(r["t95_s"]), seconds(r["t99_s"]), f"{r['seconds']:.0f}", r["steps"], r["stop_reason"],
          f"{r['images_per_s']:,.0f}", f"{r['exact_match']:.1%}", f"{r['generalisation']:.1%}",
          f"{r['best_head'][0]}, {r['best_head'][1]}", f"{r['best_grounding']:.0%}", f"{r['worst_grounding']:.0%}"]
         for r in rows], align="rrrrrlrrrrrr")


def captioning_main(device: torch.device, *, quick: bool, repeats: int) -> None:
    """``--captioning``: lesson 10's table (seeds 0 .. repeats - 1)."""
    sizes, steps = ({"train": 500, "valid": 50, "test": 50, "generalisation": 20}, 20) if quick else (None, 1500)
    print(f"Captioning benchmark: {header_line(device)}; {_training_threads_text()}; load average "
          f"{os.getloadavg()[0]:.2f} at the start.\n")
    print("### Lesson 10: a captioner over 8x8 patches of 48x48 scenes, validation exact match every 100 steps\n")
    print(format_captioning_table(captioning_benchmark(seeds=range(repeats), device=device, sizes=sizes,
                                                       eval_every=10 if quick else 100, max_steps=steps)))
    print("\nSeconds count from the first training step: scene generation excluded, validation decoding included. "
          "Grounding: the share of the test captions' colour and shape words whose most-attended patch is on the "
          "object (a head looking at random: 11 %).")


def conditioning_benchmark(*, seeds: Sequence[int] = (0,), time_budget_s: float = 40.0,
                           device: torch.device | str = "cpu", sizes: dict[str, int] | None = None,
                           n_long: int = 600) -> list[dict]:
    """Lesson 09: every kind of ``conditioning.CONDITIONERS`` trained for the same ``time_budget_s`` per seed
    (``conditioning.train_conditioner``, nothing read from or written to the cache), then scored on the test split
    plus ``n_long`` extra long sentences (``conditioning.evaluation_sets``).

    Returns one dict per (kind, seed): ``kind``, ``seed``, ``parameters``, ``steps``, ``tokens_per_s``,
    ``exact_match`` (test split), ``buckets`` (exact match by source length over test + long sentences).
    """
    from .conditioning import (
        CONDITIONERS,
        correct_by_example,
        evaluation_sets,
        exact_match_by_bucket,
        train_conditioner,
    )
    from .training import toy_data

    rows = []
    for seed in seeds:
        data = toy_data(seed, sizes)[0]
        sets = evaluation_sets(data, seed, n_long)
        for kind in CONDITIONERS:
            trained = train_conditioner(kind, data, seed=seed, time_budget_s=time_budget_s, device=device,
                                        progress=False)
            correct = {name: correct_by_example(trained.model, d) for name, d in sets.items()}
            lengths = torch.cat([sets["test"].src_lengths, sets["long"].src_lengths])
            rows.append(dict(kind=kind, seed=seed, parameters=trained.info["parameters"], steps=trained.info["steps"],
                             tokens_per_s=trained.info["tokens_per_second"],
                             exact_match=correct["test"].float().mean().item(),
                             buckets=exact_match_by_bucket(lengths, torch.cat([correct["test"], correct["long"]]))))
    return rows


def mean_range_cell(values: Sequence[float | None], percent: bool = True) -> str:
    """The mean of ``values`` (None skipped), with the range when there are several: "93 (90–95)"; "—" if none."""
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    show = (lambda v: f"{100 * v:.0f}") if percent else (lambda v: f"{v:,.0f}")
    mean = sum(present) / len(present)
    return show(mean) + (f" ({show(min(present))}–{show(max(present))})" if len(present) > 1 else "")


def format_conditioning_table(rows: list[dict]) -> str:
    """One row per kind: the mean over seeds, with the range when there are several."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    buckets = list(rows[0]["buckets"])

    table = []
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        table.append([kind, f"{mine[0]['parameters']:,}", mean_range_cell([r["steps"] for r in mine], False),
                      mean_range_cell([r["tokens_per_s"] for r in mine], False),
                      mean_range_cell([r["exact_match"] for r in mine]),
                      *[mean_range_cell([r["buckets"][b] for r in mine]) for b in buckets]])
    return markdown_table(["model", "parameters", "steps", "tokens/s", "test EM %", *[f"{b} words" for b in buckets]],
                          table, align="lrrrr" + "r" * len(buckets))


def conditioning_main(device: torch.device, *, quick: bool, repeats: int) -> None:
    """``--conditioning``: lesson 09's table (seeds 0 .. repeats - 1)."""
    budget, sizes, n_long = (3.0, {"train": 2_000, "valid": 50, "test": 200, "generalisation": 10}, 40) if quick \
        else (40.0, None, 600)
    print(f"Conditioning benchmark: {header_line(device)}; {_training_threads_text()}; load average "
          f"{os.getloadavg()[0]:.2f} at the start.\n")
    print(f"### Lesson 09: five ways to condition on the source, {budget:.0f} s of training each, "
          f"seed{'s' * (repeats > 1)} {', '.join(map(str, range(repeats)))}\n")
    print(format_conditioning_table(conditioning_benchmark(seeds=range(repeats), time_budget_s=budget, device=device,
                                                           sizes=sizes, n_long=n_long)))
    print("\nExact match (EM) in %: mean over seeds (range). Test EM on the test split; by length on the test split "
          f"plus {n_long} extra sentences of 16-23 words. Tokens/s: source + target tokens per second of training.")


def peer_model(model: Seq2SeqTransformer):
    """A Hugging Face ``transformers`` BART of the same sizes as ``model`` (layers, width, heads, feed-forward,
    vocabulary; random weights from a config, nothing downloaded), set up to generate without an end token.

    The two parameterisations differ (BART: post-norm, learned positions, shared embeddings), so no weights are
    copied: the comparison is of the same amount of arithmetic, not of the same numbers.
    Raises ``ImportError`` when ``transformers`` is not installed (``pip install course_lib[bench]``).
    """
    from transformers import BartConfig, BartForConditionalGeneration

    c = model.config
    config = BartConfig(vocab_size=c.tgt_vocab_size, d_model=c.d_model, encoder_layers=c.n_encoder_layers,
                        decoder_layers=c.n_decoder_layers, encoder_attention_heads=c.n_heads,
                        decoder_attention_heads=c.n_heads, encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff,
                        max_position_embeddings=c.max_len, activation_function=c.activation, pad_token_id=c.pad_id,
                        bos_token_id=BOS_ID, eos_token_id=2, decoder_start_token_id=BOS_ID, forced_eos_token_id=None,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peer = BartForConditionalGeneration(config).eval().to(next(model.parameters()).device)
    generation = peer.generation_config  # generate() reads unset arguments from here: no end token, plain search
    generation.eos_token_id = generation.forced_eos_token_id = generation.forced_bos_token_id = None
    generation.no_repeat_ngram_size, generation.early_stopping, generation.length_penalty = 0, False, 1.0
    return peer


def peer_benchmark(*, batch: int = 64, max_src_len: int = 28, new_tokens: Sequence[int] = (8, 32, 128),
                   beam_size: int = 4, repeats: int = 3, device: torch.device | str = "cpu") -> list[dict]:
    """``course_lib``'s cached greedy decoding and beam search against the same-sized ``transformers`` BART's
    cached ``generate()`` (``peer_model``), for the same sources, ``n`` new tokens each, no end token; runs
    interleaved (``measure.median_seconds``). Returns one dict per (search, n): ``search``, ``new_tokens``,
    ``ours_s`` (on the process's thread count, as the peer), ``peer_s``, ``ratio`` (peer / ours: above 1, ours is
    faster), ``ours_rule_s`` (course_lib on its own thread count, ``generate.decoding_threads``) and
    ``rule_ratio`` (peer / that)."""
    device = torch.device(device)
    model, src_ids = decoding_setup(batch=batch, max_src_len=max_src_len, max_new_tokens=max(new_tokens),
                                    device=device)
    peer, mask = peer_model(model), src_ids != model.config.pad_id
    same = torch.get_num_threads()  # the peer's thread count
    searches = {"greedy": 1, f"beam {beam_size}": beam_size}
    rows = []
    for search, k in searches.items():
        for n in new_tokens:
            ours = (lambda threads, n=n: greedy_decode(model, src_ids, bos_id=BOS_ID, max_new_tokens=n,
                                                       threads=threads)) if k == 1 else \
                (lambda threads, n=n, k=k: beam_search(model, src_ids, bos_id=BOS_ID, eos_id=None, beam_size=k,
                                                       max_new_tokens=n, threads=threads))
            theirs = lambda n=n, k=k: peer.generate(input_ids=src_ids, attention_mask=mask, max_new_tokens=n,
                                                    min_new_tokens=n, num_beams=k, do_sample=False, use_cache=True)
            runs = {"ours": partial(ours, same), "ours_rule": partial(ours, None), "peer": theirs}
            with torch.no_grad():
                for run in runs.values():
                    run()  # warm-up
                times = median_seconds(runs, repeats, device)
            rows.append(dict(search=search, new_tokens=n, ours_s=times["ours"], peer_s=times["peer"],
                             ratio=times["peer"] / times["ours"], ours_rule_s=times["ours_rule"],
                             rule_ratio=times["peer"] / times["ours_rule"]))
    return rows


def peer_main(device: torch.device, *, quick: bool, repeats: int) -> None:
    """``--peer``: the table against Hugging Face ``transformers`` (skipped, saying so, when it is not installed)."""
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: `pip install course_lib[bench]` (or `pip install transformers`) "
              "to compare with it; skipping the peer table.")
        return
    batch, new_tokens = (8, (4, 8)) if quick else (64, (8, 32, 128))
    print(f"Peer benchmark: {header_line(device)}; transformers {transformers.__version__}; load average "
          f"{os.getloadavg()[0]:.2f} at the start; median of {repeats} interleaved runs after a warm-up.\n")
    print(f"### Decoding {batch} sources of up to 28 tokens, no end token: course_lib vs a same-sized BART\n")
    rows = peer_benchmark(batch=batch, new_tokens=new_tokens, repeats=repeats, device=device)
    rule = _decoding_threads_text(device)
    print(markdown_table(["search", "new tokens", "transformers (ms)", "course_lib, same threads (ms)", "ratio",
                          f"course_lib, {rule} (ms)", "ratio"],
                         [[r["search"], r["new_tokens"], f"{1e3 * r['peer_s']:.0f}", f"{1e3 * r['ours_s']:.0f}",
                           f"{r['ratio']:.2f}x", f"{1e3 * r['ours_rule_s']:.0f}", f"{r['rule_ratio']:.2f}x"]
                          for r in rows], align="lrrrrrr"))
    print("\nratio: transformers' time / course_lib's (above 1: course_lib is faster).")


THREAD_SETTINGS = {  # name: (environment, intra-op threads); the environment must be set before torch loads
    "2 threads, waiting threads sleep (OMP_WAIT_POLICY=PASSIVE)": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "2 threads, waiting threads spin (OMP_WAIT_POLICY=ACTIVE)": ({"OMP_WAIT_POLICY": "ACTIVE"}, 2),
    "1 thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
}
_THREAD_PROBE = """
import sys, time, torch, torch.nn.functional as F
from course_lib import training
from course_lib.model import Seq2SeqTransformer
torch.set_num_threads(int(sys.argv[1]))
data, sv, tv = training.toy_data(0, {"train": 6000, "valid": 10, "test": 10, "generalisation": 10})
torch.manual_seed(0)
model = Seq2SeqTransformer(training.toy_model_config(sv, tv))
opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
batches = list(data["train"].batches(64, generator=torch.Generator().manual_seed(0)))[:int(sys.argv[2]) + 10]
for i, b in enumerate(batches):
    if i == 10:
        start, tokens = time.perf_counter(), 0
    loss = F.cross_entropy(model(b.src_ids, b.tgt_in).flatten(0, 1), b.tgt_out.flatten(), ignore_index=0)
    opt.zero_grad(); loss.backward(); opt.step()
    tokens = tokens + int((b.src_ids != 0).sum() + (b.tgt_out != 0).sum()) if i >= 10 else 0
print(tokens / (time.perf_counter() - start))
"""


def threads_benchmark(*, steps: int = 80, busy: bool = False) -> list[dict]:
    """Training throughput of lesson 07's model (``steps`` steps after 10 of warm-up, fused Adam) with each of
    ``THREAD_SETTINGS``, each in a fresh Python process; with ``busy``, while another process keeps one core busy.
    Returns one dict per setting: ``setting``, ``busy``, ``tokens_per_s``."""
    import subprocess

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        rows = []
        for name, (env, threads) in THREAD_SETTINGS.items():
            out = subprocess.run([sys.executable, "-c", _THREAD_PROBE, str(threads), str(steps)], check=True,
                                 capture_output=True, text=True, env={**os.environ, **env})
            rows.append(dict(setting=name, busy=busy, tokens_per_s=float(out.stdout.strip().splitlines()[-1])))
        return rows
    finally:
        if hog is not None:
            hog.kill()


def threads_main(*, quick: bool) -> None:
    """``--threads``: training throughput per thread setting, on an idle machine and next to a busy process."""
    steps = 10 if quick else 80
    print(f"Threads benchmark: {header_line(torch.device('cpu'))}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f} at the start; lesson 07's model, {steps} training steps per run.\n")
    rows = threads_benchmark(steps=steps) + threads_benchmark(steps=steps, busy=True)
    n = len(THREAD_SETTINGS)
    table = [[name, f"{rows[i]['tokens_per_s']:,.0f}", f"{rows[i + n]['tokens_per_s']:,.0f}"]
             for i, name in enumerate(THREAD_SETTINGS)]
    print(markdown_table(["setting", "idle machine (tokens/s)", "one other busy process (tokens/s)"], table,
                         align="lrr"))


def fusion_benchmark(*, seeds: Sequence[int] = (0,), sizes: dict[str, int] | None = None,
                     steps: dict[str, int] | None = None, latents: Sequence[int] = (1, 4, 16, 64),
                     encoder: torch.nn.Module | None = None) -> list[dict]:
    """Lesson 11: each fusion model trained per seed with the lesson's recipe (``fusion_runs.train_qa_model``,
    nothing read from or written to the cache), scored on the test split with both sources and with each left out.
    The image features come from lesson 10's captioner (seed 0, frozen, from the cache or trained), or ``encoder``."""
    from .fusion_runs import DEFAULT_STEPS, lesson11_data, scores, train_qa_model
    from .questions import qa_data

    steps = {**DEFAULT_STEPS, **(steps or {})}
    rows = []
    for seed in seeds:
        if encoder is None:
            data = lesson11_data(seed, sizes, progress=False)
        else:
            data = qa_data(seed, sizes)
            for split in data.values():
                split.encode_images(encoder)
        text_only = train_qa_model("text only", data, seed=seed, steps=steps["text only"], progress=False)
        runs = [("concatenation", None), ("separate", None), ("prefix", None), ("text only", None),
                ("gated", None), ("ungated", None), *[("latents", m) for m in latents]]
        for kind, m in runs:
            trained = text_only if kind == "text only" else train_qa_model(
                kind, data, seed=seed, steps=steps[kind], n_latents=m, text_model=text_only.model, progress=False)
            test = data["test"]
            row = dict(model=kind if m is None else f"latents M={m}", seed=seed, steps=trained.info["steps"],
                       parameters=trained.info["parameters"], trainable=trained.info["trainable"],
                       ms_per_step=trained.info["ms_per_step"], scores=scores(trained.model, test))
            if kind in ("concatenation", "separate", "prefix"):
                row["no_image"] = scores(trained.model, test, drop="image")["all"]
                row["no_question"] = scores(trained.model, test, drop="question")["all"]
            if kind == "gated":
                row["gates"] = trained.info["gates"][-1]
            rows.append(row)
    return rows


def format_fusion_table(rows: list[dict]) -> str:
    """One row per model: the mean over seeds, with the range when there are several."""
    from .questions import KINDS

    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        table.append([model, f"{mine[0]['parameters']:,}", f"{mine[0]['trainable']:,}", mine[0]["steps"],
                      mean_range_cell([r["ms_per_step"] for r in mine], False),
                      *[mean_range_cell([r["scores"][k] for r in mine]) for k in (*KINDS, "all")],
                      mean_range_cell([r.get("no_image") for r in mine]),
                      mean_range_cell([r.get("no_question") for r in mine])])
    return markdown_table(["model", "parameters", "trained", "steps", "ms/step", *[f"{k} %" for k in KINDS],
                           "test EM %", "no image %", "no question %"], table, align="lrrrr" + "r" * (len(KINDS) + 3))


def fusion_main(device: torch.device, *, quick: bool, repeats: int) -> None:
    """``--fusion``: lesson 11's table (seeds 0 .. repeats - 1)."""
    from .fusion_runs import LATENT_LEARNING_RATE, LEARNING_RATE

    if device.type != "cpu":
        print("note: lesson 11's models train on the CPU here (the bench measures the course's CPU setting)")
    encoder, sizes, steps, latents = None, None, None, (1, 4, 16, 64)
    if quick:
        from .vision import PatchEncoder

        torch.manual_seed(0)
        encoder = PatchEncoder(image_size=48, patch_size=8, channels=3, d_image=96, n_heads=4, n_layers=1, d_ff=64)
        sizes = {"train": 200, "valid": 20, "test": 40}
        steps = {kind: 3 for kind in ("concatenation", "separate", "prefix", "text only", "gated", "ungated",
                                      "latents")}
        latents = (1, 4)
    print(f"Fusion benchmark: {header_line(torch.device('cpu'))}; {_training_threads_text()}; load average "
          f"{os.getloadavg()[0]:.2f} at the start.\n")
    print(f"### Lesson 11: image + question -> answer; batch 64, learning rate {LEARNING_RATE} (latents: "
          f"{LATENT_LEARNING_RATE}), steps as listed\n")
    rows = fusion_benchmark(seeds=range(repeats), sizes=sizes, steps=steps, latents=latents, encoder=encoder)
    print(format_fusion_table(rows))
    gates = [r["gates"] for r in rows if "gates" in r]
    print("\nTest exact match per question kind and overall; 'no image' / 'no question': overall, with that source "
          "masked out. Gated model's final gates (tanh alpha_attn, tanh alpha_ffn) per block, per seed: "
          + "; ".join(str([tuple(round(g, 2) for g in pair) for pair in seed_gates]) for seed_gates in gates))


@torch.no_grad()
def long_source_benchmark(*, batch: int = 4, heads: int = 4, t_tgt: int = 128, d_head: int = 64,
                          lengths: Sequence[int] = (1024, 4096, 16384, 65536), chunk_size: int = 256,
                          chunks: Sequence[int] = (32, 64, 256, 1024, 4096), sweep_length: int = 16384,
                          hand_up_to: int = 16384, repeats: int = 3, seed: int = 0,
                          device: torch.device | str = "cpu") -> dict[str, list[dict]]:
    """Lesson 12: cross-attention of ``t_tgt`` queries over a long source, forward, no grad, float32, CPU.
    "lengths": peak memory and median time of the hand-written path (up to ``hand_up_to`` keys), the chunked
    path (``chunk_size`` keys at a time) and ``F.scaled_dot_product_attention``, for each source length;
    "chunks": the chunked path at ``sweep_length`` keys for each chunk size. Outputs are checked equal first.
    ``device``: where the tensors live (the bench itself runs on the CPU; lesson 12 passes its device)."""
    import torch.nn.functional as F

    from .attention import scaled_dot_product_attention
    from .long_attention import chunked_attention
    from .measure import peak_memory_bytes

    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    shape = lambda t: torch.randn(batch, heads, t, d_head, generator=gen).to(device)  # noqa: E731
    hand = lambda q, k, v: scaled_dot_product_attention(q, k, v)[0]  # noqa: E731
    rows: dict[str, list[dict]] = {"lengths": [], "chunks": []}
    for t_src in lengths:
        qkv = (shape(t_tgt), shape(t_src), shape(t_src))
        calls = {"chunked": partial(chunked_attention, *qkv, chunk_size=chunk_size),
                 "sdpa": partial(F.scaled_dot_product_attention, *qkv)}
        if t_src <= hand_up_to:
            calls["hand"] = partial(hand, *qkv)
        reference = calls["sdpa"]()
        diff = max(float((fn() - reference).abs().max()) for fn in calls.values())  # also the warm-up
        seconds = median_seconds(calls, repeats=repeats, device=device)
        rows["lengths"].append(dict(t_src=t_src, max_abs_diff=diff, seconds=seconds,
                                    peak_bytes={name: peak_memory_bytes(fn, device) for name, fn in calls.items()}))
    qkv = (shape(t_tgt), shape(sweep_length), shape(sweep_length))
    sdpa_s = median_seconds({"sdpa": partial(F.scaled_dot_product_attention, *qkv)}, repeats=repeats,
                            device=device)["sdpa"]
    for chunk in chunks:
        fn = partial(chunked_attention, *qkv, chunk_size=chunk)
        fn()  # warm-up
        rows["chunks"].append(dict(chunk=chunk, seconds=median_seconds({"c": fn}, repeats=repeats, device=device)["c"],
                                   sdpa_seconds=sdpa_s, peak_bytes=peak_memory_bytes(fn, device)))
    return rows


def format_long_source_tables(rows: dict[str, list[dict]]) -> str:
    mib = lambda b: f"{b / 2**20:,.2f}"  # noqa: E731
    first = markdown_table(
        ["T_src", "hand (ms)", "chunked (ms)", "SDPA (ms)", "chunked / SDPA time", "hand peak (MiB)",
         "chunked peak (MiB)", "SDPA peak (MiB)", "hand / chunked peak", "max abs diff"],
        [[r["t_src"], f"{1000 * r['seconds']['hand']:.1f}" if "hand" in r["seconds"] else "—",
          f"{1000 * r['seconds']['chunked']:.1f}", f"{1000 * r['seconds']['sdpa']:.1f}",
          f"{r['seconds']['chunked'] / r['seconds']['sdpa']:.2f}x",
          mib(r["peak_bytes"]["hand"]) if "hand" in r["peak_bytes"] else "—", mib(r["peak_bytes"]["chunked"]),
          mib(r["peak_bytes"]["sdpa"]),
          f"{r['peak_bytes']['hand'] / r['peak_bytes']['chunked']:.1f}x" if "hand" in r["peak_bytes"] else "—",
          f"{r['max_abs_diff']:.1e}"] for r in rows["lengths"]], align="r" * 10)
    second = markdown_table(
        ["chunk (keys)", "time (ms)", "time / SDPA's", "peak (MiB)"],
        [[r["chunk"], f"{1000 * r['seconds']:.1f}", f"{r['seconds'] / r['sdpa_seconds']:.2f}x",
          mib(r["peak_bytes"])] for r in rows["chunks"]], align="rrrr")
    return first + "\n\nChunk sizes:\n\n" + second


# Lesson 12, retrieval: target segments packed into the queries, their retrieved passages into the keys.
RETRIEVAL_SIZES = {
    "RETRO-like: 16 chunks of 64 tokens, 2 neighbours of 128 each": dict(
        segment_lengths=[[64] * 16] * 2, passage_lengths=[[[128, 128]] * 16] * 2, heads=4, d_head=64),
    "documents: 3-6 segments of 64-256 tokens, 1-3 passages of 128-512, shuffled": dict(
        segment_lengths=[[216, 145, 203], [79, 160, 92, 215, 240, 83]],
        passage_lengths=[[[433, 288], [386, 395, 256], [151]], [[424], [166, 310], [511, 239], [190, 482, 476],
                                                                 [129, 403], [172, 290, 153]]],
        heads=4, d_head=64, shuffle_passages=True),
}
QUICK_RETRIEVAL_SIZES = {"tiny": dict(segment_lengths=[[16, 24], [20]], passage_lengths=[[[40], [30, 20]], [[50]]],
                                      heads=2, d_head=16)}
QUICK_NESTED_SWEEP = (dict(name="tiny, ragged", query_lengths=[4] * 4, source_lengths=[5, 11, 3, 1]),
                      dict(name="one long, many short", query_lengths=[8] * 8, source_lengths=[8] * 7 + [256]))


def document_isolation_benchmark(*, quick: bool, repeats: int) -> dict:
    """Lesson 12's retrieval tables: ``retrieval.time_document_attention`` for each size (``"sizes"``: name -> rows;
    quick: one tiny size, no compiled flex), the first compiled call in fresh processes with an empty and then a
    filled inductor cache (``"compile"``: cold and warm seconds on the first size; None when quick), and
    ``retrieval.time_nested_vs_padded`` over its sweep (``"nested"``)."""
    import tempfile

    from .retrieval import (
        BACKENDS,
        NESTED_SWEEP,
        compile_seconds_in_fresh_process,
        packed_retrieval_batch,
        time_document_attention,
        time_nested_vs_padded,
    )

    sizes = QUICK_RETRIEVAL_SIZES if quick else RETRIEVAL_SIZES
    backends = BACKENDS[:-1] if quick else BACKENDS
    result: dict = {"sizes": {}, "compile": None}
    if not quick:
        spec = next(iter(sizes.values()))
        with tempfile.TemporaryDirectory(prefix="inductor-cold-") as folder:
            result["compile"] = {"cold": compile_seconds_in_fresh_process(spec, folder),
                                 "warm": compile_seconds_in_fresh_process(spec, folder)}
    for name, spec in sizes.items():
        batch = packed_retrieval_batch(**spec)
        result["sizes"][name] = dict(shape=(tuple(batch.q.shape), batch.k.shape[2]),
                                     rows=time_document_attention(batch, backends=backends, repeats=repeats))
    result["nested_shape"] = dict(heads=2, d_head=16) if quick else dict(heads=4, d_head=64)
    result["nested"] = time_nested_vs_padded(QUICK_NESTED_SWEEP if quick else NESTED_SWEEP, repeats=repeats,
                                             packed_flex=not quick, **result["nested_shape"])
    return result


def format_document_isolation_table(rows: list[dict]) -> str:
    mib, names = 2**20, {"mask": "hand-written + dense mask", "sdpa": "SDPA + dense mask", "flex": "flex, eager",
                         "flex_compiled": "flex, compiled"}
    return markdown_table(
        ["backend", "time (ms)", "peak (MiB)", "first call (s)", "mask build (ms)", "mask (KiB)", "tiles skipped",
         "max abs diff"],
        [[names[r["backend"]], f"{1000 * r['seconds']:.1f}", f"{r['peak_bytes'] / mib:.1f}",
          f"{r['first_call_s']:.2f}", f"{1000 * r['mask_build_s']:.1f}", f"{r['mask_bytes'] / 1024:,.1f}",
          "—" if r["blocks_skipped"] is None else f"{r['blocks_skipped']:.1%}", f"{r['max_abs_diff']:.1e}"]
         for r in rows], align="lrrrrrrr")


def format_nested_table(rows: list[dict]) -> str:
    mib, ms = lambda b: f"{b / 2**20:.1f}", lambda s: f"{1000 * s:.1f}"  # noqa: E731
    names = {"nested": "nested", "padded": "padded", "padded_math": "padded, math kernel", "loop": "loop",
             "packed_flex": "packed + flex compiled"}
    methods = [m for m in names if m in rows[0]["seconds"]]
    return markdown_table(
        ["sources", "items", "keys (total / longest)", "padding", *(f"{names[m]} (ms)" for m in methods),
         "nested / padded", f"peak MiB ({' / '.join(names[m] for m in methods)})",
         f"packing ms ({' / '.join(names[m] for m in methods if m in rows[0]['build_seconds'])})", "max abs diff"],
        [[r["name"], r["items"], f"{r['total_keys']:,} / {r['longest']:,}", f"{r['padding']:.0%}",
          *(ms(r["seconds"][m]) for m in methods), f"{r['seconds']['nested'] / r['seconds']['padded']:.1f}x",
          " / ".join(mib(r["peak_bytes"][m]) for m in methods),
          " / ".join(ms(t) for t in r["build_seconds"].values()), f"{r['max_abs_diff']:.1e}"]
         for r in rows], align="lrrr" + "r" * (len(methods) + 4))


def _compile_payoff_text(compile_s: dict | None, rows: list[dict]) -> str:
    """When compiling flex pays off on the first size: calls until the compile is repaid against each other path."""
    if compile_s is None:
        return "Compiled flex skipped with --quick (its first compile takes tens of seconds)."
    seconds = {r["backend"]: r["seconds"] for r in rows}
    saved = {name: seconds[name] - seconds["flex_compiled"] for name in ("mask", "sdpa", "flex")}
    calls = lambda compile_time: ", ".join(  # noqa: E731
        f"{name} {compile_time / gain:,.0f}" if gain > 0 else f"{name} never" for name, gain in saved.items())
    return (f"Compiled flex, first call in a fresh process (compile + one run, first size): "
            f"{compile_s['cold']:.1f} s with an empty inductor cache (cold), {compile_s['warm']:.1f} s with the cache "
            f"that run left (warm). Calls until compiling pays for itself, against hand-written (mask), SDPA and "
            f"eager flex: cold {calls(compile_s['cold'])}; warm {calls(compile_s['warm'])}.")


def long_main(*, quick: bool, repeats: int) -> None:
    """``--long``: lesson 12's tables (cross-attention over long sources, forward, CPU)."""
    options = dict(lengths=(64, 256), chunks=(16, 64), sweep_length=256, hand_up_to=256, t_tgt=8) if quick else {}
    print(f"Long-source benchmark: {header_line(torch.device('cpu'))}; median of {repeats} runs after a warm-up; "
          f"load average {os.getloadavg()[0]:.2f} at the start.\n")
    print(f"### Cross-attention over a long source (B=4, H=4, T_tgt={options.get('t_tgt', 128)}, d_head=64, float32, "
          "forward, no grad)\n")
    print(format_long_source_tables(long_source_benchmark(repeats=repeats, **options)))
    print("\nChunked: course_lib.long_attention.chunked_attention, exact (online softmax); peak memory from the "
          "profiler's allocator events, output included.")
    retrieval = document_isolation_benchmark(quick=quick, repeats=repeats)
    for name, size in retrieval["sizes"].items():
        (b, h, t_q, d), t_k = size["shape"]
        print(f"\n### Retrieval with document isolation: {name} (B={b}, H={h}, T_q={t_q}, T_k={t_k}, d_head={d}, "
              "float32, forward)\n")
        print(format_document_isolation_table(size["rows"]))
    compiled = [r for size in retrieval["sizes"].values() for r in size["rows"] if r["backend"] == "flex_compiled"]
    print("\nEach path's mask is built once (mask build) and reused, as a model reuses it in every layer; time and "
          "peak exclude it. First call: the warm-up, timed alone (compiled flex: its compile in this process; a later "
          "size recompiles for new shapes)"
          + (f"; inductor cache before it: {compiled[0]['inductor_cache']}." if compiled else ".")
          + " Tiles: 128 x 128 (query x key) blocks of the BlockMask that no query of the tile may read.")
    print(_compile_payoff_text(retrieval["compile"], next(iter(retrieval["sizes"].values()))["rows"]))
    shape = retrieval["nested_shape"]
    print(f"\n### Sources of different lengths: nested jagged tensors vs padding (H={shape['heads']}, "
          f"d_head={shape['d_head']}, float32, forward)\n")
    print(format_nested_table(retrieval["nested"]))
    print("\nnested: torch.nested jagged tensors through F.scaled_dot_product_attention; padded: padded to the "
          "longest source with a key padding mask, SDPA's default kernel; padded, math kernel: the same forced onto "
          "SDPA's math kernel; loop: one SDPA call per item; packed + flex compiled (not with --quick): every item "
          "in one row, labelled with its item, through compiled flex with a document BlockMask. Tensors are packed "
          "once (packing ms, BlockMask included) before timing. On a CPU, nested SDPA runs SDPA's math kernel, and "
          "its nested matmuls pad every item to the longest internally (ATen's matmul_nested; its fast path is "
          "CUDA-only), so it cannot save the padding's work here.")
    print(format_approximation_tables(approximation_benchmark(quick=quick)))


def approximation_benchmark(*, quick: bool, seeds: Sequence[int] = (0, 1, 2)) -> dict[int, list[dict]]:
    """Lesson 12's long-document lookup: for each seed, the three readers (softmax, linear, 16 latents) trained
    for their default steps (cached under ``$COURSE_CACHE_DIR/lesson12``) and ``long_docs.approximation_table``
    on 512 test documents of 1 024 tokens. Quick: one seed, 30 steps each, 64 documents of 256 tokens."""
    from . import long_docs

    seeds = seeds[:1] if quick else seeds
    sizes = dict(t_src=256, steps=30) if quick else {}
    tables = {}
    for seed in seeds:
        readers = {kind: long_docs.load_or_train_long_doc_reader(kind, seed, progress=False, **sizes).model
                   for kind in ("softmax", "linear", "latents")}
        test = long_docs.long_doc_data(seed, {"valid": 8, "test": 64 if quick else 512},
                                       t_src=sizes.get("t_src", 1024))["test"]
        tables[seed] = long_docs.approximation_table(readers["softmax"], test, linear_model=readers["linear"],
                                                     latent_model=readers["latents"],
                                                     half_widths=(8, 32, 128) if quick else (32, 128, 512))
    return tables


def format_approximation_tables(tables: dict[int, list[dict]]) -> str:
    seeds = list(tables)
    first = tables[seeds[0]]
    rows = [[r["name"], mean_range_cell([t[i]["accuracy"] for t in tables.values()]),
             mean_range_cell([t[i]["exact_match"] for t in tables.values()]), f"{r['multiply_adds']:,}",
             f"{statistics.median(t[i]['ms'] for t in tables.values()):.1f}"] for i, r in enumerate(first)]
    return (f"\n### Long-document lookup: accuracy against cost (seeds {', '.join(map(str, seeds))}; mean, range)\n\n"
            + markdown_table(["reader / attention", "queries right", "documents entirely right",
                              "multiply-adds per head", "ms (median)"], rows, align="lrrrr")
            + "\n\nThe softmax-trained reader with each approximation swapped in, then the reader trained with linear "
              "attention and the one reading 16 Perceiver latents (course_lib.long_docs). Multiply-adds: "
              "long_attention.attention_multiply_adds for 8 queries, d_head 32; ms: the attention core alone, "
              "one thread, top-k and windows computed as masks over the full scores.")


def order_main(device: torch.device, *, quick: bool) -> None:
    """``--order``: lesson 13's experiments over seeds 0, 1, 2 (``order_runs.order_benchmark``)."""
    from .order_runs import order_benchmark

    print(f"Order and time benchmark: {header_line(device)}; one thread for training.")
    print(format_order_tables(order_benchmark(quick=quick, device=device)))


def _pct(values: Sequence[float | None]) -> str:
    """Mean and range in percent with one decimal: "99.4 (99.2–99.6)"; "—" if none."""
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    mean = 100 * sum(present) / len(present)
    spread = f" ({100 * min(present):.1f}–{100 * max(present):.1f})" if len(present) > 1 else ""
    return f"{mean:.1f}{spread}"


def _grouped(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return groups


def format_order_tables(result: dict[str, list[dict]]) -> str:
    """The benchmark's four tables: respelling, the toy language from scratch, tuned translators, wait-k."""
    seeds = sorted({r["seed"] for r in result["respelling"]})
    seed_text = f"seeds {', '.join(map(str, seeds))}; mean, range"
    spelling = [[label, mean_range_cell([r["steps_to_90"] for r in rows], False)
                 + f" ({sum(r['steps_to_90'] is None for r in rows)} never)" * any(r["steps_to_90"] is None
                                                                                   for r in rows),
                 _pct([r["test_exact_match"] for r in rows]), _pct([r["long_exact_match"] for r in rows]),
                 mean_range_cell([r["median_first_error"] for r in rows], False)]
                for label, rows in _grouped(result["respelling"]).items()]
    trained = result["respelling"][0]["trained_up_to"]
    scratch = [[label, mean_range_cell([r["steps"] for r in rows], False),
                ", ".join(sorted({r["stop_reason"] for r in rows})), _pct([r["test_exact_match"] for r in rows])]
               for label, rows in _grouped(result["scratch"]).items()]
    tuned = [[label, _pct([r["exact_match"] for r in rows]), _pct([r["order_matters"] for r in rows]),
              _pct([r["order_free"] for r in rows]), _pct([r["guided_head_aer"] for r in rows]),
              _pct([r["best_head_aer"] for r in rows])] for label, rows in _grouped(result["tuned"]).items()]
    waits = sorted({k for r in result["tuned"] for k in r["by_wait"]})
    policies = ["wait-1", "wait-2", "wait-4", "causal encoder", "full source"]
    groups = _grouped(result["tuned"])
    by_wait = [[label] + [_pct([r["by_wait"].get(k, (0, None))[1] for r in groups[label]]) for k in waits]
               for label in policies if label in groups]
    counts = groups[policies[-1]][0]["by_wait"] if policies[-1] in groups else {}
    return (f"\n### Respelling (monotonic): 1.5-2x longer strings ({seed_text})\n\n"
            + markdown_table(["model", "steps to 90 % (teacher-forced, valid)", "test exact match (%)",
                              "longer strings: exact match (%)", "longer: first wrong position (median)"],
                             spelling, align="lrrrr")
            + f"\n\nTrained on 6-16 letters (targets up to {trained} tokens with <eos>), tested on 24-32 letters; "
              "greedy decoding.\n"
            + f"\n### The toy language from scratch, lesson 07's recipe ({seed_text})\n\n"
            + markdown_table(["model", "steps", "stopped by", "test exact match (%)"], scratch, align="lrlr")
            + f"\n\n### Lesson 07's translator tuned for 250 steps ({seed_text})\n\n"
            + markdown_table(["variant", "test exact match (%)", "two or more nouns (%)", "one noun (%)",
                              "AER of head (1, 0) (%)", "best head's AER (%)"], tuned, align="lrrrrr")
            + f"\n\n### Wait-k: exact match by the lookahead a sentence needs ({seed_text})\n\n"
            + markdown_table(["policy"] + [f"needs {k} ({counts.get(k, (0, 0))[0]})" for k in waits], by_wait,
                             align="l" + "r" * len(waits))
            + "\n\nA sentence needs lookahead k when wait-k is the smallest policy that lets every target word "
              "see the source words it is aligned to (order_models.required_wait); in brackets, sentences per "
              "column (test split).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 repeat (for tests)")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3; quick 1)")
    parser.add_argument("--train", action="store_true",
                        help="only the lesson 07 training benchmark (repeats = seeds; quick: a 4 s run)")
    parser.add_argument("--peer", action="store_true",
                        help="only the table against a same-sized Hugging Face BART (needs transformers)")
    parser.add_argument("--threads", action="store_true",
                        help="only the thread-settings table: training throughput, idle and next to a busy process")
    parser.add_argument("--conditioning", action="store_true",
                        help="only lesson 09's table: five conditioners, same budget (repeats = seeds)")
    parser.add_argument("--captioning", action="store_true",
                        help="only lesson 10's table: the captioner's training, accuracy and grounding "
                             "(repeats = seeds)")
    parser.add_argument("--long", action="store_true",
                        help="only lesson 12's tables: cross-attention over long sources, chunked vs SDPA vs hand")
    parser.add_argument("--fusion", action="store_true",
                        help="only lesson 11's table: fusion models, Flamingo's gate and latents (repeats = seeds)")
    parser.add_argument("--order", action="store_true",
                        help="only lesson 13's tables: position biases, wait-k, alignment loss (seeds 0, 1, 2)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        build_parser().error("--device cuda: CUDA is not available")
    device, sizes = torch.device(args.device), QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    load, cpus = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0, os.cpu_count() or 1
    if device.type == "cpu" and load >= cpus / 2:
        print(f"warning: load average {load:.1f} on {cpus} CPUs: other processes compete for the CPU, "
              "so the timings will be slow and noisy", file=sys.stderr)
    if args.train:
        training_main(device, quick=args.quick, repeats=repeats)
        return
    if args.conditioning:
        conditioning_main(device, quick=args.quick, repeats=repeats)
        return
    if args.captioning:
        captioning_main(device, quick=args.quick, repeats=repeats)
        return
    if args.fusion:
        fusion_main(device, quick=args.quick, repeats=repeats)
        return
    if args.long:
        long_main(quick=args.quick, repeats=repeats)
        return
    if args.order:
        order_main(device, quick=args.quick)
        return
    if args.threads:
        threads_main(quick=args.quick)
        return
    if args.peer:
        peer_main(device, quick=args.quick, repeats=repeats)
        return
    print(f"Benchmarks: {header_line(device)}; median of {repeats} run{'s' * (repeats != 1)} after a warm-up.\n")

    a = sizes["attention"]
    print(f"### Attention forward, no grad (B={a['batch']}, H={a['heads']}, d_head={a['d_head']})\n")
    print(format_attention_table(attention_benchmark(**a, repeats=repeats, device=device)))
    print("\nPeak memory: bytes allocated during the call (output included), from the profiler's allocator events.\n")

    d, c = sizes["decoding"], TransformerConfig(VOCAB_SIZE, VOCAB_SIZE)
    print(f"### Greedy decoding, no EOS (B={d['batch']} sources of up to {d['max_src_len']} tokens; untrained model: "
          f"d_model {c.d_model}, {c.n_heads} heads, {c.n_encoder_layers}+{c.n_decoder_layers} layers, "
          f"d_ff {c.d_ff}, vocab {VOCAB_SIZE}; decoding with {_decoding_threads_text(device)})\n")
    decoding_rows = decoding_benchmark(**d, repeats=repeats, device=device)
    identical = all(row["tokens_identical"] for row in decoding_rows)
    print(f"Tokens identical in all {len(CACHE_MODES)} cache modes at {max(d['new_tokens'])} new tokens: "
          f"{'yes' if identical else 'NO'} (asserted before timing).\n")
    print(format_decoding_table(decoding_rows))


if __name__ == "__main__":
    main()
