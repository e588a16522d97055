"""Dataset converters: each input layout is built in a temporary directory, converted (2 processes), checked
against its report, streamed through OvisDataModule and trained on for a few optimizer steps."""

import csv
import io
import json
import math
import struct
import zlib
from collections import Counter

import lightning as L
import numpy as np
import pytest
from PIL import Image

from ovis_lit.data.convert import captions as captions_converter
from ovis_lit.data.convert import llava as llava_converter
from ovis_lit.data.convert import ovis as ovis_converter
from ovis_lit.data.convert.checks import Limits
from ovis_lit.data.convert.runner import Options
from ovis_lit.data.stream import read_shards
from ovis_lit.training.run import build_processor, build_stage, instantiate_datamodule, stage_settings

from .helpers import compose_train

# ---------------------------------------------------------------------------------------------- input builders


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random colour field (compresses like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid-looking PNG header claiming width x height grey pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def odd_images() -> dict[str, bytes]:
    """Images in the modes real corpora carry (all must convert, none is rejected)."""
    base = photo(48, 40, 7)
    grey16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "grey16.png": encode(grey16, "PNG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "rgba.png": encode(base.convert("RGBA"), "PNG"),
        "la.png": encode(base.convert("LA"), "PNG"),
        "bw.png": encode(base.convert("1"), "PNG"),
        "photo.webp": encode(base, "WEBP"),
    }


def turns(question: str, answer: str, n_images: int = 1) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" * n_images + question}, {"from": "gpt", "value": answer}]


def write_images(root, names_to_bytes: dict[str, bytes]) -> None:
    for name, data in names_to_bytes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# --------------------------------------------------------------------------------------------- stream and train


@pytest.fixture(scope="module")
def cfgs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {s: compose_train([f"stage=s{s}", f"recipe.s{s}.batch_size=4"], out, out) for s in "123"}


def datamodule(cfg, sources: dict, use, workers: int = 0):
    stage = stage_settings(cfg)["data"]
    stage["use"] = use
    dm = instantiate_datamodule(cfg, None, **stage, sources=sources, prepare=None, heldout=None, num_workers=workers,
                     shuffle_buffer=50)
    dm.attach(build_processor(cfg))
    return dm


def stream_all(cfg, urls: dict[str, str]) -> tuple[int, Counter]:
    """Every converted training sample through the DataModule's validation path (one ordered pass)."""
    dm = datamodule(cfg, {name: {"train": url, "val": url} for name, url in urls.items()}, list(urls))
    n, skipped = 0, Counter()
    for batch in dm.val_dataloader():
        n += batch["input_ids"].shape[0]
        skipped.update(batch["skipped"])
        assert ((batch["labels"] != -100).sum(dim=1) > 0).all()
    return n, skipped


def train_steps(cfg, sources: dict, use, steps: int = 3) -> L.Trainer:
    dm = datamodule(cfg, sources, use)
    module = build_stage(cfg).module  # train.py's module for this stage; the data module is the test's
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, enable_model_summary=False,
                        callbacks=[Record()])
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == steps and len(losses) == steps
    assert all(math.isfinite(x) for x in losses)
    return trainer


def options(tmp_path, prefix, **kw) -> Options:
    return Options(output=tmp_path / "shards", prefix=prefix, workers=2, progress=False, **kw)


# ------------------------------------------------------------------------------------------------------- LLaVA


