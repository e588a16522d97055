"""The `lmms_eval` scoring mode: every expected value below is what lmms-eval 0.7.3 gives for the same answer; the
tables were checked against its own functions (parse_pred_ans, the POPE aggregates, EvalAIAnswerProcessor,
parse_mmmu_multi_choice_response under random.seed(0), parse_open_response + eval_open)."""

import random

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.modes import lmms_eval

from .test_eval_fixtures import png_b64, write_tsv

# (answer, MME's parse_pred_ans, POPE's exact match); None = "other", scored wrong
YES_NO = [
    ("Yes", "yes", "yes"), ("yes", "yes", "yes"), ("Yes.", "yes", None), ("No", "no", "no"), ("no.", "no", None),
    ("**Yes**", None, None), ("**No**", "no", None), ("Y", "yes", None), ("N", "no", None), ("y", "yes", None),
    ("Nope", "no", None), ("Yep", None, None), ("Yeah", None, None), ("There is not a dog.", None, None),
    ("There is no dog.", None, None), ("Yes, there is a dog.", "yes", None), ("No, there is no dog.", "no", None),
    ("yes and no", "yes", None), ("I don't know", None, None), ("", None, None), ("None", "no", None),
    ("Not sure", "no", None), ("YES", "yes", "yes"), (" yes ", "yes", "yes"), ("Yes!", "yes", None),
    ("(Yes)", "yes", None), ("Yes\n", "yes", "yes"), ("Answer: Yes", None, None), ("nono", "no", None),
    ("yesterday", "yes", None), ("noted", "no", None), ("Definitely yes", None, None), ("not", "no", None),
]


@pytest.mark.parametrize("answer,mme,pope", YES_NO)
def test_yes_no_readers(answer, mme, pope):
    assert lmms_eval.mme_yes_no(answer) == mme
    assert lmms_eval.pope_yes_no(answer) == pope


def test_pope_aggregates_with_the_yes_ratio_bug():
    said = ["yes", "yes", None, "no", None, "no"]
    gold = ["yes", "no", "yes", "yes", "no", "no"]
    report = lmms_eval.pope_report(said, gold)
    assert report["accuracy"] == pytest.approx(2 / 6)
    assert report["precision"] == pytest.approx(1 / 2)
    assert report["recall"] == pytest.approx(1 / 2)  # the unreadable "yes" question is not a false negative
    assert report["yes_ratio"] == pytest.approx(3 / 6)  # the gold answers' ratio, whatever was said
    assert lmms_eval.pope_report(["no"] * 4, ["yes", "no", "yes", "no"])["yes_ratio"] == 0.5


TEN = 10
# (prediction, human answers, textvqa_process_results, vqav2_process_results)
VQA = [
    ("2.", ["2"] * TEN, 1.0, 1.0), ("3.", ["3"] * TEN, 1.0, 1.0),  # every period not before a digit goes
    ("cant", ["can't"] * TEN, 1.0, 1.0), ("wont", ["won't"] * TEN, 1.0, 1.0),
    ("hows", ["how's"] * TEN, 0.0, 1.0), ("whos", ["who's"] * TEN, 0.0, 1.0),  # TextVQA splits "'s" off the gold
    ("im", ["i'm"] * TEN, 0.0, 0.0), ("ive", ["i've"] * TEN, 0.0, 0.0),
    ("stop", ["stop"], 0.0, 0.0),  # one human answer: 0
    ("x", ["x", "x", "y"], pytest.approx(4 / 9), pytest.approx(4 / 9)),
    ("Two", ["2"] * TEN, 1.0, 1.0), ("1,000", ["1000"] * TEN, 1.0, 1.0), ("e-mail", ["email"] * TEN, 0.0, 0.0),
    ("dog's", ["dog 's"] * TEN, 1.0, 0.0), ("a,b", ["ab"] * TEN, 1.0, 0.0), ("1,,2", ["12"] * TEN, 1.0, 1.0),
    ("None", ["0"] * TEN, 1.0, 1.0), ("U.S.A.", ["usa"] * TEN, 1.0, 1.0), ("what?", ["what"] * TEN, 1.0, 1.0),
    ("Stop", ["STOP"] * TEN, 1.0, 1.0), ("", ["yes"] * TEN, 0.0, 0.0),
    ("Nike", ["nike"] * 2 + ["adidas"] * 8, pytest.approx(0.6), pytest.approx(0.6)),
]


