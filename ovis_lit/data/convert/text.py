"""Reading a converter's input text (JSON lists, JSON Lines, CSV/TSV) as the files real corpora come in.

A UTF-8 byte-order mark (what spreadsheets and some editors write) is dropped. Bytes that are not UTF-8 (say a
Latin-1 caption) do not stop the conversion: the record holding them becomes an `Unparsable` entry, which the
converter rejects as `bad_encoding` with its file and line, and every other record is read. A file that is not
JSON / CSV at all is a clear error naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# the code points `surrogateescape` decodes undecodable bytes to (valid UTF-8 never yields them)
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Unparsable:
    """A record that could not be read (kept in place so that it is counted and reported, not lost)."""

    where: str  # file:line
    error: str
    reason: str = "bad_json"  # or "bad_encoding"


def read_text(path: Path) -> str:
    """The file's text without a BOM; bytes that are not UTF-8 become lone surrogates, found per record later."""
    return path.read_bytes().decode("utf-8-sig", errors="surrogateescape")


def undecodable(text: str) -> bool:
    return _UNDECODABLE.search(text) is not None


def _bad_encoding(path: Path, line: int) -> Unparsable:
    return Unparsable(f"{path.name}:{line}", "not UTF-8 text", "bad_encoding")


def json_lines(path: Path, text: str) -> list[Any]:
    entries: list[Any] = []
    # split at "\n" only: str.splitlines would also split inside a JSON string holding U+2028 or U+0085
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if undecodable(line):
            entries.append(_bad_encoding(path, n))
            continue
        try:
            entries.append(json.loads(line))
        except (ValueError, RecursionError) as exn:
            entries.append(Unparsable(f"{path.name}:{n}", f"{type(exn).__name__}: {exn}"))
    return entries


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def json_list(path: Path, text: str) -> list[Any]:
    """A JSON list; with undecodable bytes in it, parsed element by element so that only the elements holding
    them are lost (each an Unparsable at its line)."""
    try:
        if not undecodable(text):
            data = json.loads(text)
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON list of samples, got {type(data).__name__}")
            return data
        decoder, entries = json.JSONDecoder(), []
        i = _skip_space(text, 0)
        if not text.startswith("[", i):
            raise ValueError(f"{path}: expected a JSON list of samples")
        i = _skip_space(text, i + 1)
        while not text.startswith("]", i):
            element, end = decoder.raw_decode(text, i)
            line = text.count("\n", 0, i) + 1
            entries.append(_bad_encoding(path, line) if undecodable(text[i:end]) else element)
            i = _skip_space(text, end)
            if text.startswith(",", i):
                i = _skip_space(text, i + 1)
            elif not text.startswith("]", i):
                raise json.JSONDecodeError("expected ',' or ']'", text, i)
        return entries
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path}:{exn.lineno}:{exn.colno}: not JSON: {exn.msg}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def load_records(path: str | Path, columns: tuple[str, ...], batch_size: int) -> tuple[Iterator[Any], int]:
    """(the records, their number) of a JSON list / JSON Lines file, or of a parquet file: read `batch_size` rows at
    a time and only its `columns` that the file has, so that a file of millions of rows is never in memory whole."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exn:
            raise ImportError("reading parquet needs pyarrow: pip install 'ovis-lit[convert]'") from exn
        pf = pq.ParquetFile(path)
        present = [c for c in pf.schema_arrow.names if c in columns]

        def rows() -> Iterator[dict]:
            for batch in pf.iter_batches(batch_size=batch_size, columns=present):
                yield from batch.to_pylist()

        return rows(), pf.metadata.num_rows
    entries = load_json_entries(path)
    return iter(entries), len(entries)


def load_json_entries(path: str | Path) -> list[Any]:
    """The entries of a JSON list or a JSON Lines (.jsonl / .ndjson) file."""
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return json_lines(path, text)
    return json_list(path, text)


def csv_rows(path: str | Path, delimiter: str = ",") -> list[Any]:
    """Rows of a CSV/TSV file with a header line, as dicts (an undecodable row: an Unparsable at its line)."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    rows: list[Any] = []
    try:
        if reader.fieldnames and any(undecodable(name) for name in reader.fieldnames):
            raise ValueError(f"{path}:1: the header line is not UTF-8 text")
        start = reader.line_num + 1  # the line a row starts on (a quoted field may span lines)
        for row in reader:
            if any(undecodable(str(v)) for v in row.values() if v is not None):
                rows.append(_bad_encoding(path, start))
            else:
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exn:
        raise ValueError(f"{path}:{reader.line_num}: not CSV: {exn}") from None
    return rows
