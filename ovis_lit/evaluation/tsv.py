"""Reading benchmark files in VLMEvalKit's TSV layout: one row per question, images as base64 in `image`.

VLMEvalKit writes these files with pandas, so a field holding a tab, newline or quote is double-quoted; they are
read here with the csv module's default (minimal) quoting, which undoes that. Two shortcuts of the format:
- an `image` value of at most 64 characters is not an image but the `index` of the row that holds it
  (de-duplicated images: MME pairs, POPE splits, MMBench's circular copies);
- a value starting with `[` is a Python list literal (several images for one question, MMMU; several answers).
Files stored beside the TSV are named by an `image_path` column instead.
"""

from __future__ import annotations

import ast
import binascii
import csv
import sys
from pathlib import Path
from typing import Iterable, Union

from PIL import Image, UnidentifiedImageError

from .mcq import decode_image

ImageSource = Union[str, Path]  # base64 text, or a file on disk
IMAGE_REF_MAX_CHARS = 64
MISSING = {"", "nan", "NaN"}  # how pandas spells an empty cell ("None" stays: it can be a real option)


class BadSample(ValueError):
    """A row that cannot be used; benchmarks count these as skips instead of failing the whole run."""


class BadImage(ValueError):
    """An image that cannot be decoded (counted as a skip at generation time)."""


def read_benchmark_tsv(path: str | Path, required: Iterable[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found (VLMEvalKit's TSV layout is expected)")
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
    return rows


def cell(row: dict[str, str], column: str) -> str:
    """The stripped value of a column, '' when absent or empty (pandas writes NaN as '' or 'nan')."""
    value = row.get(column)
    if value is None:
        return ""
    value = value.strip()
    return "" if value in MISSING else value


def parse_list(value: str) -> list[str]:
    """`['a', 'b']` -> ['a', 'b']; any other text -> [text]. Literal parsing only: nothing is executed."""
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            raise BadSample(f"unparsable list {value[:60]!r}") from e
        return [str(v).strip() for v in parsed]
    return [value]


def index_rows(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {cell(r, "index"): r for r in rows}


def image_sources(row: dict[str, str], rows_by_index: dict[str, dict[str, str]], base_dir: Path) -> list[ImageSource]:
    """The images of a row, in order: base64 strings (references followed) or files from `image_path`."""
    raw = cell(row, "image")
    if raw:
        sources: list[ImageSource] = []
        for value in parse_list(raw):
            if len(value) <= IMAGE_REF_MAX_CHARS:  # the index of the row that holds the image
                holder = rows_by_index.get(value)
                data = cell(holder, "image") if holder is not None else ""
                if len(data) <= IMAGE_REF_MAX_CHARS:
                    raise BadSample(f"image reference {value!r} points to no row with an image")
                sources += parse_list(data)
            else:
                sources.append(value)
        return sources
    paths = cell(row, "image_path")
    return [base_dir / p for p in parse_list(paths)] if paths else []


def image_key(row: dict[str, str]) -> str:
    """What identifies a row's image: its `image_path`, else the index of the row holding the base64."""
    path = cell(row, "image_path")
    if path:
        return path
    raw = cell(row, "image")
    return raw if len(raw) <= IMAGE_REF_MAX_CHARS else cell(row, "index")


def open_image(source: ImageSource) -> Image.Image:
    try:
        if isinstance(source, Path):
            image = Image.open(source)
            image.load()
            return image
        return decode_image(source)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        shown = str(source) if isinstance(source, Path) else f"base64 {source[:24]}..."
        raise BadImage(f"cannot decode image ({shown}): {e}") from e
