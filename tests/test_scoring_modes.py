"""The `vlmevalkit` scoring mode: every expected value below is what VLMEvalKit (e8e78f0, exact matching, no judge)
gives for the same answer; the tables were checked against its own functions (can_infer, YOrN_Extraction,
process_answer). They include every disagreement reported in issue 15."""

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.modes import vlmevalkit
from ovis_lit.evaluation.vqa_metric import CONTRACTIONS

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv
from .test_hostile_eval_shards import answer_a  # noqa: F401  (fixture: generation stubbed)

ANIMALS = {"A": "cat", "B": "dog", "C": "horse", "D": "cow"}
COLOURS = {"A": "red", "B": "blue", "C": "dark blue", "D": "green"}
VITAMINS = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Iron", "D": "Vitamin C"}

# (answer, options, VLMEvalKit's letter: None = nothing read, scored wrong; "Z" = refusal, wrong)
MULTIPLE_CHOICE = [
    ("A", ANIMALS, "A"), ("B", ANIMALS, "B"), ("a", ANIMALS, None), ("b", ANIMALS, None), ("A.", ANIMALS, "A"),
    ("B)", ANIMALS, "B"), ("(C)", ANIMALS, "C"), ("[D]", ANIMALS, "D"), ("**B**", ANIMALS, "B"),
    ("**B.**", ANIMALS, "B"), ("`C`", ANIMALS, None), ("B: dog", ANIMALS, "B"), ("C. horse", ANIMALS, "C"),
    ("(A) cat", ANIMALS, "A"), ("Answer: B", ANIMALS, "B"), ("The answer is B.", ANIMALS, "B"),
    ("The answer is b", ANIMALS, "B"), ("the answer is a", ANIMALS, "A"),  # issue: no answer here before, A there
    ("The correct answer is **C**.", ANIMALS, "C"), ("Option C", ANIMALS, "C"), ("option c", ANIMALS, None),
    ("I think A is right.", ANIMALS, "A"),  # issue: no answer before
    ("A is the correct answer here, clearly.", ANIMALS, None),  # the letter is not among the last four tokens
    ("A and B", ANIMALS, None),  # issue: B before
    ("A or B", ANIMALS, None), ("Both A and D are plausible", ANIMALS, None), ("ABCD", ANIMALS, None),
    ("A, B", ANIMALS, None), ("E", ANIMALS, None),
    ("dog", ANIMALS, "B"), ("Dog.", ANIMALS, "B"), ("The animal is a dog.", ANIMALS, "B"), ("cow", ANIMALS, "D"),
    ("Cows", ANIMALS, "D"), ("a dog and a cat", ANIMALS, None),
    ("It looks like a horse to me, standing in a large green field next to a barn", ANIMALS, None),  # too long
    ("None of the above", ANIMALS, None), ("I cannot tell.", ANIMALS, None), ("", ANIMALS, None),
    ("None", ANIMALS, None), ("nan", ANIMALS, None),
    ("Z", ANIMALS, "Z"), ("Cannot determine the answer", ANIMALS, "Z"),
    ("The image shows a dog, so the answer is B.", ANIMALS, "B"), ("B\n\nThe dog is on the left.", ANIMALS, "B"),
    ("Answer: (D) cow", ANIMALS, "D"), ("answer is apple", ANIMALS, "A"),  # "answer is a..." has no word boundary
    ("#B", ANIMALS, "B"), ("{A}", ANIMALS, "A"), ("A;", ANIMALS, "A"), ("C!", ANIMALS, "C"),
    ("dark blue", COLOURS, None),  # issue: A before (a substring of two options)
    ("Dark blue.", COLOURS, None), ("blue", COLOURS, "B"), ("red", COLOURS, "A"), ("It is green!", COLOURS, "D"),
    ("Vitamin C.", VITAMINS, "C"),  # issue: D before; VLMEvalKit reads the letter C
    ("vitamin c", VITAMINS, "D"), ("Iron", VITAMINS, "C"), ("Vitamin B12", VITAMINS, "B"),
    ("Vitamin A", VITAMINS, "A"), ("The answer is D: Vitamin C", VITAMINS, "D"),
]


@pytest.mark.parametrize("answer,options,letter", MULTIPLE_CHOICE)
def test_can_infer(answer, options, letter):
    assert vlmevalkit.extract_choice(answer, options).letter == letter


