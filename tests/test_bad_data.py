"""A corpus with every kind of broken sample mixed with good ones: the training stream survives it, counts each
skip by reason exactly, delivers every good sample, never unpickles anything, and resumes without recounting."""

import io
import json
import math
import pickle
import re
import struct
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds
from hydra.utils import instantiate
from PIL import Image

from ovis_lit.constants import IGNORE_ID
from ovis_lit.data.samples import SampleBuilder
from ovis_lit.data.stream import read_shards
from ovis_lit.processing.image_decoding import decode_image
from ovis_lit.rejection import Rejected
from ovis_lit.training.run import build_processor, build_stage, instantiate_datamodule, stage_settings
from ovis_lit.training.skips import SkipCountLogger

from .helpers import compose_train

REPO = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------------- the corpus


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(width: int, height: int, seed: int) -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds almost nothing (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class _Payload:
    """Creates a file when unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _chat(question: str, answer: str, n_images: int = 1) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" * n_images + question}, {"from": "gpt", "value": answer}]


def _js(obj) -> bytes:
    return json.dumps(obj).encode()


LONG = " ".join(f"circle{i % 97} square" for i in range(300))  # far over the 256-token limit


def good_records(marker: Path) -> list[dict]:
    base = _photo(80, 60, 1)
    grey16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    records = []
    for i in range(14):
        size = [(64, 64), (300, 200), (1000, 700), (40, 90)][i % 4]
        records.append({"json": _js({"conversations": _chat(f"What is {i}?", f"Field {i}.")}),
                        "jpg" if i % 2 else "png": _encode(_photo(*size, i), "JPEG" if i % 2 else "PNG")})
    records += [
        {"json": _js({"conversations": _chat("Compare.", "Alike.", 2), "images": ["b.jpg", "a.png"]}),
         "a.png": _encode(_photo(50, 50, 2), "PNG"), "b.jpg": _encode(_photo(70, 40, 3), "JPEG")},
        {"json": _js({"conversations": _chat("Text only?", "Yes.", 0)})},
        {"json": _js({"caption": "A smooth colour field."}), "jpg": _encode(_photo(64, 48, 4), "JPEG")},
        {"json": _js({"conversations": _chat("CMYK?", "Yes.")}), "jpg": _encode(base.convert("CMYK"), "JPEG")},
        {"json": _js({"conversations": _chat("16 bit?", "Yes.")}), "png": _encode(grey16, "PNG")},
        {"json": _js({"conversations": _chat("Palette?", "Yes.")}), "png": _encode(palette, "PNG", transparency=0)},
        {"json": _js({"conversations": _chat("Alpha?", "Yes.")}), "png": _encode(base.convert("RGBA"), "PNG")},
        {"json": _js({"conversations": _chat("Grey alpha?", "Yes.")}), "png": _encode(base.convert("LA"), "PNG")},
        {"json": _js({"conversations": _chat("One bit?", "Yes.")}), "png": _encode(base.convert("1"), "PNG")},
        # over-long, but its first answer fits: truncated, kept
        {"json": _js({"conversations": _chat("Short?", "Kept.", 0) + _chat(LONG, "Cut.", 0)})},
        # a pickle and a torch file beside a good sample: never decoded
        {"json": _js({"conversations": _chat("Safe?", "Yes.")}), "png": _encode(_photo(32, 32, 5), "PNG"),
         "pyd": pickle.dumps(_Payload(str(marker))), "pth": _torch_payload(marker), "txt": b"ignored"},
    ]
    return records


def _torch_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": _Payload(str(marker) + ".pth")}, buf)
    return buf.getvalue()


def bad_records() -> dict[str, list[dict]]:
    ok = _encode(_photo(64, 64, 9), "PNG")
    return {
        "decode_error": [{"json": _js({"conversations": _chat("Q", "A")}), "jpg": b"\xff\xd8\xff\xe0 not a jpeg"},
                         {"json": _js({"conversations": _chat("Q", "A")}), "png": ok[: len(ok) // 2]}],
        "missing_image": [{"json": _js({"conversations": _chat("Q", "A"), "images": ["0.png"]})}],
        "missing_json": [{"png": ok}],
        "bad_json": [{"json": b'{"conversations": [{"from": "human", "value": "<ima', "png": ok},
                     {"json": b"[1, 2, 3]"},
                     {"json": _js({"conversations": [{"from": "human"}, {"from": "gpt", "value": "A"}]})}],
        "empty_conversation": [{"json": _js({"conversations": []}), "png": ok}],
        "no_assistant_turn": [{"json": _js({"conversations": [{"from": "human", "value": "<image>\nQ"}]}),
                               "png": ok}],
        "invalid_sample": [{"json": _js({"conversations": _chat("Q", "A", 2)}), "png": ok},  # 2 marks, 1 image
                           {"json": _js({"conversations": _chat("Q", "A", 1)})}],  # its image member is missing
        "no_supervised_tokens": [{"json": _js({"conversations": _chat(LONG, "Lost.", 0)})}],
        "too_many_pixels": [{"json": _js({"conversations": _chat("Q", "A")}), "png": _png_header(9000, 9000)},
                            {"json": _js({"conversations": _chat("Q", "A")}), "png": _png_header(40000, 40000)}],
        "empty_caption": [{"json": _js({"caption": " "}), "png": ok}],
    }


def write_corpus(directory: Path, marker: Path, n_shards: int = 6) -> tuple[list[str], Counter, set[str]]:
    """Shards of good and bad records (every shard starts with a good one); the last shard is cut inside its last
    record. Returns (urls, expected skips per epoch, keys of the good samples that must arrive)."""
    good = good_records(marker)
    bad = [(reason, r) for reason, group in bad_records().items() for r in group]
    rng = np.random.default_rng(0)
    bad = [bad[i] for i in rng.permutation(len(bad))]
    shards: list[list[tuple[str, dict]]] = [[] for _ in range(n_shards)]
    for i, record in enumerate(good):
        shards[i % n_shards].append(("good", record))
    for i, item in enumerate(bad):  # after each shard's first record, scattered
        shard = shards[i % n_shards]
        shard.insert(1 + int(rng.integers(len(shard))), item)
    shards[-1].append(("cut", good_records(marker)[0]))  # complete in no reader's eyes: the file ends inside it
    urls, expected, good_keys = [], Counter(), set()
    directory.mkdir(parents=True, exist_ok=True)
    for s, items in enumerate(shards):
        path = directory / f"bad-{s:06d}.tar"
        with wds.TarWriter(str(path), encoder=False) as sink:
            for k, (kind, record) in enumerate(items):
                key = f"s{s}r{k:03d}{kind.replace('_', '')}"
                sink.write({"__key__": key, **record})
                if kind == "good":
                    good_keys.add(key)
                elif kind != "cut":
                    expected[kind] += 1
        urls.append(str(path))
    last = Path(urls[-1])
    with tarfile.open(last) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".png") or m.name.endswith(".jpg")][-1]
    data = last.read_bytes()
    last.write_bytes(data[: member.offset_data + member.size // 2])
    expected["truncated_shard"] += 1
    return urls, expected, good_keys


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    marker = root / "pwned"
    urls, expected, good_keys = write_corpus(root / "shards", marker)
    return {"urls": urls, "expected": expected, "good": good_keys, "marker": marker, "root": root}


class EpochCollate:
    """The processor's collate, plus each sample's epoch (batches carry their records' "source/key" already)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, samples):
        out = self.collate(samples)
        out["epochs"] = [s.meta["epoch"] for s in samples]
        return out


def _datamodule(root: Path, urls: list[str], batch_size: int, workers: int, shuffle_buffer: int, keyed=True):
    cfg = compose_train(["stage=s3", f"recipe.s3.batch_size={batch_size}"], root, root)
    processor = build_processor(cfg)
    if keyed:
        processor.collate = EpochCollate(processor.collate)
    stage = stage_settings(cfg)["data"]
    stage["use"] = ["bad"]
    dm = instantiate_datamodule(cfg, None, **stage, sources={"bad": {"train": urls}}, prepare=None, heldout=None,
                     num_workers=workers, shuffle_buffer=shuffle_buffer)
    dm.attach(processor)
    return cfg, dm


# --------------------------------------------------------------------------------------------------- the tests


def test_an_epoch_of_the_training_stream_counts_every_defect_and_delivers_every_good_sample(corpus):
    """Two workers, batch size 1, no shuffle buffer, so that each worker's epoch ends between two batches: the
    skips a worker reports up to its first sample of epoch 1 are exactly those of its epoch 0 (every shard starts
    with a good record, so epoch 1 skips nothing before its first sample)."""
    _, dm = _datamodule(corpus["root"], corpus["urls"], batch_size=1, workers=2, shuffle_buffer=1)
    skipped, arrived, done = Counter(), [], set()
    for n, batch in enumerate(dm.train_dataloader()):
        assert n < 500, "the stream should have reached epoch 1 on both workers"
        worker = batch["stream"]["worker"]
        assert ((batch["labels"] != IGNORE_ID).sum(dim=1) > 0).all()  # no sample without supervised tokens
        if worker in done:
            continue
        skipped.update(batch["skipped"])
        if batch["epochs"][0] == 0:
            arrived += batch["keys"]
        else:
            done.add(worker)
            if done == {0, 1}:
                break
    assert skipped == corpus["expected"]
    assert Counter(arrived) == Counter(f"bad/{key}" for key in corpus["good"])  # each good sample once, no other
    assert set(corpus["expected"]) >= {"decode_error", "missing_image", "bad_json", "empty_conversation",
                                       "no_assistant_turn", "invalid_sample", "no_supervised_tokens",
                                       "too_many_pixels", "truncated_shard"}
    assert not corpus["marker"].exists() and not Path(str(corpus["marker"]) + ".pth").exists()


def test_training_on_the_bad_corpus_runs_and_logs_the_skips(corpus):
    cfg, dm = _datamodule(corpus["root"], corpus["urls"], batch_size=4, workers=2, shuffle_buffer=20, keyed=False)
    module = build_stage(cfg).module  # train.py's module for this stage; the data module is the test's
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=0, enable_model_summary=False,
                        callbacks=[Record(), SkipCountLogger()])
    trainer.fit(module, datamodule=dm)  # 32 samples: more than an epoch of the corpus (25 good ones)
    assert trainer.global_step == 8 and all(math.isfinite(x) for x in losses)
    assert set(dm.skipped) == set(corpus["expected"])
    assert all(dm.skipped[r] >= n for r, n in corpus["expected"].items())
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("data/skipped/")}
    assert logged == {f"data/skipped/{r}": float(n) for r, n in dm.skipped.items()}  # what W&B receives
    assert not corpus["marker"].exists()