@pytest.mark.parametrize("prediction,answers,textvqa,vqav2", VQA)
def test_vqa_accuracy(prediction, answers, textvqa, vqav2):
    assert lmms_eval.textvqa_accuracy(prediction, answers) == textvqa
    assert lmms_eval.vqav2_accuracy(prediction, answers) == vqav2


ANIMALS = {"A": "cat", "B": "dog", "C": "horse", "D": "cow"}
# (answer, the letter parse_mmmu_multi_choice_response gives with random.seed(0) just before)
MMMU_CHOICE = [
    ("A", "A"), ("(B)", "B"), ("B.", "B"), ("The answer is (C).", "C"), ("A. cat", "A"), ("D.", "D"), ("'C'", "C"),
    ("I think the answer is A or B", "B"),  # several: the last one written
    ("(A) or (B), I would say (B)", "B"), ("A cat is not a cow, so B", "B"),
    ("The animal shown in the picture is clearly a dog here", "B"),  # option text, more than five words
    ("It is a horse and not a cow at all", "D"),  # two option texts: the one written last
    ("b", "D"), ("dog", "D"), ("", "D"), ("Cow?", "D"),  # nothing read: random.choice -> D under seed 0
]


@pytest.mark.parametrize("answer,letter", MMMU_CHOICE)
def test_mmmu_multiple_choice_parser(answer, letter):
    assert lmms_eval.mmmu_choice(answer, ANIMALS, random.Random(0))[0] == letter


# (answer, gold as written in the file, eval_open)
MMMU_OPEN = [
    ("1000", "1,000", True), ("It is 1,000 dollars.", "1000", True), ("3.14", "3.14159", True),
    ("3.14159", "3.14", True), ("50", "50%", False), ("50%", "50%", True), ("The capital is PARIS.", "Paris", True),
    ("paris", "['Paris', 'paris, france']", False),  # a list literal is not parsed
    ("a category", "cat", True),  # a substring is enough
    ("12", "2", False), ("-2.50", "-2.5", True), ("A", "a", True), ("the answer is b", "a", False), ("", "0", False),
    ("x = 5", "5", True), ("The value is 7 so 8", "8", True), ("The value is 7 so 8", "7", False),
    ("1.5e3", "1500", True), ("so the result is 42.\nthus 43", "42", True), ("Therefore, 6", "6", True),
    ("answer: cat", "cat", True), ("The speed could be 3 m/s", "3", True), ("2, 3 and 4", "3", True),
]


@pytest.mark.parametrize("answer,gold,right", MMMU_OPEN)
def test_mmmu_open_answers(answer, gold, right):
    assert lmms_eval.mmmu_open_correct(answer, gold) is right


COLUMNS = ["index", "question", "A", "B", "C", "D", "answer", "category", "split", "image"]


@pytest.fixture
def mmmu_file(tmp_path):
    rows = [
        {"index": 1, "question": "<image 1> Which animal?", **ANIMALS, "answer": "B", "category": "Biology",
         "split": "validation", "image": png_b64("red")},
        {"index": 2, "question": "<image 1> Which one?", "A": "x", "B": "y", "C": "None", "answer": "A",
         "category": "Art", "split": "validation", "image": png_b64("blue")},
        {"index": 3, "question": "How much? <image 1>", "answer": "50%", "category": "Economics",
         "split": "validation", "image": png_b64("green")},
    ]
    return write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", rows, COLUMNS)


