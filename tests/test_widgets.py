"""The attention and translation explorers, headless: every control redraws, bad input gets a clear message."""
from __future__ import annotations

import base64
import html
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.data import build_vocabularies
from course_lib.model import Seq2SeqTransformer, TransformerConfig
from course_lib.toy_language import ToyLanguage
from course_lib.translator import Translator
from course_lib.widgets import DEFAULT_SENTENCE, MEAN, AttentionExplorer, TranslationExplorer, sentence_words

Q_LABELS, K_LABELS = ["le", "chat", "noir", "dort", "<eos>"], ["the", "black", "cat", "sleeps", ".", "<pad>", "<pad>"]


@pytest.fixture
def explorer() -> AttentionExplorer:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 5, 7, generator=generator)  # [L, H, T_q, T_k]
    mask = torch.tensor([True] * 5 + [False] * 2)  # the last two keys are padding
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return AttentionExplorer(weights, Q_LABELS, K_LABELS, scores=scores, mask=mask, title="test")


def shown_png(explorer: AttentionExplorer) -> bytes:
    (output,) = explorer.output.outputs
    return output["data"]["image/png"]


@pytest.mark.parametrize(
    "control, value", [("layer", 0), ("head", 1), ("query", 3), ("view", "scores"), ("view", "scores after mask")]
)
def test_changing_a_control_redraws_the_figure(explorer: AttentionExplorer, control: str, value: object) -> None:
    before = shown_png(explorer)
    getattr(explorer, control).value = value
    assert len(explorer.output.outputs) == 1, "the old figure is replaced, not appended to"
    assert shown_png(explorer) != before


def test_head_selector_shows_one_head_or_the_mean(explorer: AttentionExplorer) -> None:
    explorer.layer.value = 1
    np.testing.assert_allclose(explorer.selected(), explorer.weights[1].mean(axis=0))
    explorer.head.value = 2
    np.testing.assert_allclose(explorer.selected(), explorer.weights[1, 2])
    assert explorer.head.options[0] == ("mean over heads", MEAN)


def test_save_button_writes_the_current_figure(explorer: AttentionExplorer, tmp_path: Path) -> None:
    explorer.filename.value = str(tmp_path / "heads")
    explorer.save_button.click()
    saved = tmp_path / "heads.png"
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(saved) in explorer.status.value


def test_accepts_a_single_matrix_and_hides_the_layer_selector() -> None:
    explorer = AttentionExplorer(torch.full((2, 3), 1 / 3), ["a", "b"], ["x", "y", "z"])
    assert explorer.weights.shape == (1, 1, 2, 3)
    assert explorer.layer.layout.display == "none" and explorer.view.layout.display == "none"
    assert explorer.query.max == 1


def test_labels_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match=r"T_q=5, T_k=7\]: got 4 query labels and 7 key labels"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS[:4], K_LABELS)


def test_weights_of_the_wrong_rank_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[layers, heads, T_q, T_k\]; got \[1, 2, 3, 5, 7\]"):
        AttentionExplorer(torch.rand(1, 2, 3, 5, 7), Q_LABELS, K_LABELS)


def test_scores_of_another_shape_and_non_bool_masks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"scores must have the weights' shape \[1, 3, 5, 7\]; got \[1, 3, 5, 6\]"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS, K_LABELS, scores=torch.rand(3, 5, 6))
    with pytest.raises(ValueError, match="mask must be bool .* got dtype float32"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS, K_LABELS, mask=np.ones(7, dtype=np.float32))


# --- the translation explorer, on a tiny untrained translator ------------------------------------------
SENTENCE, OTHER = "the small cats saw a happy dog near the river", "a dog sleeps"


@pytest.fixture(scope="module")
def translator() -> Translator:
    """An untrained, seeded model with vocabularies from 300 toy sentences (enough for SENTENCE and OTHER);
    ``max_len=12`` keeps its (random) translations at 11 words or fewer, so figures draw fast."""
    rng = random.Random(0)
    src_vocab, tgt_vocab = build_vocabularies([ToyLanguage().sample(rng)[0] for _ in range(300)])
    assert all(word in src_vocab for word in f"{SENTENCE} {OTHER} {DEFAULT_SENTENCE}".split())
    torch.manual_seed(0)
    config = TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=16, n_heads=2, n_encoder_layers=1,
                               n_decoder_layers=2, d_ff=32, max_len=12)
    return Translator(Seq2SeqTransformer(config).eval(), src_vocab, tgt_vocab)