# (answer, YOrN_Extraction: "yes", "no" or None = Unknown)
YES_NO = [
    ("Yes", "yes"), ("yes", "yes"), ("Yes.", "yes"), ("No", "no"), ("no.", "no"), ("YES", "yes"), (" yes ", "yes"),
    ("Yes!", "yes"), ("(Yes)", "yes"), ("Yes\n", "yes"), ("no,", "no"), ("No.", "no"),
    ("**Yes**", None), ("**No**", None), ("Y", None), ("N", None), ("Nope", None), ("Yep", None),  # issue
    ("There is not a dog.", None), ("There is no dog.", "no"), ("Yes, there is a dog.", "yes"),  # issue
    ("No, there is no dog.", "no"), ("yes and no", None), ("I don't know", None), ("", None), ("None", None),
    ("Not sure", None), ("Answer: Yes", "yes"), ("The answer is no.", "no"), ("yesterday", None),
    ("noted", None), ("Definitely yes", "yes"), ("I think yes", "yes"), ("N/A", None),
]


@pytest.mark.parametrize("answer,said", YES_NO)
def test_yes_no_extraction(answer, said):
    assert vlmevalkit.extract_yes_no(answer) == said


TEN = 10
# (prediction, human answers, VLMEvalKit's vqa_score)
VQA = [
    ("2.", ["2"] * TEN, 0.0),  # issue: a period after a digit stays ("2." != "2")
    ("3.", ["3"] * TEN, 0.0), ("2", ["2."] * TEN, 0.0),
    ("cant", ["can't"] * TEN, 1.0), ("wont", ["won't"] * TEN, 1.0),  # issue: restored
    ("hows", ["how's"] * TEN, 1.0), ("whos", ["who's"] * TEN, 1.0),
    ("im", ["i'm"] * TEN, 0.0), ("ive", ["i've"] * TEN, 0.0),  # the table's keys "Im", "Ive" never match
    ("stop", ["stop"], 0.0),  # issue: one human answer gives 0
    ("x", ["x", "x", "y"], pytest.approx(4 / 9)),
    ("Two", ["2"] * TEN, 1.0), ("the cat", ["cat"] * TEN, 1.0), ("1,000", ["1000"] * TEN, 1.0),
    ("3.5", ["3.5"] * TEN, 1.0), ("black/white", ["black white"] * TEN, 1.0), ("e-mail", ["email"] * TEN, 0.0),
    ("hello!", ["hello"] * TEN, 1.0), ("Yes.", ["yes"] * TEN, 1.0), ("U.S.A.", ["usa"] * TEN, 1.0),
    ("a,b", ["ab"] * TEN, 0.0), ("1,,2", ["12"] * TEN, 0.0), ("dog's", ["dog 's"] * TEN, 0.0),
    ("None", ["0"] * TEN, 0.0),  # read back from VLMEvalKit's predictions file as "nan"
    ("none", ["0"] * TEN, 1.0), ("", ["yes"] * TEN, 0.0), ("somebody'd", ["somebodyd"] * TEN, 1.0),
    ("twas", ["'twas"] * TEN, 1.0),
    ("nike", ["nike"] * 4 + ["adidas"] * 6, 1.0), ("Nike", ["nike"] * 2 + ["adidas"] * 8, pytest.approx(0.6)),
]


@pytest.mark.parametrize("prediction,answers,accuracy", VQA)
def test_vqa_score(prediction, answers, accuracy):
    assert vlmevalkit.vqa_accuracy(prediction, answers) == accuracy


def test_contraction_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["cant"] == "can't" and CONTRACTIONS["somebody'd"] == "somebodyd"
    assert CONTRACTIONS["Id've"] == "I'd've" and "im" not in CONTRACTIONS and "hed" in CONTRACTIONS
    assert "wedve" not in CONTRACTIONS and CONTRACTIONS["twas"] == "'twas"


