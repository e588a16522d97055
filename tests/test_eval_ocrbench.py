"""OCRBench in VLMEvalKit's layout and scoring: each expected value is what VLMEvalKit's OCRBench evaluation gives
for that (answers, category, prediction), worked out from its rules (substring match; HME: case kept, spaces gone)."""

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.benchmarks.ocrbench import HME, ocrbench_hit

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv

REG = "Regular Text Recognition"
SCENE = "Scene Text-centric VQA"
DOC = "Doc-oriented VQA"
KIE = "Key Information Extraction"

# (accepted answers, category, prediction, VLMEvalKit's verdict)
CASES = [
    (["CENTRAL"], REG, "central", True),  # case folded
    (["CENTRAL"], REG, "The word is **Central**.", True),  # substring inside a sentence and markdown
    (["central"], REG, "CENTRAL STATION", True),
    (["central"], REG, "cent ral", False),  # spaces count outside HME
    (["central"], REG, "", False),
    (["New York"], REG, "new\nyork", True),  # newline read as a space
    (["new york"], REG, "newyork", False),
    (["2019"], "Digit String Recognition", "It says 2019-05", True),
    (["2019"], "Digit String Recognition", "two thousand nineteen", False),
    (["12"], "Digit String Recognition", "123", True),  # a substring is enough, even inside a longer number
    (["Yes", "yes"], SCENE, "No", False),
    (["coca cola", "coke"], SCENE, "It is a Coke can.", True),  # any one accepted answer
    (["$4.99"], DOC, "The price is $4.99", True),
    (["$4.99"], DOC, "4.99 dollars", False),
    (["  Total  "], KIE, "total: 12", True),  # accepted answers are stripped
    (["1,000"], KIE, "1000", False),
    (["x^2+y^2"], HME, "x ^ 2 + y ^ 2", True),  # HME: every space removed from both sides
    (["\\frac { a } { b }"], HME, "$\\frac{a}{b}$", True),
    (["X^{2}"], HME, "x^{2}", False),  # HME keeps case
    (["a\nb"], HME, "ab", True),
    (["zebra"], "Non-Semantic Text Recognition", "ZEBRA crossing", True),
    (["ovis"], "Artistic Text Recognition", "o v i s", False),
    # VLMEvalKit reads its predictions file back with pandas: an empty answer, "None", "N/A" are the text "nan"
    (["a"], "Handwriting Recognition", "", True), (["none"], REG, "None", False), (["n/a"], REG, "N/A", False),
    (["nan"], REG, "NA", True),
]


@pytest.mark.parametrize("answers,category,prediction,expected", CASES)
def test_hit_rules(answers, category, prediction, expected):
    assert ocrbench_hit(prediction, answers, category) is expected


def test_tsv_scores_and_groups(tmp_path):
    categories = [REG, "Irregular Text Recognition", "Handwriting Recognition", SCENE, DOC, KIE, HME, "Made Up"]
    rows = [{"index": k, "image": png_b64(), "question": f"What is written? ({k})", "answer": str([f"w{k}"]),
             "category": c} for k, c in enumerate(categories)]
    rows += [{"index": 20, "image": png_b64(), "question": "Q?", "answer": "", "category": REG},
             {"index": 21, "image": png_b64(), "question": "Q?", "answer": "['a', ]]", "category": REG}]
    bench = build_benchmark("ocrbench", path=write_tsv(tmp_path / "OCRBench.tsv", rows))
    items = bench.load()
    assert bench.skipped == {"no answers": 1, "unparsable list \"['a', ]]\"": 1}
    assert items[0].prompt == "What is written? (0)"  # the question as it is
    # right: 0, 1 (recognition), 3 (scene), 6 (HME), 7 (unknown category); wrong: 2, 4, 5
    by_key = {"0": "W0", "1": "it reads w1", "2": "nothing", "3": "w3", "4": "w", "5": "", "6": "w 6", "7": "w7"}
    scores = bench.score(items, answers_by_key(items, by_key))
    m = scores.metrics
    assert (m["text_recognition"], m["scene_text_vqa"], m["doc_vqa"], m["key_information_extraction"], m["hme"]) \
        == (2, 1, 0, 0, 1)
    assert m["final_score"] == 4 and m["final_score_norm"] == pytest.approx(0.4)  # "Made Up" is not counted
    assert m["questions"] == 8 and m["accuracy"] == pytest.approx(5 / 8) and m["empty_answers"] == 1
    assert scores.details["other_categories"] == ["Made Up"]
    assert scores.details["final_score_max"] == 7
    assert scores.details["per_category"][REG] == {"right": 1, "questions": 1}
    assert bench.describe()["mode"] == "vlmevalkit"


def test_full_file_scores_out_of_1000():
    from ovis_lit.evaluation.benchmarks.base import Item
    from ovis_lit.evaluation.benchmarks.ocrbench import score_ocrbench

    items = [Item(str(k), "q", [], {"answers": ["ok"], "category": REG if k % 2 else HME}) for k in range(1000)]
    scores = score_ocrbench(items, ["OK" if k < 600 else "no" for k in range(1000)])
    # the first 600: odd keys are recognition (case folded: right), even are HME (case kept: "OK" is wrong)
    assert scores.metrics["final_score"] == 300 and scores.metrics["final_score_norm"] == 30.0
    assert scores.details["final_score_max"] == 1000


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        build_benchmark("ocrbench", path="x.tsv", mode="lmms_eval")
