"""Visual-vocabulary diagnostics: the numbers on a hand-computed example, the nearest text tokens on a table whose
answer is known, the callback's capture (the head's logits, even where the fast path overwrites them), its JSON
and picture, connectors without a vocabulary skipped with a note, and a real run that logs them."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from ovis_lit.training.vocab_diagnostics import (
    VisualVocabularyDiagnostics,
    batch_statistics,
    nearest_text_tokens,
    token_distribution,
)

from .tiny import tiny_model

LN2 = math.log(2)
# Two visual tokens over four words (hand-computed below):
#   token 1: (1/2, 1/4, 1/4, 0) -> entropy 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2, argmax word 0
#   token 2: (0, 0, 0, 1)       -> entropy 0, argmax word 3
#   mean entropy 0.75 ln 2; words used {0, 3}: share 2/4; dead (this batch) words 1 and 2
#   average distribution (1/4, 1/8, 1/8, 1/2) -> entropy (2/4 + 3/8 + 3/8 + 1/2) ln 2 = 1.75 ln 2, perplexity 2^1.75
TABLE = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.0, 1.0]])


def test_batch_statistics_by_hand():
    probs = token_distribution(TABLE.log())  # softmax(log p) = p, zeros included (log 0 = -inf)
    torch.testing.assert_close(probs, TABLE)
    stats = batch_statistics(probs)
    assert stats["entropy"] == pytest.approx(0.75 * LN2)
    assert stats["usage_share"] == 0.5
    assert stats["perplexity"] == pytest.approx(2**1.75)
    assert stats["argmax_counts"].tolist() == [1, 0, 0, 1]


def test_gumbel_tokens_are_read_at_their_temperature():
    logits = torch.tensor([[2.0, 0.0]])
    assert token_distribution(logits, "gumbel_argmax", tau=2.0)[0, 0] == pytest.approx(math.e / (math.e + 1))
    assert token_distribution(logits, "st_argmax", tau=2.0)[0, 0] == pytest.approx(math.e**2 / (math.e**2 + 1))


def test_nearest_text_tokens_on_a_known_table():
    visual = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    text = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.2], [0.0, 1.0, 1.1]])
    ids, cosines = nearest_text_tokens(visual, text, k=2)
    assert ids[0, 0] == 1 and cosines[0, 0] == pytest.approx(1.0)  # the same direction, another length
    assert ids[1].tolist() == [3, 2]
    assert cosines[1].tolist() == pytest.approx([2.1 / math.sqrt(2 * 2.21), 1.2 / math.sqrt(2 * 1.04)])


class FixedHead(nn.Module):
    """A visual head that returns given logits [crops, tokens, words] whatever its input."""

    def __init__(self):
        super().__init__()
        self.logits = None

    def forward(self, features):
        return self.logits.clone()


def _stubs(model, tmp_path, logged):
    trainer = SimpleNamespace(global_step=0, default_root_dir=str(tmp_path), is_global_zero=True, datamodule=None)
    module = SimpleNamespace(model=model, log_dict=lambda values, **kw: logged.append(values))
    return trainer, module


def _step(callback, trainer, module, head, logits, crops=1):
    batch = {"pixel_values": torch.rand(crops, 3, 8, 8)}
    callback.on_train_batch_start(trainer, module, batch, 0)
    head.logits = logits
    head(torch.zeros(1))  # the model's forward pass reaching the head
    callback.on_train_batch_end(trainer, module, None, batch, 0)
    trainer.global_step += 1


def test_the_callback_logs_and_summarises_the_hand_example(tmp_path):
    model = tiny_model(vocab=9)  # 9 visual words, the last 5 indicators: 4 image words
    head = model.visual_tokenizer.head = FixedHead()
    logged = []
    trainer, module = _stubs(model, tmp_path, logged)
    callback = VisualVocabularyDiagnostics(every_n_steps=2, top_words=2, nearest_k=3)
    callback.on_train_start(trainer, module)
    # one crop of 2 x 2 tokens: the two hand tokens twice (the same shares, entropies and average distribution)
    _step(callback, trainer, module, head, TABLE.log().repeat(2, 1).reshape(1, 4, 4))  # step 0: captured
    _step(callback, trainer, module, head, torch.zeros(1, 4, 4))  # step 1: not a multiple of 2, not captured
    second = torch.tensor([0.1, 0.7, 0.1, 0.1]).log().expand(1, 4, 4)
    _step(callback, trainer, module, head, second)  # step 2: every token's argmax is word 1
    callback.on_train_end(trainer, module)

    assert [entry["vocab/usage_share"] for entry in logged] == [0.5, 0.25]
    assert logged[0]["vocab/entropy"] == pytest.approx(0.75 * LN2)
    assert logged[0]["vocab/perplexity"] == pytest.approx(2**1.75)
    assert [entry["vocab/usage_share_cumulative"] for entry in logged] == [0.5, 0.75]
    assert [entry["vocab/dead_words"] for entry in logged] == [2, 1]

    report = json.loads((tmp_path / "vocab_diagnostics.json").read_text())
    assert report["skipped"] is None and report["captures"] == 2 and report["image_words"] == 4
    assert [h["step"] for h in report["history"]] == [0, 2]
    assert report["usage_share_cumulative"] == 0.75 and report["dead_words"] == 1 and report["dead_word_ids"] == [2]
    # word 1: 4 uses of 8, then words 0 and 3 with 2 each (ties in either order)
    assert report["top_words"][0]["word"] == 1 and report["top_words"][0]["share"] == 0.5
    table, text = model.vte.weight[1], model.llm.get_input_embeddings().weight
    expected = torch.nn.functional.cosine_similarity(table[None], text, dim=-1).topk(3)
    near = report["top_words"][0]["nearest_text_tokens"]
    assert [n["id"] for n in near] == expected.indices.tolist()
    assert [n["cosine"] for n in near] == pytest.approx(expected.values.tolist(), abs=1e-4)
    # the picture: the most used word at the last capture, over the captured crop
    assert report["picture_word"] == 1
    picture = Image.open(report["picture"])
    assert picture.width > 32 and picture.height > 32
    assert callback.summary["dead_words"] == 1 and callback.summary["file"].endswith("vocab_diagnostics.json")


def test_the_picture_tints_the_patches_where_the_word_is_likely():
    from ovis_lit.training.vocab_diagnostics import heat_map_picture

    crops = torch.full((2, 3, 16, 16), 0.5)
    crops[0, :, 0, 0] = 0.0  # the min-max range is over all crops: the grey stays grey
    heat = torch.tensor([[[0.1, 0.1], [0.1, 0.8]], [[0.1, 0.1], [0.1, 0.1]]])
    picture = heat_map_picture(crops, heat, "word", scale=4).convert("RGB")
    pad, caption, cell = 4, 14, 64  # the layout: crops of side 16 * 4 in a row, below a caption line

    def at(crop, row, col):  # the centre of a token's patch in the picture
        return picture.getpixel((pad + crop * (cell + pad) + col * 32 + 16, pad + caption + row * 32 + 16))

    hot, cold, other = at(0, 1, 1), at(0, 0, 0), at(1, 1, 1)
    assert hot[0] > 200 and hot[1] < 100  # red where the word's probability is the picture's highest
    assert cold == other and abs(cold[0] - cold[1]) < 3  # untinted (grey) at the lowest


def test_a_resumed_run_keeps_the_totals_of_the_run_so_far(tmp_path):
    """The callback's state travels in checkpoints (Lightning saves callbacks' state_dict): words used before the
    interruption are not counted dead after it."""
    model = tiny_model(vocab=9)
    head = model.visual_tokenizer.head = FixedHead()
    trainer, module = _stubs(model, tmp_path, [])
    before = VisualVocabularyDiagnostics(every_n_steps=1)
    before.on_train_start(trainer, module)
    _step(before, trainer, module, head, TABLE.log().repeat(2, 1).reshape(1, 4, 4))  # words 0 and 3
    state = before.state_dict()
    after = VisualVocabularyDiagnostics(every_n_steps=1)
    after.setup(trainer, module, "fit")
    after.load_state_dict(state)  # what Lightning does on resume, before on_train_start
    after.on_train_start(trainer, module)
    _step(after, trainer, module, head, torch.tensor([0.1, 0.7, 0.1, 0.1]).log().expand(1, 4, 4))  # word 1
    after.on_train_end(trainer, module)
    report = json.loads((tmp_path / "vocab_diagnostics.json").read_text())
    assert [h["step"] for h in report["history"]] == [0, 1] and report["dead_word_ids"] == [2]


def test_a_connector_without_a_vocabulary_is_skipped_with_a_note(tmp_path):
    model = tiny_model(vocab=9)
    model.has_visual_vocabulary = False  # what an MLP connector says of itself
    trainer, module = _stubs(model, tmp_path, [])
    callback = VisualVocabularyDiagnostics(every_n_steps=1)
    callback.on_train_start(trainer, module)
    model.visual_tokenizer.head(torch.zeros(1, 4, model.visual_tokenizer.head[0].in_features))
    callback.on_train_end(trainer, module)
    report = json.loads((tmp_path / "vocab_diagnostics.json").read_text())
    assert "no visual vocabulary" in report["skipped"] and report["captures"] == 0 and "top_words" not in report
    bare = SimpleNamespace(model=nn.Linear(2, 2), log_dict=None)
    callback.on_train_start(trainer, bare)
    assert "no visual tokenizer" in callback.skipped


def test_the_capture_holds_the_heads_logits_where_the_fast_path_overwrites_them(tmp_path):
    """On the fast path the fused softmax writes the probabilities over the head's output; the hook keeps a copy."""
    torch.manual_seed(0)
    model = tiny_model(vocab=40)
    model.train()
    trainer, module = _stubs(model, tmp_path, [])
    callback = VisualVocabularyDiagnostics(every_n_steps=1)
    callback.on_train_start(trainer, module)
    pixels = torch.randn(2, 3, 42, 42)
    callback.on_train_batch_start(trainer, module, {"pixel_values": pixels}, 0)
    model.embed_visual(pixels)
    assert model._fuse_softmax(torch.zeros(1, 35))  # the fused, overwriting path ran
    torch.testing.assert_close(callback._logits, model.visual_tokenizer.logits(pixels).detach())


