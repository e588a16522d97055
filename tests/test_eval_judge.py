"""LLM-judged benchmarks (MMVet, MathVista) with a scripted fake judge, in VLMEvalKit's TSV layouts and scoring;
the pinned prompts; the two local judge kinds on tiny models built here (no network)."""

import math
from pathlib import Path

import pytest

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.judge import LazyJudge, load_judge
from ovis_lit.evaluation.judge_prompts import MATHVISTA_EXTRACT_V1, MMVET_GRADER_V1, prompt_from_file

from .test_eval_fixtures import answers_by_key, png_b64, write_tsv

FIXTURES = Path(__file__).parent / "fixtures"


class FakeJudge:
    """Replies from a script: reply(prompt, temperature) -> text; every call is recorded."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def generate(self, prompt, temperature=0.0, max_new_tokens=128):
        self.calls.append((prompt, temperature, max_new_tokens))
        return self.reply(prompt, temperature)

    def describe(self):
        return {"path": "fake", "kind": "fake"}


def test_prompts_are_pinned():
    # a changed prompt must be a new version: these digests are the v1 texts
    assert MMVET_GRADER_V1.fields == {"question", "answer", "prediction"}
    assert MATHVISTA_EXTRACT_V1.fields == {"question", "prediction"}
    assert MMVET_GRADER_V1.describe() == {"name": "mmvet-grader", "version": "v1", "sha256": MMVET_GRADER_V1.sha256}
    assert len({MMVET_GRADER_V1.sha256, MATHVISTA_EXTRACT_V1.sha256}) == 2
    text = MMVET_GRADER_V1.render(question="Q {answer}?", answer="a <AND> b", prediction="\\frac{x}{y}")
    assert text.endswith("\nQ {answer}? | a <AND> b | \\frac{x}{y} | ")  # braces in values are left alone
    assert MATHVISTA_EXTRACT_V1.render(question="Hint: h\nQuestion: q", prediction="p").endswith(
        "Hint: h\nQuestion: q\nModel response: p\nExtracted answer:")
    with pytest.raises(KeyError):
        MMVET_GRADER_V1.render(question="q")


def test_prompt_file(tmp_path):
    good = tmp_path / "p.txt"
    good.write_text("Q: {question}\nT: {answer}\nP: {prediction}\nScore:")
    prompt = prompt_from_file(good, MMVET_GRADER_V1)
    assert prompt.version == f"file:{good.resolve()}" and prompt.render(question="q", answer="a", prediction="p") \
        == "Q: q\nT: a\nP: p\nScore:"
    bad = tmp_path / "bad.txt"
    bad.write_text("Q: {question}")
    with pytest.raises(ValueError, match="placeholders"):
        prompt_from_file(bad, MMVET_GRADER_V1)


def mmvet_bench(tmp_path, judge, rows=None):
    rows = rows or [
        {"index": 0, "image": png_b64(), "question": "What is x?", "answer": "-1<AND>-5", "category": "ocr,math"},
        {"index": 1, "image": png_b64(), "question": "Colour?", "answer": "red<OR>maroon", "category": "rec"},
        {"index": 2, "image": png_b64(), "question": "Why funny?", "answer": "a joke", "category": "rec,know,gen"},
        {"index": 3, "image": png_b64(), "question": "", "answer": "x", "category": "rec"},
    ]
    return build_benchmark("mmvet", path=write_tsv(tmp_path / "MMVet.tsv", rows), judge=judge)


def test_mmvet_grades_retries_and_scores(tmp_path):
    def reply(prompt, temperature):
        row = prompt.rsplit("\n", 1)[-1]
        if row.startswith("What is x?"):
            return "0.5"
        if row.startswith("Colour?"):  # unparsable, then out of range, then NaN, then a grade
            return {0.0: "Score: 1.0", 0.5: "1.5", 1.0: "nan", 1.5: " 0.9\n"}[temperature]
        return "I cannot grade this."  # never parses: 5 tries, then 0.0

    judge = FakeJudge(reply)
    bench = mmvet_bench(tmp_path, judge)
    items = bench.load()
    assert bench.skipped == {"empty question": 1} and items[0].prompt == "What is x?"
    scores = bench.score(items, answers_by_key(items, {"0": "x = -1", "1": "maroon", "2": "?"}))
    # the ground truth reaches the judge with spaces around <AND> / <OR>
    assert judge.calls[0][0].endswith("\nWhat is x? | -1 <AND> -5 | x = -1 | ")
    assert [t for p, t, _ in judge.calls if p.endswith("maroon | ")] == [0.0, 0.5, 1.0, 1.5]
    assert [t for p, t, _ in judge.calls if p.endswith("? | ")] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [p["grade"] for p in scores.predictions] == [0.5, 0.9, 0.0]
    m = scores.metrics
    assert m["overall"] == pytest.approx(100 * 1.4 / 3) and m["judge_failures"] == 1 and m["questions"] == 3
    assert m["rec"] == pytest.approx(45.0) and m["ocr"] == pytest.approx(50.0) and m["math"] == pytest.approx(50.0)
    assert m["know"] == 0.0 and "spat" not in m
    assert scores.details["per_combination"]["ocr_math"] == {"score": 50.0, "questions": 1}
    assert scores.details["judge"]["prompt"]["version"] == "v1" and scores.details["judge"]["path"] == "fake"
    assert bench.describe()["judge"]["prompt"]["name"] == "mmvet-grader"
    assert bench.describe()["mode"] == "vlmevalkit"


def test_a_judged_benchmark_without_a_judge_fails_at_check(tmp_path):
    bench = mmvet_bench(tmp_path, {"path": None})
    with pytest.raises(ValueError, match="judge.path"):
        bench.check()
    with pytest.raises(FileNotFoundError):
        mmvet_bench(tmp_path, {"path": str(tmp_path / "nothing")}).check()
    assert mmvet_bench(tmp_path, {"path": None}).score([], []).metrics["questions"] == 0  # nothing loaded


MC = "multi_choice"
FREE = "free_form"


def mathvista_rows():
    def row(k, qtype, atype, answer, choices="", option="", task="figure question answering",
            skills="['arithmetic reasoning']"):
        return {"index": k, "image": png_b64(), "question": f"Hint: h\nQuestion: q{k}", "answer": answer,
                "question_type": qtype, "answer_type": atype, "choices": choices, "answer_option": option,
                "task": task, "skills": skills}

    abcd = str(["3/11", "8/11", "6/11", "3/5"])
    return [
        row(0, MC, "text", "8/11", abcd, "B"),  # "B" read by rule: prefetched, right
        row(1, MC, "text", "8/11", abcd, "B"),  # "(C)" read by rule: prefetched, wrong
        row(2, MC, "text", "8/11", abcd, "B"),  # no letter: the judge extracts "B": right
        row(3, FREE, "integer", "14"),  # "14": prefetched, right
        row(4, FREE, "integer", "14", task="math word problem"),  # "15": wrong, so the judge is asked: "14"
        row(5, FREE, "integer", "0"),  # "0" is right but falsy: the judge is asked, says "0": right
        row(6, FREE, "float", "1.5", skills="['algebraic reasoning', 'arithmetic reasoning']"),  # judge "1.50"
        row(7, FREE, "integer", "3"),  # judge "3.0": int("3.0") fails: wrong
        row(8, FREE, "list", "[2007, 2008]"),  # list answers never match in the toolkit: wrong
        row(9, "yes_no", "text", "yes"),  # unknown question type: skipped
    ]


def test_mathvista_prefetch_judge_and_comparison(tmp_path):
    extractions = {"q2": "B", "q4": "14", "q5": "0", "q6": "1.50", "q7": "3.0", "q8": "[2007, 2008]"}

    def reply(prompt, temperature):
        question = prompt.rsplit("Question: ", 1)[-1].split("\n")[0]
        return extractions[question]

    judge = FakeJudge(reply)
    bench = build_benchmark("mathvista", path=write_tsv(tmp_path / "MathVista_MINI.tsv", mathvista_rows()),
                            judge=judge)
    items = bench.load()
    assert bench.skipped == {"question_type is not multi_choice or free_form": 1}
    answers = answers_by_key(items, {"0": "The answer is B.", "1": "(C)", "2": "eight elevenths", "3": "14",
                                     "4": "15", "5": "0", "6": "one and a half", "7": "three", "8": "2007-2008"})
    scores = bench.score(items, answers)
    assert [p["correct"] for p in scores.predictions] == [True, False, True, True, True, True, True, False, False]
    assert [p["prefetched"] for p in scores.predictions] == [True, True, False, True, False, False, False, False,
                                                             False]
    assert len(judge.calls) == 6 and all(t == 0.0 and n == 128 for _, t, n in judge.calls)
    assert judge.calls[0][0].endswith("Hint: h\nQuestion: q2\nModel response: eight elevenths\nExtracted answer:")
    m = scores.metrics
    assert m["accuracy"] == pytest.approx(100 * 6 / 9) and m["prefetch_rate"] == pytest.approx(100 * 3 / 9)
    assert m["judge_calls"] == 6
    groups = scores.details["per_group"]
    assert groups["math word problem"] == {"accuracy": 100.0, "questions": 1, "prefetch_rate": 0.0}
    assert groups["algebraic reasoning"]["questions"] == 1 and groups["arithmetic reasoning"]["questions"] == 9
    assert scores.details["judge"]["prompt"]["name"] == "mathvista-extract"


# ------------------------------------------------------------------------------------------- real local judges
def test_causal_lm_judge_from_a_local_directory(tmp_path):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ovis_lit.processing.tokenizer import byte_level_tokenizer

    tokenizer = byte_level_tokenizer("qwen")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    pickled = tmp_path / "pickled"  # the same judge with pickled weights: refused, never unpickled
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(pickled)
    tokenizer.save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises((ValueError, FileNotFoundError), match="safetensors"):
        load_judge(pickled, kind="causal_lm")
    judge = load_judge(tmp_path / "judge")
    assert judge.describe()["kind"] == "causal_lm" and judge.describe()["path"] == str((tmp_path / "judge").resolve())
    greedy = judge.generate("Grade: 0.5?", 0.0, max_new_tokens=6)
    assert greedy == judge.generate("Grade: 0.5?", 0.0, max_new_tokens=6)
    state = torch.random.get_rng_state()
    sampled = judge.generate("Grade: 0.5?", 1.0, max_new_tokens=6)
    assert sampled == judge.generate("Grade: 0.5?", 1.0, max_new_tokens=6)  # seeded per call: repeatable
    assert torch.equal(state, torch.random.get_rng_state())  # and the global RNG is left as it was
    # a tokenizer with a chat template: the prompt goes in as one user turn
    judge.tokenizer.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    ids = judge._input_ids("Grade: 0.5?")[0].tolist()
    assert judge.tokenizer.decode(ids) == "<|user|>Grade: 0.5?<|assistant|>"
    # through a benchmark (a short prompt file, to keep it fast): the lazy judge loads at the first grade, and the
    # record names its directory and the prompt file
    short = tmp_path / "short.txt"
    short.write_text("{question} | {answer} | {prediction} |")
    rows = [{"index": 0, "image": png_b64(), "question": "Colour?", "answer": "red", "category": "rec"}]
    bench = build_benchmark("mmvet", path=write_tsv(tmp_path / "one.tsv", rows), prompt_file=str(short),
                            judge=LazyJudge({"path": str(tmp_path / "judge"), "device": "cpu"}), judge_max_new_tokens=2)
    assert bench.describe()["judge"]["loaded"] is False
    scores = bench.score(bench.load(), ["red"])
    assert scores.details["judge"]["kind"] == "causal_lm" and scores.metrics["questions"] == 1
    assert scores.details["judge"]["prompt"]["version"] == f"file:{short.resolve()}"
    assert len(scores.predictions[0]["judge_replies"]) in range(1, 6)
    assert math.isfinite(scores.predictions[0]["grade"])


def test_ovis_checkpoint_as_judge():
    directory = FIXTURES / "ovis2-reference-tiny" / "checkpoint"
    judge = load_judge(directory)
    assert judge.describe()["kind"] == "ovis"
    reply = judge.generate("Extract the answer: 14", 0.0, max_new_tokens=4)
    assert isinstance(reply, str) and reply == judge.generate("Extract the answer: 14", 0.0, max_new_tokens=4)


def test_judge_refuses_unknown_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_judge(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_judge(tmp_path / "empty")
    with pytest.raises(ValueError, match="kind"):
        load_judge(tmp_path / "empty", kind="openai")


def test_evals_run_records_the_judge(tmp_path):
    """evals/run.py end to end: an Ovis checkpoint evaluated on MMVet and OCRBench, itself the judge of MMVet."""
    import json

    from ovis_lit.evaluation.entry import evaluate

    from .test_eval_run import _eval_cfg

    checkpoint = FIXTURES / "ovis2-reference-tiny" / "checkpoint"
    mmvet = write_tsv(tmp_path / "MMVet.tsv", [
        {"index": 0, "image": png_b64(), "question": "Colour?", "answer": "red", "category": "rec"}])
    ocr = write_tsv(tmp_path / "OCRBench.tsv", [
        {"index": 0, "image": png_b64(), "question": "Text?", "answer": "['']", "category": "Doc-oriented VQA"}])
    common = [f"checkpoint={checkpoint}", "benchmark=[mmvet,ocrbench]", f"benchmarks.mmvet.path={mmvet}",
              f"benchmarks.ocrbench.path={ocr}", "benchmarks.mmvet.max_new_tokens=2",
              "benchmarks.ocrbench.max_new_tokens=2", "benchmarks.mmvet.judge_max_new_tokens=2", "progress=false",
              "device=cpu", f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match="judge.path"):  # refused before the model is loaded
        evaluate(_eval_cfg(common))
    metrics = evaluate(_eval_cfg([*common, f"judge.path={checkpoint}", "judge.device=cpu"]))
    assert metrics["ocrbench"]["final_score"] == 1  # an empty accepted answer is in every prediction (as VLMEvalKit)
    assert metrics["mmvet"]["questions"] == 1 and 0.0 <= metrics["mmvet"]["overall"] <= 100.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    judge = summary["benchmarks"]["mmvet"]["judge"]
    assert judge["path"] == str(checkpoint.resolve()) and judge["kind"] == "ovis"
    assert judge["prompt"] == MMVET_GRADER_V1.describe() and summary["benchmarks"]["mmvet"]["mode"] == "vlmevalkit"
    assert f"prompt mmvet-grader v1 (sha256 {MMVET_GRADER_V1.sha256[:12]})" in (tmp_path / "out" / "summary.md").read_text()
