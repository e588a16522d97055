"""The lmms-eval adapter (`--model ovis_lit`): lmms-eval's own evaluator runs a tiny local task
(tests/lmms_tasks/ovis_lit_tiny.yaml) with the tiny Ovis2.5 fixture checkpoint, and its predictions are evals/run.py's
(`suite.generate_for` on the same prompts and images, refusals included), its metric what the task computes from
them. The model is found by name through the `lmms_eval.models` entry point, as `python -m lmms_eval --model
ovis_lit` finds it."""

import argparse
import base64
import importlib.metadata
import io
import logging

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed: pip install --no-deps lmms-eval==0.7.3, then "
                                        "its evaluator's dependencies (evals/README.md, 'Running lmms-eval tasks')")

import datasets  # lmms-eval's tasks read their rows with it
from lmms_eval.api.instance import Instance, unwrap_generation_output
from lmms_eval.models.registry_v2 import ModelRegistryV2
from PIL import Image

from ovis_lit.evaluation.benchmarks.base import Item
from ovis_lit.evaluation.generation import generate_answers
from ovis_lit.evaluation.lmms_adapter import OvisLit, cut_at_stop_strings
from ovis_lit.evaluation.lmms_plugin import ENTRY_POINT, MODEL_ID
from ovis_lit.evaluation.suite import generate_for
from ovis_lit.rejection import Rejected

from .conftest import REPO
from .test_converters import bomb_png

CHECKPOINT = REPO / "tests" / "fixtures" / "ovis25-reference-tiny" / "checkpoint"
TASKS = REPO / "tests" / "lmms_tasks"
POST_PROMPT = "\nAnswer the question using a single word or phrase."  # ovis_lit_tiny.yaml's
MC_POST_PROMPT = "\nAnswer with the colour's name."  # ovis_lit_tiny_mc.yaml's
MC_CHOICES = ["red", "blue"]
MAX_NEW_TOKENS = 6  # ovis_lit_tiny.yaml's generation_kwargs
# small pixel budgets (Ovis2.5 model args): 16 patches an image instead of the processor's 3136 keep the test fast
PIXELS = {"min_pixels": 1024, "max_pixels": 4096}
PIXEL_ARGS = ",".join(f"{k}={v}" for k, v in PIXELS.items())


def png(colour: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# (question, image bytes): the last two are refused, one by the decoder, one by the processor
ROWS = [
    ("What colour is this?", png("red", (40, 30))),
    ("<image>\nWhich shape is it?", png("blue", (28, 56))),  # one mark, one image: the image goes there
    ("Is it red?", png("green", (64, 64))),
    ("How many are there?", png("yellow", (30, 90))),
    ("What is here?", b"not an image"),
    ("Is it thin?", png("red", (2, 600))),  # 0 pixels wide within the pixel budget
]
REFUSED = {"undecodable image": 1, "degenerate_size": 1}  # as evals/run.py counts them


@pytest.fixture(scope="module")
def ovis_lit_registry(tmp_path_factory):
    """lmms-eval's model registry with the `lmms_eval.models` entry points installed here: ovis-lit's own when
    the package is installed with it (pyproject.toml), else one declared the same way in a throw-away dist-info."""
    mp = pytest.MonkeyPatch()
    if not any(ep.name == MODEL_ID for ep in importlib.metadata.entry_points(group="lmms_eval.models")):
        site = tmp_path_factory.mktemp("site")
        dist = site / "ovis_lit_entry_point-0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ovis-lit-entry-point\nVersion: 0\n")
        (dist / "entry_points.txt").write_text(f"[lmms_eval.models]\n{MODEL_ID} = {ENTRY_POINT}\n")
        mp.syspath_prepend(str(site))
    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    yield registry
    mp.undo()


def test_entry_point_resolves_the_adapter(ovis_lit_registry):
    assert ovis_lit_registry.get_model_class("ovis_lit") is OvisLit  # is_simple and a subclass of lmms: checked


@pytest.fixture(scope="module")
def lm():
    return OvisLit(checkpoint=str(CHECKPOINT), batch_size=4, **PIXELS)


