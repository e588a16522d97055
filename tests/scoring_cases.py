"""Hand-written benchmark files and free-text answers for the toolkit-checked case tables
(tests/test_scoring_modes_cases_vlmevalkit.py, tests/test_scoring_modes_cases_lmms.py).

This module holds only the inputs: the rows of each benchmark file, in the benchmark's real layout, and one answer per
row. The answer shapes are shared by the benchmarks of one kind (multiple choice, yes/no, VQA); each benchmark has its
own options and gold answers, so the verdicts differ between benchmarks. The expected verdicts live in the test files,
as literal tables produced by running the toolkits' own code on these same files (see the test files' docstrings).
It imports nothing from ovis_lit, so the toolkits' side can build byte-identical files from it.
"""

from __future__ import annotations

from .test_eval_fixtures import png_b64

# ------------------------------------------------------------------------------------------- multiple choice
# Templates: {A}..{D} are the row's option texts, {Au}..{Du} the same capitalised. 62 shapes.
MC_SHAPES = [
    "A", "B", "C", "D", "a", "b", "c", "A.", "B)", "(C)", "[D]", "**B**", "**C.**", "`C`", "B: {B}", "C. {C}",
    "(A) {A}", "Answer: B", "The answer is B.", "The answer is c", "the answer is a",
    "The correct answer is **D**.", "Option C", "option d", "I think A is right.",
    "A is the correct answer here, clearly.", "A and B", "C or D", "Both A and D are plausible", "ABCD", "A, B",
    "E", "Z", "{B}", "{Cu}.", "The answer is {D}.", "{A} and {B}", "{Du}",
    "It looks like {C} to me, but the picture is small and I am not sure of it",
    "None of the above", "I cannot tell.", "Cannot determine the answer", "", "None", "nan", "N/A",
    "The image shows {B}, so the answer is B.", "D\n\nBecause of the picture.", "Answer: (D) {D}",
    "answer is apple", "#B", "{{A}}", "A;", "C!", "The answer is D: {D}", "b.", "(b)", " C ", "Answer:C", "B\n",
    "I pick A as my answer", "I pick B as my final answer",  # the letter just inside / outside the last four tokens
]
# The issue's examples: options where one text contains another, and an option text that holds a letter token
COLOURS = {"A": "red", "B": "blue", "C": "dark blue", "D": "green"}
VITAMINS = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Iron", "D": "Vitamin C"}
ISSUE_MC = [("dark blue", COLOURS), ("Dark blue.", COLOURS), ("blue", COLOURS), ("Vitamin C.", VITAMINS),
            ("vitamin c", VITAMINS), ("Iron", VITAMINS), ("the answer is a", VITAMINS),
            ("I think A is right.", COLOURS),
            ("A and B", COLOURS)]

# Each benchmark: option sets (cycled over the rows; None: a missing cell, "None"/"NA": cells pandas reads as
# missing) and a gold-letter pattern (cycled; a letter beyond the row's options falls back to A).
MC_BENCHMARKS = {
    "mmstar": {"options": [{"A": "cat", "B": "dog", "C": "horse", "D": "cow"},
                           {"A": "2", "B": "3", "C": "4", "D": "5"}],
               "golds": "ABCD"},
    "scienceqa": {"options": [{"A": "solid", "B": "liquid", "C": "gas"},
                              {"A": "Asia", "B": "Africa", "C": "Europe", "D": "Oceania"},
                              {"A": "yes", "B": "no"}],
                  "golds": "CBAD"},
    "ai2d": {"options": [{"A": "root", "B": "stem", "C": "leaf", "D": "flower"},
                         {"A": "larva", "B": "pupa", "C": "adult", "D": "None"},
                         {"A": "sun", "B": "moon", "C": "NA", "D": "earth"}],
             "golds": "DCBA"},
    "realworldqa": {"options": [{"A": "left", "B": "right", "C": "straight ahead"},
                                {"A": "Yes", "B": "No"},
                                {"A": "1", "B": "2", "C": "3", "D": "more than 3"}],
                    "golds": "ABCB"},
    "mmbench": {"options": [{"A": "happy", "B": "sad", "C": "angry", "D": "surprised"},
                            {"A": "circle", "B": "square", "C": "triangle", "D": "star"}],
                "golds": "CADB"},
}
MC_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
CIRCULAR = 1_000_000


