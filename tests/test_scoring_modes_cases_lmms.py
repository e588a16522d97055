"""Toolkit-checked cases, per benchmark, in the `lmms_eval` scoring mode: each benchmark's file in the layout our
benchmark class reads (VLMEvalKit's TSVs; tests/scoring_cases.py writes them), one free-text answer per row fed
through `suite.run_benchmark` with generation replaced by those answers, and every row's verdict and the benchmark's
metrics compared with lmms-eval's.

Where the expected values come from: lmms-eval 0.7.3 (the PyPI wheel lmms_eval-0.7.3-py3-none-any.whl), its task code
run outside this repository on the same rows turned into that task's documents, the raw answers as the model's
output:
- MME: `tasks/mme/utils.py` mme_process_results (parse_pred_ans) per row, mme_aggregate_results per perception /
  cognition (question_id = the image);
- POPE: `tasks/pope/utils.py` pope_process_results per (row, split) document (lmms-eval's POPE holds one row per
  split), then pope_aggregate_accuracy / precision / recall / f1_score / yes_ratio over all of them;
- TextVQA, VQAv2: `tasks/textvqa/utils.py` textvqa_process_results, `tasks/vqav2/utils.py` vqav2_process_results
  (VQAv2's answers as the dataset's dicts with answer_id 1..10), exact_match averaged;
- MMMU: `tasks/mmmu/utils.py` mmmu_process_results over the documents in file order after random.seed(0)
  (lmms-eval's default random_seed), eval_multi_choice / eval_open per row, mmmu_aggregate_results overall.
The tables below are literal copies of those outputs; this file imports nothing from the toolkit.
"""

import pytest

from . import scoring_cases as cases
from .test_scoring_modes_cases_vlmevalkit import answer_runner


@pytest.fixture
def run_answers(monkeypatch, tmp_path):
    return answer_runner(monkeypatch, tmp_path)

# (answer, parse_pred_ans, score)
MME_ROWS = [
    ('Yes', 'yes', True), ('yes', 'yes', False), ('Yes.', 'yes', True), ('No', 'no', True), ('no.', 'no', False),
    ('**Yes**', 'other', False), ('**No**', 'no', False), ('Y', 'yes', False), ('N', 'no', False),
    ('y', 'yes', False), ('n', 'no', False), ('Nope', 'no', True), ('Yep', 'other', False), ('Yeah', 'other', False),
    ('There is not a dog.', 'other', False), ('There is no dog.', 'other', False),
    ('Yes, there is a dog.', 'yes', True), ('No, there is no dog.', 'no', True), ('yes and no', 'yes', True),
    ("I don't know", 'other', False), ('', 'other', False), ('None', 'no', True), ('Not sure', 'no', False),
    ('no,', 'no', True), ('YES', 'yes', True), (' yes ', 'yes', False), ('Yes!', 'yes', True),
    ('(Yes)', 'yes', False), ('Yes\n', 'yes', False), ('Answer: Yes', 'other', False),
    ('The answer is no.', 'other', False), ('nono', 'no', False), ('yesterday', 'yes', False), ('noted', 'no', False),
    ('No.', 'no', True), ('yes.', 'yes', True), ('Definitely yes', 'other', False), ('not', 'no', False),
    ('N/A', 'other', False), ('I think yes', 'other', False), ('NO', 'no', True), ('No!', 'no', False),
    ('no', 'no', True), ('nan', 'other', False), ('Yes, no doubt.', 'yes', False), ('**no**', 'no', False),
    ('Yes', 'yes', False), ('**Yes**', 'other', False), ('n', 'no', True), ('There is no dog.', 'other', False),
    ('', 'other', False), (' yes ', 'yes', True), ('The answer is no.', 'other', False), ('yes.', 'yes', True),
    ('NO', 'no', True), ('**no**', 'no', False),
]

MME_PERCEPTION, MME_COGNITION = 425.0, 200.0

# (answer, score)
POPE_ROWS = [
    ('Yes', True), ('yes', False), ('Yes.', False), ('No', False), ('no.', False), ('**Yes**', False),
    ('**No**', False), ('Y', False), ('N', False), ('y', False), ('n', False), ('Nope', False), ('Yep', False),
    ('Yeah', False), ('There is not a dog.', False), ('There is no dog.', False), ('Yes, there is a dog.', False),
    ('No, there is no dog.', False), ('yes and no', False), ("I don't know", False), ('', False), ('None', False),
    ('Not sure', False), ('no,', False), ('YES', True), (' yes ', False), ('Yes!', False), ('(Yes)', False),
    ('Yes\n', True), ('Answer: Yes', False), ('The answer is no.', False), ('nono', False), ('yesterday', False),
    ('noted', False), ('No.', False), ('yes.', False), ('Definitely yes', False), ('not', False), ('N/A', False),
    ('I think yes', False), ('NO', False), ('No!', False), ('no', True), ('nan', False), ('Yes, no doubt.', False),
    ('**no**', False),
]

