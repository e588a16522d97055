"""Reading benchmark files in VLMEvalKit's TSV layout: one row per question, images as base64 in `image`.

VLMEvalKit writes these files with pandas, so a field holding a tab, newline or quote is double-quoted; they are
read here with the csv module's default (minimal) quoting, which undoes that. Two shortcuts of the format:
- an `image` value of at most 64 characters is not an image but the `index` of the row that holds it
  (de-duplicated images: MME pairs, POPE splits, MMBench's circular copies);
- a value starting with `[` is a Python list literal (several images for one question, MMMU; several answers).
Files stored beside the TSV are named by an `image_path` column instead; they must lie inside the TSV's folder.

What is refused, and how (see `read_rows`): a file that is wrong as a whole (missing, empty, no header, a header that
is not UTF-8 text or names a column twice, required columns missing, two rows with the same `index`) raises
ValueError or FileNotFoundError naming the file; a row that is wrong (not UTF-8 text, more or fewer fields than the
header, no index, a line the csv module cannot split) is skipped and counted by reason, and its line is logged. A
UTF-8 byte-order mark (spreadsheets write one) is ignored. A row a benchmark cannot use raises `Rejected`, counted
by its reason. Images are decoded as in training, by `processing.image_decoding.decode_image` (the pixel limit
checked before decoding) from the bytes `image_bytes` gives.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

from ..processing.image_decoding import read_image_bytes
from ..rejection import Rejected

log = logging.getLogger(__name__)

ImageSource = Union[str, Path]  # base64 text, or a file on disk
IMAGE_REF_MAX_CHARS = 64
# The cells pandas reads as NaN by default (pandas 2.x). VLMEvalKit reads its TSVs with pandas, so a cell holding
# exactly one of these (an option "None" or "NA" included) is missing there, and is missing here too.
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
WARNINGS_PER_REASON = 10  # rejected rows logged one by one up to this many per reason (then at debug level)


@dataclass
class BenchmarkRows:
    """The usable rows of a benchmark TSV, the line each starts on (the header is line 1), and the rows refused."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)  # reason -> rows
    log_rows: bool = True  # log each rejected row (the first WARNINGS_PER_REASON per reason as warnings)

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        loud = self.log_rows and self.rejected[reason] <= WARNINGS_PER_REASON
        level = logging.WARNING if loud else logging.DEBUG
        log.log(level, "%s line %d: skipped (%s)%s", self.path, line, reason, f": {detail}" if detail else "")


def _has_surrogates(text: str) -> bool:
    """Bytes that are not UTF-8 arrive as lone surrogates (read with errors="surrogateescape")."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def read_rows(path: str | Path, required: Iterable[str], log_rows: bool = True) -> BenchmarkRows:
    """The rows of a benchmark TSV, checked as the module docstring says."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} not found (VLMEvalKit's TSV layout is expected)")
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    # surrogateescape: a row with bytes that are not UTF-8 is refused alone instead of the read failing midway
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ValueError(f"{path}: the header row cannot be read as TSV ({e})") from None
        if header is None or not any(h.strip() for h in header):
            raise ValueError(f"{path} is empty: a header row naming the columns is expected")
        if _has_surrogates("".join(header)):
            raise ValueError(f"{path}: the header row is not UTF-8 text")
        columns = [h.strip() for h in header]
        repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
        if repeated:
            raise ValueError(f"{path}: the header names column(s) {repeated} more than once")
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
        table = BenchmarkRows(path, columns, log_rows=log_rows)
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # the csv module cannot split this line; it has consumed it, so go on
                table.reject(line, "unreadable TSV line", str(e))
                continue
            if not fields:
                continue  # a blank line
            if _has_surrogates("".join(fields)):
                table.reject(line, "not UTF-8 text")
            elif len(fields) != len(columns):
                table.reject(line, "ragged row", f"{len(fields)} fields, the header has {len(columns)}")
            else:
                row = dict(zip(columns, fields))
                if "index" in columns and not cell(row, "index"):
                    table.reject(line, "no index")
                    continue
                table.rows.append(row)
                table.lines.append(line)
    if "index" in columns:
        _refuse_duplicate_indices(table)
    return table


