"""Toolkit-checked cases, per benchmark, in the `vlmevalkit` scoring mode: each benchmark's file in its real layout
(tests/scoring_cases.py writes it), one free-text answer per row fed through `suite.run_benchmark` with generation
replaced by those answers, and every row's verdict and the benchmark's metrics compared with VLMEvalKit's.

Where the expected values come from: VLMEvalKit at commit e8e78f05 (open-compass/VLMEvalKit, "Fix Physics and CharXiv
dataset metadata (#1629)"), run outside this repository on the same TSV files, with the predictions stored the way
its inference stores them (an .xlsx written by vlmeval.smp.dump and read back by vlmeval.smp.load, i.e. pandas), and
judge `exact_matching` (no LLM):
- MMStar, ScienceQA, AI2D, RealWorldQA, MMBench: `ImageMCQDataset.evaluate` (evaluate_heuristic: mcq_vanilla_eval,
  or mcq_circular_eval for MMBench; report_acc); the per-row letter is `extract_answer_from_item(None, row)` (can_infer;
  "Z" when nothing is read);
- MME, POPE, HallusionBench: `ImageYORNDataset.evaluate` (YOrN_Extraction; MME_rating, POPE_rating,
  Hallusion_rating), the per-row reading and score from its `_auxmatch` file;
- TextVQA: `ImageVQADataset.evaluate` (process_line, method vqa_score), per-row `eval_score`;
- OCRBench: `OCRBench.evaluate` on the whole file, and on each row alone for the per-row verdict;
- MathVista (the rule-based part only): `mathvista.post_check(line, prefetch=True)` (MathVista_auxeval's prefetch),
  then `post_check` of that extraction.
The tables below are literal copies of those outputs; this file imports nothing from the toolkit.
"""

import pytest

from ovis_lit.evaluation import suite
from ovis_lit.evaluation.benchmarks import build_benchmark

from . import scoring_cases as cases
from .test_eval_fixtures import write_tsv

TOOLKIT_READ = {"Yes": "yes", "No": "no", "Unknown": None}


def answer_runner(monkeypatch, tmp_path):
    """run(kind, rows, answers, columns=None, **options): the benchmark run on a file of `rows`, generation answering
    the items in order with `answers`."""

    def run(kind, rows, answers, columns=None, **options):
        queue = iter(answers)
        monkeypatch.setattr(suite, "generate_answers",
                            lambda model, processor, queries, **kw: [next(queue) for _ in queries])
        path = write_tsv(tmp_path / f"{kind}.tsv", rows, columns)
        result = suite.run_benchmark(None, None, build_benchmark(kind, path=path, **options), progress=False)
        assert not result.skipped and len(result.scores.predictions) == len(answers)
        return result.scores

    return run


@pytest.fixture
def run_answers(monkeypatch, tmp_path):
    return answer_runner(monkeypatch, tmp_path)


# (answer, can_infer's letter (Z: none read), hit)
MMSTAR_ROWS = [
    ('A', 'A', True), ('B', 'B', True), ('C', 'C', True), ('D', 'D', True), ('a', 'Z', False), ('b', 'Z', False),
    ('c', 'Z', False), ('A.', 'A', False), ('B)', 'B', False), ('(C)', 'C', False), ('[D]', 'D', False),
    ('**B**', 'B', False), ('**C.**', 'C', False), ('`C`', 'Z', False), ('B: dog', 'B', False), ('C. 4', 'C', False),
    ('(A) cat', 'A', True), ('Answer: B', 'B', True), ('The answer is B.', 'B', False),
    ('The answer is c', 'C', False), ('the answer is a', 'A', True), ('The correct answer is **D**.', 'D', False),
    ('Option C', 'C', True), ('option d', 'Z', False), ('I think A is right.', 'A', True),
    ('A is the correct answer here, clearly.', 'Z', False), ('A and B', 'Z', False), ('C or D', 'Z', False),
    ('Both A and D are plausible', 'Z', False), ('ABCD', 'Z', False), ('A, B', 'Z', False), ('E', 'Z', False),
    ('Z', 'Z', False), ('3', 'B', True), ('Horse.', 'C', True), ('The answer is 5.', 'Z', False),
    ('cat and dog', 'Z', False), ('5', 'D', False),
    ('It looks like horse to me, but the picture is small and I am not sure of it', 'Z', False),
    ('None of the above', 'Z', False), ('I cannot tell.', 'Z', False), ('Cannot determine the answer', 'Z', False),
    ('', 'Z', False), ('None', 'Z', False), ('nan', 'Z', False), ('N/A', 'Z', False),
    ('The image shows dog, so the answer is B.', 'B', False), ('D\n\nBecause of the picture.', 'Z', False),
    ('Answer: (D) cow', 'D', False), ('answer is apple', 'A', False), ('#B', 'B', False), ('{A}', 'A', False),
    ('A;', 'A', True), ('C!', 'C', False), ('The answer is D: cow', 'D', False), ('b.', 'Z', False),
    ('(b)', 'Z', False), (' C ', 'C', False), ('Answer:C', 'C', True), ('B\n', 'B', False),
    ('I pick A as my answer', 'A', True), ('I pick B as my final answer', 'Z', False), ('dark blue', 'Z', False),
    ('Dark blue.', 'Z', False), ('blue', 'B', False), ('Vitamin C.', 'C', False), ('vitamin c', 'D', False),
    ('Iron', 'C', True), ('the answer is a', 'A', False), ('I think A is right.', 'A', True), ('A and B', 'Z', False),
]

