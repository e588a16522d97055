"""Hostile and messy converter input (issue 18): a corpus generated per test with good samples among defects.

Every good sample must reach the shards and read back through training's SampleBuilder; every bad one must be
rejected under its reason (the reason training would skip it for, where training would); no file from outside
the image root may land in a shard; nothing may hang (FIFOs); no `.tmp` shard may be left behind.
"""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ovis_lit.data.convert import captions as captions_converter
from ovis_lit.data.convert import llava as llava_converter
from ovis_lit.data.convert import ovis as ovis_converter
from ovis_lit.data.convert import runner
from ovis_lit.data.convert.checks import Converted, Limits
from ovis_lit.data.convert.runner import Options
from ovis_lit.data.samples import SampleBuilder
from ovis_lit.data.stream import read_shards
from ovis_lit.data.validation import check_caption, check_conversation, check_image_count, check_meta
from ovis_lit.rejection import Rejected
from ovis_lit.training.run import build_processor

from .helpers import compose_train

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs")

SECRET = b"outside-the-image-root"  # written into the outside image's PNG text chunk: found in no shard
MAX_BYTES = 60_000  # the byte limit the tests convert with


# ---------------------------------------------------------------------------------------------------- builders
def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height))


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    return encode(photo(40, 24, 3), "JPEG", exif=exif.tobytes())


def secret_png() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("secret", SECRET.decode())
    return encode(photo(32, 32, 66), "PNG", pnginfo=info)


def chat(question: str, answer: str, n_images: int = 1) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" * n_images + question}, {"from": "gpt", "value": answer}]


@pytest.fixture
def world(tmp_path):
    """An image root with good files, a file outside it, and hostile entries inside it."""
    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "ok").mkdir(parents=True)
    outside.mkdir()
    for i in range(4):
        (root / "ok" / f"{i}.jpg").write_bytes(encode(photo(48 + 8 * i, 40, i), "JPEG"))
    (root / "exif.jpg").write_bytes(exif_rotated_jpeg())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    noise = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    (root / "big.png").write_bytes(encode(Image.fromarray(noise), "PNG"))  # a valid image over MAX_BYTES
    assert (root / "big.png").stat().st_size > MAX_BYTES
    (outside / "secret.png").write_bytes(secret_png())
    (root / "link.png").symlink_to(outside / "secret.png")  # a symlink out of the root
    (root / "linkdir").symlink_to(outside, target_is_directory=True)  # a symlinked folder out of the root
    (root / "alias.jpg").symlink_to(root / "ok" / "0.jpg")  # a symlink inside the root: fine
    (root / "selfloop.jpg").symlink_to("selfloop.jpg")  # a symlink to itself
    (root / "loopdir").symlink_to(".", target_is_directory=True)  # a folder loop (walking must not hang)
    os.mkfifo(root / "fifo.jpg")  # reading it would block forever
    (root / "dir.jpg").mkdir()
    return {"root": root, "outside": outside, "tmp": tmp_path}


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    """Training's SampleBuilder in both caption forms (stage 1 template, stages 2-3 chat)."""
    out = tmp_path_factory.mktemp("cfg")
    cfg = compose_train(["stage=s3"], out, out)
    processor = build_processor(cfg)
    return [SampleBuilder(processor, 100_000, captions_as=form) for form in ("template", "chat")]


def options(tmp, prefix, **kw) -> Options:
    return Options(output=tmp / "shards", prefix=prefix, workers=1, progress=False, **kw)


LIMITS = Limits(max_chars=2000, max_images=4, max_image_bytes=MAX_BYTES)


def check_report(report, good_ids, bad: dict[str, list[str]], builders, tmp):
    """Every good sample written and readable by training; every bad one rejected with its reason."""
    assert report["rejected"] == {reason: len(ids) for reason, ids in bad.items() if ids}
    rows = [json.loads(line) for line in open(report["rejected_list"])]
    assert Counter((r["reason"], r["id"]) for r in rows) == Counter((reason, i) for reason, ids in bad.items()
                                                                     for i in ids)
    shards = report["shards"]["train"] + report["shards"]["val"]
    records = list(read_shards(shards, Counter())) if shards else []
    assert sorted(json.loads(r["json"])["id"] for r in records) == sorted(good_ids)
    for record in records:
        for builder in builders:
            sample = builder(dict(record))  # raises Rejected if training would drop it
            assert sample.input_ids
        assert not any(SECRET in value for value in record.values() if isinstance(value, bytes))
    for shard in shards:
        assert SECRET not in Path(shard).read_bytes()
    assert not list(Path(tmp).rglob("*.tmp"))
    return rows