MC_COLUMNS = ["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


@pytest.mark.parametrize("kind", ["ai2d", "realworldqa", "mmstar", "scienceqa"])
def test_row_by_row_multiple_choice_benchmarks(tmp_path, kind):
    rows = [{"index": k, "question": f"Q{k}?", **ANIMALS, "answer": "ABCD"[k % 4], "category": "c", "image": png_b64()}
            for k in range(4)]
    bench = build_benchmark(kind, path=write_tsv(tmp_path / f"{kind}.tsv", rows, MC_COLUMNS))
    assert bench.mode == "vlmevalkit" and bench.describe()["mode"] == "vlmevalkit"
    items = bench.load()
    scores = bench.score(items, ["A", "I think B is right.", "dark horse", "D and A"])
    assert scores.metrics["accuracy"] == 0.75 and scores.metrics["failed_extractions"] == 1
    assert [p["extracted"] for p in scores.predictions] == ["A", "B", "C", None]


def test_mmbench_circular_with_the_issues_answers(tmp_path):
    """Two questions, four rotations each: question 0 is right only with VLMEvalKit's readings."""
    rows = []
    texts = ["red", "blue", "dark blue", "green"]
    for r in range(4):
        rotated = texts[r:] + texts[:r]
        rows.append({"index": r * 1_000_000, "question": "Colour?", **dict(zip("ABCD", rotated)),
                     "answer": "ABCD"[rotated.index("dark blue")], "category": "colour",
                     "image": png_b64() if r == 0 else "0"})
    bench = build_benchmark("mmbench", path=write_tsv(tmp_path / "MMBench_DEV_EN.tsv", rows, MC_COLUMNS))
    items = bench.load()
    golds = [i.target["answer"] for i in items]
    assert bench.score(items, golds).metrics["accuracy"] == 1.0
    # "dark blue" holds "blue" too: VLMEvalKit reads nothing, so the question is wrong
    spoiled = golds[:3] + ["dark blue"]
    m = bench.score(items, spoiled).metrics
    assert (m["accuracy"], m["row_accuracy"], m["failed_extractions"]) == (0.0, 0.75, 1)


def test_hallusionbench_aacc_facc_qacc(tmp_path):
    """Two figures (0, 1) of set 0 each asked questions 0 and 1, and one figure of set 1 asked question 0."""
    rows = [
        {"index": "VD_chart_1_0_0_0", "answer": "Yes", "category": "VD", "l2-category": "chart"},
        {"index": "VD_chart_1_0_0_1", "answer": "No", "category": "VD", "l2-category": "chart"},
        {"index": "VD_chart_1_0_1_0", "answer": "No", "category": "VD", "l2-category": "chart"},
        {"index": "VD_chart_1_0_1_1", "answer": "Yes", "category": "VD", "l2-category": "chart"},
        {"index": "VS_map_0_1_0_0", "answer": "Yes", "category": "VS", "l2-category": "map"},
        {"index": "VS_map_0_1", "answer": "Yes", "category": "VS", "l2-category": "map"},  # no ids: skipped
    ]
    for k, row in enumerate(rows):
        row.update(question=f"Is it so {k}?", image=png_b64())
    bench = build_benchmark("hallusionbench", path=write_tsv(tmp_path / "HallusionBench.tsv", rows))
    items = bench.load()
    assert len(items) == 5 and sum(bench.skipped.values()) == 1
    assert items[0].prompt == "Is it so 0? Please answer yes or no.\nAnswer the question using a single word or phrase."
    # right, right, wrong ("**No**" is unknown), right, right
    scores = bench.score(items, ["Yes", "No.", "**No**", "Yes, it is.", "yes"])
    m = scores.metrics
    assert m["aAcc"] == pytest.approx(80.0)
    assert m["fAcc"] == pytest.approx(100 * 2 / 3)  # figure (0,0) right, (0,1) not, (1,0) right
    assert m["qAcc"] == pytest.approx(100 * 2 / 3)  # question (0,0) not (its figure-1 copy is wrong), (0,1), (1,0)
    assert m["failed_extractions"] == 1
    assert scores.details["per_category"]["VS"]["aAcc"] == 100.0
    assert scores.details["per_l2_category"]["chart"]["fAcc"] == 50.0


def test_mme_and_pope_in_vlmevalkit_mode_follow_yorn(tmp_path):
    rows = [{"index": k, "question": f"Is there a dog {k}? Please answer yes or no.", "answer": a,
             "category": "existence", "image": png_b64() if k % 2 == 0 else str(k - 1)}
            for k, a in enumerate(["Yes", "No", "Yes", "No"])]
    bench = build_benchmark("mme", path=write_tsv(tmp_path / "MME.tsv", rows))
    items = bench.load()
    assert items[0].prompt.endswith("Please answer yes or no.\nAnswer the question using a single word or phrase.")
    # image 0 both right; image 2: "Y" is unknown, "There is not a dog." unknown
    m = bench.score(items, ["**yes** yes", "No", "Y", "There is not a dog."]).metrics
    assert m["perception"] == pytest.approx(50 + 50) and m["failed_extractions"] == 2
    pope = build_benchmark("pope", path=write_tsv(tmp_path / "POPE.tsv", [dict(r, category="random") for r in rows]))
    m = pope.score(pope.load(), ["Yes", "Nope", "Yes.", "no"]).metrics
    # yes-gold both read yes; "Nope" unknown: not-yes, wrong
    assert (m["accuracy"], m["precision"], m["recall"]) == (0.75, 1.0, 1.0)


def test_unknown_mode_is_a_clear_error(tmp_path):
    path = write_tsv(tmp_path / "b.tsv", [{"index": 0, "question": "q", "A": "x", "B": "y", "answer": "A"}])
    with pytest.raises(ValueError, match="unknown scoring mode 'lmms_eval'; its modes are one of"):
        build_benchmark("mmbench", path=path, mode="lmms_eval")
    with pytest.raises(ValueError, match="unknown scoring mode"):
        build_benchmark("textvqa", path=path, mode="vlmevalkit2")


def test_answers_by_key_helper_is_used(tmp_path):
    """The benchmarks keep item order: predictions line up with the answers given."""
    rows = [{"index": k, "question": "q", **ANIMALS, "answer": "B", "image": png_b64()} for k in (5, 3)]
    bench = build_benchmark("ai2d", path=write_tsv(tmp_path / "a.tsv", rows, MC_COLUMNS))
    items = bench.load()
    scores = bench.score(items, answers_by_key(items, {"5": "dog", "3": "cat"}))
    assert [(p["key"], p["correct"]) for p in scores.predictions] == [("5", True), ("3", False)]


@pytest.mark.usefixtures("answer_a")
def test_evals_run_skips_a_bomb_and_a_truncated_image_and_records_the_mode(tmp_path, monkeypatch):
    import base64
    import json

    from .test_hostile_eval_shards import MC, bomb_png, evaluate_stubbed, mc_row, noise_b64

    whole = noise_b64()
    truncated = whole[: (len(whole) // 2) // 4 * 4]  # a PNG cut in half
    rows = [mc_row(0), mc_row(1, image=base64.b64encode(bomb_png()).decode()), mc_row(2, image=truncated),
            mc_row(3, answer="B")]
    path = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", rows, MC)
    metrics = evaluate_stubbed(tmp_path, monkeypatch, {"mmbench": {"path": str(path)}})
    assert metrics["mmbench"]["rows"] == 2 and metrics["mmbench"]["accuracy"] == 0.5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["benchmarks"]["mmbench"]
    assert summary["skipped"] == {"image over the pixel limit": 1, "undecodable image": 1}
    assert summary["mode"] == "vlmevalkit"


@pytest.mark.parametrize("kind", ["hallusionbench", "ai2d", "realworldqa"])
@pytest.mark.usefixtures("answer_a")
def test_new_benchmarks_with_nothing_scored_report_no_score_and_warn(tmp_path, kind, caplog):
    import logging

    from ovis_lit.evaluation import suite

    path = write_tsv(tmp_path / f"{kind}.tsv", [], ["index", "question", "A", "B", "answer", "image"])
    bench = build_benchmark(kind, path=path)
    with caplog.at_level(logging.WARNING):
        result = suite.run_benchmark(None, None, bench, progress=False)
    assert result.scores.metrics[bench.headline] is None and "no item was scored" in caplog.text


@pytest.mark.usefixtures("answer_a")
def test_scoring_mode_on_the_command_line_applies_where_a_benchmark_has_it(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ovis_lit.evaluation import entry

    from .test_hostile_eval_shards import MC, YESNO, mc_row

    mc = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [mc_row(0)], MC)
    yn = write_tsv(tmp_path / "MME.tsv", [{"index": 0, "question": "Q? Please answer yes or no.", "answer": "Yes",
                                           "category": "existence", "image": png_b64()}], YESNO)
    monkeypatch.setattr(entry, "load_for_eval", lambda *a, **k: (None, SimpleNamespace(chat_format="test"),
                                                            {"checkpoint": "stub", "format": "stub"}))
    cfg = OmegaConf.create({"checkpoint": "stub", "batch_size": 4, "progress": False, "device": "cpu",
                            "output_dir": str(tmp_path / "out"), "scoring_mode": "lmms_eval",
                            "benchmarks": {"mmbench": {"path": str(mc)},
                                           "mme": {"path": str(yn), "mode": "vlmevalkit"}}})
    entry.evaluate(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["benchmarks"]
    assert summary["mme"]["mode"] == "lmms_eval" and summary["mmbench"]["mode"] == "vlmevalkit"
    assert summary["mme"]["prompt"].startswith("{question, without ' Please answer yes or no.'}")
    with pytest.raises(ValueError, match="not a scoring mode"):
        entry.evaluate(OmegaConf.merge(cfg, {"scoring_mode": "vlmeval"}))