MMSTAR_ACC = {'Overall': 0.22535211,
 'l2_0': 0.27777778,
 'l2_1': 0.17142857,
 'cat0': 0.25,
 'cat1': 0.29166667,
 'cat2': 0.13043478}

# (answer, can_infer's letter (Z: none read), hit)
SCIENCEQA_ROWS = [
    ('A', 'A', False), ('B', 'B', True), ('C', 'Z', False), ('D', 'Z', False), ('a', 'Z', False), ('b', 'Z', False),
    ('c', 'Z', False), ('A.', 'A', False), ('B)', 'B', False), ('(C)', 'C', False), ('[D]', 'D', False),
    ('**B**', 'B', False), ('**C.**', 'C', True), ('`C`', 'Z', False), ('B: no', 'B', False), ('C. gas', 'C', False),
    ('(A) Asia', 'A', False), ('Answer: B', 'B', True), ('The answer is B.', 'B', False),
    ('The answer is c', 'C', False), ('the answer is a', 'A', True), ('The correct answer is **D**.', 'Z', False),
    ('Option C', 'C', False), ('option d', 'Z', False), ('I think A is right.', 'A', False),
    ('A is the correct answer here, clearly.', 'Z', False), ('A and B', 'Z', False), ('C or D', 'C', False),
    ('Both A and D are plausible', 'Z', False), ('ABCD', 'Z', False), ('A, B', 'Z', False), ('E', 'Z', False),
    ('Z', 'Z', False), ('liquid', 'B', True), ('Europe.', 'C', False), ('The answer is .', 'Z', False),
    ('solid and liquid', 'Z', False), ('Oceania', 'D', False),
    ('It looks like  to me, but the picture is small and I am not sure of it', 'Z', False),
    ('None of the above', 'Z', False), ('I cannot tell.', 'Z', False), ('Cannot determine the answer', 'Z', False),
    ('', 'Z', False), ('None', 'Z', False), ('nan', 'Z', False), ('N/A', 'Z', False),
    ('The image shows Africa, so the answer is B.', 'B', False), ('D\n\nBecause of the picture.', 'Z', False),
    ('Answer: (D) ', 'Z', False), ('answer is apple', 'A', False), ('#B', 'B', False), ('{A}', 'A', True),
    ('A;', 'A', False), ('C!', 'Z', False), ('The answer is D: ', 'Z', False), ('b.', 'Z', False),
    ('(b)', 'Z', False), (' C ', 'C', False), ('Answer:C', 'C', False), ('B\n', 'B', False),
    ('I pick A as my answer', 'A', False), ('I pick B as my final answer', 'Z', False), ('dark blue', 'Z', False),
    ('Dark blue.', 'Z', False), ('blue', 'B', False), ('Vitamin C.', 'C', True), ('vitamin c', 'D', False),
    ('Iron', 'C', False), ('the answer is a', 'A', False), ('I think A is right.', 'A', False),
    ('A and B', 'Z', False),
]

SCIENCEQA_ACC = {'Overall': 0.09859155,
 'l2_0': 0.05555556,
 'l2_1': 0.14285714,
 'cat0': 0.125,
 'cat1': 0.04166667,
 'cat2': 0.13043478}