def test_resuming_neither_loses_nor_recounts_skips(corpus):
    straight_dm = _datamodule(corpus["root"], corpus["urls"], batch_size=2, workers=2, shuffle_buffer=8)[1]
    it = iter(straight_dm.train_dataloader())
    straight = [next(it) for _ in range(30)]
    for batch in straight[:11]:
        straight_dm.observe(batch)
    resumed_dm = _datamodule(corpus["root"], corpus["urls"], batch_size=2, workers=2, shuffle_buffer=8)[1]
    resumed_dm.load_state_dict(json.loads(json.dumps(straight_dm.state_dict())))
    it = iter(resumed_dm.train_dataloader())
    resumed = [next(it) for _ in range(19)]
    for a, b in zip(straight[11:], resumed):
        assert a["keys"] == b["keys"] and a["skipped"] == b["skipped"]
    assert sum(sum(b["skipped"].values()) for b in straight) > 0


# ------------------------------------------------------------------------------------------------- shard reading


def test_read_shards_matches_webdataset_on_intact_shards(corpus):
    intact = corpus["urls"][:-1]
    ours = list(read_shards(intact, Counter()))
    theirs = list(wds.tarfile_to_samples()([{"url": u} for u in intact]))
    assert ours == theirs  # the same records in the same order: stream positions are unchanged