def test_mmmu_benchmark_prompts_seeded_guesses_and_scores(mmmu_file):
    bench = build_benchmark("mmmu", path=mmmu_file)
    assert bench.mode == "lmms_eval" and bench.describe()["seed"] == 0
    items = bench.load()
    assert items[0].prompt == ("<image 1> Which animal?\nA. cat\nB. dog\nC. horse\nD. cow\n\n"
                               "Answer with the option's letter from the given choices directly.")
    assert items[1].target["options"] == {"A": "x", "B": "y"}  # "None" is a missing cell
    assert items[2].prompt == "How much? <image 1>\n\nAnswer the question using a single word or phrase."
    # nothing read in "dog" (one word, no capital letter) nor "no idea": random letters, drawn in item order from
    # random.Random(0): D over A-D, then B over A-B (lmms-eval with random.seed(0) draws the same)
    scores = bench.score(items, ["dog", "no idea", "50"])
    assert [p["extracted"] for p in scores.predictions[:2]] == ["D", "B"]
    assert [p["correct"] for p in scores.predictions] == [False, False, False]
    assert scores.metrics["random_guesses"] == 2
    scores = bench.score(items, ["(B)", "no idea", "The answer is 50%."])
    assert [p["correct"] for p in scores.predictions] == [True, False, True]  # the first draw, over A-B: B
    assert scores.metrics["random_guesses"] == 1 and scores.predictions[1]["rule"] == "random guess"
    assert bench.score(items, ["(B)", "no idea", "50%"]).metrics == scores.metrics  # a fresh generator each time
    other = build_benchmark("mmmu", path=mmmu_file, seed=3).score(items, ["(B)", "no idea", "50%"])
    assert [p["correct"] for p in other.predictions] == [True, True, True]  # seed 3 draws A


def test_mme_lmms_eval_prompt_and_reading(tmp_path):
    rows = [{"index": k, "question": f"Is there a dog {k}? Please answer yes or no.", "answer": a,
             "category": "existence", "image": png_b64() if k % 2 == 0 else str(k - 1)}
            for k, a in enumerate(["Yes", "No", "Yes", "No"])]
    bench = build_benchmark("mme", path=write_tsv(tmp_path / "MME.tsv", rows), mode="lmms_eval")
    items = bench.load()
    assert items[0].prompt == "Is there a dog 0?\nAnswer the question using a single word or phrase."
    assert bench.describe()["mode"] == "lmms_eval"
    m = bench.score(items, ["Y", "Nope", "**Yes**", "No."]).metrics  # image 0 both right; image 2 one right
    assert m["perception"] == pytest.approx(75 + 50) and m["failed_extractions"] == 1


def test_pope_lmms_eval_mode_metrics_per_split(tmp_path):
    rows = [{"index": k, "question": f"Is there a dog {k}?", "answer": a, "category": "random,popular",
             "image": png_b64()} for k, a in enumerate(["yes", "no", "yes", "no"])]
    bench = build_benchmark("pope", path=write_tsv(tmp_path / "POPE.tsv", rows), mode="lmms_eval")
    m = bench.score(bench.load(), ["Yes", "no", "Yes.", "yes"]).metrics
    # "Yes." is neither: wrong, and not a false negative
    assert (m["accuracy"], m["precision"], m["recall"], m["yes_ratio"]) == (0.5, 0.5, 1.0, 0.5)
    assert m["random/accuracy"] == 0.5 and m["questions"] == 8


def test_textvqa_lmms_eval_prompt_capitalises(tmp_path):
    rows = [{"index": 0, "question": "what does the SIGN say?", "answer": str(["stop"] * 10), "image": png_b64()}]
    path = write_tsv(tmp_path / "TextVQA_VAL.tsv", rows)
    lmms = build_benchmark("textvqa", path=path, mode="lmms_eval")
    assert lmms.load()[0].prompt.startswith("What does the sign say?\n")
    assert build_benchmark("textvqa", path=path).load()[0].prompt.startswith("what does the SIGN say?\n")
