"""Thinking (Ovis2.5, Qwen3 format): what training supervises in `<think>...</think>` turns, and answers generated with
thinking on, with a budget, through evaluation's generate_answers on a tiny model."""

import json

import pytest
from PIL import Image
from transformers import AutoTokenizer

from ovis_lit.processing.conversation import ConversationFormatter

from .test_ovis25 import FIXTURE25


@pytest.fixture(scope="module")
def qwen3():
    return ConversationFormatter(AutoTokenizer.from_pretrained(FIXTURE25 / "checkpoint"), "qwen3")


def _turns(*answers):
    turns = []
    for i, answer in enumerate(answers):
        turns += [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": answer}]
    return turns


def _supervised(formatter, text):
    return formatter.tokenizer.decode([t for t in text.labels if t >= 0])


# Checked against the original Qwen3ConversationFormatter (main branch) with this tokenizer: the same prompt, ids and
# labels in each case.
@pytest.mark.parametrize("answer,prompt_answer,supervised", [
    # a thinking trace is a target, tags included
    ("<think>\nit is round\n</think>\n\nA circle.", "<think>\nit is round\n</think>\n\nA circle.",
     "<think>\nit is round\n</think>\n\nA circle.<|im_end|>"),
    # an empty block written in the data is a target too (the original supervises the whole message)
    ("<think>\n\n</think>\n\nA circle.", "<think>\n\n</think>\n\nA circle.",
     "<think>\n\n</think>\n\nA circle.<|im_end|>"),
    # no thinking: the empty block is added as context, not a target
    ("A circle.", "<think>\n\n</think>\n\nA circle.", "A circle.<|im_end|>"),
    # the original's test is "both tags present", in any order: nothing is added
    ("</think>x<think>y", "</think>x<think>y", "</think>x<think>y<|im_end|>"),
])
def test_thinking_turns_are_supervised_as_the_original(qwen3, answer, prompt_answer, supervised):
    text = qwen3.format(_turns(answer))
    assert text.prompt == f"<|im_start|>user\nQ0<|im_end|>\n<|im_start|>assistant\n{prompt_answer}<|im_end|>\n"
    assert _supervised(qwen3, text) == supervised
    assert qwen3.tokenizer.decode(text.input_ids[-1:]) == "<|im_end|>"  # the final newline is dropped


def test_every_round_keeps_its_thinking(qwen3):
    text = qwen3.format(_turns("<think>\na\n</think>\n\nB", "C"))
    assert _supervised(qwen3, text) == "<think>\na\n</think>\n\nB<|im_end|>C<|im_end|>"
    assert text.prompt.count("<think>") == 2  # the second answer got the empty block


def test_tiny_ovis25_tokenizer_has_the_thinking_tags(tmp_path):
    from ovis_lit.training.run import build_processor

    from .helpers import compose_train

    processor = build_processor(compose_train(["model=ovis25_tiny"], tmp_path, tmp_path))
    think_end = processor.tokenizer.convert_tokens_to_ids("</think>")
    sample = processor.conversation(_turns("<think>\nround\n</think>\n\nA circle."))
    assert think_end in sample.input_ids and think_end in sample.labels  # one token, supervised


# -------------------------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def tiny25():
    from ovis_lit.interop.ovis25 import load_ovis25

    model, processor = load_ovis25(FIXTURE25 / "checkpoint", vit_attn_implementation="eager")
    return model.eval(), processor


@pytest.mark.slow
def test_answers_with_thinking_and_a_budget(tiny25):
    from ovis_lit.evaluation.generation import generate_answers
    from ovis_lit.evaluation.thinking import BUDGET_EXHAUSTED_TEXT, generate_with_thinking_budget, split_thinking

    model, processor = tiny25
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    queries = [("What colour?", [image]), ("Hi", [])]
    tok = processor.tokenizer
    extra = tok(BUDGET_EXHAUSTED_TEXT, add_special_tokens=False)["input_ids"]
    max_new = 3 + len(extra) + 4
    answers = generate_answers(model, processor, queries, batch_size=2, max_new_tokens=max_new, progress=False,
                               thinking=True, thinking_budget=3)
    # the same prompts (thinking on) through the budgeted generation: the answers are what follows </think>
    batch = processor.collate([processor.query(q, imgs, thinking=True) for q, imgs in queries], padding_side="left")
    rows = generate_with_thinking_budget(model, tok, batch["input_ids"], batch["attention_mask"],
                                         batch["pixel_values"], batch["grid_thws"], 3, max_new,
                                         [tok.eos_token_id], processor.pad_token_id)
    for row, answer in zip(rows, answers):
        thinking, expected = split_thinking(tok, row)
        assert row[3:3 + len(extra)] == extra  # the random model never concluded by itself
        assert "Considering the limited time" in thinking and answer == expected
    # thinking off: the prompt carries the empty thinking block and the whole output is the answer
    plain = generate_answers(model, processor, queries, batch_size=2, max_new_tokens=4, progress=False)
    off = processor.collate([processor.query(q, imgs) for q, imgs in queries], padding_side="left")
    new = model.generate(off["input_ids"], off["attention_mask"], off["pixel_values"], off["grid_thws"],
                         max_new_tokens=4, do_sample=False, eos_token_id=[tok.eos_token_id],
                         pad_token_id=processor.pad_token_id)
    assert plain == [a.strip() for a in tok.batch_decode(new, skip_special_tokens=True)]


def test_split_thinking(tiny25):
    from ovis_lit.evaluation.thinking import split_thinking

    tok = tiny25[1].tokenizer
    ids = tok("<think>\nhm\n</think>\n\nA circle.", add_special_tokens=False)["input_ids"]
    assert split_thinking(tok, ids) == ("hm", "A circle.")  # this tokenizer's tags are special tokens: not decoded
    assert split_thinking(tok, tok("A circle.", add_special_tokens=False)["input_ids"]) == ("", "A circle.")


def test_thinking_needs_the_qwen3_format(tmp_path):
    from ovis_lit.evaluation.generation import generate_answers
    from ovis_lit.model.build import build_ovis
    from ovis_lit.training.run import build_processor

    from .helpers import compose_train
    from .tiny import tiny_spec

    processor = build_processor(compose_train(["model=ovis_tiny"], tmp_path, tmp_path))
    with pytest.raises(ValueError, match="qwen3"):
        generate_answers(build_ovis(tiny_spec()), processor, [("Hi", [])], thinking=True)
    with pytest.raises(ValueError, match="thinking is off"):
        generate_answers(build_ovis(tiny_spec()), processor, [("Hi", [])], thinking_budget=4)


# ---------------------------------------------------------------------------------------------- evals/run.py
def _evaluate25(tmp_path, name, *overrides):
    from ovis_lit.data import shapes
    from ovis_lit.evaluation.entry import evaluate

    from .test_eval_run import _eval_cfg

    shapes_file = tmp_path / "mc-test.tsv"
    if not shapes_file.is_file():
        shapes.write_mc_tsv(shapes_file, 3, 5)
    cfg = _eval_cfg([f"checkpoint={FIXTURE25 / 'checkpoint'}", "benchmark=[shapes]",
                     f"benchmarks.shapes.path={shapes_file}", "benchmarks.shapes.max_new_tokens=4",
                     f"output_dir={tmp_path / name}", "progress=false", "device=cpu", *overrides])
    evaluate(cfg)
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    lines = (tmp_path / name / "predictions" / "shapes.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    return summary, [p["answer"] for p in predictions], shapes_file


@pytest.mark.slow
def test_evals_run_thinks_with_a_budget_and_pixel_budget_and_records_them(tiny25, tmp_path, monkeypatch):
    from ovis_lit.evaluation.benchmarks import build_benchmark
    from ovis_lit.evaluation.generation import generate_answers
    from ovis_lit.evaluation.suite import _decoded
    from ovis_lit.processing.native_processor import NativeOvisProcessor

    asked = []  # the thinking and pixel budget of every prompt evals/run.py builds
    query = NativeOvisProcessor.query

    def spy(self, question, images=None, thinking=False, min_pixels=None, max_pixels=None):
        asked.append((thinking, min_pixels, max_pixels))
        return query(self, question, images, thinking, min_pixels, max_pixels)

    monkeypatch.setattr(NativeOvisProcessor, "query", spy)
    summary, answers, path = _evaluate25(tmp_path, "think", "thinking=true", "thinking_budget=3",
                                         "thinking_tokens=10", "benchmarks.shapes.max_pixels=1024")
    assert asked == [(True, None, 1024)] * 3
    assert (summary["thinking"], summary["thinking_budget"], summary["thinking_tokens"]) == (True, 3, 10)
    shapes = summary["benchmarks"]["shapes"]
    assert shapes["thinking"] is True and shapes["thinking_budget"] == 3
    assert shapes["max_new_tokens"] == 4 + 10  # the answer's tokens plus the thinking's
    model, processor = tiny25
    assert (shapes["min_pixels"], shapes["max_pixels"]) == (processor.image_preprocessor.min_pixels, 1024)
    monkeypatch.undo()
    # the answers are generate_answers' with thinking, the budget and the benchmark's pixel budget
    items = build_benchmark("shapes", path=path).load()
    queries = [(item.prompt, _decoded(item)) for item in items]
    assert answers == generate_answers(model, processor, queries, 8, 14, progress=False, thinking=True,
                                       thinking_budget=3, max_pixels=1024)

    asked.clear()
    monkeypatch.setattr(NativeOvisProcessor, "query", spy)
    summary, answers, _ = _evaluate25(tmp_path, "plain")
    assert asked == [(False, None, None)] * 3  # the processor's own budget
    assert (summary["thinking"], summary["thinking_budget"], summary["thinking_tokens"]) == (False, None, None)
    shapes = summary["benchmarks"]["shapes"]
    assert shapes["thinking"] is False and shapes["max_new_tokens"] == 4
    pp = processor.image_preprocessor
    assert (shapes["min_pixels"], shapes["max_pixels"]) == (pp.min_pixels, pp.max_pixels)
    monkeypatch.undo()
    assert answers == generate_answers(model, processor, queries, 8, 4, progress=False)


def test_a_pixel_budget_needs_a_native_resolution_processor(tmp_path):
    from ovis_lit.data import shapes
    from ovis_lit.evaluation.benchmarks import build_benchmark
    from ovis_lit.evaluation.suite import pixel_budget
    from ovis_lit.training.run import build_processor

    from .helpers import compose_train

    shapes.write_mc_tsv(tmp_path / "mc.tsv", 1, 5)
    crops = build_processor(compose_train(["model=ovis_tiny"], tmp_path, tmp_path))
    assert pixel_budget(build_benchmark("shapes", path=tmp_path / "mc.tsv"), crops) == \
        {"min_pixels": None, "max_pixels": None}
    with pytest.raises(ValueError, match="native-resolution"):
        pixel_budget(build_benchmark("shapes", path=tmp_path / "mc.tsv", max_pixels=1024), crops)


def test_evals_run_refuses_inconsistent_thinking_options(tmp_path):
    from ovis_lit.evaluation.entry import thinking_settings

    from .test_eval_run import _eval_cfg

    with pytest.raises(ValueError, match="thinking is off"):
        thinking_settings(_eval_cfg(["checkpoint=x", "thinking_budget=4"]))
    with pytest.raises(ValueError, match="between 1 and thinking_tokens"):
        thinking_settings(_eval_cfg(["checkpoint=x", "thinking=true", "thinking_budget=40", "thinking_tokens=8"]))
