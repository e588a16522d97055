"""MMMU: multiple choice and open questions from a tiny MMMU_DEV_VAL.tsv, lmms-eval's parsing, split filter
(the parser's answer shapes: tests/test_scoring_modes_lmms.py)."""

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv

COLUMNS = ["index", "question", "A", "B", "C", "D", "answer", "category", "split", "image"]


@pytest.fixture
def mmmu_file(tmp_path):
    two_images = str([png_b64("red"), png_b64("blue", (20, 12))])
    rows = [
        {"index": 1, "question": "<image 1> Which colour is on the left?", "A": "red", "B": "blue", "C": "green",
         "answer": "A", "category": "Art", "split": "validation", "image": two_images},
        {"index": 2, "question": "<image 1> Which law applies?", "A": "Ohm", "B": "Hooke", "answer": "B",
         "category": "Physics", "split": "validation", "image": png_b64("green")},
        {"index": 3, "question": "<image 1> Name the element.", "A": "Gold", "B": "Iron", "answer": "A",
         "category": "Chemistry", "split": "validation", "image": "2"},  # the image of row 2
        {"index": 4, "question": "How much does it cost in dollars? <image 1>", "answer": "1000",
         "category": "Economics", "split": "validation", "image": png_b64("white")},
        {"index": 5, "question": "What is pi to 5 digits? <image 1>", "answer": "3.14159",
         "category": "Math", "split": "validation", "image": png_b64("black")},
        {"index": 6, "question": "Which city? <image 1>", "answer": "['Paris', 'paris, france']",
         "category": "Geography", "split": "validation", "image": png_b64("yellow")},
        {"index": 7, "question": "Which animal? <image 1>", "answer": "cat",
         "category": "Biology", "split": "validation", "image": png_b64("orange")},
        {"index": 8, "question": "A dev question", "A": "x", "B": "y", "answer": "A", "category": "Art",
         "split": "dev", "image": png_b64()},
    ]
    return write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", rows, COLUMNS)


def test_mmmu_items_prompts_and_images(mmmu_file):
    bench = build_benchmark("mmmu", path=mmmu_file)
    items = bench.load()
    assert [i.key for i in items] == ["1", "2", "3", "4", "5", "6", "7"]
    assert bench.skipped == {"not in the validation split": 1}
    assert len(items[0].images) == 2 and items[2].images == items[1].images
    assert items[0].prompt == ("<image 1> Which colour is on the left?\nA. red\nB. blue\nC. green\n\n"
                               "Answer with the option's letter from the given choices directly.")
    assert items[3].prompt == ("How much does it cost in dollars? <image 1>\n\n"
                               "Answer the question using a single word or phrase.")
    assert items[5].target["answer"] == "['Paris', 'paris, france']"  # as written: lmms-eval parses no list
    assert len(build_benchmark("mmmu", path=mmmu_file, split=None).load()) == 8
    assert len(build_benchmark("mmmu", path=mmmu_file, split="dev").load()) == 1


def test_mmmu_scoring_by_hand(mmmu_file):
    bench = build_benchmark("mmmu", path=mmmu_file)
    items = bench.load()
    answers = answers_by_key(items, {
        "1": "(A)",  # right
        "2": "The answer is A",  # wrong (gold B)
        "3": "I don't know",  # nothing read: a random letter, B under seed 0 (gold A): wrong
        "4": "It is 1,000 dollars.",  # right: 1,000 == 1000
        "5": "3.14",  # right to 2 decimals
        "6": "The capital is PARIS.",  # wrong: the gold is a list literal, compared as text
        "7": "a category",  # right: 'cat' is a substring
    })
    scores = bench.score(items, answers)
    m = scores.metrics
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["mc_accuracy"] == pytest.approx(1 / 3) and m["open_accuracy"] == pytest.approx(3 / 4)
    assert m["random_guesses"] == 1 and m["questions"] == 7
    assert scores.details["per_category"]["Economics"] == 1.0 and scores.details["per_category"]["Geography"] == 0.0
    # deterministic: a seeded generator, the same answers give the same numbers
    assert bench.score(items, answers).metrics == m