def test_llava_json_converts_validates_streams_and_trains(tmp_path, cfgs):
    images = tmp_path / "images"
    photos = {f"coco/{i:04d}.jpg": encode(photo(64 + 8 * i, 48, i), "JPEG") for i in range(8)}
    write_images(images, {**photos, **odd_images(), "broken.jpg": b"\xff\xd8\xff garbage",
                          "cut.png": encode(photo(64, 64, 99), "PNG")[:200], "bomb.png": bomb_png()})
    good = [
        {"id": f"single{i}", "image": f"coco/{i:04d}.jpg",
         "conversations": turns("What is shown?", f"Colour field {i}.")}
        for i in range(6)
    ]
    good += [
        {"id": "multi", "image": ["coco/0006.jpg", "coco/0007.jpg", "cmyk.jpg"],
         "conversations": [{"from": "system", "value": "Be brief."}, *turns("Compare them.", "Alike.", 3),
                           {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
        {"id": "text", "conversations": turns("Say hi.", "Hi.", 0)},
        {"id": "roles", "conversations": [{"role": "user", "value": "Hello"}, {"role": "assistant", "value": "Hi"}]},
    ]
    good += [{"id": f"odd-{name}", "image": [name], "conversations": turns("Mode?", "Converted.")}
             for name in odd_images()]
    bad = {
        "missing_image": [{"id": "m", "image": "nowhere.jpg", "conversations": turns("Q", "A")}],
        "decode_error": [{"id": "b", "image": "broken.jpg", "conversations": turns("Q", "A")},
                         {"id": "t", "image": "cut.png", "conversations": turns("Q", "A")}],
        "too_many_pixels": [{"id": "z", "image": "bomb.png", "conversations": turns("Q", "A")}],
        "invalid_sample": [{"id": "c", "image": ["coco/0000.jpg"], "conversations": turns("Q", "A", 2)},
                                 {"id": "c0", "image": "coco/0001.jpg", "conversations": turns("Q", "A", 0)}],
        "no_assistant_turn": [{"id": "n", "conversations": [{"from": "human", "value": "Q"}]}],
        "empty_conversation": [{"id": "e", "conversations": []}],
        "empty_answer": [{"id": "ea", "conversations": turns("Q", "  ", 0)}],
        "bad_json": [{"id": "j", "conversations": [{"from": "wizard", "value": "?"}, {"from": "gpt", "value": "!"}]},
                     {"id": "j2", "image": 3, "conversations": turns("Q", "A")}, "not an object"],
        "bad_image_path": [{"id": "p", "image": "../secret.jpg", "conversations": turns("Q", "A")}],
        "too_long": [{"id": "l", "conversations": turns("word " * 600, "A", 0)}],
        "too_many_images": [{"id": "many", "image": ["coco/0000.jpg"] * 5, "conversations": turns("Q", "A", 5)}],
    }
    entries = good + [e for group in bad.values() for e in group]
    order = np.random.default_rng(0).permutation(len(entries))  # bad entries scattered among the good
    (tmp_path / "llava.json").write_text(json.dumps([entries[i] for i in order]))

    report = llava_converter.convert([tmp_path / "llava.json"], images, options(tmp_path, "llava", maxcount=5),
                                     Limits(max_chars=2000, max_images=4))
    assert report["rejected"] == {reason: len(group) for reason, group in bad.items()}
    assert report["written"] == {"train": len(good), "val": 0}
    assert len(report["shards"]["train"]) == math.ceil(len(good) / 5)  # sharded by count
    rejected = [json.loads(line) for line in open(report["rejected_list"])]
    assert Counter(r["reason"] for r in rejected) == Counter(report["rejected"])  # every rejection is listed
    saved = json.loads((tmp_path / "shards" / "llava-report.json").read_text())
    assert saved["rejected"] == report["rejected"]

    records = list(read_shards(report["shards"]["train"], Counter()))
    assert sorted(json.loads(r["json"])["id"] for r in records) == sorted(e["id"] for e in good)
    multi = next(r for r in records if json.loads(r["json"])["id"] == "multi")
    assert json.loads(multi["json"])["images"] == ["0.jpg", "1.jpg", "2.jpg"]
    assert multi["0.jpg"] == photos["coco/0006.jpg"]  # original bytes, not re-encoded

    n, skipped = stream_all(cfgs["3"], {"llava": report["urls"]["train"]})
    assert (n, skipped) == (len(good), Counter())
    train_steps(cfgs["3"], {"llava": {"train": report["urls"]["train"]}}, ["llava"])


def test_llava_jsonl_options_and_validation_split(tmp_path):
    images = tmp_path / "images"
    write_images(images, {"a.png": encode(photo(32, 32, 1), "PNG")})
    lines = [json.dumps({"id": f"s{i}", "image": "a.png", "conversations": turns("Q", "A", 0)}) for i in range(40)]
    (tmp_path / "data.jsonl").write_text("\n".join(lines[:20] + ["{not json"] + lines[20:]) + "\n")
    limits = Limits(add_missing_image_token=True)
    report = llava_converter.convert([tmp_path / "data.jsonl"], images, options(tmp_path, "j", val_fraction=0.25),
                                     limits)
    assert report["rejected"] == {"bad_json": 1}
    assert report["written"]["train"] + report["written"]["val"] == 40 and report["written"]["val"] > 0
    record = next(read_shards(report["shards"]["train"], Counter()))
    assert json.loads(record["json"])["conversations"][0]["value"].startswith("<image>\n")
    with pytest.raises(FileExistsError):  # never mixes with an earlier conversion's shards
        llava_converter.convert([tmp_path / "data.jsonl"], images, options(tmp_path, "j"), limits)
    again = llava_converter.convert([tmp_path / "data.jsonl"], images,
                                    options(tmp_path, "j", val_fraction=0.25, overwrite=True), limits)
    assert again["written"] == report["written"]  # the split is a pure function of the ids


def test_llava_cli(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, {"a.jpg": encode(photo(40, 30, 2), "JPEG")})
    (tmp_path / "d.json").write_text(json.dumps([{"id": 1, "image": "a.jpg", "conversations": turns("Q", "A")}]))
    report = llava_converter.main(["--json", str(tmp_path / "d.json"), "--image-root", str(images), "--output",
                                   str(tmp_path / "out"), "--workers", "1", "--no-progress", "--shard-size", "1"])
    assert report["written"]["train"] == 1 and report["prefix"] == "d"  # named after the JSON file
    assert "sources:" in capsys.readouterr().out


def test_every_converter_cli_prints_its_summary_and_ends_unreadable_input_with_a_message(tmp_path, capsys):
    """The three `main`s share one command line (`convert.cli.run_command`): reports summarised, an unreadable
    input a message and exit status 2, no traceback."""
    images = tmp_path / "images"
    write_images(images, {"a.jpg": encode(photo(40, 30, 2), "JPEG")})
    (images / "metadata.jsonl").write_text(json.dumps({"file_name": "a.jpg", "text": "A field."}) + "\n")
    common = ["--workers", "1", "--no-progress"]
    report = captions_converter.main(["--images", str(images), "--output", str(tmp_path / "caps"), *common])
    assert report["written"]["train"] == 1 and report["prefix"] == "images"
    assert "images:\n    train: " in capsys.readouterr().out
    info = {"set": {"meta_file": "images/metadata.jsonl", "image_dir": "images", "data_format": "caption"}}
    (tmp_path / "info.json").write_text(json.dumps(info))
    summary = ovis_converter.main(["--dataset-info", str(tmp_path / "info.json"), "--output", str(tmp_path / "o"),
                                   *common])
    assert summary["use"] == {"set": 1}
    out = capsys.readouterr().out
    assert "set: 1 entries" in out and f"summary: {tmp_path / 'o' / 'report.json'}" in out
    gone = str(tmp_path / "gone.json")
    for main, args in [(llava_converter.main, ["--json", gone]), (ovis_converter.main, ["--dataset-info", gone]),
                       (captions_converter.main, ["--images", str(images), "--captions", gone])]:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--output", str(tmp_path / "x"), *common])
        assert exit_info.value.code == 2 and "error: " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ original Ovis layout


def test_ovis_layout_converts_streams_and_trains(tmp_path, cfgs):
    import pyarrow as pa  # a dev dependency: the parquet path must be tested
    import pyarrow.parquet as pq

    root = tmp_path / "ovis"
    write_images(root / "pp", {f"{i}.jpg": encode(photo(56, 40, i), "JPEG") for i in range(10)})
    write_images(root / "wiki", {f"w{i}.png": encode(photo(40, 56, 50 + i), "PNG") for i in range(5)})
    write_images(root / "chat", {"c.jpg": encode(photo(48, 48, 77), "JPEG")})
    rows = [{"image_path": f"{i}.jpg", "image": None, "caption": f"A smooth field number {i}."} for i in range(10)]
    rows[3]["caption"] = ""  # rejected: empty_caption
    rows[5]["image_path"] = "gone.jpg"  # rejected: missing_image
    embedded = {"image_path": None, "caption": "Embedded bytes.",
                "image": {"bytes": encode(photo(30, 30, 5), "PNG"), "path": None}}
    pq.write_table(pa.Table.from_pylist(rows + [embedded]), root / "pixelprose.parquet")
    (root / "wiki.json").write_text(json.dumps(
        [{"image_path": f"w{i}.png", "caption": f"Entry {i}."} for i in range(5)]
        + [{"image_path": "w0.png", "caption": "own template", "caption_template": "<image>\nText:\n"}]))
    (root / "chat.json").write_text(json.dumps(
        [{"id": f"c{i}", "image": "c.jpg", "conversations": turns(f"Question {i}?", f"Answer {i}.")} for i in range(6)]
        + [{"id": "t", "conversations": turns("Text only?", "Yes.", 0)},
           {"id": "x", "image": "c.jpg", "conversations": turns("Q", "A", 2)}]))
    info = {
        "pixelprose-mini": {"meta_file": "pixelprose.parquet", "image_dir": "pp", "data_format": "caption",
                            "caption_template": "<image>\nDescription:\n"},
        "wikipedia-mini": {"meta_file": "wiki.json", "image_dir": "wiki", "data_format": "caption",
                           "caption_template": "<image>\nEntry:\n"},
        "chat-mini": {"meta_file": "chat.json", "image_dir": "chat", "data_format": "conversation"},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))

    summary = ovis_converter.convert(root / "dataset_info.json", tmp_path / "shards", options(tmp_path, "unused"))
    sets = summary["datasets"]
    assert sets["pixelprose-mini"]["rejected"] == {"empty_caption": 1, "missing_image": 1}
    assert sets["pixelprose-mini"]["written"]["train"] == 9
    assert sets["wikipedia-mini"]["written"]["train"] == 6 and not sets["wikipedia-mini"]["rejected"]
    assert sets["chat-mini"]["rejected"] == {"invalid_sample": 1}
    assert summary["use"] == {"pixelprose-mini": 9, "wikipedia-mini": 6, "chat-mini": 7}
    assert json.loads((tmp_path / "shards" / "report.json").read_text())["sources"] == summary["sources"]

    # stage 1 (caption template form): the set's template, or the row's own
    dm = datamodule(cfgs["1"], {"w": summary["sources"]["wikipedia-mini"]}, ["w"])
    prompts = sorted(dm._builder()(r).prompt for r in read_shards([summary["sources"]["wikipedia-mini"]["train"]],
                                                                   Counter()))
    assert prompts[0] == "<image>\nEntry:\nEntry 0." and "<image>\nText:\nown template" in prompts

    n, skipped = stream_all(cfgs["3"], {k: v["train"] for k, v in summary["sources"].items()})
    assert (n, skipped) == (22, Counter())
    # stage 3 on the three sets, weighted by size as the original's concatenation
    train_steps(cfgs["3"], summary["sources"], summary["use"])


# ----------------------------------------------------------------------------------------- captioned image folder


def test_caption_folder_csv_and_jsonl(tmp_path, cfgs):
    folder = tmp_path / "photos"
    write_images(folder, {f"{k}/{i}.jpg": encode(photo(50, 38, 10 * i + len(k)), "JPEG")
                          for k in ("beach", "city") for i in range(5)})
    write_images(folder, {"unlisted.png": encode(photo(20, 20, 0), "PNG"), "broken.jpg": b"\xff\xd8\xffnope"})
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text"])
        for k in ("beach", "city"):
            for i in range(5):
                w.writerow([f"{k}/{i}.jpg", f"A {k} picture, number {i}, with a comma."])
        w.writerow(["beach/missing.jpg", "gone"])
        w.writerow(["broken.jpg", "broken"])
        w.writerow(["city/0.jpg", "   "])

    report = captions_converter.convert(folder, None, options(tmp_path, "photos", maxsize=4000))
    assert report["rejected"] == {"missing_image": 1, "decode_error": 1, "empty_caption": 1}
    assert report["written"]["train"] == 10 and report["unlisted_images"] == 1
    assert len(report["shards"]["train"]) > 1  # sharded by size

    (tmp_path / "caps.jsonl").write_text("\n".join(
        json.dumps({"image": f"beach/{i}.jpg", "caption": f"Sand {i}."}) for i in range(3)))
    jl = captions_converter.convert(folder, tmp_path / "caps.jsonl", options(tmp_path, "jl"),
                                    template="<image>\nDescription:\n")
    assert jl["written"]["train"] == 3 and not jl["rejected"]
    meta = json.loads(next(read_shards(jl["shards"]["train"], Counter()))["json"])
    assert meta["caption_template"] == "<image>\nDescription:\n" and meta["images"] == ["0.jpg"]

    n, skipped = stream_all(cfgs["2"], {"photos": report["urls"]["train"], "jl": jl["urls"]["train"]})
    assert (n, skipped) == (13, Counter())
    train_steps(cfgs["2"], {"photos": {"train": report["urls"]["train"]}, "jl": {"train": jl["urls"]["train"]}},
                {"photos": 0.8, "jl": 0.2})


def test_bad_template_fails_before_converting(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        captions_converter.convert(tmp_path, tmp_path / "x.csv", options(tmp_path, "x"), template="no image mark")


# ------------------------------------------------------------------------------------------------------ mixtures


def test_mixture_example_config_draws_sources_by_weight(tmp_path):
    """conf/data/mixture_example.yaml composes, gives each stage its own mixture, and the stream's samples come
    from the sources in the configured proportions (converted text-only sets, so that sampling is cheap)."""
    cfg = compose_train(["data=mixture_example", "stage=s3", "recipe.s3.batch_size=16"], tmp_path, tmp_path)
    weights = stage_settings(cfg)["data"]["use"]
    assert weights == {"llava_instruct": 0.6, "captions": 0.3, "text_instruct": 0.1}
    stage1 = compose_train(["data=mixture_example", "stage=s1"], tmp_path, tmp_path)
    assert stage_settings(stage1)["data"]["use"] == {"pixelprose": 0.7, "captions": 0.3}
    assert set(weights) <= set(cfg.data.sources)

    sources = {}
    for name in weights:
        entries = [{"id": f"{name}{i}", "conversations": turns(f"{name} question {i}?", "Answer.", 0)}
                   for i in range(300)]
        (tmp_path / f"{name}.json").write_text(json.dumps(entries))
        report = llava_converter.convert([tmp_path / f"{name}.json"], tmp_path,
                                         Options(output=tmp_path / name, prefix=name, workers=1, progress=False,
                                                 maxcount=100))
        sources[name] = {"train": report["urls"]["train"]}
    stage = stage_settings(cfg)["data"]
    dm = instantiate_datamodule(cfg, None, **stage, sources=sources, prepare=None, num_workers=2)
    dm.attach(build_processor(cfg))
    drawn = Counter()
    it = iter(dm.train_dataloader())
    for _ in range(40):  # 640 samples, 320 per worker
        batch = next(it)
        drawn.update(key.split("/")[0] for key in batch["keys"])
    n = sum(drawn.values())
    for name, weight in weights.items():
        share = drawn[name] / n
        assert abs(share - weight) < 4 * math.sqrt(weight * (1 - weight) / n), (name, share, weight, drawn)
