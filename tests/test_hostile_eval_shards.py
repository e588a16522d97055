"""Hostile and messy benchmark TSVs and training shards, generated here: every good row is scored and every good
sample read; every bad one is skipped and counted with its reason (or, for a file wrong as a whole, refused with a
clear error naming the problem); nothing crashes, hangs, or runs code from a file."""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import math
import os
import pickle
import random
import struct
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

from ovis_lit.data.stream import BatchStream, Source, read_shards
from ovis_lit.evaluation import entry, suite
from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.tsv import image_bytes, read_rows
from ovis_lit.processing.image_decoding import decode_image
from ovis_lit.rejection import Rejected

from .test_eval_fixtures import png_b64, write_tsv

pytestmark = pytest.mark.timeout(60)

MC = ["index", "question", "A", "B", "answer", "category", "image"]
YESNO = ["index", "question", "answer", "category", "image"]


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG of a few bytes that declares width x height pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def noise_b64(side: int = 32) -> str:
    """A PNG that does not compress to a few bytes (its base64 cut in half is still no index reference)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(side).randbytes(side * side * 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def png_bytes(colour: str = "red") -> bytes:
    return base64.b64decode(png_b64(colour))


def mc_row(index, answer="A", image=None, **extra):
    return {"index": index, "question": f"Question {index}?", "A": "yes", "B": "no", "answer": answer,
            "category": "c", "image": png_b64() if image is None else image, **extra}


@pytest.fixture
def answer_a(monkeypatch):
    """Generation replaced by an answer of "A" (or "yes") for every query; records how many images each had."""
    seen = []

    def fake_generate(model, processor, queries, batch_size, max_new_tokens, progress):
        seen.extend(len(images) for _, images in queries)
        return ["A" if "A. " in prompt else "yes" for prompt, _ in queries]

    monkeypatch.setattr(suite, "generate_answers", fake_generate)
    return seen


def run(kind: str, path: Path, **options):
    return suite.run_benchmark(None, None, build_benchmark(kind, path=path, **options), progress=False)


def keys(result) -> list[str]:
    return [p["key"] for p in result.scores.predictions]


# ------------------------------------------------------------------------------------------- evaluation: images


def test_a_decompression_bomb_in_an_mmbench_tsv_is_a_counted_skip_through_evals_run(tmp_path, monkeypatch, answer_a):
    """The reported crash: evals/run.py's path (entry.evaluate), with the model load stubbed out."""
    rows = [mc_row(0), mc_row(1, image=base64.b64encode(bomb_png()).decode()), mc_row(2, answer="B")]
    path = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", rows, MC)
    metrics = evaluate_stubbed(tmp_path, monkeypatch, {"mmbench": {"path": str(path)}})
    assert metrics["mmbench"]["rows"] == 2 and metrics["mmbench"]["accuracy"] == 0.5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["benchmarks"]["mmbench"]["skipped"] == {"image over the pixel limit": 1}
    assert answer_a == [1, 1]


def test_a_file_wrong_as_a_whole_fails_evals_run_before_the_model_loads(tmp_path, monkeypatch, caplog):
    good = write_tsv(tmp_path / "MMBench.tsv", [mc_row(0), mc_row("x")], MC)
    dup = write_tsv(tmp_path / "POPE.tsv", [mc_row(3), mc_row(4), mc_row(3)], MC)

    def load_for_eval(*args):
        raise AssertionError("the model was loaded before the benchmark files were checked")

    monkeypatch.setattr(entry, "load_for_eval", load_for_eval)
    cfg = OmegaConf.create({"checkpoint": "stub", "batch_size": 4, "progress": False, "device": "cpu",
                            "output_dir": str(tmp_path / "out"),
                            "benchmarks": {"mmbench": {"path": str(good)}, "pope": {"path": str(dup)}}})
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=r"POPE.tsv: 1 index value\(s\) appear"):
        entry.evaluate(cfg)
    assert "skipped" not in caplog.text  # the check reads rows quietly; the run logs their skips


