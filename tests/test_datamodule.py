"""The WebDataset DataModule: workers, mixing, determinism, length control, label sanity."""

import json
from collections import Counter

import pytest
import torch
from PIL import Image

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, IMAGE_END_ID, IMAGE_START_ID
from ovis_lit.data import shapes
from ovis_lit.data.samples import SampleBuilder, fit_length
from ovis_lit.training.run import build_processor, instantiate_datamodule

from .helpers import SMALL_DATA, compose_train


@pytest.fixture(scope="module")
def data_dir(shapes_data):
    return shapes_data  # conftest's, built once per session


def _datamodule(tmp_path, data_dir, overrides=(), workers=2, stage="s3"):
    cfg = compose_train([f"stage={stage}", f"data.num_workers={workers}", *overrides], tmp_path, data_dir)
    processor = build_processor(cfg)
    dm = instantiate_datamodule(cfg)
    dm.attach(processor)
    dm.prepare_data()
    return dm, processor


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_two_workers_yield_expected_batches(tmp_path, data_dir):
    dm, processor = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"])
    batches = _take(dm.train_dataloader(), 8)
    assert [b["stream"]["worker"] for b in batches] == [0, 1] * 4  # in-order round robin over the workers
    for b in batches:
        assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
        assert b["input_ids"].shape[0] == 8
        n_atoms = int((b["input_ids"] == IMAGE_ATOM_ID).sum())  # one per visual token
        assert b["pixel_values"].shape == (n_atoms // processor.tokens_per_crop, 3, 64, 64)
        # no batch, and no sample, has all labels masked
        assert ((b["labels"] != IGNORE_ID).sum(dim=1) > 0).all()
        assert set(b["stream"]["sources"]) <= {"chat", "caption"}
    # both sources appear, about 70/30 (stage 3 mixes instruction data with described images)
    texts = [processor.tokenizer.decode(row[row >= 0]) for b in batches for row in b["input_ids"]]
    described = sum("Describe the image." in t or "What is in the picture?" in t for t in texts)
    assert 5 <= described <= 40


def test_stream_is_deterministic_and_distinct_within_an_epoch(tmp_path, data_dir):
    dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=16", "stage.data.use={chat:1.0,caption:0.0}"], workers=2)
    first = _take(dm.train_dataloader(), 6)
    again = _take(dm.train_dataloader(), 6)
    for a, b in zip(first, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    # within an epoch no record comes twice: (source, epoch, position) per worker strictly increase
    positions = [b["stream"]["sources"]["chat"] for b in first]
    per_worker = {0: positions[0::2], 1: positions[1::2]}
    for seq in per_worker.values():
        assert seq == sorted(seq) and len(set(map(tuple, seq))) == len(seq)


def test_resume_from_a_stream_state_continues_exactly(tmp_path, data_dir):
    dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"], workers=2)
    straight = _take(dm.train_dataloader(), 7)
    for b in straight[:3]:
        dm.observe(b)
    resumed_dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"], workers=2)
    resumed_dm.load_state_dict(json.loads(json.dumps(dm.state_dict())))  # as it travels in a checkpoint
    assert resumed_dm.stream_state.next_worker == 1
    resumed = _take(resumed_dm.train_dataloader(), 4)
    for a, b in zip(straight[3:], resumed):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_resume_refuses_a_changed_stream_layout(tmp_path, data_dir):
    dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"], workers=2)
    state = json.loads(json.dumps(dm.state_dict()))
    other, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"], workers=1)
    with pytest.raises(ValueError, match="num_workers changed"):
        other.load_state_dict(state)
    reweighted, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8", "stage.data.use={chat:1.0}"])
    with pytest.raises(ValueError, match="use changed"):
        reweighted.load_state_dict(state)


def test_validation_is_a_single_ordered_pass(tmp_path, data_dir):
    dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s3.batch_size=8"], workers=1)
    batches = list(dm.val_dataloader())
    n = sum(b["input_ids"].shape[0] for b in batches)
    expected = sum(int(SMALL_DATA * 256) if int(SMALL_DATA * 256) >= 1 else 1 for _ in ("chat", "caption"))
    assert n <= expected and n >= expected - 2  # text-only chat samples are few; nothing is lost


def _record(conversations=None, caption=None, n_images=1, key="k"):
    meta = {"conversations": conversations} if conversations is not None else {"caption": caption}
    record = {"__key__": key, "json": meta}
    for i in range(n_images):
        record[f"{i}.png"] = Image.new("RGB", (64, 64), "red")
    return record


def _builder(processor, **kw):
    return SampleBuilder(processor, max_length=kw.pop("max_length", 256), **kw)


def test_sample_builder_formats_captions_two_ways(tmp_path, data_dir):
    _, processor = _datamodule(tmp_path, data_dir)
    templ = _builder(processor, caption_template="<image>\nDescription:\n")(_record(caption="A red circle."))
    chat = _builder(processor, captions_as="chat")(_record(caption="A red circle."))
    assert templ.prompt == "<image>\nDescription:\nA red circle."
    assert "<|im_start|>assistant\nA red circle.<|im_end|>" in chat.prompt


def test_text_only_samples_carry_no_images_and_supervise_the_answers(tmp_path, data_dir):
    """Stage s0's samples: the marks and pixels gone (no image member is even decoded: these are not images), the
    answer (a chat answer, a caption) supervised; and a stage-s0 batch of the real data holds no visual input."""
    _, processor = _datamodule(tmp_path, data_dir)
    builder = _builder(processor, captions_as="chat", text_only=True)
    conv = [{"from": "human", "value": "<image>\nWhat shape is shown?"}, {"from": "gpt", "value": "triangle"},
            {"from": "human", "value": "And its colour?"}, {"from": "gpt", "value": "red"}]
    chat = builder({"__key__": "k", "json": {"conversations": conv}, "0.png": b"not an image"})
    caption = builder({"__key__": "k", "json": {"caption": "A red circle."}, "0.png": b"not an image"})
    for sample, answers in ((chat, ["triangle", "red"]), (caption, ["A red circle."])):
        assert "<image>" not in sample.prompt and sample.n_crops == 0
        assert min(sample.input_ids) >= 0  # no visual placeholder or indicator
        supervised = processor.tokenizer.decode([t for t in sample.labels if t != IGNORE_ID])
        assert [a for a in answers if a in supervised] == answers
        assert sample.prompt.count("<|im_start|>assistant\n") == len(answers)
    assert "user\nWhat shape is shown?<|im_end|>" in chat.prompt
    with pytest.raises(ValueError, match="captions_as"):  # a caption template is the text before an image
        _builder(processor, text_only=True)

    dm, _ = _datamodule(tmp_path, data_dir, ["recipe.s0.batch_size=8"], workers=0, stage="s0")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["pixel_values"].shape[0] == 0
    assert int(batch["input_ids"].min()) >= 0 and bool((batch["labels"] != IGNORE_ID).any())


def test_length_control_never_cuts_an_image_run(tmp_path, data_dir):
    _, processor = _datamodule(tmp_path, data_dir)
    long_text = " ".join(["circle"] * 60)
    conv = [{"from": "human", "value": "<image>\nfirst"}, {"from": "gpt", "value": long_text},
            {"from": "human", "value": "<image>\nsecond"}, {"from": "gpt", "value": "square"}]
    sample = _builder(processor, max_length=10_000)(_record(conv, n_images=2))
    full, per_crop = len(sample.input_ids), processor.tokens_per_crop  # every visual token is in the ids
    assert per_crop > 1  # crops are runs of -300s: a cut could land inside one
    start2, end2 = [i for i, t in enumerate(sample.input_ids) if t in (IMAGE_START_ID, IMAGE_END_ID)][2:]
    for max_length in range(start2 - 3, full):  # cuts before, inside and after the second image
        cut = fit_length(sample, max_length)
        assert len(cut.input_ids) <= max_length
        assert cut.input_ids.count(IMAGE_START_ID) == cut.input_ids.count(IMAGE_END_ID)  # whole images only
        assert cut.pixel_values.shape[0] * per_crop == cut.input_ids.count(IMAGE_ATOM_ID)
        # a cut inside the second image drops it whole; one after it keeps it
        assert cut.input_ids.count(IMAGE_START_ID) == (2 if max_length > end2 else 1)
        assert cut.input_ids == sample.input_ids[: len(cut.input_ids)]


def test_bad_records_are_counted_skips(tmp_path, data_dir):
    from ovis_lit.rejection import Rejected

    _, processor = _datamodule(tmp_path, data_dir)
    build = _builder(processor)
    cases = {
        "no_assistant_turn": _record([{"from": "human", "value": "<image>\nhi"}]),
        "invalid_sample": _record([{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}]),
        "bad_json": {"__key__": "k", "json": "not a dict"},
        "empty_conversation": _record([]),
        "empty_caption": _record(caption="  "),
    }
    for reason, record in cases.items():
        with pytest.raises(Rejected) as info:
            build(record)
        assert info.value.reason == reason


def test_shapes_dataset_needs_the_image(tmp_path):
    """A text-only predictor is at chance on the held-out split: the best guess per exact question text (options
    included), learnt from the training questions, scores ~25%."""
    import numpy as np

    rng = np.random.default_rng(123)
    table: dict[str, Counter] = {}
    for _ in range(20000):
        items = shapes.random_scene(rng)
        for q, a, space in shapes.questions(items):
            options, letter = shapes.multiple_choice(a, space, rng)
            table.setdefault(shapes.mc_prompt(q, options), Counter())[letter] += 1
    test = tmp_path / "mc.tsv"
    shapes.write_mc_tsv(test, 2000, seed=5)
    from ovis_lit.evaluation.mcq import mcq_prompt
    from ovis_lit.evaluation.tsv import read_benchmark_tsv

    rows = read_benchmark_tsv(test, ["question", "answer"])
    letters = Counter(r["answer"] for r in rows)
    assert max(letters.values()) / len(rows) < 0.3  # answer letters balanced
    hits = 0
    for r in rows:
        prompt = shapes.mc_prompt(r["question"], [r[k] for k in "ABCD"])
        counts = table.get(prompt)
        guess = counts.most_common(1)[0][0] if counts else "A"
        hits += guess == r["answer"]
        assert mcq_prompt(r, shapes.MC_INSTRUCTION) == prompt  # the evaluator asks exactly what training taught
    assert hits / len(rows) < 0.31, hits / len(rows)


def test_data_builders_in_one_directory_take_turns(tmp_path, monkeypatch):
    """A second builder waits while another holds the directory's build lock (the connector experiment's parallel
    runs and two train.py on one data_dir would otherwise write the same shards at once), then finds the data."""
    import threading

    from filelock import FileLock

    from ovis_lit.data import shapes

    entered, build = threading.Event(), shapes._ensure_shapes_dataset

    def building(*args, **kwargs):
        entered.set()
        return build(*args, **kwargs)

    monkeypatch.setattr(shapes, "_ensure_shapes_dataset", building)
    directory = tmp_path / "shapes"
    directory.mkdir()
    held = FileLock(str(directory / ".build.lock"))
    held.acquire()
    builder = threading.Thread(target=shapes.ensure_shapes_dataset, args=(directory, 0.002))
    builder.start()
    try:
        assert not entered.wait(1.0), "the builder did not wait for the lock"
    finally:
        held.release()
    builder.join(120)
    assert entered.is_set() and (directory / "DONE.json").is_file()