@pytest.fixture(scope="module")
def expected(lm):
    """evals/run.py's generation for the rows: `suite.generate_for` on items with the same prompts and images."""
    items = [Item(str(k), question + POST_PROMPT, [base64.b64encode(image).decode()], {})
             for k, (question, image) in enumerate(ROWS)]
    answered, answers, skipped = generate_for(lm.model, lm.processor, items, MAX_NEW_TOKENS, batch_size=2,
                                              progress=False, **PIXELS)
    assert dict(skipped) == REFUSED
    by_key = dict(zip((item.key for item in answered), answers))
    raw = [by_key.get(str(k)) for k in range(len(ROWS))]
    assert raw[:4] == [a for a in raw[:4] if a] and len(set(raw[:4])) >= 3  # answers depend on the input
    return raw


@pytest.mark.slow
def test_tiny_tasks_through_lmms_evals_evaluator(ovis_lit_registry, lm, expected, tmp_path, monkeypatch, caplog):
    """simple_evaluate as `python -m lmms_eval --model ovis_lit --model_args ... --tasks ovis_lit_tiny,ovis_lit_tiny_mc
    --include_path tests/lmms_tasks --gen_kwargs until=...` calls it. generate_until: the predictions are
    evals/run.py's, cut at the stop string; the refused rows are answered "" and counted; exact_match is what the
    task's process_results gives. multiple_choice: each row's choice is the one with the lowest training loss."""
    import lmms_eval.models
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    # a stop string first found inside an answer (not at its start), so that cutting there shows
    stop = next((a[i:i + 2] for a in expected[:4] for i in range(1, len(a) - 1)
                 if a.index(a[i:i + 2]) == i and a[i:i + 2].strip() and not set(a[i:i + 2]) & set(",=")), None)
    assert stop is not None, f"no answer to cut: {expected}"
    predictions = [a.split(stop)[0].strip() if a is not None else "" for a in expected]
    # gold: two rows get their prediction, so the metric is neither 0 nor 1
    gold = [predictions[0], "zzz", predictions[2], "zzz", "zzz", "zzz"]
    monkeypatch.chdir(tmp_path)  # the task reads ovis_lit_tiny.parquet from the working directory
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image()})
    datasets.Dataset.from_dict({"question": [q for q, _ in ROWS], "answer": gold,
                                "image": [{"bytes": image, "path": None} for _, image in ROWS]},
                               features=features).to_parquet(tmp_path / "ovis_lit_tiny.parquet")
    # multiple choice: no undecodable row (lmms-eval reads each row with its images to list the choices)
    mc_rows = [ROWS[k] for k in (0, 1, 2, 5)]
    picks = [min(range(2), key=lambda c: reference_loss(lm, question + MC_POST_PROMPT, " " + MC_CHOICES[c],
                                                        [Image.open(io.BytesIO(image))]))
             for question, image in mc_rows[:3]]
    mc_gold = [picks[0], 1 - picks[1], picks[2], 1]  # the refused row scores inf for both: lmms-eval picks choice 0
    datasets.Dataset.from_dict({"question": [q for q, _ in mc_rows], "choices": [MC_CHOICES] * 4, "gold": mc_gold,
                                "image": [{"bytes": image, "path": None} for _, image in mc_rows]},
                               ).cast_column("image", datasets.Image()).to_parquet(tmp_path / "ovis_lit_tiny_mc.parquet")
    monkeypatch.setattr(lmms_eval.models, "MODEL_REGISTRY_V2", ovis_lit_registry)

    with caplog.at_level(logging.WARNING, logger="ovis_lit.evaluation.lmms_adapter"):
        results = simple_evaluate(
            model="ovis_lit", model_args=f"checkpoint={CHECKPOINT},device=cpu,{PIXEL_ARGS}", tasks=["ovis_lit_tiny", "ovis_lit_tiny_mc"],
            batch_size=3, gen_kwargs=f"until={stop}", log_samples=True, bootstrap_iters=0,
            task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
            cli_args=argparse.Namespace(process_with_media=False))  # the CLI's default: rows read without images

    samples = sorted(results["samples"]["ovis_lit_tiny"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == predictions
    assert [s["arguments"][0] for s in samples] == [q + POST_PROMPT for q, _ in ROWS]
    assert results["results"]["ovis_lit_tiny"]["exact_match,none"] == pytest.approx(2 / 6)
    assert results["config"]["model"] == "ovis_lit"
    assert f"2 of 6 requests answered \"\" because their input was refused: {dict(sorted(REFUSED.items()))}" in caplog.text
    mc_samples = sorted(results["samples"]["ovis_lit_tiny_mc"], key=lambda s: s["doc_id"])
    assert [s["acc"] for s in mc_samples] == [1.0, 0.0, 1.0, 0.0]
    assert results["results"]["ovis_lit_tiny_mc"]["acc,none"] == pytest.approx(2 / 4)


def _requests(docs, gen_kwargs, task="t"):
    return [Instance("generate_until", (context, dict(gen_kwargs), lambda doc: doc["visuals"], k, task, "test"), 0,
                     metadata={"task": task, "doc_id": k, "repeats": 1})
            for k, (context, _) in enumerate(docs)]


def _run(lm, docs, gen_kwargs):
    lm.task_dict = {"t": {"test": [{"visuals": visuals} for _, visuals in docs]}}
    return lm.generate_until(_requests(docs, gen_kwargs))


def test_batch_size_and_order_do_not_change_answers(lm):
    """Requests come back in their order whatever the batching (grouped by kwargs, longest prompt first)."""
    docs = [(f"Question {'long ' * k}{k}?", [Image.new("RGB", (20 + 9 * k, 30), "red")]) for k in (0, 3, 1, 4, 2)]
    reference = generate_answers(lm.model, lm.processor, docs, batch_size=len(docs), max_new_tokens=5,
                                 progress=False, **PIXELS)
    assert len(set(reference)) >= 3  # answers differ: a mix-up would show
    lm.batch_size = 2  # batches [4, 3], [2, 1], [0] by prompt length
    try:
        assert _run(lm, docs, {"max_new_tokens": 5, "until": []}) == reference
    finally:
        lm.batch_size = 4


def test_visual_kinds(lm, tmp_path):
    """PIL images, encoded bytes and image files are decoded by the guarded decoder; audio and unknown types are
    refused and counted; several images keep their order."""
    red, blue = Image.new("RGB", (30, 30), "red"), Image.new("RGB", (50, 20), "blue")
    (tmp_path / "blue.png").write_bytes(png("blue", (50, 20)))
    docs = [("Two images?", [red, png("blue", (50, 20))]), ("A file?", [str(tmp_path / "blue.png")]),
            ("Nested?", [[red, blue]]), ("Audio?", [{"array": [0.0], "sampling_rate": 16000}]), ("None?", [3])]
    before = lm.skipped.copy()
    answers = _run(lm, docs, {"max_new_tokens": 4})
    expected = generate_answers(lm.model, lm.processor, [("Two images?", [red, blue]), ("A file?", [blue]),
                                                         ("Nested?", [red, blue])], max_new_tokens=4, progress=False,
                                **PIXELS)
    assert answers == expected + ["", ""]
    assert lm.skipped - before == {"unsupported input": 2}


def test_images_over_the_pixel_limit_are_refused_undecoded(lm):
    """An image `datasets` opened lazily whose header claims more pixels than the decoder's limit is refused before
    its pixels are decoded; one over PIL's own guard fails as it is opened (where `datasets` reads the row):
    both are `Rejected` (answered \"\" and counted by generate_until)."""
    claims_81m = Image.open(io.BytesIO(bomb_png(9000, 9000)))  # over 2**26 pixels, under PIL's guard
    lm.task_dict = {"t": {"test": [{}]}}
    with pytest.raises(Rejected, match="too_many_pixels"):
        lm.visual_inputs(lambda doc: [claims_81m], "t", "test", 0)
    with pytest.raises(Rejected, match="too_many_pixels"):
        lm.visual_inputs(lambda doc: [Image.open(io.BytesIO(bomb_png()))], "t", "test", 0)


def test_marks_kept_only_one_per_image(lm):
    one = [Image.new("RGB", (30, 30), "red")]
    assert lm.prompt_text("<image>\nWhat?", one) == "<image>\nWhat?"
    assert lm.prompt_text("<image> and <image>: what?", one) == " and : what?"  # the processor prepends it
    assert lm.prompt_text("<video> What?", one) == " What?"


def test_sampling_and_beams_are_refused_before_generating(lm):
    docs = [("What?", [Image.new("RGB", (30, 30), "red")])]
    for kwargs in ({"temperature": 0.7}, {"do_sample": True}, {"num_beams": 3}):
        with pytest.raises(ValueError, match="decodes greedily"):
            _run(lm, docs, {"max_new_tokens": 4, **kwargs})
    assert lm.decoding({"temperature": 0, "top_p": 1.0, "until": "\n"}) == (128, ["\n"])  # greedy: top_p unused


def test_stop_strings():
    assert cut_at_stop_strings(" A. Because\n\nmore", ["\n\n", "."]) == "A"
    assert cut_at_stop_strings("yes", ["", "no"]) == "yes"


def test_thinking_is_a_model_arg():
    """thinking=true: answers are evals/run.py's thinking answers, the thinking tokens on top of the task's."""
    lm = OvisLit(checkpoint=str(CHECKPOINT), thinking=True, thinking_tokens=5, thinking_budget=3, **PIXELS)
    docs = [("What colour?", [Image.new("RGB", (30, 40), "green")]), ("Which?", [Image.new("RGB", (40, 30), "red")])]
    expected = generate_answers(lm.model, lm.processor, docs, max_new_tokens=4 + 5, thinking=True, thinking_budget=3,
                                progress=False, **PIXELS)
    assert _run(lm, docs, {"max_new_tokens": 4}) == expected
    plain = generate_answers(lm.model, lm.processor, docs, max_new_tokens=4, progress=False, **PIXELS)
    assert expected != plain  # thinking changed the answers: the comparison means something


def test_bad_model_args_are_refused():
    with pytest.raises(TypeError, match="unknown model args"):
        OvisLit(checkpoint=str(CHECKPOINT), thinkng=True)
    with pytest.raises(ValueError, match="batch_size must be a number"):
        OvisLit(checkpoint=str(CHECKPOINT), batch_size="auto")
    with pytest.raises(ValueError, match="thinking_budget is set but thinking is off"):
        OvisLit(checkpoint=str(CHECKPOINT), thinking_budget=3)



def _loglikelihood_requests(lm, docs):
    """docs: (context, continuation, visuals)."""
    lm.task_dict = {"t": {"test": [{"visuals": visuals} for _, _, visuals in docs]}}
    return [Instance("loglikelihood", (context, continuation, lambda doc: doc["visuals"], k, "t", "test"), 0,
                     metadata={"task": "t", "doc_id": k, "repeats": 1})
            for k, (context, continuation, _) in enumerate(docs)]


def reference_loss(lm, context, continuation, images):
    """The training loss of the continuation after the prompt: its tokens' mean cross-entropy (labels only there)."""
    prompt = lm.processor.query(context, images, **PIXELS)
    target = lm.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    sample = type(prompt)(**{**prompt.__dict__, "input_ids": prompt.input_ids + target,
                             "labels": [-100] * len(prompt.input_ids) + target})
    batch = lm.processor.collate([sample])
    out = lm.model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
                   grid_thws=batch["grid_thws"])
    assert out.n_label_tokens == len(target)
    return out.loss.item()


def test_loglikelihood(lm):
    """As lmms-eval's models: the continuation's mean cross-entropy, here equal to the training loss; `is_greedy`
    holds for what greedy generation produces (the longest prefix of it whose text tokenizes back to it) and not
    for another continuation; refused visuals give (inf, False); a context-only request (acc_mutual_info's) works."""
    image = Image.new("RGB", (30, 40), "green")
    prompt = lm.processor.query("Which shape?", [image], **PIXELS)
    batch = lm.processor.collate([prompt], padding_side="left")
    greedy = lm.model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["grid_thws"],
                               max_new_tokens=3, do_sample=False)[0].tolist()
    tokenizer = lm.processor.tokenizer
    greedy_text = next(tokenizer.decode(greedy[:k]) for k in (3, 2, 1)
                       if tokenizer(tokenizer.decode(greedy[:k]), add_special_tokens=False)["input_ids"] == greedy[:k])
    docs = [("Which shape?", greedy_text, [image]), ("Which shape?", " a red circle", [image]),
            ("<image>\nWhat colour is it?", " green", [Image.new("RGB", (50, 30), "red")]),
            ("Which shape?", " a circle", [png("red", (2, 600))])]  # refused by the processor
    before = lm.skipped.copy()
    requests = _loglikelihood_requests(lm, docs)
    requests.append(Instance("loglikelihood", ("", " green"), 0, metadata={"task": "t", "doc_id": 0, "repeats": 1}))
    # what lmms-eval's evaluator hands the task (through its unwrap_generation_output)
    results = [unwrap_generation_output(result)[0] for result in lm.loglikelihood(requests)]
    for (context, continuation, images), (loss, _) in zip(docs[:3] + [("", " green", [])], results[:3] + results[4:]):
        assert loss == pytest.approx(reference_loss(lm, context, continuation, images), rel=1e-4, abs=1e-4)
    assert [greedy for _, greedy in results[:4]] == [True, False, False, False]
    assert results[3] == (float("inf"), False) and lm.skipped - before == {"degenerate_size": 1}