def test_bad_images_of_every_kind_are_counted_by_reason(tmp_path, answer_a):
    b64 = noise_b64()
    rows = [
        mc_row(0),
        mc_row(1, image=base64.b64encode(bomb_png()).decode()),  # a bomb
        mc_row(2, image=base64.b64encode(bomb_png(9000, 9000)).decode()),  # over ovis-lit's limit, under PIL's
        mc_row(3, image=b64[: len(b64) // 2 + 1]),  # base64 cut: bad padding
        mc_row(4, image=b64[: (len(b64) // 2) // 4 * 4]),  # base64 cut on a 4-character boundary: a cut PNG
        mc_row(5, image=base64.b64encode(b"GIF89a but not really" * 8).decode()),  # not an image
        mc_row(6, image=base64.b64encode(os.urandom(300)).decode()),
        mc_row(7, image="%" * 100),  # not base64 at all
        mc_row(8, image="['" + b64 + "', '" + "QUJD" * 30 + "']"),  # two images, the second bad
        mc_row(9, answer="B"),
    ]
    result = run("mmbench", write_tsv(tmp_path / "b.tsv", rows, MC))
    assert keys(result) == ["0", "9"]
    assert result.skipped == {"image over the pixel limit": 2, "undecodable image": 6}


def test_image_files_outside_the_tsv_folder_or_not_regular_are_refused(tmp_path, answer_a):
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(png_bytes())
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes("blue"))
    (root / "images" / "link.png").symlink_to(outside)
    os.mkfifo(root / "images" / "fifo.png")  # reading it would block forever
    (root / "images" / "bomb.png").write_bytes(bomb_png())
    rows = [
        {"index": 0, "question": "Q?", "answer": "yes", "image_path": "images/ok.png"},
        {"index": 1, "question": "Q?", "answer": "yes", "image_path": "../secret.png"},
        {"index": 2, "question": "Q?", "answer": "yes", "image_path": str(outside)},  # absolute
        {"index": 3, "question": "Q?", "answer": "yes", "image_path": "images/link.png"},  # a link out
        {"index": 4, "question": "Q?", "answer": "yes", "image_path": "images/fifo.png"},
        {"index": 5, "question": "Q?", "answer": "yes", "image_path": "images"},  # a folder
        {"index": 6, "question": "Q?", "answer": "yes", "image_path": "images/missing.png"},
        {"index": 7, "question": "Q?", "answer": "yes", "image_path": "images/bomb.png"},
        {"index": 8, "question": "Q?", "answer": "no", "image_path": "images/ok.png"},
    ]
    result = run("pope", write_tsv(root / "POPE.tsv", rows, ["index", "question", "answer", "image_path"]))
    assert keys(result) == ["0", "8"]
    assert result.skipped == {"image path outside the benchmark's folder": 3, "unreadable image file": 2,
                              "missing image file": 1, "image over the pixel limit": 1}


def test_benchmark_images_raise_only_rejected_with_a_reason_evaluation_names():
    for source in ["", "=", "A" * 65, base64.b64encode(bomb_png()).decode(), Path("/nonexistent/x.png"),
                   Path("/dev/null"), Path("/")]:
        with pytest.raises(Rejected) as info:
            decode_image(image_bytes(source))
        assert info.value.reason in suite.EVAL_REASONS
    assert decode_image(image_bytes(png_b64())).size == (16, 16)


# ------------------------------------------------------------------------------------ evaluation: the TSV itself


def test_missing_columns_empty_file_and_bad_header_are_clear_errors(tmp_path):
    write_tsv(tmp_path / "cols.tsv", [{"index": 0, "question": "q", "answer": "A"}])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['A', 'B'\]"):
        build_benchmark("mmbench", path=tmp_path / "cols.tsv").load()
    (tmp_path / "empty.tsv").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        build_benchmark("mme", path=tmp_path / "empty.tsv").load()
    (tmp_path / "blank.tsv").write_bytes(b"\n\n")
    with pytest.raises(ValueError, match="is empty"):
        build_benchmark("mme", path=tmp_path / "blank.tsv").load()
    (tmp_path / "latin.tsv").write_bytes("index\tquestion\tanswer\tcat\xe9gorie\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        build_benchmark("mme", path=tmp_path / "latin.tsv").load()
    (tmp_path / "twice.tsv").write_text("index\tquestion\tanswer\tindex\n")
    with pytest.raises(ValueError, match=r"\['index'\] more than once"):
        build_benchmark("mme", path=tmp_path / "twice.tsv").load()
    with pytest.raises(FileNotFoundError):
        build_benchmark("mme", path=tmp_path / "absent.tsv").load()


def test_duplicate_indices_are_refused_naming_them_and_their_lines(tmp_path):
    rows = [mc_row(0), mc_row(1), mc_row(1000000), mc_row(1), mc_row(7), mc_row("7.0"), mc_row("x"), mc_row("x")]
    with pytest.raises(ValueError, match=r"dup.tsv: 3 index value\(s\) appear more than once: '1' on lines "
                                         r"\[3, 5\]; '7' on lines \[6, 7\]; 'x' on lines \[8, 9\]"):
        build_benchmark("mmbench", path=write_tsv(tmp_path / "dup.tsv", rows, MC)).load()
    with pytest.raises(ValueError, match="appear more than once"):  # every benchmark: the index is the key
        build_benchmark("pope", path=write_tsv(tmp_path / "dup2.tsv", [mc_row(3), mc_row(3)], MC)).load()


def test_non_numeric_indices_are_skipped_with_their_line_where_circular_scoring_needs_numbers(tmp_path, answer_a,
                                                                                           caplog):
    rows = [mc_row(0), mc_row("abc"), mc_row("1.5"), mc_row(1000000), mc_row("inf"), mc_row(2, answer="B")]
    path = write_tsv(tmp_path / "MMBench.tsv", rows, MC)
    with caplog.at_level(logging.WARNING):
        result = run("mmbench", path)
    assert keys(result) == ["0", "1000000", "2"]
    assert result.skipped == {"index is not an integer": 3}
    assert result.scores.details["circular"] and result.scores.metrics["questions"] == 2
    assert f"{path} line 3: skipped (index is not an integer)" in caplog.text
    assert "line 4: skipped" in caplog.text and "line 6: skipped" in caplog.text
    # a benchmark whose index is only a key takes any text
    assert keys(run("mmstar", path)) == ["0", "abc", "1.5", "1000000", "inf", "2"]
    yesno = [{"index": "q-a", "question": "Q?", "answer": "yes", "image": png_b64()},
             {"index": "q-b", "question": "Q?", "answer": "no", "image": "q-a"}]
    assert keys(run("pope", write_tsv(tmp_path / "POPE.tsv", yesno, YESNO))) == ["q-a", "q-b"]


def test_a_bom_is_ignored(tmp_path, answer_a):
    rows = [{"index": i, "question": "Is it red?", "answer": "yes", "category": "color", "image": png_b64()}
            for i in range(3)]
    path = write_tsv(tmp_path / "MME.tsv", rows, YESNO)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a spreadsheet saves it
    result = run("mme", path)
    assert keys(result) == ["0", "1", "2"] and result.skipped == {}


def test_ragged_undecodable_and_indexless_rows_are_skipped_with_their_line(tmp_path, answer_a, caplog):
    good = [mc_row(i) for i in range(4)]
    path = write_tsv(tmp_path / "MMBench.tsv", good, MC)
    lines = path.read_bytes().split(b"\n")
    extra = [
        b"10\tQ?\tyes\tno\tA\tc",  # a field short
        b"11\tQ?\tyes\tno\tA\tc\t" + png_b64().encode() + b"\tsurplus",  # a field too many
        b"12\tQu\xe9?\tyes\tno\tA\tc\t" + png_b64().encode(),  # Latin-1 text
        b"\tQ?\tyes\tno\tA\tc\t" + png_b64().encode(),  # no index
        b"nan\tQ?\tyes\tno\tA\tc\t" + png_b64().encode(),  # pandas' empty index
        b"",
        b"",  # blank lines: nothing
    ]
    path.write_bytes(b"\n".join(lines[:3] + extra + lines[3:]))
    with caplog.at_level(logging.WARNING):
        result = run("mmbench", path)
    assert keys(result) == ["0", "1", "2", "3"]
    assert result.skipped == {"ragged row": 2, "not UTF-8 text": 1, "no index": 2}
    assert "line 4: skipped (ragged row): 6 fields, the header has 7" in caplog.text
    assert "line 6: skipped (not UTF-8 text)" in caplog.text


def test_a_quote_left_open_swallows_rows_as_one_ragged_row_and_says_so(tmp_path, answer_a):
    path = write_tsv(tmp_path / "MMBench.tsv", [mc_row(i) for i in range(3)], MC)
    lines = path.read_text().split("\n")
    lines.insert(2, '5\t"Q?\tyes\tno\tA\tc\tx')  # an opening quote never closed: the rest is one field
    path.write_text("\n".join(lines))
    result = run("mmbench", path)
    assert keys(result) == ["0"] and result.skipped == {"ragged row": 1}


def test_header_only_and_all_bad_benchmarks_report_no_score_with_a_warning(tmp_path, answer_a, caplog):
    header_only = write_tsv(tmp_path / "MME.tsv", [], YESNO)
    all_bad = write_tsv(tmp_path / "POPE.tsv", [{"index": 0, "question": "Q?", "answer": "maybe", "image": "x"}],
                        YESNO)
    for kind, path in [("mme", header_only), ("pope", all_bad), ("mmbench", write_tsv(tmp_path / "mc.tsv", [], MC))]:
        with caplog.at_level(logging.WARNING):
            result = run(kind, path)
        headline = build_benchmark(kind, path=path).headline
        assert result.scores.metrics[headline] is None, kind  # not 0.0
        assert result.scores.metrics["questions"] == 0 and result.scores.details["unscored"]
        assert "no item was scored" in caplog.text
    assert not math.isnan(run("mme", write_tsv(tmp_path / "ok.tsv", [
        {"index": 0, "question": "Q?", "answer": "yes", "image": png_b64()}], YESNO)).scores.metrics["accuracy"])


def test_messy_rows_of_other_benchmarks(tmp_path, answer_a):
    """MME pairs through references, a dangling reference, an unparsable list, a caption row without captions."""
    rows = [{"index": 0, "question": "Q?", "answer": "yes", "category": "color", "image": png_b64()},
            {"index": 1, "question": "Q?", "answer": "no", "category": "color", "image": "0"},
            {"index": 2, "question": "Q?", "answer": "no", "category": "color", "image": "99"},
            {"index": 3, "question": "Q?", "answer": "no", "category": "color", "image": "['0', ]]"},
            {"index": 4, "question": "", "answer": "no", "category": "color", "image": "0"}]
    result = run("mme", write_tsv(tmp_path / "MME.tsv", rows, YESNO))
    assert keys(result) == ["0", "1"]
    assert result.skipped == {"image reference '99' points to no row with an image": 1, "empty question": 1,
                              "unparsable list \"['0', ]]\"": 1}
    captions = [{"index": 0, "answer": "['a red square']", "image": png_b64()},
                {"index": 1, "answer": "[]", "image": png_b64()},
                {"index": 2, "answer": "[1, [2]", "image": png_b64()},
                {"index": 3, "answer": "__import__('os')", "image": png_b64()}]  # text, never evaluated
    result = run("coco_caption", write_tsv(tmp_path / "COCO.tsv", captions, ["index", "answer", "image"]))
    assert keys(result) == ["0", "3"]
    assert result.skipped == {"no reference captions": 1, "unparsable list '[1, [2]'": 1}


# Hypothesis: whatever bytes a TSV holds, reading it raises nothing but the documented rejections.
TSV_ALPHABET = st.sampled_from(["\t", "\n", "\r", '"', "'", "[", "]", ",", "\x00", "\ufeff", "index", "question",
                                "answer", "A", "B", "image", "image_path", "0", "1", "1000000", "nan", "yes", "no",
                                "..", "/", "é", " ", png_b64()[:70]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(TSV_ALPHABET, max_size=60).map("".join), raw=st.binary(max_size=80),
       kind=st.sampled_from(["mmbench", "mme", "pope", "coco_caption", "textvqa", "mmmu"]))
def test_fuzz_the_tsv_reader(tmp_path, answer_a, text, raw, kind):
    header = {"mmbench": "index\tquestion\tA\tB\tanswer\timage\n", "coco_caption": "index\tanswer\timage\n"}.get(
        kind, "index\tquestion\tanswer\timage\n")
    for n, data in enumerate([text.encode("utf-8", "surrogatepass"), raw, header.encode() + raw,
                              (header + text).encode("utf-8", "surrogatepass")]):
        path = tmp_path / f"fuzz{n}.tsv"
        path.write_bytes(data)
        try:
            table = read_rows(path, ["index"])
            assert len(table.rows) == len(table.lines)
            result = run(kind, path)
        except ValueError as e:  # a file wrong as a whole, named (a Rejected row never escapes: it is a skip)
            assert str(path) in str(e) and not isinstance(e, (Rejected, UnicodeError)), repr(e)
            continue
        assert all(isinstance(n, int) and n > 0 for n in result.skipped.values())


# ---------------------------------------------------------------------------------------------------- shards


def _tar(path: Path, records: list[dict[str, bytes]], compress: bool = False) -> list[tarfile.TarInfo]:
    """A shard in webdataset's layout (key.suffix members, a record's members together); returns its members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for record in records:
            for suffix, data in record.items():
                if suffix == "__key__":
                    continue
                info = tarfile.TarInfo(f"{record['__key__']}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmembers()


def _records(n: int, big: bool = False) -> list[dict[str, bytes]]:
    data = (lambda k: os.urandom(2000)) if big else (lambda k: png_bytes())
    return [{"__key__": f"k{k}", "json": json.dumps({"caption": f"sample {k}"}).encode(), "png": data(k)}
            for k in range(n)]


def _corrupt(path: Path, offset: int, how: str, compress: bool = False) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()) if compress else path.read_bytes())
    if how == "checksum":  # the name is intact
        raw[offset + 148 : offset + 156] = b"garbage!"
    elif how == "garbage":
        raw[offset : offset + 512] = random.Random(0).randbytes(512)
    elif how == "zeroed":
        raw[offset : offset + 512] = bytes(512)
    path.write_bytes(gzip.compress(bytes(raw), mtime=0) if compress else bytes(raw))


def _read(path: Path, **kw) -> tuple[list[str], Counter]:
    counts = Counter()
    return [r["__key__"] for r in read_shards([str(path)], counts, **kw)], counts


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("how", ["checksum", "garbage", "zeroed"])
def test_a_broken_header_mid_shard_loses_only_what_it_held(tmp_path, how, compress):
    """5 records of 2 members: the 3rd of the 10 headers (k1.json) is broken. The reader steps over it to k1.png's
    header and reads on. With the name readable only k1 is lost; without, k0 may lack a member too: both are
    dropped, each counted."""
    path = tmp_path / ("s.tar.gz" if compress else "s.tar")
    members = _tar(path, _records(5), compress)
    assert len(members) == 10 and members[2].name == "k1.json"
    _corrupt(path, members[2].offset, how, compress)
    got, counts = _read(path)
    if how == "checksum":
        assert got == ["k0", "k2", "k3", "k4"] and counts == Counter(bad_tar_header=1)
    else:
        assert got == ["k2", "k3", "k4"] and counts == Counter(bad_tar_header=2)


@pytest.mark.parametrize("which, expected, lost", [
    (0, ["k1", "k2", "k3", "k4"], 1),  # the first header of the file
    (1, ["k1", "k2", "k3", "k4"], 1),  # k0.png: k0 incomplete
    (4, ["k0", "k1", "k3", "k4"], 1),
    (9, ["k0", "k1", "k2", "k3"], 1),  # the last member: nothing valid after it
])
def test_broken_headers_anywhere_with_members_of_several_blocks(tmp_path, which, expected, lost):
    path = tmp_path / "s.tar"
    members = _tar(path, _records(5, big=True))
    _corrupt(path, members[which].offset, "checksum")
    got, counts = _read(path)
    assert got == expected and counts == Counter(bad_tar_header=lost)


def test_a_garbled_last_header_counts_the_unreadable_rest(tmp_path):
    path = tmp_path / "s.tar"
    members = _tar(path, _records(4))
    _corrupt(path, members[6].offset, "garbage")  # k3.json
    got, counts = _read(path)
    assert got == ["k0", "k1"] and counts == Counter(bad_tar_header=2)  # k2 (maybe incomplete) and the rest


def test_two_broken_headers_in_one_shard(tmp_path):
    path = tmp_path / "s.tar"
    members = _tar(path, _records(10))
    _corrupt(path, members[2].offset, "checksum")
    _corrupt(path, members[13].offset, "checksum")  # k6.png
    got, counts = _read(path)
    assert got == ["k0", "k2", "k3", "k4", "k5", "k7", "k8", "k9"] and counts == Counter(bad_tar_header=2)


def test_shard_level_defects_are_counted_and_intact_shards_read_as_before(tmp_path):
    intact = tmp_path / "intact.tar"
    _tar(intact, _records(3))
    trailing = tmp_path / "trailing.tar"  # bytes after the end-of-archive marker: ignored, as tar ignores them
    trailing.write_bytes(intact.read_bytes() + b"junk after the end" * 40)
    cut = tmp_path / "cut.tar"
    members = _tar(cut, _records(3))
    cut.write_bytes(cut.read_bytes()[: members[3].offset_data + 50])  # inside k1.png
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    zeros = tmp_path / "zeros.tar"
    zeros.write_bytes(bytes(10240))  # an empty archive
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(random.Random(1).randbytes(5000))
    dup = tmp_path / "dup.tar"
    _tar(dup, [{"__key__": "d0", "json": b"{}"}, {"__key__": "d0", "json": b"[]"}, {"__key__": "d1", "json": b"{}"}])
    big = tmp_path / "big.tar"
    _tar(big, [{"__key__": "b0", "json": b"{}", "png": bytes(5000)}, {"__key__": "b1", "json": b"{}"}])
    cases = {intact: (["k0", "k1", "k2"], {}), trailing: (["k0", "k1", "k2"], {}),
             cut: (["k0"], {"truncated_shard": 1}), empty: ([], {"bad_shard": 1}), zeros: ([], {}),
             garbage: ([], {"bad_shard": 1}), dup: (["d0", "d1"], {"duplicate_member": 1}),
             big: (["b1"], {"member_too_large": 1})}
    for path, (expected, skipped) in cases.items():
        got, counts = _read(path, max_member=4096)
        assert (got, counts) == (expected, Counter(skipped)), path.name
    records = list(read_shards([str(dup)], Counter()))
    assert records[0]["json"] == b"{}"  # the first of a repeated member is kept


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _to_sample(record: dict):
    """A stand-in for SampleBuilder's checks of the member bytes: JSON must be UTF-8 and an object with a caption."""
    from ovis_lit.rejection import Rejected

    if "json" not in record:
        raise Rejected("missing_json")
    try:
        meta = json.loads(record["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Rejected("bad_json", str(e)) from e
    if not isinstance(meta, dict) or not meta.get("caption"):
        raise Rejected("bad_json")
    return SimpleNamespace(meta={"key": record["__key__"]}, caption=meta["caption"])


def _collate(samples):
    return {"captions": [s.caption for s in samples]}


def test_the_stream_survives_a_corpus_of_broken_shards(tmp_path):
    """Every good sample arrives once per epoch; every defect is counted by reason in the batches; no pickle runs."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    shards = []
    for s in range(4):
        records = _records(6)
        records[1]["json"] = "{\"caption\": \"caf\xe9\"}".encode("latin-1")  # not UTF-8: bad_json
        records[2]["pyd"] = payload  # beside a good sample: ignored, never unpickled
        records[3] = {"__key__": "k3", "pickle": payload}  # a pickle and nothing else
        path = tmp_path / f"s{s}.tar"
        members = _tar(path, records)
        if s == 1:
            _corrupt(path, members[[m.name for m in members].index("k4.json")].offset, "checksum")
        if s == 2:
            path.write_bytes(path.read_bytes()[: members[-1].offset_data + 10])  # cut inside k5.png
        shards.append(str(path))
    (tmp_path / "empty.tar").write_bytes(b"")
    shards.append(str(tmp_path / "empty.tar"))
    stream = BatchStream([Source("hostile", tuple(shards))], _to_sample, _collate, batch_size=2, train=False)
    captions, skipped = [], Counter()
    for batch in stream:
        captions += batch["captions"]
        skipped.update(batch["skipped"])
    # per shard: k0, k2 (its pickle ignored), k4, k5 are good; shard 1 lost k4, shard 2 its cut k5
    assert Counter(captions) == Counter({"sample 0": 4, "sample 2": 4, "sample 4": 3, "sample 5": 3})
    assert skipped == Counter(bad_json=4, missing_json=4, bad_tar_header=1, truncated_shard=1, bad_shard=1)
    assert not marker.exists()


def test_a_single_pass_reports_the_skips_after_its_last_sample(tmp_path):
    """Validation: bad records after the last good one are carried by the last batch, not lost."""
    path = tmp_path / "v.tar"
    records = _records(6)
    for r in records[4:]:
        r["json"] = b"\xff not json"
    _tar(path, records)
    batches = list(BatchStream([Source("v", (str(path),))], _to_sample, _collate, batch_size=2, train=False))
    assert [b["captions"] for b in batches] == [["sample 0", "sample 1"], ["sample 2", "sample 3"]]
    assert sum((Counter(b["skipped"]) for b in batches), Counter()) == Counter(bad_json=2)


def _collate_with_ids(samples):
    import torch

    return {"captions": [s.caption for s in samples], "input_ids": torch.zeros(len(samples), 1)}


def test_the_stage_summary_counts_exactly_the_skips_of_the_batches_consumed(tmp_path):
    """Two workers prefetching 4 batches each, a 10-step stage: the summary's counts are those of the consumed
    batches' records (what a resumed run would not count again), never those of batches prefetched and dropped;
    validation skips are counted too, once per pass (the sanity check's batches are read again by the pass), the
    ones after the pass's last sample included."""
    import lightning as L
    import torch

    from ovis_lit.data.datamodule import OvisDataModule
    from ovis_lit.model.source import ModelSource
    from ovis_lit.training.module import OvisLitModule
    from ovis_lit.training.skips import skip_summary

    class Tiny(OvisLitModule):  # the real module's validation step; a one-weight model
        def __init__(self):
            super().__init__(model=ModelSource(), stage={})
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.consumed = []

        def configure_model(self):
            pass

        def forward(self, batch):
            return SimpleNamespace(loss=(self.w ** 2).sum())

        def training_step(self, batch, batch_idx):  # the DataModule's own hook has recorded the batch
            self.consumed.append((batch["stream"]["worker"], batch["keys"][0]))
            return self(batch).loss

        def on_before_optimizer_step(self, optimizer):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class DataModule(OvisDataModule):
        def _builder(self):
            return _to_sample

    bad = (1, 4, 7, 10)
    train = []
    for s in range(2):
        records = _records(12)
        for k in bad:
            records[k]["json"] = b"\xff not json"
        train.append(str(tmp_path / f"t{s}.tar"))
        _tar(Path(train[-1]), records)
    records = _records(4)
    records[3]["json"] = b"[]"  # after the last good sample of the validation pass
    _tar(tmp_path / "val.tar", records)
    dm = DataModule({"t": {"train": train, "val": [str(tmp_path / "val.tar")]}}, ["t"], batch_size=1,
                    num_workers=2, shuffle_buffer=1)
    dm.processor = SimpleNamespace(collate=_collate_with_ids)
    module = Tiny()
    trainer = L.Trainer(accelerator="cpu", max_steps=10, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=5,
                        num_sanity_val_steps=2)  # two validation passes: the summary holds the latest one's
    trainer.fit(module, datamodule=dm)
    # each worker reads one shard in order, one record per batch: a consumed batch carries the bad records before it
    last = {}
    for worker, key in module.consumed:
        last[worker] = int(key.split("/k")[1])
    expected = sum(1 for n in last.values() for k in bad if k < n)
    assert len(module.consumed) == 10 and 0 < expected < 2 * len(bad)  # the workers had read more than that
    assert skip_summary(dm) == {"train": {"bad_json": expected}, "val": {"bad_json": 1}}


def test_training_reads_every_good_sample_of_a_hostile_shard_and_counts_the_rest(tmp_path):
    """The real sample builder and training stream (one epoch): a broken header mid-shard, JSON that is not UTF-8,
    a record that is only a pickle, a pickle beside a good sample; nothing is unpickled."""
    from .test_bad_data import _chat, _datamodule, _encode, _js, _photo

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    image = _encode(_photo(64, 48, 1), "PNG")
    records = [{"__key__": f"g{k}", "json": _js({"conversations": _chat(f"Q{k}?", f"A{k}.")}), "png": image}
               for k in range(8)]
    records[2]["json"] = '{"conversations": [{"from": "human", "value": "<image>\\ncaf\xe9?"}]}'.encode("latin-1")
    records[4] = {"__key__": "g4", "pickle": payload, "pyd": payload}
    records[6]["pyd"] = payload
    path = tmp_path / "hostile.tar"
    members = _tar(path, records)
    _corrupt(path, members[[m.name for m in members].index("g5.json")].offset, "checksum")
    _, dm = _datamodule(tmp_path, [str(path)], batch_size=1, workers=0, shuffle_buffer=1)
    arrived, skipped = [], Counter()
    for n, batch in enumerate(dm.train_dataloader()):
        assert n < 50
        if batch["epochs"][0] == 1:
            break
        arrived += batch["keys"]
        skipped.update(batch["skipped"])
    assert arrived == [f"bad/g{k}" for k in (0, 1, 3, 6, 7)]
    assert skipped == Counter(bad_json=1, missing_json=1, bad_tar_header=1)
    assert not marker.exists()


def test_an_image_the_processor_refuses_is_a_counted_skip_not_a_crash(tmp_path, monkeypatch):
    """An image that decodes but that the processor refuses (Ovis2.5's resize cannot represent an aspect ratio over
    200) costs that row only: the rest of its batch is still answered and scored."""

    def processor_like_generate(model, processor, queries, batch_size, max_new_tokens, progress):
        for _, images in queries:  # the processor builds every sample of the batch before generating
            if any(max(im.size) > 200 * min(im.size) for im in images):
                raise Rejected("aspect_ratio", "aspect ratio over 200")
        return ["A"] * len(queries)

    monkeypatch.setattr(suite, "generate_answers", processor_like_generate)
    buffer = io.BytesIO()
    Image.new("RGB", (402, 2)).save(buffer, format="PNG")
    thin = base64.b64encode(buffer.getvalue()).decode()
    rows = [mc_row(0), mc_row(1, image=thin), mc_row(2, answer="B"), mc_row(3)]
    result = suite.run_benchmark(None, None, build_benchmark("mmbench", path=write_tsv(tmp_path / "b.tsv", rows, MC)),
                                 batch_size=8, progress=False)
    assert keys(result) == ["0", "2", "3"]
    assert result.skipped == {"aspect_ratio": 1}
    assert [p["answer"] for p in result.scores.predictions] == ["A", "A", "A"]


def evaluate_stubbed(tmp_path, monkeypatch, benchmarks: dict):
    """evals/run.py's path (entry.evaluate) on `benchmarks`, with the model load stubbed out (generation is the
    test's fixture), results in tmp_path / "out"."""
    monkeypatch.setattr(entry, "load_for_eval", lambda *a, **k: (None, SimpleNamespace(chat_format="test"),
                                                            {"checkpoint": "stub", "format": "stub"}))
    cfg = OmegaConf.create({"checkpoint": "stub", "batch_size": 4, "progress": False, "device": "cpu",
                            "output_dir": str(tmp_path / "out"), "benchmarks": benchmarks})
    return entry.evaluate(cfg)


def test_an_empty_benchmark_fails_evals_run_before_the_model_loads(tmp_path, monkeypatch, answer_a):
    good = write_tsv(tmp_path / "MMBench.tsv", [mc_row(0)], MC)
    for name, rows in [("header_only", []), ("all_bad", [{"index": 0, "question": "Q?", "answer": "maybe",
                                                          "image": "x"}])]:
        empty = write_tsv(tmp_path / f"{name}.tsv", rows, YESNO)
        with pytest.raises(ValueError, match=rf"{name}.tsv: no usable row to score"):
            evaluate_stubbed(tmp_path, monkeypatch, {"mmbench": {"path": str(good)}, "pope": {"path": str(empty)}})
        assert answer_a == []  # nothing was generated: the check came first


def test_a_benchmark_whose_every_image_is_refused_fails_evals_run_after_writing_the_others(tmp_path, monkeypatch,
                                                                                        answer_a):
    good = write_tsv(tmp_path / "MMBench.tsv", [mc_row(0)], MC)
    bombs = write_tsv(tmp_path / "bombs.tsv", [mc_row(1, image=base64.b64encode(bomb_png()).decode())], MC)
    with pytest.raises(ValueError, match=r"no item was scored in \['bombs'\]"):
        evaluate_stubbed(tmp_path, monkeypatch, {"mmbench": {"path": str(good)}, "bombs": {"kind": "mmbench",
                                                                                    "path": str(bombs)}})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["benchmarks"]["mmbench"]["metrics"]["accuracy"] == 1.0
    assert summary["benchmarks"]["bombs"]["skipped"] == {"image over the pixel limit": 1}