# (answer, can_infer's letter (Z: none read), hit)
AI2D_ROWS = [
    ('A', 'A', False), ('B', 'B', False), ('C', 'Z', False), ('D', 'D', False), ('a', 'Z', False), ('b', 'Z', False),
    ('c', 'Z', False), ('A.', 'A', True), ('B)', 'B', False), ('(C)', 'C', True), ('[D]', 'Z', False),
    ('**B**', 'B', False), ('**C.**', 'C', False), ('`C`', 'Z', False), ('B: moon', 'B', True),
    ('C. leaf', 'C', False), ('(A) larva', 'A', True), ('Answer: B', 'B', False), ('The answer is B.', 'B', True),
    ('The answer is c', 'C', False), ('the answer is a', 'A', False), ('The correct answer is **D**.', 'D', False),
    ('Option C', 'C', False), ('option d', 'Z', False), ('I think A is right.', 'A', False),
    ('A is the correct answer here, clearly.', 'Z', False), ('A and B', 'Z', False), ('C or D', 'Z', False),
    ('Both A and D are plausible', 'Z', False), ('ABCD', 'Z', False), ('A, B', 'Z', False), ('E', 'Z', False),
    ('Z', 'Z', False), ('stem', 'B', False), ('Adult.', 'C', False), ('The answer is earth.', 'D', False),
    ('root and stem', 'Z', False), ('None', 'Z', False),
    ('It looks like NA to me, but the picture is small and I am not sure of it', 'Z', False),
    ('None of the above', 'Z', False), ('I cannot tell.', 'Z', False), ('Cannot determine the answer', 'Z', False),
    ('', 'Z', False), ('None', 'Z', False), ('nan', 'Z', False), ('N/A', 'Z', False),
    ('The image shows pupa, so the answer is B.', 'B', True), ('D\n\nBecause of the picture.', 'Z', False),
    ('Answer: (D) flower', 'D', True), ('answer is apple', 'A', False), ('#B', 'B', True), ('{A}', 'A', True),
    ('A;', 'A', True), ('C!', 'Z', False), ('The answer is D: flower', 'D', False), ('b.', 'Z', False),
    ('(b)', 'Z', False), (' C ', 'C', True), ('Answer:C', 'C', False), ('B\n', 'B', False),
    ('I pick A as my answer', 'A', False), ('I pick B as my final answer', 'Z', False), ('dark blue', 'Z', False),
    ('Dark blue.', 'Z', False), ('blue', 'B', False), ('Vitamin C.', 'C', False), ('vitamin c', 'D', False),
    ('Iron', 'C', False), ('the answer is a', 'A', True), ('I think A is right.', 'A', False),
    ('A and B', 'Z', False),
]

AI2D_ACC = {'Overall': 0.16901408,
 'l2_0': 0.22222222,
 'l2_1': 0.11428571,
 'cat0': 0.20833333,
 'cat1': 0.16666667,
 'cat2': 0.13043478}

# (answer, can_infer's letter (Z: none read), hit)
REALWORLDQA_ROWS = [
    ('A', 'A', True), ('B', 'B', True), ('C', 'C', True), ('D', 'Z', False), ('a', 'Z', False), ('b', 'Z', False),
    ('c', 'Z', False), ('A.', 'A', False), ('B)', 'B', False), ('(C)', 'C', False), ('[D]', 'Z', False),
    ('**B**', 'B', True), ('**C.**', 'C', False), ('`C`', 'Z', False), ('B: 2', 'B', False),
    ('C. straight ahead', 'C', False), ('(A) Yes', 'A', True), ('Answer: B', 'B', True),
    ('The answer is B.', 'B', False), ('The answer is c', 'Z', False), ('the answer is a', 'A', True),
    ('The correct answer is **D**.', 'Z', False), ('Option C', 'Z', False), ('option d', 'Z', False),
    ('I think A is right.', 'A', True), ('A is the correct answer here, clearly.', 'Z', False),
    ('A and B', 'Z', False), ('C or D', 'C', False), ('Both A and D are plausible', 'Z', False), ('ABCD', 'Z', False),
    ('A, B', 'Z', False), ('E', 'Z', False), ('Z', 'Z', False), ('right', 'B', True), ('.', 'Z', False),
    ('The answer is more than 3.', 'Z', False), ('left and right', 'Z', False), ('', 'Z', False),
    ('It looks like 3 to me, but the picture is small and I am not sure of it', 'Z', False),
    ('None of the above', 'Z', False), ('I cannot tell.', 'Z', False), ('Cannot determine the answer', 'Z', False),
    ('', 'Z', False), ('None', 'Z', False), ('nan', 'Z', False), ('N/A', 'Z', False),
    ('The image shows No, so the answer is B.', 'B', False), ('D\n\nBecause of the picture.', 'Z', False),
    ('Answer: (D) ', 'Z', False), ('answer is apple', 'A', False), ('#B', 'B', False), ('{A}', 'A', False),
    ('A;', 'A', True), ('C!', 'C', False), ('The answer is D: ', 'Z', False), ('b.', 'Z', False), ('(b)', 'Z', False),
    (' C ', 'C', False), ('Answer:C', 'Z', False), ('B\n', 'B', True), ('I pick A as my answer', 'A', True),
    ('I pick B as my final answer', 'Z', False), ('dark blue', 'Z', False), ('Dark blue.', 'Z', False),
    ('blue', 'B', True), ('Vitamin C.', 'C', False), ('vitamin c', 'D', False), ('Iron', 'C', True),
    ('the answer is a', 'A', False), ('I think A is right.', 'A', True), ('A and B', 'Z', False),
]

