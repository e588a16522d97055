"""Reading the image files a converter's input names, safely: only regular files inside the image root, bounded.

Input data is not trusted to stay in its folder: a name is resolved to its real path (symlinks followed, `..`
collapsed) and refused unless it lies under the real image root, so neither `../../etc/passwd` nor a symlink
placed in the folder can bring an outside file into a shard. Only regular files are read: a FIFO, a device or a
socket named `x.jpg` is refused (the guarded reader, `processing.image_decoding.read_image_bytes`, opens it
non-blocking and checks it again on the open descriptor, so swapping one in cannot block the converter). At most
`max_bytes` are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...processing.image_decoding import MAX_IMAGE_BYTES, read_image_bytes
from ...rejection import Rejected


def resolve_image(root: Path, name: Any) -> Path:
    """The real path of image `name` (relative to `root`), refused (`bad_image_path`) unless it lies inside
    `root`'s real path: absolute names, `..` and symlinks leading out of the folder are all refused."""
    if not isinstance(name, str) or not name.strip():
        raise Rejected("bad_json", f"image path {name!r} is not a string")
    if "\0" in name:
        raise Rejected("bad_image_path", f"{name!r} contains a NUL character")
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise Rejected("bad_image_path", f"{name!r} is outside the image root")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, name))
    if os.path.commonpath([real_root, real]) != real_root:
        raise Rejected("bad_image_path", f"{name!r} resolves outside the image root (a symlink?)")
    return Path(real)


def read_image_file(root: Path, name: Any, max_bytes: int | None = MAX_IMAGE_BYTES) -> tuple[bytes, str]:
    """The bytes of image `name` under `root` and a description for reports; Rejected `missing_image`,
    `bad_image_path`, `not_a_file` or `image_too_large`."""
    return read_image_bytes(resolve_image(root, name), max_bytes, shown=str(name)), str(name)
