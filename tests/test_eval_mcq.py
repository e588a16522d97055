"""Lettered multiple choice: MMBench (circular), MMStar, ScienceQA-IMG and the shapes held-out set, from tiny TSVs in
VLMEvalKit's layout. Scores are worked out by hand in the comments."""

import pytest

from ovis_lit.evaluation import suite
from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.benchmarks.mmbench import question_group

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv

COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


def _circular_rows():
    """Question 0: four options, four rotations (image stored once, the copies point at row 0).
    Question 1: two options, two rotations. Question 2: one row only. Two broken rows."""
    texts = ["red", "green", "blue", "yellow"]
    rows = []
    for r in range(4):
        rotated = texts[r:] + texts[:r]
        rows.append({"index": r * 1_000_000, "question": "What colour is it?",
                     "hint": "Look closely." if r == 0 else "nan",
                     **dict(zip("ABCD", rotated)), "answer": "ABCD"[rotated.index("blue")], "category": "colour",
                     "l2-category": "perception", "image": png_b64("blue") if r == 0 else "0"})
    for r, (a, b) in enumerate([("one", "two"), ("two", "one")]):
        rows.append({"index": 1 + r * 1_000_000, "question": "How many?", "A": a, "B": b,
                     "answer": "A" if a == "two" else "B", "category": "colour", "image": png_b64("red")})
    rows.append({"index": 2, "question": "Which shape?", "A": "circle", "B": "square", "C": "cross", "answer": "C",
                 "category": "shape", "image": png_b64("green")})
    rows.append({"index": 3, "question": "Broken: one option", "A": "only", "answer": "A", "image": png_b64()})
    rows.append({"index": 4, "question": "Broken: gold E", "A": "x", "B": "y", "answer": "E", "image": png_b64()})
    return rows


@pytest.fixture
def circular_file(tmp_path):
    return write_tsv(tmp_path / "MMBench_DEV_EN.tsv", _circular_rows(), COLUMNS)


def test_rotations_share_index_modulo_a_million():
    assert question_group("3000007") == question_group("7") == "7"
    assert question_group("abc") == "abc"