def _formatted(template: str, options: dict[str, str]) -> str:
    texts = {k: options.get(k) or "" for k in "ABCD"}
    return template.format(**texts, **{f"{k}u": v.capitalize() for k, v in texts.items()})


def _gold(pattern: str, k: int, options: dict[str, str]) -> str:
    letter = pattern[k % len(pattern)]
    present = [x for x, v in options.items() if v not in (None, "None", "NA")]
    return letter if letter in present else present[0]


def mc_case(kind: str) -> tuple[list[dict], list[str]]:
    """(rows in VLMEvalKit's MCQ TSV layout, one answer per row). MMBench's file is circular: every question once,
    then each rotation of the options with index + k * 1,000,000 (the answer follows its option)."""
    spec = MC_BENCHMARKS[kind]
    questions = []  # (options, gold, shape)
    for k, shape in enumerate(MC_SHAPES):
        options = spec["options"][k % len(spec["options"])]
        questions.append((options, _gold(spec["golds"], k, options), shape))
    for k, (shape, options) in enumerate(ISSUE_MC):
        questions.append((options, _gold(spec["golds"], k + 1, options), shape))
    image = png_b64("red")
    rows, answers = [], []
    if kind != "mmbench":
        for k, (options, gold, shape) in enumerate(questions):
            rows.append({"index": k, "question": f"{kind} question {k}?", "hint": "A hint." if k % 3 == 0 else None,
                         **options, "answer": gold, "category": f"cat{k % 3}", "l2-category": f"l2_{k % 2}",
                         "image": image if k == 0 else "0"})
            answers.append(_formatted(shape, options))
        return rows, answers
    # circular: ten questions with four options, then the issue's questions; four rows each (76 rows). The first
    # rotation gets the question's own answer shape; in the others every third question is answered right (so some
    # questions can be right as a whole) and the rest cycle through the shapes
    chosen = [q for q in questions if len(q[0]) == 4]
    chosen = chosen[:10] + chosen[-len(ISSUE_MC):]
    for rotation in range(4):
        for q, (options, gold, shape) in enumerate(chosen):
            letters = list("ABCD")
            texts = [options[x] for x in letters]
            rotated = dict(zip(letters, texts[rotation:] + texts[:rotation]))
            answer = letters[(letters.index(gold) - rotation) % 4]
            index = q + rotation * CIRCULAR
            rows.append({"index": index, "question": f"mmbench question {q}?", "hint": None, **rotated,
                         "answer": answer, "category": f"cat{q % 3}", "l2-category": f"l2_{q % 2}",
                         "image": image if index == 0 else "0"})
            if rotation == 0:
                answers.append(_formatted(shape, options))
            elif q % 3 == 0:
                answers.append(answer)
            else:
                answers.append(_formatted(MC_SHAPES[(5 * q + 11 * rotation) % len(MC_SHAPES)], rotated))
    return rows, answers