# ------------------------------------------------------------------------------------------------------- LLaVA
@pytest.mark.timeout(60)
def test_llava_hostile_paths_and_conversations(world, builders):
    root, tmp = world["root"], world["tmp"]
    good = [
        {"id": "g0", "image": "ok/0.jpg", "conversations": chat("Q?", "A.")},
        {"id": "g-alias", "image": "alias.jpg", "conversations": chat("Q?", "A.")},  # symlink inside the root
        {"id": "g-exif", "image": "exif.jpg", "conversations": chat("Q?", "A.")},  # kept as stored, counted
        {"id": "g-system", "image": ["ok/1.jpg", "ok/2.jpg"],
         "conversations": [{"from": "system", "value": "Be brief."}, *chat("Two?", "Yes.", 2)]},
        {"id": "g-text", "conversations": chat("Hi?", "Hi.", 0)},
        {"id": "g-dots", "image": "ok/./3.jpg", "conversations": chat("Q?", "A.")},
    ]
    bad = {
        "bad_image_path": [
            {"id": "b-dotdot", "image": "../outside/secret.png", "conversations": chat("Q", "A")},
            {"id": "b-symlink", "image": "link.png", "conversations": chat("Q", "A")},
            {"id": "b-symdir", "image": "linkdir/secret.png", "conversations": chat("Q", "A")},
            {"id": "b-abs", "image": str(world["outside"] / "secret.png"), "conversations": chat("Q", "A")},
            {"id": "b-nul", "image": "ok/0.jpg\0.png", "conversations": chat("Q", "A")},
        ],
        "not_a_file": [
            {"id": "b-fifo", "image": "fifo.jpg", "conversations": chat("Q", "A")},
            {"id": "b-dir", "image": "dir.jpg", "conversations": chat("Q", "A")},
        ],
        "image_too_large": [{"id": "b-big", "image": "big.png", "conversations": chat("Q", "A")}],
        "missing_image": [{"id": "b-loop", "image": "selfloop.jpg", "conversations": chat("Q", "A")},
                          {"id": "b-gone", "image": "ok/9.jpg", "conversations": chat("Q", "A")}],
        "decode_error": [{"id": "b-broken", "image": "broken.jpg", "conversations": chat("Q", "A")}],
        "invalid_sample": [
            {"id": "b-midsystem", "conversations": [*chat("Q", "A", 0), {"from": "system", "value": "late"},
                                                    *chat("Q2", "A2", 0)]},
            {"id": "b-marks", "image": "ok/0.jpg", "conversations": chat("Q", "A", 2)},
        ],
        "bad_json": [
            {"id": "b-role", "conversations": [{"from": "wizard", "value": "?"}, {"from": "gpt", "value": "!"}]},
            {"id": "b-rolelist", "conversations": [{"from": ["human"], "value": "?"}, {"from": "gpt", "value": "!"}]},
            {"id": "b-surrogate", "conversations": chat("Q \ud800", "A", 0)},
            {"id": "b-value", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "!"}]},
        ],
        "no_assistant_turn": [{"id": "b-noanswer", "conversations": [{"from": "human", "value": "Q"}]}],
    }
    entries = good + [e for group in bad.values() for e in group]
    # ensure_ascii (the default) writes the lone surrogate as the escape "\ud800", which is valid JSON
    (tmp / "data.json").write_text(json.dumps(entries))
    report = llava_converter.convert([tmp / "data.json"], root, options(tmp, "llava"), LIMITS)
    rows = check_report(report, [e["id"] for e in good], {r: [e["id"] for e in g] for r, g in bad.items()},
                        builders, tmp)
    assert report["exif_rotated"] == 1
    detail = next(r["detail"] for r in rows if r["id"] == "b-role")
    assert "wizard" in detail  # the reason's detail survives into the report
    assert "position 2" in next(r["detail"] for r in rows if r["id"] == "b-midsystem")


