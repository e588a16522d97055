"""One skip exception (`ovis_lit.rejection.Rejected`) and one guarded image decoder
(`processing.image_decoding`): training, the converters and evaluation accept and refuse an image alike."""

import base64
import io
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ovis_lit.data.convert.checks import Limits, image_member
from ovis_lit.data.samples import SampleBuilder, record_images
from ovis_lit.evaluation.suite import EVAL_REASONS
from ovis_lit.evaluation.tsv import image_bytes
from ovis_lit.processing.image_decoding import decode, decode_image, read_image_bytes
from ovis_lit.rejection import Rejected

from .test_hostile_eval_shards import bomb_png


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _samples() -> dict[str, tuple[bytes, str | None]]:
    """name -> (encoded bytes, the reason it is refused under, None when accepted)."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    png = _encode(photo, "PNG")
    grey16 = Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16))
    return {
        "png": (png, None),
        "cmyk_jpeg": (_encode(photo.convert("CMYK"), "JPEG"), None),
        "grey16_png": (_encode(grey16, "PNG"), None),
        "palette_alpha_gif": (_encode(photo.convert("P"), "GIF", transparency=0), None),
        "bomb_header": (bomb_png(), "too_many_pixels"),
        "truncated_png": (png[: len(png) // 2], "decode_error"),
        "not_an_image": (b"GIF89a but not really" * 4, "decode_error"),
        "empty": (b"", "decode_error"),
    }


def _outcome(call) -> str | None:
    try:
        image = call()
    except Rejected as exn:
        return exn.reason
    assert image.mode == "RGB"
    return None


@pytest.mark.parametrize("name", list(_samples()))
def test_training_converters_and_evaluation_decide_alike(name):
    data, expected = _samples()[name]
    training = _outcome(lambda: record_images({"__key__": "k", "img.png": data}, {"images": ["img.png"]})[0])
    converter = _outcome(lambda: decode_image(image_member(data, 0, Limits(), "x")[1]))
    evaluation = _outcome(lambda: decode_image(image_bytes(base64.b64encode(data).decode())))
    assert training == converter == evaluation == expected
    if expected is not None:
        assert expected in EVAL_REASONS  # a benchmark counts it under its own phrase


def test_the_byte_limit_holds_for_bytes_and_files(tmp_path):
    data = _encode(Image.new("RGB", (8, 8), "red"), "PNG")
    with pytest.raises(Rejected, match="image_too_large"):
        decode_image(data, max_bytes=len(data) - 1)
    (tmp_path / "a.png").write_bytes(data)
    with pytest.raises(Rejected, match="image_too_large"):
        decode_image(tmp_path / "a.png", max_bytes=len(data) - 1)
    assert decode_image(tmp_path / "a.png", max_bytes=len(data)).size == (8, 8)


def test_files_that_are_not_regular_or_are_links_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")  # reading it would block forever
    (tmp_path / "real.png").write_bytes(_encode(Image.new("RGB", (4, 4)), "PNG"))
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    cases = {"fifo.png": "not_a_file", ".": "not_a_file", "link.png": "missing_image", "gone.png": "missing_image"}
    for name, reason in cases.items():
        with pytest.raises(Rejected) as info:
            read_image_bytes(tmp_path / name)
        assert info.value.reason == reason, name


def test_decode_keeps_the_format_and_the_exif_orientation_it_does_not_apply():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90"
    data = _encode(Image.new("RGB", (12, 8), "blue"), "JPEG", exif=exif)
    decoded = decode(data)
    assert (decoded.format, decoded.exif_orientation, decoded.image.size) == ("JPEG", 6, (12, 8))  # not rotated
    suffix, stored, rotated = image_member(data, 3, Limits(), "x")
    assert (suffix, stored, rotated) == ("3.jpg", data, True)  # the original bytes, counted as rotated


def test_a_rejection_keeps_reason_and_detail_across_processes():
    exn = pickle.loads(pickle.dumps(Rejected("too_long", "k: 9 characters > 8")))
    assert (exn.reason, exn.detail, str(exn)) == ("too_long", "k: 9 characters > 8", "too_long: k: 9 characters > 8")
    assert isinstance(exn, ValueError)


def test_a_processor_rejection_keeps_its_reason_in_training():
    """An image the processor refuses (Ovis2.5's degenerate sizes) is counted under its own reason, not re-labelled
    `invalid_sample` like the formatter's other ValueErrors."""

    def refuse(turns, images):
        raise Rejected("degenerate_size", "1 x 400 image")

    builder = SampleBuilder(SimpleNamespace(conversation=refuse), max_length=64)
    record = {"__key__": "k", "json": b'{"conversations": [{"from": "human", "value": "<image>\\nQ"},'
                                      b' {"from": "gpt", "value": "A"}]}',
              "0.png": _encode(Image.new("RGB", (4, 4)), "PNG")}
    with pytest.raises(Rejected) as info:
        builder(record)
    assert info.value.reason == "degenerate_size"


def test_a_truncated_image_is_refused_even_when_another_library_allows_truncated_loads(monkeypatch):
    """PIL's LOAD_TRUNCATED_IMAGES is process-wide; lmms-eval's task module switches it on when imported (the full
    suite imports it), and the guarded decoder must refuse truncated data all the same, leaving the switch as found."""
    from PIL import ImageFile

    data, expected = _samples()["truncated_png"]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert _outcome(lambda: decode_image(data)) == expected == "decode_error"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