REALWORLDQA_ACC = {'Overall': 0.21126761,
 'l2_0': 0.22222222,
 'l2_1': 0.2,
 'cat0': 0.20833333,
 'cat1': 0.20833333,
 'cat2': 0.2173913}

# (answer, can_infer's letter; Z = none read)
MMBENCH_ROWS = [
    ('A', 'A'), ('B', 'B'), ('C', 'C'), ('D', 'D'), ('a', 'Z'), ('b', 'Z'), ('c', 'Z'), ('A.', 'A'), ('B)', 'B'),
    ('(C)', 'C'), ('dark blue', 'Z'), ('Dark blue.', 'Z'), ('blue', 'B'), ('Vitamin C.', 'C'), ('vitamin c', 'D'),
    ('Iron', 'C'), ('the answer is a', 'A'), ('I think A is right.', 'A'), ('A and B', 'Z'), ('B', 'B'),
    ('(A) square', 'A'), ('The correct answer is **D**.', 'D'), ('A', 'A'), ('E', 'Z'), ('square and triangle', 'Z'),
    ('C', 'C'), ('The image shows triangle, so the answer is B.', 'B'), ('{A}', 'A'), ('D', 'D'),
    ('I pick B as my final answer', 'Z'), ('a', 'Z'), ('A', 'A'), ('B: Iron', 'B'), ('The answer is c', 'C'),
    ('C', 'C'), ('ABCD', 'Z'), ('Green.', 'C'), ('D', 'D'), ('A', 'A'), ('C or D', 'Z'), ('Z', 'Z'), ('D', 'D'),
    ('', 'Z'), ('D\n\nBecause of the picture.', 'Z'), ('B', 'B'), (' C ', 'C'), ('A', 'A'), ('C', 'C'), ('[D]', 'D'),
    ('C. red', 'C'), ('D', 'D'), ('A is the correct answer here, clearly.', 'Z'), ('A, B', 'Z'), ('B', 'B'),
    ('I cannot tell.', 'Z'), ('N/A', 'Z'), ('C', 'C'), ('D', 'D'),
    ('It looks like square to me, but the picture is small and I am not sure of it', 'Z'), ('None', 'Z'), ('C', 'C'),
    ('C!', 'C'), ('Answer:C', 'C'), ('A', 'A'), ('c', 'Z'), ('**B**', 'B'), ('B', 'B'),
    ('The correct answer is **D**.', 'D'), ('A and B', 'Z'), ('C', 'C'), ('Vitamin C and Vitamin A', 'Z'),
    ('Cannot determine the answer', 'Z'), ('A', 'A'), ('{A}', 'A'), ('(b)', 'Z'), ('B', 'B'),
]

# hit per question (index % 1e6 = 0, 1, ...): every rotation read right
MMBENCH_GROUPS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
MMBENCH_ACC = {'Overall': 0.05263158,
 'l2_0': 0.1,
 'l2_1': 0.0,
 'cat0': 0.14285714,
 'cat1': 0.0,
 'cat2': 0.0}