@pytest.mark.parametrize("cut", ["member_data", "header", "block_boundary", "end_blocks_missing"])
def test_a_truncated_shard_is_counted_once_and_keeps_its_complete_records(tmp_path, cut):
    path = tmp_path / "s.tar"
    with wds.TarWriter(str(path), encoder=False) as sink:
        for k in range(4):
            sink.write({"__key__": f"k{k}", "json": b"{}", "png": b"x" * 3000})
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    third_json = members[4]
    end = {"member_data": members[5].offset_data + 100, "header": third_json.offset + 100,
           "block_boundary": third_json.offset, "end_blocks_missing": members[-1].offset_data + 3072}[cut]
    path.write_bytes(path.read_bytes()[:end])
    counts = Counter()
    keys = [r["__key__"] for r in read_shards([str(path)], counts)]
    assert counts == Counter(truncated_shard=1)
    # the record being read when the file ended is dropped (it may be incomplete)
    assert keys == {"member_data": ["k0", "k1"], "header": ["k0"], "block_boundary": ["k0"],
                    "end_blocks_missing": ["k0", "k1", "k2"]}[cut]


def test_unreadable_shards_are_counted_not_fatal(tmp_path):
    good = tmp_path / "good.tar"
    with wds.TarWriter(str(good), encoder=False) as sink:
        sink.write({"__key__": "a", "json": b"{}"})
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    counts = Counter()
    records = list(read_shards([str(garbage), str(tmp_path / "missing.tar"), str(empty), str(good)], counts))
    assert [r["__key__"] for r in records] == ["a"]
    assert counts == Counter(bad_shard=3)