@pytest.mark.timeout(60)
def test_training_skips_what_conversion_rejects_under_the_same_reason(builders):
    """The validation-level defects, as records in a shard: training drops each under the converter's reason."""
    ok = encode(photo(32, 32, 1), "PNG")
    cases = {
        "invalid_sample": [({"conversations": [*chat("Q", "A", 0), {"from": "system", "value": "x"}]}, False),
                           ({"caption": "a <image> in the caption"}, True),
                           ({"caption": "fine", "caption_template": "no mark"}, True)],
        "empty_caption": [({"caption": float("nan")}, True), ({"caption": None}, True)],
        "bad_json": [({"caption": 42}, True),
                     ({"conversations": [{"from": "wizard", "value": "?"}, {"from": "gpt", "value": "!"}]}, False)],
    }
    for reason, group in cases.items():
        for meta, with_image in group:
            record = {"__key__": "k", "json": json.dumps(meta).encode(), **({"png": ok} if with_image else {})}
            for builder in builders:
                with pytest.raises(Rejected) as exn:
                    builder(record)
                assert exn.value.reason == reason, (meta, exn.value)


@pytest.mark.timeout(60)
def test_llava_json_with_bom_and_latin1_bytes(world, builders):
    root, tmp = world["root"], world["tmp"]
    good = [json.dumps({"id": f"g{i}", "image": f"ok/{i}.jpg", "conversations": chat("Q?", f"A {i}.")})
            for i in range(3)]
    latin1 = '{"id": "latin", "conversations": [{"from": "human", "value": "caf\xe9"}, {"from": "gpt", "value": "x"}]}'
    body = "[\n" + ",\n".join(good[:2]) + ",\n" + "  " + "@@" + ",\n" + good[2] + "\n]\n"
    data = "\ufeff".encode() + body.encode().replace(b"@@", latin1.encode("latin-1"))
    (tmp / "bom.json").write_bytes(data)
    report = llava_converter.convert([tmp / "bom.json"], root, options(tmp, "bom"), LIMITS)
    rows = check_report(report, ["g0", "g1", "g2"], {"bad_encoding": ["2"]}, builders, tmp)
    assert rows[0]["detail"].startswith("bom.json:4:")  # the file and line of the undecodable entry

    # JSON Lines: a BOM, a Latin-1 line, a line with U+2028 inside a string (one record, not two), CRLF endings
    lines = [g.encode() for g in good]
    sep = json.dumps({"id": "sep", "conversations": chat("line\u2028separator", "ok", 0)}, ensure_ascii=False)
    jsonl = b"\xef\xbb\xbf" + b"\r\n".join([lines[0], latin1.encode("latin-1"), sep.encode(), lines[1]]) + b"\r\n"
    (tmp / "bom.jsonl").write_bytes(jsonl)
    report = llava_converter.convert([tmp / "bom.jsonl"], root, options(tmp, "bomjl"), LIMITS)
    rows = check_report(report, ["g0", "sep", "g1"], {"bad_encoding": ["1"]}, builders, tmp)
    assert rows[0]["detail"].startswith("bom.jsonl:2:")


@pytest.mark.timeout(60)
def test_cli_reports_a_broken_json_file_without_a_traceback(tmp_path, capsys):
    (tmp_path / "broken.json").write_text('[{"id": 1,\n "conversations": [}]')
    with pytest.raises(SystemExit) as exn:
        llava_converter.main(["--json", str(tmp_path / "broken.json"), "--output", str(tmp_path / "out"),
                              "--workers", "1", "--no-progress"])
    assert exn.value.code == 2
    assert "broken.json:2:" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_chat_format_without_system_turns(world, builders):
    root, tmp = world["root"], world["tmp"]
    entries = [{"id": "sys", "conversations": [{"from": "system", "value": "S"}, *chat("Q", "A", 0)]},
               {"id": "plain", "conversations": chat("Q", "A", 0)}]
    (tmp / "d.json").write_text(json.dumps(entries))
    limits = Limits(allows_system=False)
    report = llava_converter.convert([tmp / "d.json"], root, options(tmp, "gemma"), limits)
    check_report(report, ["plain"], {"invalid_sample": ["sys"]}, builders, tmp)


