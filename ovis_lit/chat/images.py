"""Images a person names in the chat CLI, a batch file or the web demo: local files only, decoded by the one guarded
decoder (`processing.image_decoding`), so a bad image is refused with the reason training and evaluation give."""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

from ..processing.image_decoding import decode_image
from ..rejection import Rejected

# "http://...", "https://...", "s3://...", "file://...": anything with a scheme is a URL, not a path
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

OFFLINE_MESSAGE = ("images are read from local files only: ovis-lit runs offline and downloads nothing; save the "
                   "image and give its path")


def open_local_image(reference: str | os.PathLike, base: Path | None = None) -> Image.Image:
    """The decoded RGB image at `reference` (a path; relative ones are taken from `base` when given). A URL is
    refused (`Rejected("url_refused")`), and so is anything the guarded decoder refuses (missing, not a regular
    file, too large, undecodable), under its own reason."""
    text = str(reference).strip()
    if _URL.match(text) or text.startswith("data:"):
        raise Rejected("url_refused", f"{text}: {OFFLINE_MESSAGE}")
    if not text:
        raise Rejected("missing_image", "an empty path")
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    # a person's own file: a symbolic link is followed here (the decoder itself refuses to follow one)
    return decode_image(path.resolve() if path.is_symlink() else path)


def refusal(error: Rejected) -> str:
    """What a person is told when an image is refused."""
    return f"image refused: {error}"