# ------------------------------------------------------------------------------------------------ sample checks


def test_pixel_limit_is_configurable_and_checked_before_decoding(tmp_path, corpus):
    cfg, dm = _datamodule(corpus["root"], corpus["urls"], batch_size=1, workers=0, shuffle_buffer=1, keyed=False)
    record = {"__key__": "k", "json": _js({"conversations": _chat("Q", "A")}),
              "png": _encode(_photo(100, 80, 1), "PNG")}
    assert dm._builder()(record).labels  # fine under the default limit
    strict = SampleBuilder(dm.processor, max_length=256, max_image_pixels=100 * 79)
    with pytest.raises(Rejected) as info:
        strict(record)
    assert info.value.reason == "too_many_pixels"
    configured = instantiate(cfg.data, sources={"bad": {"train": corpus["urls"]}}, use=["bad"], prepare=None,
                             max_image_pixels=100 * 79)  # as `data.max_image_pixels=...` sets it
    configured.attach(dm.processor)
    with pytest.raises(Rejected):
        configured._builder()(record)
    with pytest.raises(Rejected) as info:
        decode_image(_png_header(9000, 9000))  # only the header exists: refused without decoding
    assert info.value.reason == "too_many_pixels"


def test_over_long_samples_are_skipped_when_truncation_is_off(corpus):
    _, dm = _datamodule(corpus["root"], corpus["urls"], batch_size=1, workers=0, shuffle_buffer=1, keyed=False)
    builder = SampleBuilder(dm.processor, max_length=256, truncate=False)
    with pytest.raises(Rejected) as info:
        builder({"__key__": "k", "json": _js({"conversations": _chat("Short?", "Kept.", 0) + _chat(LONG, "x", 0)})})
    assert info.value.reason == "too_long"


def test_unexpected_errors_are_counted_by_type_not_as_bad_data(corpus):
    from ovis_lit.data.stream import _counting_handler

    counts = Counter()
    handler = _counting_handler(counts)
    assert handler(Rejected("decode_error")) and handler(KeyError("x")) and handler(Rejected("decode_error"))
    assert counts == Counter(decode_error=2, error_KeyError=1)


# ------------------------------------------------------------------------------------------------------ security


