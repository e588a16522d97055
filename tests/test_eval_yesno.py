"""MME (acc, acc+, perception / cognition) and POPE (per-split binary metrics) from tiny TSVs, by hand."""

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv


def _q(index, category, answer, image, image_path=""):
    return {"index": index, "image": image, "question": f"Question {index}? Please answer yes or no.",
            "answer": answer, "category": category, "image_path": image_path}


@pytest.fixture
def mme_file(tmp_path):
    rows = [
        _q(0, "existence", "Yes", png_b64("red")), _q(1, "existence", "No", "0"),  # image of row 0
        _q(2, "existence", "Yes", png_b64("blue")), _q(3, "existence", "No", "2"),
        _q(4, "OCR", "Yes", png_b64("white")), _q(5, "OCR", "No", "4"),
        # paired by image_path although each row carries its own copy of the image
        _q(6, "code_reasoning", "Yes", png_b64("black"), "code_reasoning/1.png"),
        _q(7, "code_reasoning", "No", png_b64("black"), "code_reasoning/1.png"),
        _q(8, "other_cat", "Yes", png_b64("green")),
        _q(9, "existence", "Maybe", png_b64("green")),  # not a yes/no gold answer: skipped
    ]
    return write_tsv(tmp_path / "MME.tsv", rows)


def test_mme_scores_by_hand(mme_file):
    bench = build_benchmark("mme", path=mme_file)
    items = bench.load()
    assert bench.skipped == {"answer is not yes or no": 1}
    assert items[0].prompt == "Question 0? Please answer yes or no.\nAnswer the question using a single word or phrase."
    answers = answers_by_key(items, {
        "0": "Yes", "1": "No.",  # image A: both right
        "2": "no", "3": "no",  # image B: one right
        "4": "", "5": "No",  # OCR: empty answer (failed), one right
        "6": "yes, it runs", "7": "No, it does not",  # code_reasoning: both right
        "8": "YES",
    })
    scores = bench.score(items, answers)
    cats = scores.details["per_category"]
    # existence: acc 3/4, acc+ 1/2 -> 75 + 50; OCR: acc 1/2, acc+ 0 -> 50; code_reasoning: 100 + 100
    assert (cats["existence"]["acc"], cats["existence"]["acc_plus"], cats["existence"]["score"]) == (0.75, 0.5, 125)
    assert cats["OCR"]["score"] == 50 and cats["code_reasoning"]["score"] == 200
    m = scores.metrics
    assert m["perception"] == pytest.approx(175) and m["cognition"] == pytest.approx(200)
    assert m["accuracy"] == pytest.approx(7 / 9) and m["failed_extractions"] == 1
    assert scores.details["other_categories"] == ["other_cat"]
    assert scores.details["categories_present"] == {"perception": 2, "cognition": 1}


@pytest.fixture
def pope_file(tmp_path):
    rows = [
        {"index": 1, "question": "Is there a dog in the image?", "answer": "yes", "category": "random,popular"},
        {"index": 2, "question": "Is there a cat in the image?", "answer": "no", "category": "random"},
        {"index": 3, "question": "Is there a car in the image?", "answer": "yes", "category": "popular"},
        {"index": 4, "question": "Is there a bus in the image?", "answer": "no", "category": "random,popular"},
        {"index": 5, "question": "Is there a cup in the image?", "answer": "yes", "category": "adversarial"},
        {"index": 6, "question": "Is there a fork in the image?", "answer": "no", "category": "adversarial"},
    ]
    for k, row in enumerate(rows):
        row["image"] = png_b64("red") if k == 0 else "1"
    return write_tsv(tmp_path / "POPE.tsv", rows)


def test_pope_scores_by_hand(pope_file):
    bench = build_benchmark("pope", path=pope_file)
    items = bench.load()
    answers = ["Yes.", "yes, there is", "No", "No, there is not.", "maybe", ""]
    scores = bench.score(items, answers)
    split = scores.details["per_split"]
    # random: rows 1 (TP), 2 (FP), 4 (TN)
    assert split["random"]["accuracy"] == pytest.approx(2 / 3) and split["random"]["precision"] == pytest.approx(0.5)
    assert split["random"]["recall"] == 1.0 and split["random"]["f1"] == pytest.approx(2 / 3)
    assert split["random"]["yes_ratio"] == pytest.approx(2 / 3)
    # popular: rows 1 (TP), 3 (FN), 4 (TN)
    assert split["popular"]["precision"] == 1.0 and split["popular"]["recall"] == 0.5
    assert split["popular"]["f1"] == pytest.approx(2 / 3) and split["popular"]["yes_ratio"] == pytest.approx(1 / 3)
    # adversarial: 'maybe' (gold yes) and '' (gold no) are neither: both wrong, nothing predicted yes
    assert split["adversarial"] == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0,
                                    "questions": 2}
    # overall over the 8 (row, split) pairs: TP 2, FP 1, FN 2 (one unparsed), TN 2, one unparsed 'no' (wrong)
    m = scores.metrics
    assert m["questions"] == 8 and m["accuracy"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(4 / 7) and m["yes_ratio"] == pytest.approx(3 / 8)
    assert m["failed_extractions"] == 2 and m["random/f1"] == pytest.approx(2 / 3)