# (answer, YOrN_Extraction, score)
MME_ROWS = [
    ('Yes', 'Yes', True), ('yes', 'Yes', False), ('Yes.', 'Yes', True), ('No', 'No', True), ('no.', 'No', False),
    ('**Yes**', 'Unknown', False), ('**No**', 'Unknown', False), ('Y', 'Unknown', False), ('N', 'Unknown', False),
    ('y', 'Unknown', False), ('n', 'Unknown', False), ('Nope', 'Unknown', False), ('Yep', 'Unknown', False),
    ('Yeah', 'Unknown', False), ('There is not a dog.', 'Unknown', False), ('There is no dog.', 'No', True),
    ('Yes, there is a dog.', 'Yes', True), ('No, there is no dog.', 'No', True), ('yes and no', 'Unknown', False),
    ("I don't know", 'Unknown', False), ('', 'Unknown', False), ('None', 'Unknown', False),
    ('Not sure', 'Unknown', False), ('no,', 'No', True), ('YES', 'Yes', True), (' yes ', 'Yes', False),
    ('Yes!', 'Yes', True), ('(Yes)', 'Yes', False), ('Yes\n', 'Yes', False), ('Answer: Yes', 'Yes', True),
    ('The answer is no.', 'No', True), ('nono', 'Unknown', False), ('yesterday', 'Unknown', False),
    ('noted', 'Unknown', False), ('No.', 'No', True), ('yes.', 'Yes', True), ('Definitely yes', 'Yes', False),
    ('not', 'Unknown', False), ('N/A', 'Unknown', False), ('I think yes', 'Yes', True), ('NO', 'No', True),
    ('No!', 'No', False), ('no', 'No', True), ('nan', 'Unknown', False), ('Yes, no doubt.', 'Unknown', False),
    ('**no**', 'Unknown', False), ('Yes', 'Yes', False), ('**Yes**', 'Unknown', False), ('n', 'Unknown', False),
    ('There is no dog.', 'No', False), ('', 'Unknown', False), (' yes ', 'Yes', True),
    ('The answer is no.', 'No', True), ('yes.', 'Yes', True), ('NO', 'No', True), ('**no**', 'Unknown', False),
]

MME_RATING = [
    {'perception': 475.0,
     'reasoning': 225.0,
     'existence': 50.0,
     'count': 125.0,
     'position': 0.0,
     'color': 100.0,
     'OCR': 0.0,
     'posters': 25.0,
     'celebrity': 25.0,
     'scene': 50.0,
     'landmark': 100.0,
     'artwork': 0.0,
     'commonsense_reasoning': 0.0,
     'numerical_calculation': 50.0,
     'text_translation': 125.0,
     'code_reasoning': 50.0},
]

# (answer, YOrN_Extraction, score)
POPE_ROWS = [
    ('Yes', 'Yes', True), ('yes', 'Yes', False), ('Yes.', 'Yes', False), ('No', 'No', False), ('no.', 'No', False),
    ('**Yes**', 'Unknown', False), ('**No**', 'Unknown', False), ('Y', 'Unknown', False), ('N', 'Unknown', False),
    ('y', 'Unknown', False), ('n', 'Unknown', False), ('Nope', 'Unknown', False), ('Yep', 'Unknown', False),
    ('Yeah', 'Unknown', False), ('There is not a dog.', 'Unknown', False), ('There is no dog.', 'No', True),
    ('Yes, there is a dog.', 'Yes', True), ('No, there is no dog.', 'No', True), ('yes and no', 'Unknown', False),
    ("I don't know", 'Unknown', False), ('', 'Unknown', False), ('None', 'Unknown', False),
    ('Not sure', 'Unknown', False), ('no,', 'No', True), ('YES', 'Yes', True), (' yes ', 'Yes', False),
    ('Yes!', 'Yes', False), ('(Yes)', 'Yes', True), ('Yes\n', 'Yes', True), ('Answer: Yes', 'Yes', False),
    ('The answer is no.', 'No', False), ('nono', 'Unknown', False), ('yesterday', 'Unknown', False),
    ('noted', 'Unknown', False), ('No.', 'No', True), ('yes.', 'Yes', True), ('Definitely yes', 'Yes', True),
    ('not', 'Unknown', False), ('N/A', 'Unknown', False), ('I think yes', 'Yes', False), ('NO', 'No', False),
    ('No!', 'No', True), ('no', 'No', True), ('nan', 'Unknown', False), ('Yes, no doubt.', 'Unknown', False),
    ('**no**', 'Unknown', False),
]

POPE_RATING = [
    {'split': 'Overall', 'Overall': 43.1372549, 'acc': 32.35294118, 'precision': 57.89473684, 'recall': 34.375},
    {'split': 'adversarial', 'Overall': 31.57894737, 'acc': 31.81818182, 'precision': 50.0, 'recall': 23.07692308},
    {'split': 'popular', 'Overall': 40.0, 'acc': 21.73913043, 'precision': 50.0, 'recall': 33.33333333},
    {'split': 'random', 'Overall': 58.82352941, 'acc': 43.47826087, 'precision': 71.42857143, 'recall': 50.0},
]