@pytest.mark.slow
def test_a_run_on_the_vision_data_logs_the_vocabulary_and_scores_every_held_out_set(tmp_path, capsys):
    """python train.py data=shapes_vision stage=s3 on the digits and hard shapes only, a few steps: the stage
    summary carries the diagnostics, the files are written, each held-out set is scored with its blank baseline."""
    pytest.importorskip("sklearn")
    from ovis_lit.training.entry import train

    from .helpers import compose_train

    cfg = compose_train(["stage=s3", "data=shapes_vision", "recipe.s3.max_steps=3", "recipe.s3.batch_size=4",
                         "+data.mixture.s3={digits: 1.0, shapes_hard: 1.0}",
                         "callbacks.vocab.every_n_steps=1", "data.heldout=null", "data.prepare.scale=0.005",
                         "trainer.log_every_n_steps=1"], tmp_path / "run", tmp_path / "data")
    train(cfg)
    printed = capsys.readouterr().out
    assert "visual vocabulary: " in printed and "held-out multiple choice (digits): accuracy" in printed
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    vocab = summary["stages"][0]["vocab_diagnostics"]
    report = json.loads(Path(vocab["file"]).read_text())
    assert [h["step"] for h in report["history"]] == [0, 1, 2]
    words = report["image_words"]
    for h in report["history"]:
        assert 0 < h["entropy"] <= math.log(words) and 1 <= h["perplexity"] <= words and 0 < h["usage_share"] <= 1
    assert report["top_words"] and all(len(w["nearest_text_tokens"]) == 5 for w in report["top_words"])
    assert all(isinstance(t["token"], str) for t in report["top_words"][0]["nearest_text_tokens"])  # decoded
    assert Image.open(report["picture"]).width > 64
    logged = (tmp_path / "run").rglob("metrics.csv")
    assert any("vocab/usage_share_cumulative" in p.read_text().splitlines()[0] for p in logged)
    assert "heldout" not in summary  # data.heldout=null: only the sets that need vision
    for kind in ("shapes_hard", "digits"):
        result = summary[f"heldout_{kind}"]
        assert result["benchmark"] == kind and result["n"] > 0
        assert 0 <= result["accuracy"] <= 1 and 0 <= result["blank_image_accuracy"] <= 1
