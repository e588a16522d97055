"""VQA accuracy (TextVQA / VQAv2): normalisation, the leave-one-out average, both file layouts (the modes' answer
shapes: tests/test_scoring_modes*.py)."""

import json

import pytest
from PIL import Image

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.modes.vlmevalkit import normalise_vqa as normalise_answer
from ovis_lit.evaluation.modes.vlmevalkit import vqa_accuracy

from .test_eval_fixtures import png_b64, write_tsv


@pytest.mark.parametrize(
    "raw,normal",
    [
        ("Yes.", "yes"),
        ("  The Two dogs\n", "2 dogs"),  # article dropped, number word to digit, case
        ("an apple", "apple"),
        ("none", "0"),
        ("dont", "don't"),  # contraction restored
        ("well", "well"),  # not a key of the official table
        ("3.5", "3.5"),  # decimal point kept
        ("1,000", "1000"),  # digit-comma-digit: punctuation deleted
        ("black/white", "black white"),
        ("black / white", "black white"),
        ("hello!", "hello"),
        ("e-mail", "e mail"),
        ("", ""),
    ],
)
def test_normalisation(raw, normal):
    assert normalise_answer(raw) == normal


def test_leave_one_out_average_by_hand():
    # held-out red (x2): 1 red among the other 9 -> 1/3; held-out blue (x8): 2 reds -> 2/3; mean = 0.6
    assert vqa_accuracy("Red.", ["red"] * 2 + ["blue"] * 8) == pytest.approx(0.6)
    # 'two' normalises to '2': held-out 2 (x3) -> 2 matches -> 2/3; held-out 3 (x7) -> 3 matches -> 1; mean 0.9
    assert vqa_accuracy("2", ["two"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("", ["yes"] * 10) == 0.0
    # fewer than 10 answers: the same rule over n hold-outs: 3 x 2/3 and 1 x 1 over 4
    assert vqa_accuracy("Cat", ["a cat", "cat", "dog", "the cat"]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_textvqa_tsv(tmp_path):
    rows = [
        {"index": 0, "question": "What is written?", "answer": str(["stop"] * 10), "image": png_b64("red")},
        {"index": 1, "question": "What brand?", "answer": str(["nike"] * 4 + ["adidas"] * 6), "image": "0"},
        {"index": 2, "question": "No answers", "answer": "", "image": png_b64()},
    ]
    bench = build_benchmark("textvqa", path=write_tsv(tmp_path / "TextVQA_VAL.tsv", rows))
    items = bench.load()
    assert bench.skipped == {"no human answers": 1}
    assert items[0].prompt == "What is written?\nAnswer the question using a single word or phrase."
    scores = bench.score(items, ["STOP.", "Nike"])  # 1.0 and (4 x 1 + 6 x 1) / 10 = 1.0 ... see below
    # nike x4: held-out nike leaves 3 -> 1; held-out adidas leaves 4 -> 1: accuracy 1
    assert scores.metrics["accuracy"] == 1.0
    scores = bench.score(items, ["", "adidas"])
    assert scores.metrics["accuracy"] == pytest.approx(0.5) and scores.metrics["empty_answers"] == 1


def test_vqav2_official_json(tmp_path):
    images = tmp_path / "val2014"
    images.mkdir()
    Image.new("RGB", (12, 12), "blue").save(images / "COCO_val2014_000000000042.jpg")
    questions = {"questions": [
        {"image_id": 42, "question": "What colour?", "question_id": 420},
        {"image_id": 42, "question": "How many?", "question_id": 421},
        {"image_id": 42, "question": "Unannotated?", "question_id": 422},
    ]}
    annotations = {"annotations": [
        {"question_id": 420, "image_id": 42, "answer_type": "other",
         "answers": [{"answer": "blue", "answer_id": k} for k in range(10)]},
        {"question_id": 421, "image_id": 42, "answer_type": "number",
         "answers": [{"answer": "2" if k < 2 else "3", "answer_id": k} for k in range(10)]},
    ]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    bench = build_benchmark("vqav2", path=tmp_path / "q.json", annotations=tmp_path / "a.json", image_dir=images)
    items = bench.load()
    assert [i.key for i in items] == ["420", "421"] and bench.skipped == {"no annotation for the question": 1}
    assert items[0].images[0].is_file()
    scores = bench.score(items, ["Blue", "two"])  # 1.0; '2' x2 -> 0.6 (as in the by-hand case above)
    assert scores.metrics["accuracy"] == pytest.approx(0.8)
    assert scores.details["per_type"] == {"number": pytest.approx(0.6), "other": 1.0}
