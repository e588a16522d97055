"""The one guarded image decoder: encoded bytes or a file -> a fully decoded RGB image, or `Rejected`.

Training (`data.samples`), the converters (`data.convert`) and evaluation (`evaluation.tsv`) all decode through
`decode_image` / `decode`, so an image is accepted or refused the same way everywhere. Reasons it is refused under:
- `image_too_large`: more than `max_bytes` bytes (checked before reading the rest of a file);
- `too_many_pixels`: the header claims more than `max_pixels` pixels (checked before any pixel is decoded: a
  small PNG can claim 100,000 x 100,000);
- `decode_error`: anything that does not decode completely (corrupt or truncated data, formats PIL does not read);
- from a file: `missing_image` (absent or cannot be opened), `not_a_file` (a FIFO, device or folder: opened without
  blocking, and checked again on the open descriptor, so one swapped in cannot hang the run).

The EXIF orientation tag is NOT applied: pixels come in stored order, as the original Ovis code loaded them
(`Image.open(...).convert("RGB")`) for the released models' training. A phone photo tagged "rotate 90" is therefore
seen sideways; the converters count such images (`exif_rotated` in their report) so that a corpus full of them is
noticed.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from ..rejection import Rejected

# Images with more pixels than this are refused before their pixels are decoded (a decompression-bomb guard).
# 2**26 = 8192 x 8192; a 48-megapixel photo passes. PIL's own guard (Image.MAX_IMAGE_PIXELS, error at twice it)
# still applies above that.
MAX_IMAGE_PIXELS = 2**26
# Bytes per encoded image: 128 MiB is more than any image within MAX_IMAGE_PIXELS needs, compressed.
MAX_IMAGE_BYTES = 2**27
# EXIF tag 0x0112: 1 is "as stored"; 2-8 are mirrorings and rotations a viewer would apply
EXIF_ORIENTATION_TAG = 0x0112
_READ_CHUNK = 1 << 20

ImageData = bytes | bytearray | memoryview | str | os.PathLike  # encoded bytes, or a file's path


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, fully decoded
    format: str | None  # the format PIL found ("JPEG", "PNG", ...)
    exif_orientation: int  # 1 ("as stored") unless the file declares a rotation / mirroring (not applied)


def decode_image(source: ImageData, max_pixels: int | None = MAX_IMAGE_PIXELS,
                 max_bytes: int | None = MAX_IMAGE_BYTES) -> Image.Image:
    """Encoded image bytes (or a file) -> a fully decoded RGB image; `Rejected` as the module docstring says."""
    return decode(source, max_pixels, max_bytes).image


def decode(source: ImageData, max_pixels: int | None = MAX_IMAGE_PIXELS,
           max_bytes: int | None = MAX_IMAGE_BYTES) -> DecodedImage:
    """`decode_image`, keeping what the header said (format, EXIF orientation) for a converter's member name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if max_bytes is not None and len(data) > max_bytes:
            raise Rejected("image_too_large", f"{len(data)} bytes > {max_bytes}")
    else:
        data = read_image_bytes(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exn:
        raise Rejected("too_many_pixels", str(exn)) from exn
    except Image.UnidentifiedImageError as exn:
        raise Rejected("decode_error", "not an image format PIL reads") from exn
    except Exception as exn:  # PIL raises OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise Rejected("decode_error", f"{type(exn).__name__}: {exn}") from exn
    return DecodedImage(decode_opened(image, max_pixels), image.format, exif_orientation(image))


def decode_opened(image: Image.Image, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """An image already opened by PIL (by `decode`, or handed over by a library such as `datasets`) -> fully
    decoded RGB, under the same pixel limit and the same `Rejected` reasons as `decode_image`."""
    try:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise Rejected("too_many_pixels", f"{width} x {height} > {max_pixels} pixels")
        # decode now: a truncated file fails here, not later in preprocessing. PIL's LOAD_TRUNCATED_IMAGES is a
        # process-wide switch that libraries imported beside us turn on (lmms-eval's api/task.py does): hold it
        # off while we load, so a truncated image is refused whatever else is imported
        truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
        return to_rgb(image)
    except Rejected:
        raise
    except Image.DecompressionBombError as exn:
        raise Rejected("too_many_pixels", str(exn)) from exn
    except Exception as exn:  # PIL raises OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise Rejected("decode_error", f"{type(exn).__name__}: {exn}") from exn


def read_image_bytes(path: str | os.PathLike, max_bytes: int | None = MAX_IMAGE_BYTES,
                     shown: str | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; `Rejected` (`missing_image`, `not_a_file`,
    `image_too_large`) otherwise. A symbolic link as the last component is not followed (`missing_image`): callers
    resolve names first, confining them to their folder (`data.convert.files`, `evaluation.tsv.inside`); `shown` is
    how the details name the file (default: its path)."""
    name = shown or str(path)
    try:
        _check_regular(os.stat(path).st_mode, name)  # before opening: opening a FIFO could block
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError as exn:
        raise Rejected("missing_image", name) from exn
    except OSError as exn:  # permissions, a symlink loop, a name too long, ...
        raise Rejected("missing_image", f"{name}: {type(exn).__name__}: {exn.strerror or exn}") from exn
    try:
        info = os.fstat(fd)  # the file actually opened (it may have been swapped since the stat)
        _check_regular(info.st_mode, name)
        _check_size(info.st_size, max_bytes, name)
        limit = max_bytes if max_bytes is not None else info.st_size
        chunks, total = [], 0
        while True:  # to the end, at most limit + 1 bytes (a file that grows after the fstat)
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total) or 1)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            _check_size(total, max_bytes, name)
        return b"".join(chunks)
    except OSError as exn:
        raise Rejected("missing_image", f"{name}: {type(exn).__name__}: {exn.strerror or exn}") from exn
    finally:
        os.close(fd)


def _check_regular(mode: int, name: str) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise Rejected("not_a_file", f"{name}: {kind}")


def _check_size(size: int, max_bytes: int | None, name: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise Rejected("image_too_large", f"{name}: more than {max_bytes} bytes")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation an opened image declares (1, "as stored", when it has none or it is unreadable).
    Reported only: `decode` does not rotate (see the module docstring)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: PIL raises many types; the pixels are what matter
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16/32-bit grey images are rescaled to 8 bits first (PIL would clip them to white);
    alpha is dropped (as `convert("RGB")` does); palette images with transparency go through RGBA (same colours,
    without PIL's warning); modes PIL cannot convert keep their colour channels."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()) if arr.size else 1.0, 1.0)
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:  # a mode PIL cannot convert (e.g. "La"): its colour channels as they are
        arr = np.asarray(image)
        arr = arr[..., :3] if arr.ndim == 3 and arr.shape[-1] >= 3 else (arr[..., 0] if arr.ndim == 3 else arr)
        return Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8)).convert("RGB")