# ----------------------------------------------------------------------------------------------------- captions
@pytest.mark.timeout(60)
def test_caption_csv_saved_by_a_spreadsheet(world, builders):
    root, tmp = world["root"], world["tmp"]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["file_name", "caption"])
    w.writerow(["ok/0.jpg", "A field, with a comma."])
    w.writerow(["ok/1.jpg", "Two lines\nin one cell."])
    w.writerow(["exif.jpg", "Sideways."])
    w.writerow(["ok/2.jpg", "@@"])  # Latin-1 bytes: line 6 (the cell two rows up spans two lines)
    w.writerow(["ok/3.jpg", "a <image> in the caption"])
    w.writerow(["ok/0.jpg", ""])
    w.writerow(["link.png", "outside"])
    w.writerow(["fifo.jpg", "a FIFO"])
    w.writerow(["big.png", "too large"])
    data = b"\xef\xbb\xbf" + text.getvalue().encode().replace(b"@@", "caf\xe9".encode("latin-1"))
    (tmp / "caps.csv").write_bytes(data)
    report = captions_converter.convert(root, tmp / "caps.csv", options(tmp, "csv"), LIMITS)
    bad = {"bad_encoding": ["3"], "invalid_sample": ["4"], "empty_caption": ["5"], "bad_image_path": ["6"],
           "not_a_file": ["7"], "image_too_large": ["8"]}
    rows = check_report(report, ["0", "1", "2"], bad, builders, tmp)
    assert next(r["detail"] for r in rows if r["reason"] == "bad_encoding").startswith("caps.csv:6:")
    assert report["exif_rotated"] == 1
    assert report["unlisted_images"] >= 1  # the folder walk ends despite the symlink loop


@pytest.mark.timeout(60)
def test_caption_jsonl_nan_and_non_string_captions(world, builders):
    root, tmp = world["root"], world["tmp"]
    lines = [
        '{"id": "g0", "image": "ok/0.jpg", "caption": "Fine."}',
        '{"id": "g1", "image": "ok/1.jpg", "caption": "nan"}',  # the word is a caption; the float is not
        '{"id": "nan", "image": "ok/0.jpg", "caption": NaN}',
        '{"id": "null", "image": "ok/0.jpg", "caption": null}',
        '{"id": "num", "image": "ok/0.jpg", "caption": 42}',
        '{"id": "list", "image": "ok/0.jpg", "caption": ["a"]}',
        '{"id": "tpl", "image": "ok/0.jpg", "caption": "x", "caption_template": "no mark"}',
        '{"id": "tplnum", "image": "ok/0.jpg", "caption": "x", "caption_template": 3}',
        '{"id": "img", "image": 7, "caption": "x"}',
        '{"id": "noimg", "caption": "x"}',
        '{"id": "trunc", "image": "ok/0.jpg", "capt',
    ]
    (tmp / "caps.jsonl").write_text("\n".join(lines))
    report = captions_converter.convert(root, tmp / "caps.jsonl", options(tmp, "jl"), LIMITS)
    bad = {"empty_caption": ["nan", "null"], "bad_json": ["num", "list", "tplnum", "img", "10"],
           "invalid_sample": ["tpl"], "missing_image": ["noimg"]}
    check_report(report, ["g0", "g1"], bad, builders, tmp)
    captions = {json.loads(r["json"])["id"]: json.loads(r["json"])["caption"]
                for r in read_shards(report["shards"]["train"], Counter())}
    assert captions == {"g0": "Fine.", "g1": "nan"}