# ----------------------------------------------------------------------------------------------------- yes / no
YES_NO_SHAPES = [
    "Yes", "yes", "Yes.", "No", "no.", "**Yes**", "**No**", "Y", "N", "y", "n", "Nope", "Yep", "Yeah",
    "There is not a dog.", "There is no dog.", "Yes, there is a dog.", "No, there is no dog.", "yes and no",
    "I don't know", "", "None", "Not sure", "no,", "YES", " yes ", "Yes!", "(Yes)", "Yes\n", "Answer: Yes",
    "The answer is no.", "nono", "yesterday", "noted", "No.", "yes.", "Definitely yes", "not", "N/A", "I think yes",
    "NO", "No!", "no", "nan", "Yes, no doubt.", "**no**",
]
MME_CATEGORIES = ["existence", "count", "position", "color", "OCR", "posters", "celebrity", "scene", "landmark",
                  "artwork", "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def mme_case() -> tuple[list[dict], list[str]]:
    """VLMEvalKit's MME.tsv layout: two questions per image (yes, no; or no, yes), every one of the 14 categories
    twice (56 rows); the second question's image is a reference to the first's row."""
    rows = []
    for k in range(56):
        image_no, second = divmod(k, 2)
        category = MME_CATEGORIES[image_no % 14]
        first_yes = (image_no // 14) % 2 == 0
        gold = "Yes" if (second == 0) == first_yes else "No"
        rows.append({"index": k, "question": f"Is there thing {k} in the image? Please answer yes or no.",
                     "answer": gold, "category": category, "image_path": f"{category}/{image_no}.png",
                     "image": png_b64("red") if second == 0 else str(k - 1)})
    return rows, [YES_NO_SHAPES[(k * 5) % len(YES_NO_SHAPES)] if k >= len(YES_NO_SHAPES) else YES_NO_SHAPES[k]
                  for k in range(56)]


def pope_case() -> tuple[list[dict], list[str]]:
    """VLMEvalKit's POPE.tsv layout: a question once, its splits listed in `category`."""
    splits = ["random", "popular", "adversarial", "random,popular", "popular,adversarial", "random,adversarial"]
    golds = "YNNYYNYN"
    rows = [{"index": k, "question": f"Is there a thing {k} in the image?",
             "answer": "Yes" if golds[k % len(golds)] == "Y" else "No", "category": splits[k % len(splits)],
             "image": png_b64("blue") if k == 0 else "0"} for k in range(len(YES_NO_SHAPES))]
    return rows, list(YES_NO_SHAPES)


def hallusion_case() -> tuple[list[dict], list[str]]:
    """VLMEvalKit's HallusionBench.tsv layout: index category_subcategory_visual_set_figure_question."""
    rows = []
    golds = "YNYYNNYN" * 3 + "YYYYYYNN" + "YNYYNNYN" * 3  # set 3's answers are mostly right: whole figures, questions
    for k in range(len(YES_NO_SHAPES)):
        # blocks of 8 rows: one set of one subcategory, 2 figures x 2 questions, each asked of the original
        # figure and of an edited one (visual input 0 / 1): a figure groups 4 rows, a question 4 rows
        set_id = k // 8
        category = "VS" if set_id % 3 == 0 else "VD"
        sub = ["chart", "map", "figure", "table"][set_id % 4]
        visual, figure, question = (k % 8) // 4, (k // 2) % 2, k % 2
        rows.append({"index": f"{category}_{sub}_{visual}_{set_id}_{figure}_{question}",
                     "question": f"Is statement {k} true?", "answer": "Yes" if golds[k] == "Y" else "No",
                     "category": category, "l2-category": sub, "image": png_b64("green")})
    return rows, list(YES_NO_SHAPES)


# ------------------------------------------------------------------------------------------------------------ VQA
TEN = 10
VQA_SHAPES = [  # (prediction, human answers)
    ("2.", ["2"] * TEN), ("2", ["2."] * TEN), ("cant", ["can't"] * TEN), ("wont", ["won't"] * TEN),
    ("hows", ["how's"] * TEN), ("whos", ["who's"] * TEN), ("im", ["i'm"] * TEN), ("ive", ["i've"] * TEN),
    ("im", ["im"] * TEN), ("stop", ["stop"]), ("Two", ["2"] * TEN), ("the cat", ["cat"] * TEN),
    ("1,000", ["1000"] * TEN), ("3.5", ["3.5"] * TEN), ("black/white", ["black white"] * TEN),
    ("black / white", ["black white"] * TEN), ("e-mail", ["e mail"] * TEN), ("e-mail", ["email"] * TEN),
    ("hello!", ["hello"] * TEN), ("Yes.", ["yes"] * TEN), ("it's", ["its"] * TEN), ("dog's", ["dogs"] * TEN),
    ("dog's", ["dog 's"] * TEN), ("what?", ["what"] * TEN), ("a,b", ["ab"] * TEN), ("a, b", ["a b"] * TEN),
    ("None", ["0"] * TEN), ("none", ["0"] * TEN), ("", ["yes"] * TEN), ("nike", ["nike"] * 4 + ["adidas"] * 6),
    ("adidas", ["nike"] * 4 + ["adidas"] * 6), ("x", ["x", "x", "y"]), ("U.S.A.", ["usa"] * TEN), ("3.", ["3"] * TEN),
    ("10 a.m.", ["10 am"] * TEN), ("Stop", ["STOP"] * TEN), ("1,,2", ["12"] * TEN), ("pm 2.30", ["pm 2.30"] * TEN),
    ("somebody'd", ["somebodyd"] * TEN), ("twas", ["'twas"] * TEN), ("Nike", ["nike"] * 2 + ["adidas"] * 8),
    ("The answer is 5.", ["5"] * TEN), ("five", ["5"] * 9 + ["five"]), ("N/A", ["n/a"] * TEN),
]
VQA_OWN = {  # each benchmark's own rows, after the shared shapes
    "textvqa": [("COCA COLA", ["coca cola"] * 7 + ["coca-cola"] * 3),
                ("coca-cola", ["coca cola"] * 7 + ["coca-cola"] * 3),
                ("$1.99", ["1.99"] * 6 + ["$1.99"] * 4), ("Route 66.", ["route 66"] * TEN),
                ("exit", ["exit"] * 2 + ["EXIT"] * 8), ("www.example.com", ["www.example.com"] * TEN)],
    "vqav2": [("yes", ["yes"] * 9 + ["no"]), ("Red and white", ["red and white"] * 5 + ["red"] * 5),
              ("two", ["2"] * 8 + ["3"] * 2), ("tennis racket", ["racket"] * 6 + ["tennis racket"] * 4),
              ("no", ["yes"] * 8 + ["no"] * 2), ("skiing.", ["skiing"] * TEN)],
}


def vqa_case(kind: str) -> tuple[list[dict], list[str]]:
    """VLMEvalKit's TextVQA_VAL.tsv layout (VQAv2 the same): the human answers as a list literal."""
    shapes = VQA_SHAPES + VQA_OWN[kind]
    rows = [{"index": k, "question": f"what is written on sign {k}?", "answer": str(gold),
             "image": png_b64("white") if k == 0 else "0"} for k, (_, gold) in enumerate(shapes)]
    return rows, [prediction for prediction, _ in shapes]


# ------------------------------------------------------------------------------------------------------- OCRBench
HME = "Handwritten Mathematical Expression Recognition"
OCR_SHAPES = [  # (prediction, accepted answers, category)
    ("STOP", ["stop"], "Regular Text Recognition"), ("stop", ["STOP"], "Regular Text Recognition"),
    ("The sign says STOP.", ["stop"], "Regular Text Recognition"), ("sto p", ["stop"], "Regular Text Recognition"),
    ("  hello  ", ["hello"], "Irregular Text Recognition"), ("hel\nlo", ["hel lo"], "Irregular Text Recognition"),
    ("coffee", ["cafe", "coffee"], "Artistic Text Recognition"), ("caffe", ["cafe", "coffee"],
    "Artistic Text Recognition"),
    ("", ["a"], "Handwriting Recognition"), ("None", ["none"], "Handwriting Recognition"),
    ("12345", ["2345"], "Digit String Recognition"), ("1234", ["12345"], "Digit String Recognition"),
    ("1 2 3", ["123"], "Digit String Recognition"), ("xqzv", ["XQZV"], "Non-Semantic Text Recognition"),
    ("x q z v", ["xqzv"], "Non-Semantic Text Recognition"), ("Paris, France", ["paris"], "Scene Text-centric VQA"),
    ("Pari", ["paris"], "Scene Text-centric VQA"), ("$5.00", ["5.00"], "Scene Text-centric VQA"),
    ("5", ["$5.00"], "Scene Text-centric VQA"), ("The total is 42", ["42"], "Doc-oriented VQA"),
    ("forty-two", ["42"], "Doc-oriented VQA"), ("JOHN SMITH", ["John Smith"], "Key Information Extraction"),
    ("John  Smith", ["john smith"], "Key Information Extraction"), ("2021-01-01", ["2021-01-01"],
    "Key Information Extraction"),
    ("2021/01/01", ["2021-01-01"], "Key Information Extraction"), ("\\frac{a}{b}", ["\\frac { a } { b }"], HME),
    ("\\frac { a } { b }", ["\\frac{a}{b}"], HME), ("\\Frac{a}{b}", ["\\frac{a}{b}"], HME),
    ("$x^2$", ["x ^ 2"], HME), ("x^{2}", ["x ^ 2"], HME), ("a\n+\nb", ["a + b"], HME), ("A+B", ["a + b"], HME),
    ("Answer: cat", ["cat"], "Regular Text Recognition"), ("CAT", ["cat", "dog"], "Regular Text Recognition"),
    ("bird", ["cat", "dog"], "Regular Text Recognition"), ("concatenate", ["cat"], "Irregular Text Recognition"),
    ("nan", ["nan"], "Artistic Text Recognition"), ("N/A", ["n/a"], "Handwriting Recognition"),
    ("Total: 1,000", ["1000"], "Doc-oriented VQA"), ("1000", ["1,000"], "Doc-oriented VQA"),
    ("OPEN 24 HOURS", ["open 24 hours"], "Scene Text-centric VQA"), ("open\n24 hours", ["open 24 hours"],
    "Scene Text-centric VQA"),
]


def ocrbench_case() -> tuple[list[dict], list[str]]:
    rows = [{"index": k, "image": png_b64("black") if k == 0 else "0", "question": f"What is written? {k}",
             "answer": str(gold), "category": category} for k, (_, gold, category) in enumerate(OCR_SHAPES)]
    return rows, [prediction for prediction, _, _ in OCR_SHAPES]


# ------------------------------------------------------------------------------------------------------ MathVista
MATHVISTA_QUESTIONS = [  # (question_type, answer_type, choices, answer)
    ("multi_choice", "text", ["cat", "dog", "horse", "cow"], "dog"),
    ("multi_choice", "text", ["(A) 2", "(B) 3"], "(B) 3"),
    ("multi_choice", "text", ["red", "blue", "dark blue", "green"], "dark blue"),
    ("free_form", "integer", [], "7"),
    ("free_form", "float", [], "2.5"),
    ("free_form", "integer", [], "0"),
    ("free_form", "text", [], "Paris"),
    ("free_form", "list", [], "[1, 2]"),
]
MATHVISTA_SHAPES = [
    "B", "(B)", "The answer is B.", "dog", "b", "B. dog", "A and B", "I cannot tell.", "", "None",
    "B", "3", "(B) 3", "The answer is (B)", "Option B",
    "dark blue", "C", "Dark blue.", "blue", "The correct answer is **C**.",
    "7", "7.0", " 7 ", "seven", "The answer is 7", "8", "7.5",
    "2.5", "2.50", "2", "2.5.", "5/2", "The answer is 2.5",
    "0", "0.0", "zero", "1",
    "Paris", "paris", "None",
    "[1, 2]", "1, 2",
]
MATHVISTA_QUESTION_OF_SHAPE = [0] * 10 + [1] * 5 + [2] * 5 + [3] * 7 + [4] * 6 + [5] * 4 + [6] * 3 + [7] * 2


def mathvista_case() -> tuple[list[dict], list[str]]:
    """VLMEvalKit's MathVista_MINI.tsv layout."""
    rows = []
    for k, q in enumerate(MATHVISTA_QUESTION_OF_SHAPE):
        question_type, answer_type, choices, answer = MATHVISTA_QUESTIONS[q]
        option = chr(ord("A") + choices.index(answer)) if choices else None
        rows.append({"index": k, "image": png_b64("purple") if k == 0 else "0", "question": f"Question {q}?",
                     "answer": answer, "question_type": question_type, "answer_type": answer_type,
                     "choices": str(choices) if choices else None, "answer_option": option,
                     "task": "figure question answering", "skills": "['arithmetic reasoning']"})
    return rows, list(MATHVISTA_SHAPES)


# ----------------------------------------------------------------------------------------------------------- MMMU
MMMU_MC_SHAPES = MC_SHAPES[:36] + [
    "I think the answer is A or B", "(A) or (B), I would say (B)",
    "The animal shown in the picture is clearly {B} here",
    "It is {C} and not {D} at all", "'C'", "Cow?", "{A}. That is it.", "(E)",
]
MMMU_OPEN_SHAPES = [  # (answer, gold as written)
    ("1000", "1,000"), ("It is 1,000 dollars.", "1000"), ("3.14", "3.14159"), ("3.14159", "3.14"), ("50", "50%"),
    ("50%", "50%"), ("The capital is PARIS.", "Paris"), ("paris", "['Paris', 'paris, france']"), ("a category", "cat"),
    ("12", "2"), ("-2.50", "-2.5"), ("A", "a"), ("the answer is b", "a"), ("", "0"), ("x = 5", "5"),
    ("The value is 7 so 8", "8"), ("The value is 7 so 8", "7"), ("1.5e3", "1500"), ("so the result is 42.\nthus 43",
    "42"),
    ("Therefore, 6", "6"), ("answer: cat", "cat"), ("The speed could be 3 m/s", "3"), ("2, 3 and 4", "3"),
    ("None", "0"), ("0.5", "1/2"), ("1/2", "1/2"), ("10 kg", "10"), ("ten", "10"), ("The answer is 10.", "10"),
    ("Final answer: 3.5 cm", "3.5"), ("It's 2", "2.0"), ("2.0", "2"), ("-3", "3"), ("The result is -3", "-3"),
    ("Blue.", "blue"), ("dark blue", "blue"), ("The answer is NO", "No"), ("Yes", "no"), ("42\n", "42"),
    ("approximately 3.33", "3.333"), ("1,234,567", "1234567"), ("is 8 or is 9", "9"),
]
MMMU_SUBJECTS = ["Art", "Biology", "Economics", "Physics", "Math", "History"]


def mmmu_case() -> tuple[list[dict], list[str]]:
    """VLMEvalKit's MMMU_DEV_VAL.tsv layout: options in A.. columns (none for open questions)."""
    option_sets = [{"A": "cat", "B": "dog", "C": "horse", "D": "cow"}, {"A": "1.5", "B": "2", "C": "3"},
                   {"A": "Monet", "B": "Manet", "C": "Degas", "D": "Renoir", "E": "Cezanne"}]
    golds = "BDCA"
    rows, answers = [], []
    for k, shape in enumerate(MMMU_MC_SHAPES):
        options = option_sets[k % 3]
        gold = golds[k % 4] if golds[k % 4] in options else "A"
        rows.append({"index": len(rows), "question": f"<image 1> Which one {k}?", **options, "answer": gold,
                     "category": MMMU_SUBJECTS[k % 6], "split": "validation", "image": png_b64("orange")})
        answers.append(_formatted(shape, options))
    for k, (answer, gold) in enumerate(MMMU_OPEN_SHAPES):
        rows.append({"index": len(rows), "question": f"How much {k}? <image 1>", "answer": gold,
                     "category": MMMU_SUBJECTS[k % 6], "split": "validation", "image": png_b64("orange")})
        answers.append(answer)
    return rows, answers


MMMU_COLUMNS = ["index", "question", "A", "B", "C", "D", "E", "answer", "category", "split", "image"]