POPE_AGGREGATES = {'accuracy': 0.07352941,
 'precision': 0.66666667,
 'recall': 0.5,
 'f1_score': 0.57142857,
 'yes_ratio': 0.47058824}

# (prediction, exact_match)
TEXTVQA_ROWS = [
    ('2.', 1), ('2', 1), ('cant', 1), ('wont', 1), ('hows', 0.0), ('whos', 0.0), ('im', 0.0), ('ive', 0.0), ('im', 1),
    ('stop', 0.0), ('Two', 1), ('the cat', 1), ('1,000', 1), ('3.5', 1), ('black/white', 1), ('black / white', 1),
    ('e-mail', 1), ('e-mail', 0.0), ('hello!', 1), ('Yes.', 1), ("it's", 0.0), ("dog's", 0.0), ("dog's", 1),
    ('what?', 1), ('a,b', 1), ('a, b', 1), ('None', 1), ('none', 1), ('', 0.0), ('nike', 1), ('adidas', 1),
    ('x', 0.44444444), ('U.S.A.', 1), ('3.', 1), ('10 a.m.', 1), ('Stop', 1), ('1,,2', 1), ('pm 2.30', 1),
    ("somebody'd", 1), ('twas', 1), ('Nike', 0.6), ('The answer is 5.', 0.0), ('five', 1), ('N/A', 1),
    ('COCA COLA', 1), ('coca-cola', 1), ('$1.99', 1), ('Route 66.', 1), ('exit', 1), ('www.example.com', 1),
]

TEXTVQA_MEAN = 0.78088889

# (prediction, exact_match)
VQAV2_ROWS = [
    ('2.', 1), ('2', 1), ('cant', 1), ('wont', 1), ('hows', 1), ('whos', 1), ('im', 0.0), ('ive', 0.0), ('im', 1),
    ('stop', 0.0), ('Two', 1), ('the cat', 1), ('1,000', 1), ('3.5', 1), ('black/white', 1), ('black / white', 1),
    ('e-mail', 1), ('e-mail', 0.0), ('hello!', 1), ('Yes.', 1), ("it's", 0.0), ("dog's", 0.0), ("dog's", 0.0),
    ('what?', 1), ('a,b', 0.0), ('a, b', 1), ('None', 1), ('none', 1), ('', 0.0), ('nike', 1), ('adidas', 1),
    ('x', 0.44444444), ('U.S.A.', 1), ('3.', 1), ('10 a.m.', 1), ('Stop', 1), ('1,,2', 1), ('pm 2.30', 1),
    ("somebody'd", 1), ('twas', 1), ('Nike', 0.6), ('The answer is 5.', 0.0), ('five', 1), ('N/A', 1), ('yes', 1),
    ('Red and white', 1), ('two', 1), ('tennis racket', 1), ('no', 0.6), ('skiing.', 1),
]

VQAV2_MEAN = 0.77288889