# (answer, YOrN_Extraction, score)
HALLUSIONBENCH_ROWS = [
    ('Yes', 'Yes', True), ('yes', 'Yes', False), ('Yes.', 'Yes', True), ('No', 'No', False), ('no.', 'No', True),
    ('**Yes**', 'Unknown', False), ('**No**', 'Unknown', False), ('Y', 'Unknown', False), ('N', 'Unknown', False),
    ('y', 'Unknown', False), ('n', 'Unknown', False), ('Nope', 'Unknown', False), ('Yep', 'Unknown', False),
    ('Yeah', 'Unknown', False), ('There is not a dog.', 'Unknown', False), ('There is no dog.', 'No', True),
    ('Yes, there is a dog.', 'Yes', True), ('No, there is no dog.', 'No', True), ('yes and no', 'Unknown', False),
    ("I don't know", 'Unknown', False), ('', 'Unknown', False), ('None', 'Unknown', False),
    ('Not sure', 'Unknown', False), ('no,', 'No', True), ('YES', 'Yes', True), (' yes ', 'Yes', True),
    ('Yes!', 'Yes', True), ('(Yes)', 'Yes', True), ('Yes\n', 'Yes', True), ('Answer: Yes', 'Yes', True),
    ('The answer is no.', 'No', True), ('nono', 'Unknown', False), ('yesterday', 'Unknown', False),
    ('noted', 'Unknown', False), ('No.', 'No', False), ('yes.', 'Yes', True), ('Definitely yes', 'Yes', False),
    ('not', 'Unknown', False), ('N/A', 'Unknown', False), ('I think yes', 'Yes', False), ('NO', 'No', False),
    ('No!', 'No', True), ('no', 'No', False), ('nan', 'Unknown', False), ('Yes, no doubt.', 'Unknown', False),
    ('**no**', 'Unknown', False),
]

HALLUSIONBENCH_RATING = [
    {'split': 'Overall', 'aAcc': 34.7826087, 'fAcc': 8.33333333, 'qAcc': 8.33333333},
    {'split': 'VS', 'aAcc': 62.5, 'fAcc': 25.0, 'qAcc': 25.0},
    {'split': 'VD', 'aAcc': 20.0, 'fAcc': 0.0, 'qAcc': 0.0},
    {'split': 'table', 'aAcc': 87.5, 'fAcc': 50.0, 'qAcc': 50.0},
    {'split': 'map', 'aAcc': 14.28571429, 'fAcc': 0.0, 'qAcc': 0.0},
    {'split': 'figure', 'aAcc': 37.5, 'fAcc': 0.0, 'qAcc': 0.0},
    {'split': 'chart', 'aAcc': 25.0, 'fAcc': 0.0, 'qAcc': 0.0},
]

# (prediction, vqa_score)
TEXTVQA_ROWS = [
    ('2.', 0.0), ('2', 0.0), ('cant', 1.0), ('wont', 1.0), ('hows', 1.0), ('whos', 1.0), ('im', 0.0), ('ive', 0.0),
    ('im', 1.0), ('stop', 0.0), ('Two', 1.0), ('the cat', 1.0), ('1,000', 1.0), ('3.5', 1.0), ('black/white', 1.0),
    ('black / white', 1.0), ('e-mail', 1.0), ('e-mail', 0.0), ('hello!', 1.0), ('Yes.', 1.0), ("it's", 0.0),
    ("dog's", 0.0), ("dog's", 0.0), ('what?', 1.0), ('a,b', 0.0), ('a, b', 1.0), ('None', 0.0), ('none', 1.0),
    ('', 0.0), ('nike', 1.0), ('adidas', 1.0), ('x', 0.44444444), ('U.S.A.', 1.0), ('3.', 0.0), ('10 a.m.', 1.0),
    ('Stop', 1.0), ('1,,2', 0.0), ('pm 2.30', 1.0), ("somebody'd", 1.0), ('twas', 1.0), ('Nike', 0.6),
    ('The answer is 5.', 0.0), ('five', 1.0), ('N/A', 0.0), ('COCA COLA', 1.0), ('coca-cola', 1.0), ('$1.99', 1.0),
    ('Route 66.', 0.0), ('exit', 1.0), ('www.example.com', 1.0),
]

TEXTVQA_OVERALL = 64.08888889

# (prediction, hit)
OCRBENCH_ROWS = [
    ('STOP', True), ('stop', True), ('The sign says STOP.', True), ('sto p', False), ('  hello  ', True),
    ('hel\nlo', True), ('coffee', True), ('caffe', False), ('', True), ('None', False), ('12345', True),
    ('1234', False), ('1 2 3', False), ('xqzv', True), ('x q z v', False), ('Paris, France', True), ('Pari', False),
    ('$5.00', True), ('5', False), ('The total is 42', True), ('forty-two', False), ('JOHN SMITH', True),
    ('John  Smith', False), ('2021-01-01', True), ('2021/01/01', False), ('\\frac{a}{b}', True),
    ('\\frac { a } { b }', True), ('\\Frac{a}{b}', False), ('$x^2$', True), ('x^{2}', False), ('a\n+\nb', True),
    ('A+B', False), ('Answer: cat', True), ('CAT', True), ('bird', False), ('concatenate', True), ('nan', True),
    ('N/A', False), ('Total: 1,000', False), ('1000', False), ('OPEN 24 HOURS', True), ('open\n24 hours', True),
]