def test_mmbench_reads_prompts_options_and_image_references(circular_file):
    bench = build_benchmark("mmbench", path=circular_file)
    items = bench.load()
    assert [i.key for i in items] == ["0", "1000000", "2000000", "3000000", "1", "1000001", "2"]
    assert dict(bench.skipped) == {"fewer than two options": 1, "answer is not one of the option letters": 1}
    assert items[0].prompt == (
        "Hint: Look closely.\nWhat colour is it?\nA. red\nB. green\nC. blue\nD. yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[1].prompt.startswith("What colour is it?\nA. green\n")  # 'nan' hint: no Hint line
    assert "D." not in items[6].prompt  # three options only
    assert items[1].images == items[0].images  # the reference "0" resolved to row 0's image
    assert [i.target["answer"] for i in items[:4]] == ["C", "B", "A", "D"]


def test_mmbench_circular_scoring_by_hand(circular_file):
    bench = build_benchmark("mmbench", path=circular_file)
    items = bench.load()
    answers = answers_by_key(items, {
        "0": "C", "1000000": "(B)", "2000000": "A.", "3000000": "blue.",  # question 0: every rotation right
        "1": "A", "1000001": "A",  # question 1: first rotation wrong (its gold is B)
        "2": "I cannot tell",  # question 2: failed extraction
    })
    scores = bench.score(items, answers)
    m = scores.metrics
    assert scores.details["circular"] is True
    assert m["accuracy"] == pytest.approx(1 / 3)  # 1 of 3 questions
    assert m["row_accuracy"] == pytest.approx(5 / 7)  # 5 of 7 rows
    assert (m["questions"], m["rows"], m["failed_extractions"]) == (3, 7, 1)
    assert scores.details["per_category"] == {"colour": 0.5, "shape": 0.0}
    assert scores.details["per_l2_category"] == {"perception": 1.0}
    by_key = {p["key"]: p for p in scores.predictions}
    assert by_key["1000001"]["correct"] and not by_key["1000001"]["question_correct"]
    assert by_key["3000000"]["rule"] == "option text"


def test_circular_off_scores_rows(circular_file):
    bench = build_benchmark("mmbench", path=circular_file, circular=False)
    items = bench.load()
    answers = answers_by_key(items, {"0": "C", "1000000": "B", "2000000": "A", "3000000": "D", "1": "B"})
    m = bench.score(items, answers).metrics
    assert m["accuracy"] == pytest.approx(5 / 7) and m["questions"] == 7
    assert m["failed_extractions"] == 2  # two empty answers


def test_empty_answers_fail_and_auto_is_vanilla_without_rotations(tmp_path):
    rows = [{"index": k, "question": "q", "A": "x", "B": "y", "answer": "AB"[k % 2], "image": png_b64()}
            for k in range(4)]
    bench = build_benchmark("mmstar", path=write_tsv(tmp_path / "MMStar.tsv", rows))
    items = bench.load()
    # VLMEvalKit: right; empty (read back as "nan": nothing); lowercase "a" is no letter; "x" is the text of A (gold B)
    scores = bench.score(items, ["A", "", "a", "x"])
    assert scores.metrics["accuracy"] == 0.25 and scores.metrics["failed_extractions"] == 2
    assert scores.details["circular"] is False


def test_option_cells_none_and_na_are_missing_as_in_vlmevalkits_loader(tmp_path):
    rows = [{"index": 0, "question": "How many cats?", "A": "1", "B": "2", "C": "None", "D": "NA", "answer": "B",
             "image": png_b64()},
            {"index": 1, "question": "How many dogs?", "A": "1", "B": "2", "C": "None", "answer": "C",
             "image": png_b64()}]
    bench = build_benchmark("mmbench", path=write_tsv(tmp_path / "b.tsv", rows))
    items = bench.load()
    assert items[0].target["options"] == {"A": "1", "B": "2"} and "C." not in items[0].prompt
    assert bench.skipped == {"answer is not one of the option letters": 1}  # its gold C names a missing option
    assert bench.score(items, ["B"]).metrics["accuracy"] == 1.0


def test_missing_columns_is_a_clear_error(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [{"index": 0, "question": "q", "A": "x", "B": "y", "image": png_b64()}])
    with pytest.raises(ValueError, match="lacks the column"):
        build_benchmark("mmbench", path=path).load()
    with pytest.raises(FileNotFoundError):
        build_benchmark("mmbench", path=tmp_path / "absent.tsv").load()
    with pytest.raises(TypeError, match="unknown option"):
        build_benchmark("mmbench", path=path, circuler=True)


def test_scienceqa_context_prompt_and_img_subset(tmp_path):
    rows = [
        {"index": 0, "question": "Which is a mammal?", "hint": "Mammals have fur.", "A": "whale", "B": "shark",
         "answer": "A", "category": "biology", "image": png_b64()},
        {"index": 1, "question": "Which is hot?", "A": "ice", "B": "fire", "answer": "B", "image": png_b64("orange")},
        {"index": 2, "question": "No image here", "A": "x", "B": "y", "answer": "A", "image": ""},
    ]
    bench = build_benchmark("scienceqa", path=write_tsv(tmp_path / "ScienceQA_TEST.tsv", rows))
    items = bench.load()
    assert bench.skipped == {"no image (not an IMG question)": 1}
    assert items[0].prompt == ("Context: Mammals have fur.\nWhich is a mammal?\nA. whale\nB. shark\n"
                               "Answer with the option's letter from the given choices directly.")
    assert items[1].prompt.startswith("Which is hot?\nA. ice")
    m = bench.score(items, ["The answer is A.", "ice"]).metrics
    assert m["accuracy"] == 0.5 and m["failed_extractions"] == 0


def test_shapes_uses_the_training_instruction_and_builds_its_file(tmp_path):
    from ovis_lit.data import shapes

    path = tmp_path / "mc-test.tsv"
    shapes.write_mc_tsv(path, 6, 5)  # the generator ensure_shapes_dataset uses, at a tiny size
    bench = build_benchmark("shapes", path=path)
    items = bench.load()
    assert len(items) == 6 and not bench.skipped
    assert items[0].prompt.endswith("\n" + shapes.MC_INSTRUCTION)
    assert items[0].prompt.count("\n") == 5  # question, four options, instruction
    texts = [i.target["options"][i.target["answer"]] for i in items]  # the trained model answers with the text
    scores = bench.score(items, texts[:5] + ["nonsense"])
    assert scores.metrics["accuracy"] == pytest.approx(5 / 6) and scores.metrics["failed_extractions"] == 1
    assert scores.details["circular"] is False

    missing = tmp_path / "built" / "mc-test.tsv"
    assert len(build_benchmark("shapes", path=missing).load()) == shapes.MC_TEST[1] and missing.is_file()


def test_undecodable_images_are_counted_skips(tmp_path, monkeypatch):
    rows = [
        {"index": 0, "question": "q", "A": "x", "B": "y", "answer": "A", "image": png_b64()},
        {"index": 1, "question": "q", "A": "x", "B": "y", "answer": "B", "image": "%" * 100},  # not base64
        {"index": 2, "question": "q", "A": "x", "B": "y", "answer": "B", "image": "QUJD" * 30},  # base64, not an image
        {"index": 3, "question": "q", "A": "x", "B": "y", "answer": "B", "image": "77"},  # dangling reference
    ]
    seen = []

    def fake_generate(model, processor, queries, batch_size, max_new_tokens, progress):
        seen.append(len(queries))
        return ["A"] * len(queries)

    monkeypatch.setattr(suite, "generate_answers", fake_generate)
    bench = build_benchmark("mmbench", path=write_tsv(tmp_path / "b.tsv", rows))
    result = suite.run_benchmark(None, None, bench, batch_size=8, progress=False)
    assert result.skipped == {"image reference '77' points to no row with an image": 1, "undecodable image": 2}
    assert [p["key"] for p in result.scores.predictions] == ["0"] and seen == [1]
    assert result.scores.metrics["accuracy"] == 1.0
    assert result.scores.predictions[0]["prompt"].startswith("q\nA. x")


def test_circular_copies_round_trip(tmp_path):
    from ovis_lit.evaluation.benchmarks.mmbench import circular_copies
    from ovis_lit.evaluation.tsv import read_benchmark_tsv

    rows = [{"index": 5, "question": "q", "A": "red", "B": "blue", "C": "green", "answer": "B", "category": "c",
             "image": png_b64()}]
    source = read_benchmark_tsv(write_tsv(tmp_path / "plain.tsv", rows), ["index"])
    out = circular_copies(source)
    assert [r["index"] for r in out] == ["5", "1000005", "2000005"]
    assert [(r["A"], r["B"], r["C"], r["answer"]) for r in out] == [
        ("red", "blue", "green", "B"), ("blue", "green", "red", "A"), ("green", "red", "blue", "C")]
    bench = build_benchmark("mmbench", path=write_tsv(tmp_path / "circular.tsv", out))
    items = bench.load()
    assert {i.target["group"] for i in items} == {"5"} and items[2].images == items[0].images
    scores = bench.score(items, ["blue", "blue", "C"])
    assert scores.metrics["accuracy"] == 1.0 and scores.details["circular"] is True