def _refuse_duplicate_indices(table: BenchmarkRows) -> None:
    """`index` names a question (image references, MMBench's circular groups, the predictions' keys): with two rows
    of one index neither can be trusted, so the file is refused rather than scored (VLMEvalKit would silently
    keep one of them)."""
    lines: dict[str, list[int]] = {}
    for row, line in zip(table.rows, table.lines):
        lines.setdefault(_index_identity(cell(row, "index")), []).append(line)
    repeated = {index: at for index, at in lines.items() if len(at) > 1}
    if repeated:
        shown = "; ".join(f"{index!r} on lines {at}" for index, at in list(repeated.items())[:10])
        more = f" (and {len(repeated) - 10} more)" if len(repeated) > 10 else ""
        raise ValueError(f"{table.path}: {len(repeated)} index value(s) appear more than once: {shown}{more}")


def _index_identity(index: str) -> str:
    """What an index means: '7' and '7.0' are one number (pandas reads both as 7, as VLMEvalKit does)."""
    try:
        number = float(index)
        return str(int(number)) if number.is_integer() else index
    except (ValueError, OverflowError):
        return index


def read_benchmark_tsv(path: str | Path, required: Iterable[str]) -> list[dict[str, str]]:
    """The usable rows of a benchmark TSV (refused rows are logged; `read_rows` also counts them)."""
    return read_rows(path, required).rows


def cell(row: dict[str, str], column: str) -> str:
    """The stripped value of a column, '' when absent or missing the way pandas reads it (PANDAS_NA)."""
    value = row.get(column)
    if value is None:
        return ""
    value = value.strip()
    return "" if value in PANDAS_NA else value


def integer_index(row: dict[str, str]) -> int:
    """The row's index as an integer ('12' or pandas' '12.0'); Rejected otherwise."""
    index = cell(row, "index")
    try:
        number = float(index)
        if number.is_integer():
            return int(number)
    except (ValueError, OverflowError):
        pass
    raise Rejected("index is not an integer")


def parse_list(value: str) -> list[str]:
    """`['a', 'b']` -> ['a', 'b']; any other text -> [text]. Literal parsing only: nothing is executed."""
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            raise Rejected(f"unparsable list {value[:60]!r}") from e
        if not isinstance(parsed, (list, tuple)):
            raise Rejected(f"unparsable list {value[:60]!r}")
        return [str(v).strip() for v in parsed]
    return [value]


def index_rows(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {cell(r, "index"): r for r in rows}


def image_sources(row: dict[str, str], rows_by_index: dict[str, dict[str, str]], base_dir: Path) -> list[ImageSource]:
    """The images of a row, in order: base64 strings (references followed) or files from `image_path` (which must
    lie inside `base_dir`, symbolic links resolved)."""
    raw = cell(row, "image")
    if raw:
        sources: list[ImageSource] = []
        for value in parse_list(raw):
            if len(value) <= IMAGE_REF_MAX_CHARS:  # the index of the row that holds the image
                holder = rows_by_index.get(value)
                data = cell(holder, "image") if holder is not None else ""
                if len(data) <= IMAGE_REF_MAX_CHARS:
                    raise Rejected(f"image reference {value!r} points to no row with an image")
                sources += parse_list(data)
            else:
                sources.append(value)
        return sources
    paths = cell(row, "image_path")
    return [inside(base_dir, p) for p in parse_list(paths)] if paths else []


def inside(base_dir: Path, name: str) -> Path:
    """base_dir / name, refused (Rejected) when it resolves outside base_dir: `..`, an absolute path, a link."""
    root = base_dir.resolve()
    try:
        resolved = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL in the name
        raise Rejected("unusable image path") from e
    if not resolved.is_relative_to(root):
        raise Rejected("image path outside the benchmark's folder")
    return resolved


def image_key(row: dict[str, str]) -> str:
    """What identifies a row's image: its `image_path`, else the index of the row holding the base64."""
    path = cell(row, "image_path")
    if path:
        return path
    raw = cell(row, "image")
    return raw if len(raw) <= IMAGE_REF_MAX_CHARS else cell(row, "index")


def image_bytes(source: ImageSource) -> bytes:
    """The encoded bytes of one image: base64 text decoded, or a file read by the guarded reader (regular files of
    at most MAX_IMAGE_BYTES, opened without blocking, so a FIFO named like an image is refused instead of hanging
    the run). Decoding them is `processing.image_decoding.decode_image`'s job, as in training. Rejected otherwise
    (`decode_error` for text that is not base64; the file reader's reasons)."""
    if isinstance(source, Path):
        return read_image_bytes(source)
    try:
        return base64.b64decode(source)
    except (binascii.Error, ValueError) as e:
        raise Rejected("decode_error", f"base64 {source[:24]}...: {e}") from e
