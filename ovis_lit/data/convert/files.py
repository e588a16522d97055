"""Reading the image files a converter's input names, safely: only regular files inside the image root, bounded.

Input data is not trusted to stay in its folder: a name is resolved to its real path (symlinks followed, `..`
collapsed) and refused unless it lies under the real image root, so neither `../../etc/passwd` nor a symlink
placed in the folder can bring an outside file into a shard. Only regular files are read: a FIFO, a device or a
socket named `x.jpg` is refused from its `stat` (and the file is opened non-blocking and checked again on the
open descriptor, so swapping one in between cannot block the converter). At most `max_bytes` are read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .common import MAX_IMAGE_BYTES, Reject
_READ_CHUNK = 1 << 20


def resolve_image(root: Path, name: Any) -> Path:
    """The real path of image `name` (relative to `root`), refused (`bad_image_path`) unless it lies inside
    `root`'s real path: absolute names, `..` and symlinks leading out of the folder are all refused."""
    if not isinstance(name, str) or not name.strip():
        raise Reject("bad_json", f"image path {name!r} is not a string")
    if "\0" in name:
        raise Reject("bad_image_path", f"{name!r} contains a NUL character")
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise Reject("bad_image_path", f"{name!r} is outside the image root")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, name))
    if os.path.commonpath([real_root, real]) != real_root:
        raise Reject("bad_image_path", f"{name!r} resolves outside the image root (a symlink?)")
    return Path(real)


def _check_regular(mode: int, name: str) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise Reject("not_a_file", f"{name}: {kind}")


def _check_size(size: int, max_bytes: int | None, name: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise Reject("image_too_large", f"{name}: more than {max_bytes} bytes")


def read_image_file(root: Path, name: Any, max_bytes: int | None = MAX_IMAGE_BYTES) -> tuple[bytes, str]:
    """The bytes of image `name` under `root` and a description for reports; Reject `missing_image`,
    `bad_image_path`, `not_a_file` or `image_too_large`."""
    path = resolve_image(root, name)
    try:
        _check_regular(os.stat(path).st_mode, str(name))  # before opening: opening a FIFO could block
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError as exn:
        raise Reject("missing_image", str(name)) from exn
    except OSError as exn:  # permissions, a symlink loop, a name too long, ...
        raise Reject("missing_image", f"{name}: {type(exn).__name__}: {exn.strerror or exn}") from exn
    try:
        info = os.fstat(fd)  # the file actually opened (it may have been swapped since the stat)
        _check_regular(info.st_mode, str(name))
        _check_size(info.st_size, max_bytes, str(name))
        limit = max_bytes if max_bytes is not None else info.st_size
        chunks, total = [], 0
        while True:  # to the end, at most limit + 1 bytes (a file that grows after the fstat)
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total) or 1)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if max_bytes is not None:
                _check_size(total, max_bytes, str(name))
        return b"".join(chunks), str(name)
    except OSError as exn:
        raise Reject("missing_image", f"{name}: {type(exn).__name__}: {exn.strerror or exn}") from exn
    finally:
        os.close(fd)