@pytest.fixture
def translation_explorer(translator: Translator) -> TranslationExplorer:
    return TranslationExplorer(translator, SENTENCE)


def test_the_first_sentence_is_translated_and_drawn(translation_explorer: TranslationExplorer,
                                                    translator: Translator) -> None:
    t = translation_explorer
    assert t.text.value == SENTENCE and t.translation == translator.translate(SENTENCE)
    assert t.explorer is not None and t.widget.children[-1].children == (t.explorer.widget,)
    assert base64.b64decode(shown_png(t.explorer))[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"<b>{html.escape(' '.join(t.translation))}</b>" in t.message.value
    assert f"10 source words &rarr; {len(t.translation)} target words" in t.message.value
    assert "translation-explorer" in t.widget._dom_classes


def test_weights_are_the_models_cross_attention_on_its_own_translation(
        translation_explorer: TranslationExplorer, translator: Translator) -> None:
    t, cfg = translation_explorer, translator.model.config
    n_target, n_source = len(t.translation) + 1, len(SENTENCE.split())
    assert t.weights.shape == (cfg.n_decoder_layers, cfg.n_heads, n_target, n_source)  # [L, H, T+1, S]
    torch.testing.assert_close(t.weights.sum(-1), torch.ones(t.weights.shape[:-1]))
    assert not torch.isnan(t.weights).any()
    tgt_in = torch.tensor([[translator.tgt_vocab.bos_id, *translator.tgt_vocab.encode(t.translation)]])
    _, maps = translator.model.forward_with_attention(translator.source_ids(SENTENCE), tgt_in)
    torch.testing.assert_close(t.weights, torch.stack(maps.decoder_cross)[:, 0])
    np.testing.assert_allclose(t.explorer.weights, t.weights.numpy())


def test_labels_are_the_translation_then_eos_and_the_source_words(translation_explorer: TranslationExplorer) -> None:
    t = translation_explorer
    assert t.explorer.query_labels == [*t.translation, "<eos>"]
    assert t.explorer.key_labels == SENTENCE.split()


def test_translate_a_new_sentence_redraws_everything(translation_explorer: TranslationExplorer,
                                                     translator: Translator) -> None:
    t = translation_explorer
    before_png, before_message, before_explorer = shown_png(t.explorer), t.message.value, t.explorer
    words = t.translate(OTHER)
    assert words == t.translation == translator.translate(OTHER)
    assert t.text.value == OTHER and t.explorer is not before_explorer
    assert t.explorer.key_labels == OTHER.split() and t.explorer.query_labels == [*words, "<eos>"]
    assert t.weights.shape[-2:] == (len(words) + 1, 3)
    assert shown_png(t.explorer) != before_png and t.message.value != before_message
    assert t.widget.children[-1].children == (t.explorer.widget,), "the new explorer replaces the old one"


@pytest.mark.parametrize("typed, unknown, suggestion", [
    ("the dgo sleeps", "dgo", "'dog'"),
    ("a happy dog sleps near the rivr", "sleps", "'sleeps'"),
    ("the dog zzzqx", "zzzqx", "no similar word is known"),
])
def test_unknown_words_get_a_message_not_an_exception(translation_explorer: TranslationExplorer, typed: str,
                                                      unknown: str, suggestion: str) -> None:
    t = translation_explorer
    assert t.translate(typed) == []
    assert f"unknown word '{unknown}'" in t.message.value and suggestion in t.message.value
    assert t.translation == [] and t.weights is None and t.explorer is None
    assert t.widget.children[-1].children == (), "the old figure is cleared"
    assert "Traceback" not in t.message.value and "nan" not in t.message.value.lower()
    if "rivr" in typed:
        assert "unknown word 'rivr' (did you mean 'river'?)" in t.message.value
    assert t.translate(OTHER), "a good sentence afterwards translates again"


@pytest.mark.parametrize("typed", ["", "   ", " . "])
def test_empty_input_asks_for_a_sentence(translation_explorer: TranslationExplorer, typed: str) -> None:
    assert translation_explorer.translate(typed) == []
    assert "type a sentence" in translation_explorer.message.value and translation_explorer.explorer is None


def test_too_long_a_sentence_gets_a_message(translation_explorer: TranslationExplorer) -> None:
    assert translation_explorer.translate("the dog sleeps and " * 4) == []  # 16 words > max_len 12
    assert "too long: this model reads at most 12 words" in translation_explorer.message.value


def test_case_and_punctuation_are_normalised(translation_explorer: TranslationExplorer,
                                             translator: Translator) -> None:
    t = translation_explorer
    assert sentence_words("  The Small CATS, saw a happy dog near the river. ") == SENTENCE.split()
    assert t.translate("  A Dog SLEEPS. ") == translator.translate(OTHER)
    assert t.explorer.key_labels == OTHER.split()


def test_html_in_the_input_is_escaped(translation_explorer: TranslationExplorer) -> None:
    t = translation_explorer
    t.translate("the <i>dog</i> <img src=x onerror=alert(1)> sleeps")
    assert "unknown word" in t.message.value
    assert "<i>" not in t.message.value and "</i" not in t.message.value and "<img" not in t.message.value
    assert "i&gt;dog&lt;/i" in t.message.value


def test_typing_in_the_text_box_translates(translation_explorer: TranslationExplorer,
                                           translator: Translator) -> None:
    translation_explorer.text.value = OTHER  # what the browser sends on Enter (continuous_update=False)
    assert translation_explorer.translation == translator.translate(OTHER)
    assert translation_explorer.explorer.key_labels == OTHER.split()
    assert translation_explorer.text.continuous_update is False


def test_the_button_translates_the_text_box(translation_explorer: TranslationExplorer) -> None:
    t = translation_explorer
    translation = t.translation
    t.translation, t.message.value, t.explorer.output.outputs = [], "", ()
    t.button.click()
    assert t.translation == translation and "<b>" in t.message.value and shown_png(t.explorer)


def test_layer_head_and_query_are_kept_across_sentences(translation_explorer: TranslationExplorer) -> None:
    t = translation_explorer
    assert (t.explorer.layer.value, t.explorer.head.value) == (1, MEAN), "starts on the last layer's mean"
    t.explorer.layer.value, t.explorer.head.value, t.explorer.query.value = 0, 1, 2
    t.translate(OTHER)
    assert (t.explorer.layer.value, t.explorer.head.value, t.explorer.query.value) == (0, 1, 2)
    np.testing.assert_allclose(t.explorer.selected(), t.weights[0, 1].numpy(), rtol=1e-6)
    t.translate("the dgo")  # an error in between keeps the choice too
    t.translate("a dog")
    assert (t.explorer.layer.value, t.explorer.head.value) == (0, 1)
    assert t.explorer.query.value == (2 if t.explorer.query.max >= 2 else 0)


def test_beam_search(translator: Translator) -> None:
    t = TranslationExplorer(translator, OTHER, beam_size=2)
    assert t.translation == translator.translate(OTHER, beam_size=2)
    assert t.weights.shape[-2] == len(t.translation) + 1
    with pytest.raises(ValueError, match="beam_size must be >= 1; got 0"):
        TranslationExplorer(translator, beam_size=0)


def test_an_unreachable_initial_selection_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0 <= layer < 1, head = MEAN or 0 <= head < 3, 0 <= query < 5"):
        AttentionExplorer(torch.rand(3, 5, 7), Q_LABELS, K_LABELS, head=3)


def test_explorer_axis_labels_follow_the_cross_attention_convention() -> None:
    """Cross-attention explorers label rows by the word being written and columns by the source token."""
    from course_lib.plotting import SOURCE_TOKEN_LABEL, WRITTEN_WORD_LABEL

    weights = torch.softmax(torch.randn(2, 3, 4), dim=-1)
    plain = AttentionExplorer(weights, list("abc"), list("wxyz")).draw()
    labelled = AttentionExplorer(weights, list("abc"), list("wxyz"), row_label=WRITTEN_WORD_LABEL,
                                 column_label=SOURCE_TOKEN_LABEL).draw()
    assert plain.axes[0].get_ylabel() != WRITTEN_WORD_LABEL
    assert (labelled.axes[0].get_ylabel(), labelled.axes[0].get_xlabel()) == (WRITTEN_WORD_LABEL, SOURCE_TOKEN_LABEL)
    import matplotlib.pyplot as plt

    plt.close(plain)
    plt.close(labelled)
