"""An image folder with captions in CSV / TSV / JSON Lines / JSON -> WebDataset shards of caption samples.

Each row names an image (relative to `--images`) and its caption; by default the columns are found by name
(image: file_name, image, image_path, file, filename, path; caption: caption, text, description). Without
`--captions`, the folder's `metadata.jsonl` / `metadata.csv` is used (the Hugging Face image-folder layout).
Files may start with a UTF-8 BOM (as spreadsheets save CSV); a row holding bytes that are not UTF-8 is rejected
(`bad_encoding`, with its line); a missing caption (an empty cell, None, NaN) is rejected as `empty_caption`.

    python data/convert_captions.py --images photos/ --captions photos/captions.csv --output shards/photos \\
        [--caption-template "<image>\\nDescription:\\n"]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...constants import IMAGE_TOKEN
from ...rejection import Rejected
from ..samples import IMAGE_EXTENSIONS
from ..validation import is_missing
from .checks import Converted, Limits, check_caption, image_member, object_entry_id
from .cli import limits_from, options_from, run_command
from .files import read_image_file
from .runner import run
from .text import csv_rows, load_json_entries

IMAGE_COLUMNS = ("file_name", "image", "image_path", "file", "filename", "path")
CAPTION_COLUMNS = ("caption", "text", "description")


@dataclass
class CaptionConverter:
    """One row {image column: path | bytes | {"bytes": ...}, caption column: text, "caption_template"?} ->
    a caption sample (or Rejected). `template` is the set's caption template (a row's own one wins)."""

    image_root: Path
    limits: Limits
    image_column: str | None = None
    caption_column: str | None = None
    template: str | None = None

    @staticmethod
    def _get(row: dict, column: str | None, candidates: tuple[str, ...]) -> Any:
        """The named column, or the first candidate column with a value (an empty string counts as one)."""
        if column is not None:
            return row.get(column)
        return next((row[c] for c in candidates if row.get(c) is not None), None)

    def __call__(self, index: int, row: Any) -> Converted:
        key = object_entry_id(row, index)
        image = self._get(row, self.image_column, IMAGE_COLUMNS)
        own_template = row.get("caption_template")  # a parquet/pandas column has None or NaN where a row has none
        template = self.template if is_missing(own_template) or own_template == "" else own_template
        caption, template = check_caption(self._get(row, self.caption_column, CAPTION_COLUMNS), template,
                                          self.limits, key)
        if isinstance(image, dict):  # a Hugging Face datasets Image: {"bytes": ..., "path": ...}
            image = image.get("bytes") or image.get("path")
        if isinstance(image, (bytes, bytearray)):
            data, what = bytes(image), f"{key} (embedded image)"
        elif is_missing(image) or image == "":
            raise Rejected("missing_image", f"{key}: no image named")
        else:
            data, what = read_image_file(self.image_root, image, self.limits.max_image_bytes)
        suffix, data, rotated = image_member(data, 0, self.limits, what)
        meta: dict[str, Any] = {"id": key, "caption": caption, "images": [suffix]}
        if template:
            meta["caption_template"] = template
        return Converted(index, meta, [(suffix, data)], exif_rotated=int(rotated))


def check_template(template: str | None) -> None:
    if template is not None and template.count(IMAGE_TOKEN) != 1:
        raise ValueError(f"a caption template needs exactly one {IMAGE_TOKEN}: {template!r}")


def load_rows(path: str | Path) -> list[Any]:
    """Rows of a CSV/TSV (header line), JSON Lines, or JSON list file."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return csv_rows(path, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    return load_json_entries(path)


def find_captions(images: Path) -> Path:
    for name in ("metadata.jsonl", "metadata.csv", "captions.jsonl", "captions.csv"):
        if (images / name).is_file():
            return images / name
    raise FileNotFoundError(f"no --captions given and no metadata.jsonl / metadata.csv in {images}")


def unlisted_images(images: Path, rows: list[Any], column: str | None) -> int:
    """Image files in the folder that no row names (reported, not converted)."""
    named = set()
    for row in rows:
        if isinstance(row, dict):
            value = row.get(column) if column else next((row[c] for c in IMAGE_COLUMNS if row.get(c)), None)
            if isinstance(value, str):
                named.add(str(Path(value)))
    extensions = IMAGE_EXTENSIONS + ("jpe", "jfif")
    count = 0
    for folder, _, files in os.walk(images):  # symlinked folders are not followed (a loop would never end)
        for name in files:
            path = Path(folder, name)
            if path.suffix.lower().lstrip(".") in extensions and str(path.relative_to(images)) not in named:
                count += 1
    return count


def convert(images: str | Path, captions: str | Path | None, options, limits: Limits | None = None,
            template: str | None = None, image_column: str | None = None, caption_column: str | None = None) -> dict:
    images = Path(images)
    check_template(template)
    captions = Path(captions) if captions else find_captions(images)
    rows = load_rows(captions)
    info = {"format": "captions", "inputs": [str(captions)], "image_root": str(images),
            "unlisted_images": unlisted_images(images, rows, image_column)}
    converter = CaptionConverter(images, limits or Limits(), image_column, caption_column, template)
    return run(converter, rows, options, total=len(rows), info=info)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="the image folder (row paths are relative to it)")
    parser.add_argument("--captions", help="CSV / TSV / JSONL / JSON file (default: the folder's metadata file)")
    parser.add_argument("--image-column", help="column naming the image (default: found by name)")
    parser.add_argument("--caption-column", help="column holding the caption (default: found by name)")
    parser.add_argument("--caption-template", help="stored with every sample, e.g. '<image>\\nDescription:\\n' "
                        "(default: none, the data config's caption_template applies)")
    parser.add_argument("--name", help="shard-set name (file prefix); default: the folder's name")

    def convert_args(args: argparse.Namespace) -> dict:
        template = args.caption_template.replace("\\n", "\n") if args.caption_template else None
        return convert(args.images, args.captions, options_from(args, args.name or Path(args.images).resolve().name),
                       limits_from(args), template, args.image_column, args.caption_column)

    return run_command(parser, argv, convert_args)[1]
