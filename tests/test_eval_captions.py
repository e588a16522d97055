"""Captions: CIDEr-D (own implementation) worked out by hand, BLEU-4 / ROUGE-L from torchmetrics, COCO_VAL.tsv."""

import math

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.caption_metrics import caption_scores, caption_tokens, cider_d

from .test_eval_fixtures import png_b64, write_tsv

GAUSS_1 = math.exp(-1 / 72)  # length penalty for a length difference of 1 (sigma 6)


def test_tokenisation():
    assert caption_tokens("A Red-ish circle, isn't it?") == ["a", "red", "ish", "circle", "isn", "t", "it"]
    assert caption_tokens("") == []


def test_cider_by_hand():
    # Two images with disjoint words: every n-gram has df 1 of N 2, so every idf is log 2 and cancels out.
    # Image 2: exact match of 2 words: cosine 1 for n = 1, 2; nothing for n = 3, 4 -> 10 * 2 / 4 = 5.
    # Image 1: "red circle" vs "red circle blue": unigrams 2 / sqrt(2 * 3), bigrams 1 / sqrt(1 * 2), no trigrams;
    #          length difference 1 -> 10 / 4 * (2 / sqrt 6 + 1 / sqrt 2) * exp(-1 / 72).
    score, per_image = cider_d(["red circle", "green square"], [["red circle blue"], ["Green square."]])
    first = 10 / 4 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) * GAUSS_1
    assert per_image == pytest.approx([first, 5.0])
    assert score == pytest.approx((first + 5.0) / 2)


def test_cider_clips_repetition_and_averages_references():
    # "red red" vs "red circle": unigram overlap min(2, 1) * 1 / (2 * sqrt 2) (weights in units of log 2)
    _, per_image = cider_d(["red red", "x y"], [["red circle"], ["x y"]])
    assert per_image[0] == pytest.approx(10 / 4 / (2 * math.sqrt(2)))
    # two references: the mean of the per-reference similarities (one exact, one disjoint)
    _, per_image = cider_d(["red circle", "x y"], [["red circle", "blue square"], ["x y"]])
    assert per_image[0] == pytest.approx((5.0 + 0.0) / 2)


def test_cider_edge_cases():
    assert cider_d(["a b c d"], [["a b c d"]])[0] == 0.0  # one image: every idf is log 1 = 0
    assert cider_d(["", "x"], [["red"], ["x"]])[1][0] == 0.0  # an empty caption scores 0
    assert cider_d([], [])[0] == 0.0
    with pytest.raises(ValueError):
        cider_d(["x"], [[]])


def test_bleu_and_rouge_from_torchmetrics():
    exact = caption_scores(["A red circle on a white background."], [["a red circle on a white background"]])
    assert exact["bleu4"] == pytest.approx(1.0) and exact["rougeL"] == pytest.approx(1.0)
    short = caption_scores(["Red, circle!"], [["red circle blue", "green"]])
    assert short["bleu4"] == 0.0  # fewer than 4 words: no 4-gram (no smoothing)
    # ROUGE-L vs the best reference: LCS 2, precision 1, recall 2/3 -> F = 0.8
    assert short["rougeL"] == pytest.approx(0.8)
    empty = caption_scores([""], [["red circle"]])
    assert empty == {"bleu4": 0.0, "rougeL": 0.0, "cider": 0.0}


def test_coco_caption_tsv(tmp_path):
    rows = [
        {"index": 0, "image": png_b64("red"), "answer": str(["a red square", "red square"])},
        {"index": 1, "image": png_b64("blue"), "answer": str(["a blue square"])},
        {"index": 2, "image": png_b64("blue"), "answer": "[]"},
    ]
    bench = build_benchmark("coco_caption", path=write_tsv(tmp_path / "COCO_VAL.tsv", rows))
    items = bench.load()
    assert bench.skipped == {"no reference captions": 1}
    assert items[0].prompt == "Describe this image in one sentence."
    assert items[0].target["references"] == ["a red square", "red square"]
    scores = bench.score(items, ["A red square.", ""])
    assert scores.metrics["empty_answers"] == 1 and scores.metrics["images"] == 2
    assert scores.predictions[1]["cider"] == 0.0 and scores.metrics["cider"] > 0