OCRBENCH_SCORES = {'Text Recognition': 13.0,
 'Scene Text-centric VQA': 4.0,
 'Doc-oriented VQA': 1.0,
 'Key Information Extraction': 2.0,
 'Handwritten Mathematical Expression Recognition': 4.0,
 'Final Score': 24.0,
 'Final Score Norm': 2.4}

# (response, prefetched extraction (None: the judge is asked), post_check of it)
MATHVISTA_ROWS = [
    ('B', 'B', True), ('(B)', 'B', True), ('The answer is B.', 'B', True), ('dog', 'B', True), ('b', None, None),
    ('B. dog', 'B', True), ('A and B', None, None), ('I cannot tell.', None, None), ('', None, None),
    ('None', None, None), ('B', 'B', True), ('3', None, None), ('(B) 3', 'B', True), ('The answer is (B)', 'B', True),
    ('Option B', 'B', True), ('dark blue', None, None), ('C', 'C', True), ('Dark blue.', None, None),
    ('blue', 'B', False), ('The correct answer is **C**.', 'C', True), ('7', '7', True), ('7.0', None, None),
    (' 7 ', '7', True), ('seven', None, None), ('The answer is 7', None, None), ('8', None, None),
    ('7.5', None, None), ('2.5', '2.5', True), ('2.50', '2.5', True), ('2', None, None), ('2.5.', None, None),
    ('5/2', None, None), ('The answer is 2.5', None, None), ('0', None, None), ('0.0', None, None),
    ('zero', None, None), ('1', None, None), ('Paris', None, None), ('paris', None, None), ('None', None, None),
    ('[1, 2]', None, None), ('1, 2', None, None),
]



MC_TABLES = {"mmstar": (MMSTAR_ROWS, MMSTAR_ACC), "scienceqa": (SCIENCEQA_ROWS, SCIENCEQA_ACC),
             "ai2d": (AI2D_ROWS, AI2D_ACC), "realworldqa": (REALWORLDQA_ROWS, REALWORLDQA_ACC)}


def _breakdowns(details, acc):
    for name, value in acc.items():
        if name != "Overall":
            breakdown = details["per_l2_category"] if name.startswith("l2_") else details["per_category"]
            assert breakdown[name] == pytest.approx(value), name


@pytest.mark.parametrize("kind", sorted(MC_TABLES))
def test_multiple_choice_rows_and_accuracy(run_answers, kind):
    table, acc = MC_TABLES[kind]
    rows, answers = cases.mc_case(kind)
    assert answers == [answer for answer, _, _ in table]
    scores = run_answers(kind, rows, answers, cases.MC_COLUMNS)
    assert [p["extracted"] or "Z" for p in scores.predictions] == [letter for _, letter, _ in table]
    assert [p["correct"] for p in scores.predictions] == [hit for _, _, hit in table]
    assert scores.metrics["accuracy"] == pytest.approx(acc["Overall"])
    _breakdowns(scores.details, acc)


def test_mmbench_circular_rows_groups_and_accuracy(run_answers):
    rows, answers = cases.mc_case("mmbench")
    assert answers == [answer for answer, _ in MMBENCH_ROWS]
    scores = run_answers("mmbench", rows, answers, cases.MC_COLUMNS)
    assert scores.details["circular"]
    assert [p["extracted"] or "Z" for p in scores.predictions] == [letter for _, letter in MMBENCH_ROWS]
    groups = {p["group"]: p["question_correct"] for p in scores.predictions}
    assert [groups[str(q)] for q in range(len(MMBENCH_GROUPS))] == [bool(h) for h in MMBENCH_GROUPS]
    assert scores.metrics["accuracy"] == pytest.approx(MMBENCH_ACC["Overall"])
    _breakdowns(scores.details, MMBENCH_ACC)


YES_NO = {"mme": (cases.mme_case, MME_ROWS), "pope": (cases.pope_case, POPE_ROWS),
          "hallusionbench": (cases.hallusion_case, HALLUSIONBENCH_ROWS)}


