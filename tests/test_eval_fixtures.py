"""Helpers for the evaluation tests: tiny benchmark files in the real on-disk format (VLMEvalKit TSVs written the
way pandas writes them, with small generated PNGs), plus a check that such files read back exactly."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

from PIL import Image

COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]


def png_b64(colour: str = "red", size: tuple[int, int] = (16, 16)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> Path:
    """As pandas' DataFrame.to_csv(sep='\\t', index=False) writes it: minimal quoting, missing cells empty."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return path


def answers_by_key(items, by_key: dict[str, str], default: str = "") -> list[str]:
    return [by_key.get(item.key, default) for item in items]


def test_pandas_style_quoting_reads_back(tmp_path):
    from ovis_lit.evaluation.tsv import cell, read_benchmark_tsv

    question = 'Two lines,\n"quoted"\tand a tab'
    path = write_tsv(tmp_path / "q.tsv", [{"index": 0, "question": question, "hint": "nan", "image": png_b64()}])
    rows = read_benchmark_tsv(path, ["index", "question"])
    assert len(rows) == 1 and rows[0]["question"] == question
    assert cell(rows[0], "hint") == "" and cell(rows[0], "absent") == ""