# (answer, parsed letter (None: open question), eval_multi_choice / eval_open)
MMMU_ROWS = [
    ('A', 'A', False), ('B', 'B', False), ('C', 'C', True), ('D', 'D', False), ('a', 'B', True), ('b', 'D', True),
    ('c', 'A', False), ('A.', 'A', True), ('B)', 'C', False), ('(C)', 'C', False), ('[D]', 'C', True),
    ('**B**', 'D', False), ('**C.**', 'C', False), ('`C`', 'B', False), ('B: Manet', 'C', True),
    ('C. horse', 'C', False), ('(A) 1.5', 'A', False), ('Answer: B', 'B', False), ('The answer is B.', 'B', False),
    ('The answer is c', 'B', False), ('the answer is a', 'C', False), ('The correct answer is **D**.', 'B', False),
    ('Option C', 'C', True), ('option d', 'E', False), ('I think A is right.', 'A', False),
    ('A is the correct answer here, clearly.', 'A', True), ('A and B', 'B', False), ('C or D', 'D', False),
    ('Both A and D are plausible', 'A', False), ('ABCD', 'D', True), ('A, B', 'B', False), ('E', 'A', True),
    ('Z', 'C', False), ('dog', 'B', False), ('3.', 'A', False), ('The answer is Renoir.', 'E', False),
    ('I think the answer is A or B', 'B', True), ('(A) or (B), I would say (B)', 'B', False),
    ('The animal shown in the picture is clearly Manet here', 'B', False),
    ('It is horse and not cow at all', 'D', False), ("'C'", 'C', False), ('Cow?', 'C', False),
    ('cat. That is it.', 'B', False), ('(E)', 'B', False), ('1000', None, True), ('It is 1,000 dollars.', None, True),
    ('3.14', None, True), ('3.14159', None, True), ('50', None, False), ('50%', None, True),
    ('The capital is PARIS.', None, True), ('paris', None, False), ('a category', None, True), ('12', None, False),
    ('-2.50', None, True), ('A', None, True), ('the answer is b', None, False), ('', None, False),
    ('x = 5', None, True), ('The value is 7 so 8', None, True), ('The value is 7 so 8', None, False),
    ('1.5e3', None, True), ('so the result is 42.\nthus 43', None, True), ('Therefore, 6', None, True),
    ('answer: cat', None, True), ('The speed could be 3 m/s', None, True), ('2, 3 and 4', None, True),
    ('None', None, False), ('0.5', None, False), ('1/2', None, True), ('10 kg', None, True), ('ten', None, False),
    ('The answer is 10.', None, True), ('Final answer: 3.5 cm', None, True), ("It's 2", None, True),
    ('2.0', None, True), ('-3', None, False), ('The result is -3', None, True), ('Blue.', None, True),
    ('dark blue', None, True), ('The answer is NO', None, True), ('Yes', None, False), ('42\n', None, True),
    ('approximately 3.33', None, True), ('1,234,567', None, True), ('is 8 or is 9', None, True),
]

MMMU_OVERALL = 0.48837



def test_mme_rows_and_scores(run_answers):
    rows, answers = cases.mme_case()
    assert answers == [answer for answer, _, _ in MME_ROWS]
    scores = run_answers("mme", rows, answers, mode="lmms_eval")
    assert [p["extracted"] or "other" for p in scores.predictions] == [parsed for _, parsed, _ in MME_ROWS]
    assert [p["correct"] for p in scores.predictions] == [score for _, _, score in MME_ROWS]
    assert scores.metrics["perception"] == pytest.approx(MME_PERCEPTION)
    assert scores.metrics["cognition"] == pytest.approx(MME_COGNITION)


def test_pope_rows_and_aggregates(run_answers):
    rows, answers = cases.pope_case()
    assert answers == [answer for answer, _ in POPE_ROWS]
    scores = run_answers("pope", rows, answers, mode="lmms_eval")
    assert [p["correct"] for p in scores.predictions] == [score for _, score in POPE_ROWS]
    m = scores.metrics
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["yes_ratio"]) == pytest.approx(
        tuple(POPE_AGGREGATES[k] for k in ("accuracy", "precision", "recall", "f1_score", "yes_ratio")))


@pytest.mark.parametrize("kind", ["textvqa", "vqav2"])
def test_vqa_rows_and_accuracy(run_answers, kind):
    table, mean = {"textvqa": (TEXTVQA_ROWS, TEXTVQA_MEAN), "vqav2": (VQAV2_ROWS, VQAV2_MEAN)}[kind]
    rows, answers = cases.vqa_case(kind)
    assert answers == [answer for answer, _ in table]
    scores = run_answers(kind, rows, answers, mode="lmms_eval")
    assert [p["accuracy"] for p in scores.predictions] == pytest.approx([score for _, score in table])
    assert scores.metrics["accuracy"] == pytest.approx(mean)


def test_mmmu_rows_and_accuracy(run_answers):
    rows, answers = cases.mmmu_case()
    assert answers == [answer for answer, _, _ in MMMU_ROWS]
    scores = run_answers("mmmu", rows, answers, cases.MMMU_COLUMNS)
    assert [p.get("extracted") for p in scores.predictions] == [letter for _, letter, _ in MMMU_ROWS]
    assert [p["correct"] for p in scores.predictions] == [right for _, _, right in MMMU_ROWS]
    assert scores.metrics["accuracy"] == pytest.approx(MMMU_OVERALL, abs=5e-6)  # lmms-eval rounds to 5 places


def test_every_benchmark_has_forty_answer_shapes():
    for rows in (MME_ROWS, POPE_ROWS, TEXTVQA_ROWS, VQAV2_ROWS):
        assert len({row[0] for row in rows}) >= 40
    assert len({answer for answer, letter, _ in MMMU_ROWS if letter}) >= 40  # multiple choice
    assert len({answer for answer, letter, _ in MMMU_ROWS if not letter}) >= 40  # open