# -------------------------------------------------------------------------------------------- Ovis dataset_info
@pytest.mark.timeout(60)
def test_ovis_dataset_info_with_parquet(world, builders):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, tmp = world["root"], world["tmp"]
    big = (root / "big.png").read_bytes()
    rows = [
        {"id": "g0", "image_path": "ok/0.jpg", "image": None, "caption": "Fine.", "caption_template": None},
        {"id": "g1", "image_path": None, "image": {"bytes": encode(photo(30, 30, 5), "PNG")}, "caption": "Bytes.",
         "caption_template": "<image>\nOwn:\n"},
        {"id": "none", "image_path": "ok/1.jpg", "image": None, "caption": None, "caption_template": None},
        {"id": "sym", "image_path": "linkdir/secret.png", "image": None, "caption": "x", "caption_template": None},
        {"id": "big", "image_path": None, "image": {"bytes": big}, "caption": "x", "caption_template": None},
        {"id": "mark", "image_path": "ok/2.jpg", "image": None, "caption": "<image> x", "caption_template": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp / "caps.parquet")
    # a caption column that pandas stored as floats (every cell empty but one number): NaN and 1.5 are no captions
    pq.write_table(pa.table({"image_path": ["ok/0.jpg", "ok/1.jpg", "ok/2.jpg"],
                             "caption": pa.array([float("nan"), 1.5, None], pa.float64())}), tmp / "floats.parquet")
    (tmp / "chat.json").write_text(json.dumps([
        {"id": "c0", "image": "ok/3.jpg", "conversations": chat("Q?", "A.")},
        {"id": "c-mid", "conversations": [*chat("Q", "A", 0), {"from": "system", "value": "late"}]},
        {"id": "c-dotdot", "image": "../outside/secret.png", "conversations": chat("Q", "A")},
    ]))
    info = {"caps": {"meta_file": "caps.parquet", "image_dir": "images", "data_format": "caption",
                     "caption_template": "<image>\nDescription:\n"},
            "floats": {"meta_file": "floats.parquet", "image_dir": "images", "data_format": "caption"},
            "chat": {"meta_file": "chat.json", "image_dir": "images", "data_format": "conversation"}}
    (tmp / "dataset_info.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(info).encode())  # a BOM
    summary = ovis_converter.convert(tmp / "dataset_info.json", tmp / "out", options(tmp, "unused"), LIMITS)
    reports = summary["reports"]
    check_report(reports["floats"], [], {"empty_caption": ["0", "2"], "bad_json": ["1"]}, builders, tmp)
    check_report(reports["caps"], ["g0", "g1"], {"empty_caption": ["none"], "bad_image_path": ["sym"],
                                                 "image_too_large": ["big"], "invalid_sample": ["mark"]},
                 builders, tmp)
    check_report(reports["chat"], ["c0"], {"invalid_sample": ["c-mid"], "bad_image_path": ["c-dotdot"]},
                 builders, tmp)


# ------------------------------------------------------------------------------------------ temporary shards
def _text_sample(index, entry):
    return Converted(index, {"id": str(index), "conversations": chat("Q", "A", 0)})


def _entries_failing_at(n: int, error: BaseException):
    """Input that breaks off (a read error, Ctrl-C) after n entries, while a shard is being written."""
    yield from range(n)
    raise error


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("disk gone")])
def test_an_interrupted_conversion_leaves_no_tmp_shard(tmp_path, error):
    with pytest.raises(type(error)):
        runner.run(_text_sample, _entries_failing_at(25, error), options(tmp_path, "x", maxcount=10))
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert [n for n in names if n.endswith(".tar")] == ["x-train-000000.tar", "x-train-000001.tar"]  # complete


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_leaves_no_tmp_shard(tmp_path, workers):
    """SIGTERM while a shard is open (sent from the input reader, in the main process): the conversion unwinds,
    the open shard is deleted, complete ones stay, and the worker processes end (no hang)."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ovis_lit.data.convert.checks import Converted
        from ovis_lit.data.convert.runner import Options, run

        def fn(index, entry):
            return Converted(index, {{"id": str(index), "caption": "x"}})

        def entries():
            for i in range(100):
                if i == 25:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield i

        run(fn, entries(), Options(output=Path({str(tmp_path)!r}), prefix="x", workers={workers}, progress=False,
                                   maxcount=10, chunk=5))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode != 0 and "KeyboardInterrupt: SIGTERM" in proc.stderr, proc.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert "x-train-000000.tar" in names and "x-report.json" not in names


# --------------------------------------------------------------------------------------------------- fuzzing
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["human", "gpt", "system", "user", "assistant", "<image>", "\ud800", ""]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["from", "role", "value", "conversations", "caption", "caption_template",
                                       "images", "id"]) | st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)
turn = st.fixed_dictionaries({"from": json_like | st.sampled_from(["human", "gpt", "system"]),
                              "value": json_like | st.text(max_size=20)})


@settings(max_examples=300, deadline=None, database=None)  # database=None: no .hypothesis folder left behind
@given(meta=json_like | st.fixed_dictionaries({"conversations": st.lists(turn, max_size=4)})
       | st.fixed_dictionaries({"caption": json_like, "caption_template": json_like}),
       n_images=st.integers(0, 3), allows_system=st.booleans())
def test_validator_raises_only_skipsample(meta, n_images, allows_system):
    for check in (lambda: check_meta(meta, "k", allows_system),
                  lambda: check_conversation(meta, "k", allows_system),
                  lambda: check_caption(meta, meta, "k")):
        try:
            check()
        except Rejected as exn:  # what a converter reports too: one exception, reason and detail
            assert exn.reason in {"bad_json", "empty_conversation", "no_assistant_turn", "empty_caption",
                                  "invalid_sample"}
            assert f"{exn.reason}: {exn.detail}" == str(exn)
    try:
        check_meta(meta, "k", allows_system)
    except Rejected:
        return
    try:
        check_image_count(meta, n_images, "k")  # defined on every sample check_meta accepts
    except Rejected as exn:
        assert exn.reason == "invalid_sample"