def _yes_no_scores(run_answers, kind):
    case, table = YES_NO[kind]
    rows, answers = case()
    assert answers == [answer for answer, _, _ in table]
    scores = run_answers(kind, rows, answers)
    assert [p["extracted"] for p in scores.predictions] == [TOOLKIT_READ[read] for _, read, _ in table]
    assert [p["correct"] for p in scores.predictions] == [score for _, _, score in table]
    return scores


def test_mme_rows_and_rating(run_answers):
    scores = _yes_no_scores(run_answers, "mme")
    (rating,) = MME_RATING
    assert scores.metrics["perception"] == pytest.approx(rating["perception"])
    assert scores.metrics["cognition"] == pytest.approx(rating["reasoning"])
    for category in cases.MME_CATEGORIES:
        assert scores.details["per_category"][category]["score"] == pytest.approx(rating[category]), category


def test_pope_rows_and_rating(run_answers):
    scores = _yes_no_scores(run_answers, "pope")
    for row in POPE_RATING:
        got = scores.metrics if row["split"] == "Overall" else scores.details["per_split"][row["split"]]
        assert 100 * got["f1"] == pytest.approx(row["Overall"]), row["split"]
        assert 100 * got["accuracy"] == pytest.approx(row["acc"]), row["split"]
        assert 100 * got["precision"] == pytest.approx(row["precision"]), row["split"]
        assert 100 * got["recall"] == pytest.approx(row["recall"]), row["split"]


def test_hallusionbench_rows_and_rating(run_answers):
    scores = _yes_no_scores(run_answers, "hallusionbench")
    for row in HALLUSIONBENCH_RATING:
        split = row["split"]
        if split == "Overall":
            got = scores.metrics
        elif split in ("VD", "VS"):
            got = scores.details["per_category"][split]
        else:
            got = scores.details["per_l2_category"][split]
        for name in ("aAcc", "fAcc", "qAcc"):
            assert got[name] == pytest.approx(row[name]), (split, name)


def test_textvqa_rows_and_accuracy(run_answers):
    rows, answers = cases.vqa_case("textvqa")
    assert answers == [answer for answer, _ in TEXTVQA_ROWS]
    scores = run_answers("textvqa", rows, answers)
    assert [p["accuracy"] for p in scores.predictions] == pytest.approx([score for _, score in TEXTVQA_ROWS])
    assert 100 * scores.metrics["accuracy"] == pytest.approx(TEXTVQA_OVERALL)


def test_ocrbench_rows_and_scores(run_answers):
    rows, answers = cases.ocrbench_case()
    assert answers == [answer for answer, _ in OCRBENCH_ROWS]
    scores = run_answers("ocrbench", rows, answers)
    assert [p["correct"] for p in scores.predictions] == [hit for _, hit in OCRBENCH_ROWS]
    m, expected = scores.metrics, OCRBENCH_SCORES
    assert (m["text_recognition"], m["scene_text_vqa"], m["doc_vqa"], m["key_information_extraction"], m["hme"]) == (
        expected["Text Recognition"], expected["Scene Text-centric VQA"], expected["Doc-oriented VQA"],
        expected["Key Information Extraction"], expected["Handwritten Mathematical Expression Recognition"])
    assert (m["final_score"], m["final_score_norm"]) == (expected["Final Score"], expected["Final Score Norm"])


class UnusedJudge:
    """Answers what no rule reads; the rows it is asked about are those VLMEvalKit sends to its judge too."""

    def generate(self, prompt, temperature=0.0, max_new_tokens=128):
        return "judged"

    def describe(self):
        return {"judge": "none"}


def test_mathvista_rule_based_prefetch(run_answers):
    rows, answers = cases.mathvista_case()
    assert answers == [answer for answer, _, _ in MATHVISTA_ROWS]
    scores = run_answers("mathvista", rows, answers, judge=UnusedJudge())
    for p, (answer, fetched, right) in zip(scores.predictions, MATHVISTA_ROWS):
        assert p["prefetched"] is (fetched is not None), answer
        if fetched is not None:
            assert (p["extracted"], p["correct"]) == (fetched, right), answer
        else:
            assert (p["extracted"], p["correct"]) == ("judged", False), answer


def test_every_benchmark_has_forty_answer_shapes():
    for rows in (*[t for t, _ in MC_TABLES.values()], MMBENCH_ROWS, MME_ROWS, POPE_ROWS, HALLUSIONBENCH_ROWS,
                 TEXTVQA_ROWS, OCRBENCH_ROWS, MATHVISTA_ROWS):
        assert len({row[0] for row in rows}) >= 40