def test_pickled_members_are_never_unpickled(tmp_path, corpus):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    # the hazard is real: webdataset's default decoders (decode("pil") included) unpickle .pyd members
    wds.autodecode.Decoder([wds.autodecode.imagehandler("pil")])({"__key__": "k", "pyd": payload})
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.tar"
    with wds.TarWriter(str(path), encoder=False) as sink:
        for k in range(4):
            sink.write({"__key__": f"k{k}", "json": _js({"conversations": _chat("Q", "A", 0)}), "pyd": payload,
                        "pth": _torch_payload(marker), "pkl": payload, "pickle": payload})
    _, dm = _datamodule(corpus["root"], [str(path)], batch_size=2, workers=1, shuffle_buffer=1)
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(3)]
    assert all(b["input_ids"].shape[0] == 2 and not b["skipped"] for b in batches)
    assert not marker.exists() and not Path(str(marker) + ".pth").exists()


def _call_text(source: str, start: int) -> str:
    """The text of a call from its opening parenthesis to the matching closing one."""
    depth = 0
    for i in range(start, len(source)):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        if depth == 0:
            return source[start : i + 1]
    return source[start:]


# The one audited place that unpickles: torch.distributed.checkpoint's `.metadata` index, through an unpickler that
# resolves only allow-listed DCP metadata classes (tests/test_hostile_checkpoints.py attacks it). Everything that
# reads a sharded checkpoint must go through it, so DCP's own loaders are forbidden elsewhere too.
AUDITED_UNPICKLER = "ovis_lit/interop/safe_dcp.py"
UNPICKLER_PATTERNS = (r"\bimport pickle\b", r"\bfrom pickle\b", r"\bUnpickler\b", r"_weights_only_unpickler",
                      r"\bdcp\.load\(", r"\bcheckpoint\.load\(", r"\bFileSystemReader\b",
                      r"\bload_state_dict\([^)]*storage_reader")


def test_no_code_path_unpickles_or_runs_remote_code():
    files = [*REPO.glob("ovis_lit/**/*.py"), *REPO.glob("data/*.py"), *REPO.glob("benchmarks/*.py"),
             *REPO.glob("evals/*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("*.py")]
    assert len(files) > 20
    problems = []
    for path in files:
        source = path.read_text()
        rel = path.relative_to(REPO)
        for pattern in (r"trust_remote_code\s*=\s*True", r"\bpickle\.loads?\(", r"\bdill\.", r"cloudpickle",
                        r"allow_pickle\s*=\s*True", r"\bwds\.decode\(", r"\bwebdataset\.decode\(",
                        r"\.decode\(\s*[\"']pil"):
            problems += [f"{rel}: {m.group(0)}" for m in re.finditer(pattern, source)]
        if rel.as_posix() != AUDITED_UNPICKLER:
            for pattern in UNPICKLER_PATTERNS:
                problems += [f"{rel}: {m.group(0)}" for m in re.finditer(pattern, source)]
        for match in re.finditer(r"\.(fit|validate|test|predict)\(", source):  # Lightning's own checkpoint loads
            call = _call_text(source, match.end() - 1)
            if "ckpt_path" in call and not re.search(r"weights_only\s*=\s*True", call):
                problems.append(f"{rel}: {match.group(0)}{call[:60]}")
        for match in re.finditer(r"\btorch\.load\(", source):
            call = _call_text(source, match.end() - 1)
            if not re.search(r"weights_only\s*=\s*True", call):
                problems.append(f"{rel}: torch.load{call[:60]}")
    assert not problems, problems


def test_the_audited_unpickler_admits_only_the_allow_list():
    """The audited place unpickles only through its allow-listed `find_class` (no bare pickle.load/loads)."""
    source = (REPO / AUDITED_UNPICKLER).read_text()
    assert len(re.findall(r"class \w+\(pickle\.Unpickler\)", source)) == 1
    find_class = r"def find_class\(self, module: str, name: str\) -> Any:\n\s+try:\n\s+return ALLOWED_GLOBALS\["
    assert re.search(find_class, source)
    rest = source.replace("class _MetadataUnpickler(pickle.Unpickler)", "")
    assert not re.search(r"\bpickle\.(loads?|Unpickler\(|_Unpickler)", rest)
